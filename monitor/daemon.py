"""The data path, wired: per-camera reader+gate threads -> describer -> order -> sinks."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

import structlog

from monitor.config import CameraConfig, MonitorSettings
from monitor.describe import Describer, build_describer
from monitor.errors import MonitorError, SourceError
from monitor.gate import ChangeGate
from monitor.order import EventOrderer
from monitor.records import ChangeCandidate, ChangeEvent, RegionOut, ScoresOut, iso_utc, make_event_id
from monitor.sinks import LogFileSink
from monitor.sources import SourceStats, VideoSource

log = structlog.get_logger("monitor.daemon")

_DONE = object()  # a camera thread's end marker


@dataclass
class CameraRun:
    camera: CameraConfig
    source: VideoSource
    gate: ChangeGate
    thread: threading.Thread | None = None
    error: str | None = None
    candidates: int = 0


@dataclass
class RunResult:
    events: int = 0
    cameras: dict[str, SourceStats] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class Monitor:
    """Runs every camera of the settings until their sources end or `stop()` is called."""

    def __init__(
        self,
        settings: MonitorSettings,
        describer: Describer | None = None,
        echo: TextIO | None = None,
        realtime: bool | None = None,
    ):
        self.settings = settings
        self.describer = describer or build_describer(settings.describer.kind, settings.describer.model)
        self.stop_event = threading.Event()
        self.sink = LogFileSink(settings.log, echo=echo)
        self.orderer = EventOrderer(settings.log.reorder_window_s)
        # Bounded so a stalled describer holds readers back instead of growing memory.
        self._candidates: queue.Queue = queue.Queue(maxsize=256)
        self.cameras = [
            CameraRun(
                cam,
                VideoSource(cam, realtime=realtime, stop=self.stop_event),
                ChangeGate(cam.id, settings.gate_for(cam), cam.sample_fps, cam.masks),
            )
            for cam in settings.cameras
        ]

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> RunResult:
        if not self.cameras:
            raise MonitorError("no cameras configured (give --source or a config with cameras:)")
        for run in self.cameras:
            run.thread = threading.Thread(
                target=self._read_camera, args=(run,), name=f"camera-{run.camera.id}", daemon=True
            )
            run.thread.start()
        live = len(self.cameras)
        try:
            while live:
                batch = self._next_batch()
                live -= sum(1 for item in batch if item is _DONE)
                cands = [c for c in batch if c is not _DONE]
                if cands:
                    self._describe(cands)
                for event in self.orderer.pop_ready():
                    self.sink.write(event)
        finally:
            self.stop_event.set()
            for event in self.orderer.flush():
                self.sink.write(event)
            self.sink.close()
        result = RunResult(events=self.sink.written)
        for run in self.cameras:
            result.cameras[run.camera.id] = run.source.stats
            if run.error:
                result.errors[run.camera.id] = run.error
        return result

    def _next_batch(self) -> list:
        try:
            first = self._candidates.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.settings.describer.batch_size:
            try:
                batch.append(self._candidates.get_nowait())
            except queue.Empty:
                break
        return batch

    def _read_camera(self, run: CameraRun) -> None:
        try:
            for frame in run.source.frames():
                cand = run.gate.detect(frame)
                if cand is not None:
                    run.candidates += 1
                    self._candidates.put(cand)
        except SourceError as exc:
            run.error = str(exc)
            log.error("camera_failed", camera=run.camera.id, error=str(exc))
        except Exception as exc:  # a bug in one camera must not take the others down
            run.error = f"camera {run.camera.id}: internal error: {type(exc).__name__}: {exc}"
            log.exception("camera_crashed", camera=run.camera.id)
        finally:
            self._candidates.put(_DONE)

    def _describe(self, cands: list[ChangeCandidate]) -> None:
        descriptions = self.describer.describe(cands)
        for cand, desc in zip(cands, descriptions, strict=True):
            self.orderer.push(self._event(cand, desc.text, desc.labels))

    def _event(self, cand: ChangeCandidate, text: str, labels) -> ChangeEvent:
        stream_start = cand.after.wall_time - cand.after.media_time
        return ChangeEvent(
            event_id=make_event_id(cand.camera_id, stream_start, cand.after.seq),
            camera=cand.camera_id,
            seq=self.orderer.next_seq(cand.camera_id),
            t_before=iso_utc(cand.before.wall_time),
            t_after=iso_utc(cand.after.wall_time),
            media_t_before=round(cand.before.media_time, 3),
            media_t_after=round(cand.after.media_time, 3),
            media_t_onset=round(cand.onset_media_time, 3),
            text=text,
            regions=[
                RegionOut(
                    x=round(r.x, 4), y=round(r.y, 4), w=round(r.w, 4), h=round(r.h, 4), change=r.change, label=lab
                )
                for r, lab in zip(cand.regions, labels)
            ],
            scores=ScoresOut(ssim=cand.scores.ssim, changed_fraction=cand.scores.changed_fraction),
            describer=self.describer.name,
            # From the gate's decision to the finished sentence (queueing + describing).
            latency_ms=round((time.time() - cand.detected_at) * 1000.0, 1),
        )
