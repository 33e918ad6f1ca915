"""Secrets the settings point to: given inline (from the environment, `SecretStr`) or in a file
(a systemd credential). One reader for the Redis and MQTT passwords and the review token."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from monitor.errors import ConfigError

if TYPE_CHECKING:
    from monitor.config.settings import MonitorSettings


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


def with_systemd_credentials(settings: MonitorSettings) -> MonitorSettings:
    """Under systemd, `LoadCredential=redis-password:...` puts the Redis password in
    `$CREDENTIALS_DIRECTORY/redis-password`: use it when no password is configured."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    redis = settings.redis
    if not cred_dir or redis.password is not None or redis.password_file is not None:
        return settings
    path = Path(cred_dir) / "redis-password"
    if not path.is_file():
        return settings
    return settings.model_copy(update={"redis": redis.model_copy(update={"password_file": path})})
