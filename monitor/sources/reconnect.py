"""Reconnecting a network source: `ReconnectWait` sleeps by the daemon's backoff policy
(`monitor.backoff`, the Redis sink's too) while probing the camera's host:port, so a camera
that comes back is reopened at once."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

from monitor.backoff import backoff_delay, backoff_policy


class ReconnectWait:
    """Waits between reconnect attempts of a network source, by `backoff_policy(cap, base)`.

    While it waits, the source's host:port is probed with a plain TCP connect every `probe_s`:
    when a source that refused connections (or could not be reached) accepts one again, the
    wait ends at once and the backoff starts over, so a camera that comes back is reopened
    within about `probe_s` whatever the backoff had grown to. A server that accepts TCP but
    keeps failing the stream is retried on the backoff schedule only."""

    def __init__(self, source: str, cap: float, base: float = 0.5, probe_s: float = 0.5):
        self.address = host_port(source)
        self.policy = backoff_policy(cap, base)
        self.probe_s = probe_s
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def delay(self) -> float:
        return backoff_delay(self.policy, self.attempt)

    def wait(self, stop: threading.Event) -> bool:
        """Sleep before the next attempt; False when `stop` was set meanwhile."""
        until = time.monotonic() + self.delay()
        self.attempt += 1
        was_down = False
        while not stop.is_set():
            if self.address is not None:
                if not reachable(*self.address, timeout=min(self.probe_s, 1.0)):
                    was_down = True
                elif was_down:
                    self.attempt = 0  # it is back: reconnect now, and from the start of the backoff
                    return True
            left = until - time.monotonic()
            if left <= 0:
                return True
            stop.wait(min(left, self.probe_s))
        return False


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to host:port succeeds (and is closed at once)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def host_port(source: str) -> tuple[str, int] | None:
    try:
        url = urlsplit(source)
        host, port = url.hostname, url.port
    except ValueError:
        return None
    if not host:
        return None
    default = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "http": 80, "https": 443}.get(url.scheme.lower())
    port = port or default
    return (host, port) if port else None
