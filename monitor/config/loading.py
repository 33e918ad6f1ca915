"""Loading: `load_settings(path, **overrides)` validates the YAML file, the environment and the
command line's values together and raises one ConfigError with every problem, one per line
(`check-config` and `run` both go through it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from monitor.config.settings import MonitorSettings
from monitor.config.yaml_source import yaml_file
from monitor.errors import ConfigError, mask_secrets


def format_errors(exc: ValidationError) -> list[str]:
    """One line per error: `cameras.0.sample_fps: Input should be greater than 0 (got -1)`."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "[key]") or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if "[key]" in err["loc"]:  # a mapping key of the wrong type (`5:` where names go)
            msg = f"invalid key: {msg}"
        scalar_input = "input" in err and not isinstance(err["input"], dict | list)
        # never echo what may be a secret: the value of a password field or of a misspelt one
        secret = any(_SECRET_KEY.search(str(part)) for part in err["loc"])
        if err["type"] not in {"missing", "value_error"} and scalar_input and not secret:
            msg += f" (got {mask_secrets(repr(err['input']))[:80]})"
        lines.append(f"{loc}: {mask_secrets(msg)}".translate(_LINE_BREAKS))
    return lines


_SECRET_KEY = re.compile(r"(?i)pass|pwd|secret|token|auth|credential")

# one error, one line: a value quoted in a message (a camera id "a\nb") must not break it
_LINE_BREAKS = {ord(c): c.encode("unicode_escape").decode() for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def load_settings(path: Path | None = None, **overrides: Any) -> MonitorSettings:
    """Load and validate; raises ConfigError with every problem, one per line."""
    token = yaml_file.set(path)
    try:
        return MonitorSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError("\n".join(format_errors(exc))) from None
    except SettingsError as exc:  # a MONITOR_<SECTION> variable that is not JSON
        raise ConfigError(environment_error(str(exc))) from None
    finally:
        yaml_file.reset(token)


def environment_error(message: str) -> str:
    """pydantic-settings' 'error parsing value for field "cameras" from source ...' as a line
    that names the variable (never its value: it may hold a password)."""
    m = re.search(r'field "([^"]+)"', message)
    if m is None:
        return f"environment: {mask_secrets(message)}"
    return f"MONITOR_{m.group(1).upper()}: not valid JSON (a section set from the environment is a JSON value)"
