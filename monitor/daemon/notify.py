"""systemd service notifications (sd_notify) and a watchdog that only pings while every stage
of the daemon is alive. Standard library only.

`Notifier` sends the sd_notify datagrams (`READY=1`, `STATUS=...`, `WATCHDOG=1`,
`STOPPING=1`, `RELOADING=1` + `MONOTONIC_USEC=`) to `$NOTIFY_SOCKET` (a path, or an abstract
socket written `@name`); without `NOTIFY_SOCKET` every call is a no-op.

`Heartbeats` holds one timestamp per stage (the main loop, each camera reader, the describer).
`Watchdog` pings `WATCHDOG=1` every half `WATCHDOG_USEC`, but only while every stage is fresh:
a stage that has not beaten for longer than the watchdog interval, or that has been *busy* (for
the describer: inside `describe()`) for longer than that, stops the pings, and systemd then
restarts the service (`WatchdogSec=`, `Restart=on-failure`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

from monitor.daemon.snapshot import MonitorSnapshot

log = structlog.get_logger(__name__)


def _address(raw: str) -> str | bytes:
    # "@name" is an abstract socket: a leading NUL byte on the wire (sd_notify(3)).
    return b"\0" + raw[1:].encode() if raw.startswith("@") else raw


class Notifier:
    """sd_notify over a unix datagram socket; every method is a no-op without a socket."""

    def __init__(self, address: str | None = None, watchdog_usec: int | None = None):
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False
        self.sent: list[str] = []  # the last messages sent (diagnostics and tests), bounded

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        usec: int | None = None
        pid = env.get("WATCHDOG_PID")
        if pid is None or pid.strip() == str(os.getpid()):  # the watchdog is meant for this process
            try:
                usec = int(env.get("WATCHDOG_USEC", "") or 0) or None
            except ValueError:
                usec = None
        return cls(env.get("NOTIFY_SOCKET") or None, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """WATCHDOG_USEC in seconds, or None when systemd wants no watchdog pings."""
        return self.watchdog_usec / 1e6 if self.watchdog_usec else None

    def notify(self, *fields: str) -> bool:
        """Send one datagram of newline-separated `KEY=value` fields; False if it failed."""
        if self.address is None or not fields:
            return False
        message = "\n".join(f.replace("\n", " ") for f in fields)
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(message.encode(), _address(self.address))
            except OSError as exc:
                if not self._warned:  # one line, not one per ping
                    self._warned = True
                    log.warning("notify_failed", socket=self.address, reason=exc.strerror or str(exc))
                return False
            self.sent = [*self.sent[-63:], message]
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # MONOTONIC_USEC: CLOCK_MONOTONIC at the start of the reload (sd_notify(3), systemd 253+
        # requires it for Type=notify-reload; older systemd ignores it).
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class Heartbeats:
    """Last-alive timestamps of the daemon's stages (monotonic clock), thread-safe.

    A stage is *stale* when it last beat more than `max_age` seconds ago, or when it has been
    busy (inside a `busy()` block) for more than `max_age`. An idle stage between busy blocks
    (the describer waiting for work) is fresh. `probe` stages are asked each check: the probe
    returns True when the stage is alive right now (it then counts as a beat), False when not,
    None to stop tracking it (a camera whose stream ended)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._beats: dict[str, float] = {}
        self._busy: dict[str, float] = {}
        self._probes: dict[str, Callable[[], bool | None]] = {}
        self._grace: dict[str, float] = {}  # per-stage minimum max_age

    def beat(self, stage: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._beats[stage] = now

    def add_probe(self, stage: str, probe: Callable[[], bool | None], grace: float = 0.0) -> None:
        """`grace`: the stage is stale only after max(max_age, grace) without a live probe (a
        camera read in real time at 2 fps legitimately makes no progress for 0.5 s)."""
        with self._lock:
            self._probes[stage] = probe
            self._grace[stage] = grace
            self._beats.setdefault(stage, time.monotonic())

    def remove(self, stage: str) -> None:
        with self._lock:
            self._beats.pop(stage, None)
            self._busy.pop(stage, None)
            self._probes.pop(stage, None)
            self._grace.pop(stage, None)

    @contextmanager
    def busy(self, stage: str) -> Iterator[None]:
        with self._lock:
            self._busy[stage] = time.monotonic()
        try:
            yield
        finally:
            now = time.monotonic()
            with self._lock:
                self._busy.pop(stage, None)
                self._beats[stage] = now

    def stale(self, max_age: float) -> list[str]:
        """The stages that are not alive: empty when the watchdog may ping."""
        with self._lock:
            probes = list(self._probes.items())
        for stage, probe in probes:
            try:
                alive = probe()
            except Exception:  # noqa: BLE001 - a broken probe is a dead stage, not a dead pinger
                alive = False
            if alive is None:
                self.remove(stage)
            elif alive:
                self.beat(stage)
        now = time.monotonic()
        with self._lock:
            out = [s for s, t in self._busy.items() if now - t > max_age]
            out += [
                s
                for s, t in self._beats.items()
                if s not in self._busy and now - t > max(max_age, self._grace.get(s, 0.0))
            ]
        return sorted(set(out))


class Watchdog:
    """Pings WATCHDOG=1 every `interval / 2` while no stage is stale; also refreshes STATUS=
    (from `status()`, when it changes). Logs once when pings stop and once when they resume."""

    def __init__(
        self,
        notifier: Notifier,
        heartbeats: Heartbeats,
        interval: float | None = None,
        status: Callable[[], str] | None = None,
        status_every: float = 5.0,
    ):
        self.notifier = notifier
        self.heartbeats = heartbeats
        self.interval = interval if interval is not None else notifier.watchdog_interval
        self.status = status
        self.status_every = status_every
        self.pings = 0
        self.withheld = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_status: str | None = None

    def start(self) -> None:
        if not self.notifier.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="sd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _loop(self) -> None:
        period = self.interval / 2 if self.interval else self.status_every
        next_status = 0.0
        stalled: list[str] = []
        while not self._stop.wait(period):
            if self.interval:
                stale = self.heartbeats.stale(self.interval)
                if stale:
                    self.withheld += 1
                    if stale != stalled:
                        log.error("watchdog_withheld", stale=",".join(stale))
                else:
                    if stalled:
                        log.warning("watchdog_resumed")
                    if self.notifier.watchdog():
                        self.pings += 1
                stalled = stale
            now = time.monotonic()
            if self.status is not None and now >= next_status:
                next_status = now + self.status_every
                self.push_status()

    def push_status(self) -> None:
        if self.status is None:
            return
        try:
            text = self.status()
        except Exception:  # noqa: BLE001 - a status line must never break the pinger
            return
        if text != self._last_status:
            self._last_status = text
            self.notifier.status(text)


class StatusLine:
    """`cameras up 3/4, 12 events/min, 40 events` (systemctl status shows it) from the daemon's
    snapshot; events/min over the last minute of calls."""

    def __init__(self) -> None:
        self._rate: list[tuple[float, int]] = []  # (monotonic, events written)
        self._lock = threading.Lock()

    def __call__(self, snap: MonitorSnapshot) -> str:
        now, written = time.monotonic(), snap.events_written
        with self._lock:
            self._rate = [(t, n) for t, n in self._rate if now - t <= 60.0] + [(now, written)]
            t0, n0 = self._rate[0]
        per_min = (written - n0) * 60.0 / (now - t0) if now - t0 >= 1.0 else 0.0
        state = "stopping, " if snap.stopping else ""
        up = f"cameras up {snap.cameras_reading}/{len(snap.cameras)}"
        return f"{state}{up}, {per_min:.0f} events/min, {written} events"


class BeatingDescriber:
    """The describer, with `describe()` marked busy in the heartbeats: a describer stuck in
    one call for longer than the watchdog interval stops the watchdog pings."""

    def __init__(self, inner, heartbeats: Heartbeats):
        self.inner = inner
        self.heartbeats = heartbeats

    @property
    def name(self) -> str:
        return self.inner.name

    def describe(self, candidates):
        with self.heartbeats.busy("describer"):
            return self.inner.describe(candidates)

    def __getattr__(self, attr: str):
        return getattr(self.inner, attr)


class CameraProbe:
    """A camera reader's liveness for the watchdog. Finished: no longer tracked. A file source
    is alive while it makes progress (frames or packets read). A network source counts as alive
    while its reader thread runs: its blocking calls are bounded by the open/read timeouts and
    the reconnect backoff, so a dead camera is an outage (camera_offline), not a hung daemon."""

    def __init__(self, run):  # a camera_reader.CameraRun
        self.run = run
        self._seen = -1

    def __call__(self) -> bool | None:
        run = self.run
        if run.thread is None or not run.thread.is_alive():
            return None
        if run.source.network:
            return True
        st = run.source.stats
        progress = st.decoded + st.sampled + st.skipped_packets + st.corrupt + run.candidates
        moved, self._seen = progress != self._seen, progress
        return moved
