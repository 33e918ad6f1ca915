"""The data path, wired: per-camera reader+gate threads -> describer -> order -> sinks."""

from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import structlog

from monitor.config import CameraConfig, MonitorSettings
from monitor.describe import Describer, build_describer
from monitor.errors import MonitorError, SourceError
from monitor.gate import ChangeGate
from monitor.order import EventOrderer
from monitor.records import ChangeCandidate, ChangeEvent, RegionOut, ScoresOut, iso_utc, make_event_id
from monitor.sinks import JSONL_NAME, LogFileSink
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
        self.redis = None
        if settings.redis.url:
            from monitor.alerts import AlertRules
            from monitor.redis_sink import RedisSink

            self.redis = RedisSink.from_settings(settings, AlertRules(settings.alerts, settings.cameras))
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
        self._continue_seqs()
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
                self._emit(self.orderer.pop_ready())
        finally:
            self.stop_event.set()
            try:
                self._emit(self.orderer.flush())
            finally:
                self.sink.close()
                if self.redis is not None:
                    self.redis.close()
        result = RunResult(events=self.sink.written)
        for run in self.cameras:
            result.cameras[run.camera.id] = run.source.stats
            if run.error:
                result.errors[run.camera.id] = run.error
        return result

    def _emit(self, events: list[ChangeEvent]) -> None:
        if not events:
            return
        if self.redis is not None:
            self.redis.write_many(events)  # into the durable spool first, then the log files
        for event in events:
            self.sink.write(event)

    def _continue_seqs(self) -> None:
        """A restarted daemon continues each camera's seq after the highest it already produced
        (log files, the Redis spool, Redis' delivered hash), so numbering never restarts at 1:
        the Redis idempotency check relies on it, and so does anyone reading the log."""
        last = last_logged_seqs(self.settings.log.dir)
        sources = [last]
        if self.redis is not None:
            sources.append(self.redis.spool.last_seqs() if self.redis.spool is not None else {})
            sources.append(self.redis.start())  # {} when Redis is unreachable now
        merged: dict[str, int] = {}
        for src in sources:
            for cam, seq in src.items():
                merged[cam] = max(merged.get(cam, 0), seq)
        for cam, seq in merged.items():
            self.orderer.set_start(cam, seq)
        if merged:
            log.debug("seq_continued", last=merged)

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


_SEQ_RE = re.compile(rb'"camera":\s*"([^"]+)",\s*"seq":\s*(\d+)')


def last_logged_seqs(log_dir: Path) -> dict[str, int]:
    """Highest seq per camera in `changes.jsonl` and its rotated copies `changes.jsonl.N`."""
    paths = [log_dir / JSONL_NAME, *log_dir.glob(JSONL_NAME + ".*")]
    out: dict[str, int] = {}
    for path in paths:
        if path != log_dir / JSONL_NAME and not path.name.rsplit(".", 1)[-1].isdigit():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for m in _SEQ_RE.finditer(data):
            cam, seq = m.group(1).decode(), int(m.group(2))
            if seq > out.get(cam, 0):
                out[cam] = seq
    return out
