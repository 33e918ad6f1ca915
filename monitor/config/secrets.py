"""Secrets the settings point to: given inline (from the environment, `SecretStr`) or in a file
(a systemd credential). One reader for the Redis and MQTT passwords and the review token."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from monitor.errors import ConfigError


def read_secret(value: SecretStr | None, path: Path | None, field: str) -> str | None:
    """`value` when given, else the first line of the file at `path` (`field` names it in the
    one error line); None when neither gives one. The secret itself is never in a message."""
    if value is not None:
        return value.get_secret_value() or None
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"{field}: cannot read {path}: {why}") from None
