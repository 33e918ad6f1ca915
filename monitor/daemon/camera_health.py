"""Camera health for network cameras: up/down state, the offline/online notices that become
camera_offline / camera_online events, and the tally of first opens at start."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import structlog

from monitor.config import CameraConfig
from monitor.errors import mask_secrets

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class HealthNotice:
    """A camera went offline or came back; becomes a camera_offline/camera_online event on the
    same path (queue -> orderer -> sinks) as the camera's change events, so it gets their seq."""

    camera_id: str
    kind: str  # "camera_offline" | "camera_online"
    down_since: float  # wall time of the last frame before the outage (or of the first failed open)
    at: float  # wall time the camera was declared offline / its first frame came back
    media_time: float
    reason: str = ""
    outage_s: float | None = None


class CameraHealth:
    """One network camera's up/down state. `down()` starts a timer of `offline_after_s`; if the
    camera is still down when it fires, one camera_offline notice is queued. `up()` cancels it
    and, if the offline notice went out, queues one camera_online notice with the outage length.
    Both queue under one lock, so the pair can never be queued in the wrong order."""

    def __init__(self, camera: CameraConfig, put):
        self.camera = camera
        self._put = put
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self._reason = ""
        self._media = 0.0
        self._offline_sent = False
        self._timer: threading.Timer | None = None
        self._closed = False

    def down(self, since: float, reason: str, media_time: float) -> None:
        with self._lock:
            self._reason = reason
            if self.down_since is not None or self._closed:
                return
            self.down_since, self._media = since, media_time
            delay = max(0.0, since + self.camera.offline_after_s - time.time())
            self._timer = threading.Timer(delay, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self.down_since is None or self._offline_sent or self._closed:
                return
            self._offline_sent = True
            now, cam = time.time(), self.camera.id
            self._put(HealthNotice(cam, "camera_offline", self.down_since, now, self._media, self._reason))
            log.warning("camera_offline", camera=cam, down_s=round(now - self.down_since, 1), reason=self._reason)

    def up(self, media_time: float) -> None:
        with self._lock:
            if self.down_since is None:
                return
            if self._timer is not None:
                self._timer.cancel()
            now = time.time()
            outage = now - self.down_since
            if self._offline_sent:
                notice = HealthNotice(
                    self.camera.id, "camera_online", self.down_since, now, media_time, outage_s=outage
                )
                self._put(notice)
                log.info("camera_online", camera=self.camera.id, outage_s=round(outage, 1))
            else:
                log.info("camera_reconnected", camera=self.camera.id, outage_s=round(outage, 1))
            self.down_since, self._offline_sent = None, False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()


class StartTally:
    """Counts the cameras' first opens, so a camera that cannot be opened at start can tell
    whether any camera of the run is up (see `Monitor._retry_at_start`)."""

    def __init__(self, cameras: int):
        self._cond = threading.Condition()
        self._pending = cameras
        self._opened = 0

    def report(self, opened: bool) -> None:
        with self._cond:
            self._pending -= 1
            self._opened += int(opened)
            self._cond.notify_all()

    def any_opened(self, stop: threading.Event) -> bool:
        """Waits until every camera has tried its first open (or `stop`)."""
        with self._cond:
            while self._pending > 0 and not stop.is_set():
                self._cond.wait(0.2)
            return self._opened > 0


class FirstOpen:
    """Tells the tally how one camera's first open went, exactly once."""

    def __init__(self, tally: StartTally):
        self.tally = tally
        self.done = False

    def __call__(self, opened: bool) -> None:
        if not self.done:
            self.done = True
            self.tally.report(opened)


def outage_reason(exc: BaseException, camera_id: str) -> str:
    """A SourceError's reason without its `camera X: ` prefix (the event names the camera)."""
    return mask_secrets(str(exc)).removeprefix(f"camera {camera_id}: ")
