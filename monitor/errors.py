"""User-facing errors (one line, no traceback) and secret masking."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# scheme://user:password@host -> scheme://user:***@host ; scheme://token@host -> scheme://***@host
# (greedy up to the last "@" of the authority: cameras often take unescaped "@" in passwords)
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/\s:]*)(?::(?P<pw>[^/\s]*))?@")
_QUERY_SECRET = re.compile(r"(?i)((?:password|passwd|pwd|token|secret|auth)=)[^&\s]+")


class MonitorError(Exception):
    """An error the user can act on; printed as one line, exit code `exit_code`."""

    exit_code = 1


class ConfigError(MonitorError):
    exit_code = 2


class SourceError(MonitorError):
    pass


def mask_url(url: str) -> str:
    """Hide the password (and query secrets) of a URL; paths pass through unchanged."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_secrets(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = _QUERY_SECRET.sub(r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def mask_secrets(text: str) -> str:
    """Mask every credential-looking URL part inside free text (error messages, log lines)."""

    def repl(m: re.Match[str]) -> str:
        if m.group("pw") is None:
            return f"{m.group('scheme')}***@"
        return f"{m.group('scheme')}{m.group('user')}:***@"

    return _QUERY_SECRET.sub(r"\1***", _CREDENTIALS.sub(repl, text))
