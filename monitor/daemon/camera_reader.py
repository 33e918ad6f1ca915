"""One camera's reader thread: source -> gate -> its bounded candidate queue, reconnecting a
network camera whenever it fails (with camera_offline / camera_online notices on the way)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from monitor.config import CameraConfig, GateConfig
from monitor.daemon.camera_health import CameraHealth, FirstOpen, StartTally, outage_reason
from monitor.daemon.queues import CameraQueues
from monitor.daemon.snapshot import CameraState
from monitor.errors import SourceError
from monitor.gate.change_gate import ChangeGate
from monitor.records import ChangeCandidate, ChangeStart
from monitor.sinks.onset import OnsetAlerts
from monitor.sources.reconnect import ReconnectWait
from monitor.sources.video import VideoSource

log = structlog.get_logger(__name__)

DONE = object()  # a camera thread's end marker in the queues


@dataclass
class CameraRun:
    camera: CameraConfig
    source: VideoSource
    gate: ChangeGate
    thread: threading.Thread | None = None
    error: str | None = None
    candidates: int = 0
    online: bool | None = None  # network cameras: False while down and reconnecting, True while frames come
    coalesced: int = 0  # candidates merged into a neighbour because the camera's queue was full
    dropped: int = 0  # candidates dropped (the oldest) because the camera's queue was full
    stop: threading.Event = field(default_factory=threading.Event)  # this camera only (reload)

    def state(self) -> CameraState:
        if self.error:
            return "failed"
        if self.thread is None or not self.thread.is_alive():
            return "finished"
        return "down" if self.online is False else "up"


class CameraReader:
    """The body of one camera's thread (`reader()` runs it). `gate_config` gives the camera's
    effective gate settings (read again when the camera comes back at another frame size);
    `tally` counts the first opens of the run's cameras; `stop_all` is the daemon's stop."""

    def __init__(
        self,
        run: CameraRun,
        queues: CameraQueues,
        gate_config: Callable[[CameraConfig], GateConfig],
        tally: StartTally,
        stop_all: threading.Event,
        onsets: OnsetAlerts | None = None,
    ):
        self.run = run
        self.onsets = onsets  # early alerts: each view of a change under way, and changes that end unlogged
        self.queues = queues
        self.gate_config = gate_config
        self.tally = tally
        self.stop_all = stop_all

    def __call__(self) -> None:
        run = self.run
        health: CameraHealth | None = None
        first_open = FirstOpen(self.tally)
        try:
            if run.source.network:
                health = CameraHealth(run.camera, lambda notice: self.queues.put(run, notice))
                self._read_network(health, first_open)
            else:
                try:
                    run.source.open()
                except SourceError:
                    first_open(False)
                    raise
                first_open(True)
                for frame in run.source.frames():
                    self._gate(frame)
        except SourceError as exc:
            run.error = str(exc)
            log.error("camera_failed", camera=run.camera.id, error=str(exc))
        except Exception as exc:  # a bug in one camera must not take the others down
            run.error = f"camera {run.camera.id}: internal error: {type(exc).__name__}: {exc}"
            log.exception("camera_crashed", camera=run.camera.id)
        finally:
            first_open(False)
            if health is not None:
                health.close()
            self._flush()
            self.queues.put(run, DONE)

    def _flush(self) -> None:
        """The reader ends (end of file, stop, failure): a change still under way is reported."""
        gate = self.run.gate
        was = gate.under_way
        try:
            cand = gate.flush()
        except Exception:  # noqa: BLE001 - the end marker must still be queued
            log.exception("gate_flush_failed", camera=self.run.camera.id)
            return
        self._follow(was, None, cand)
        if cand is not None:
            self._hand_over(cand)

    def _gate(self, frame) -> None:
        gate = self.run.gate
        was = gate.under_way
        cand = gate.detect(frame)
        self._follow(was, gate.under_way, cand)
        if cand is not None:
            self._hand_over(cand)

    def _follow(self, was: ChangeStart | None, now: ChangeStart | None, cand: ChangeCandidate | None) -> None:
        """Early alerts see the change under way (`now`), and learn of one that ended unlogged."""
        if self.onsets is None:
            return
        if now is not None:
            self.onsets.observe(now)
        if was is not None and (now is None or now.change_id != was.change_id):
            if cand is None or cand.change_id != was.change_id:
                self.onsets.reverted(was)

    def _hand_over(self, cand: ChangeCandidate) -> None:
        self.run.candidates += 1
        self.queues.put(self.run, cand)

    def _read_network(self, health: CameraHealth, first_open: FirstOpen) -> None:
        """Read a network camera until stopped, reconnecting whenever it fails or ends.

        Each drop (read error, read timeout, end of stream) or failed open is followed by a
        `ReconnectWait` (exponential, jittered, capped at `reconnect_max_s`, cut short when the
        server starts accepting connections again). `CameraHealth` writes one camera_offline
        event when the camera has been down `offline_after_s`, and one camera_online event when
        its first frame is back. The gate is kept across an outage: what changed while the
        camera was away is reported as one change once the scene settles after it returns
        (`ChangeGate.resume`; a new gate only when the frame size changed). A camera whose very
        first open fails is retried according to `retry_at_start` (see `_retry_at_start`)."""
        run = self.run
        src, cam, stop = run.source, run.camera, run.stop
        backoff = ReconnectWait(cam.source, cam.reconnect_max_s)
        shape: tuple[int, ...] | None = None
        while not stop.is_set():
            try:
                src.open()
            except SourceError as exc:
                if not first_open.done:
                    first_open(False)
                    if not self._retry_at_start(cam):
                        raise
                    log.warning("camera_unreachable_retrying", camera=cam.id, error=str(exc))
                run.online = False
                health.down(src.last_wall or time.time(), outage_reason(exc, cam.id), src.last_media or 0.0)
                log.info("camera_reconnect_failed", camera=cam.id, error=str(exc), attempt=backoff.attempt + 1)
            else:
                first_open(True)
                reason = "the stream ended"
                fresh = True
                try:
                    for frame in src.frames():
                        if fresh:
                            fresh = False
                            backoff.reset()
                            run.online = True
                            health.up(frame.media_time)
                            now_shape = frame.grey().shape
                            if shape is not None and now_shape != shape:  # the camera was reconfigured
                                run.gate = ChangeGate(cam.id, self.gate_config(cam), cam.sample_fps, cam.masks)
                            elif shape is not None:
                                run.gate.resume()
                            shape = now_shape
                        self._gate(frame)
                except SourceError as exc:
                    reason = outage_reason(exc, cam.id)
                if stop.is_set():
                    break
                run.online = False
                health.down(src.last_wall or time.time(), reason, src.last_media or 0.0)
                log.warning("camera_dropped", camera=cam.id, reason=reason)
            if not backoff.wait(stop):
                break

    def _retry_at_start(self, cam: CameraConfig) -> bool:
        """A network camera that cannot be opened at start: `retry_at_start: true` keeps trying,
        `false` fails it; null (the default) keeps trying as long as some camera of this run
        opened, and fails when none did, so `monitor run --source rtsp://...` with a wrong URL
        still exits 1 at once with one line, while one dead camera of many never stops the rest."""
        if cam.retry_at_start is not None:
            return cam.retry_at_start
        return self.tally.any_opened(self.stop_all)
