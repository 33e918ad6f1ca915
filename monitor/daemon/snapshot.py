"""One typed, frozen view of a running daemon: `Monitor.snapshot()` builds it under no lock of
the data path (every field is a counter or a copy), and every observer reads it and nothing
else: `/healthz` and `/metrics` (`http_health`), the stats job (`jobs`) and the systemd status
line (`notify.StatusLine`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CameraState = Literal["up", "down", "finished", "failed"]


@dataclass(frozen=True, slots=True)
class CameraSnapshot:
    id: str
    # up: its reader runs and delivers; down: a network camera reconnecting; finished: its
    # source ended (or it was stopped); failed: it stopped on an error.
    state: CameraState
    decode_mode: str  # "all-frames" | "keyframes-only"
    frames_decoded: int  # frames the decoder produced
    frames_sampled: int  # frames handed to the gate
    frames_corrupt: int  # packets or frames that failed to decode
    packets_skipped: int  # packets never decoded (keyframes-only decoding)
    gate_fires: int  # changes the gate started
    candidates: int  # settled changes handed to the describer
    queue: int  # changes of this camera waiting for the describer
    coalesced: int  # merged because the camera's queue was full
    dropped: int  # dropped because the camera's queue was full
    events: int  # events of this camera written this run
    last_event: str | None  # t_after of its last event written
    error: str | None
    media_s: float = 0.0  # media time read so far
    length_s: float | None = None  # a file's declared length

    @property
    def reading(self) -> bool:
        """Its reader thread is alive and has not failed (up, or down and reconnecting)."""
        return self.state in ("up", "down")


@dataclass(frozen=True, slots=True)
class MonitorSnapshot:
    stopping: bool  # stop() was called, or the run is ending
    uptime_s: float
    cameras: tuple[CameraSnapshot, ...]
    events_written: int  # to the change log this run
    queue_depth: int  # changes waiting for the describer, all cameras
    describe_lag_s: float  # how long the oldest waiting change has waited (0 when none)
    redis_spool_depth: int  # events spooled, not yet in Redis
    captures_saved: int
    threads: int  # Python threads (a leak shows here first)
    last_event: str | None  # t_after of the newest event written (any camera, also one reloaded away)
    undescribed: int = 0  # gate role: changes handed to describe workers, not yet back
    describe_fallbacks: int = 0  # gate role: changes no worker described in time (the embedded sentence)

    @property
    def cameras_up(self) -> int:
        return sum(1 for c in self.cameras if c.state == "up")

    @property
    def cameras_reading(self) -> int:
        return sum(1 for c in self.cameras if c.reading)
