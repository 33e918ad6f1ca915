"""The data path, wired: per-camera reader+gate threads -> describer -> order -> write path
(log files, Redis, captures), plus the periodic jobs, systemd notifications and /healthz."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import structlog

from monitor.config import CameraConfig, MonitorSettings
from monitor.daemon.camera_health import StartTally
from monitor.daemon.camera_reader import DONE, CameraReader, CameraRun
from monitor.daemon.describing import DescribeStage, LocalDescribing
from monitor.daemon.http_health import HealthServer, Metrics
from monitor.daemon.jobs import Jobs, StatsJob, daemon_jobs
from monitor.daemon.notify import BeatingDescriber, CameraProbe, Heartbeats, Notifier, StatusLine, Watchdog
from monitor.daemon.queues import CameraQueues
from monitor.daemon.snapshot import CameraSnapshot, MonitorSnapshot
from monitor.daemon.terminal import Progress
from monitor.describe.base import Describer
from monitor.describe.factory import build_describer
from monitor.errors import MonitorError, mask_secrets
from monitor.gate.change_gate import ChangeGate
from monitor.order.orderer import EventOrderer
from monitor.order.time_order import TimeOrder
from monitor.records import ChangeEvent
from monitor.sinks.onset import NOT_LOGGED_QUEUE_FULL
from monitor.sinks.writer import EventWriter
from monitor.sources.video import SourceStats, VideoSource

log = structlog.get_logger(__name__)

__all__ = ["DRAIN_S", "CameraRun", "Monitor", "RunResult"]

DRAIN_S = 20.0  # after stop(): at most this long to describe and write what is already queued
# Sections a reload cannot change in a running daemon (a warning says they need a restart).
RESTART_ONLY = ("log", "redis", "describer", "captures", "jobs")


@dataclass
class RunResult:
    events: int = 0
    cameras: dict[str, SourceStats] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    coalesced: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


class Monitor:
    """Runs every camera of the settings until their sources end or `stop()` is called."""

    def __init__(
        self,
        settings: MonitorSettings,
        describer: Describer | None = None,
        echo: TextIO | None = None,
        realtime: bool | None = None,
        notifier: Notifier | None = None,
        reload: Callable[[], MonitorSettings] | None = None,
        progress: Progress | None = None,
        role: str = "all",
    ):
        self.settings = settings
        self._progress = progress  # a terminal's progress line (file runs), fed the snapshot
        self._realtime = realtime
        # SIGHUP: re-reads the config (raises ConfigError when invalid); None = nothing to reload.
        self._reload = reload
        # systemd integration (monitor/daemon/notify.py): READY/STATUS/STOPPING/RELOADING and a
        # watchdog that pings only while the main loop, every camera reader and the describer
        # are alive. A no-op outside systemd (no NOTIFY_SOCKET).
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.heartbeats = Heartbeats()
        if role == "gate":  # no describer of its own: the embedded one only for changes nobody described in time
            describer = describer or build_describer(settings.describer.model_copy(update={"kind": "embedded"}))
        self.describer = BeatingDescriber(describer or build_describer(settings.describer), self.heartbeats)
        self.stop_event = threading.Event()
        self._stop_at: float | None = None  # monotonic time of the first stop()
        self._reload_requested = False
        self._ready_sent = False
        self._started_at = 0.0
        self._status_line = StatusLine()
        self.metrics = Metrics(self.snapshot)
        bind = settings.http.bind
        self.http = HealthServer(self.snapshot, self.metrics.registry, bind) if bind else None
        self.writer = EventWriter(settings, echo=echo)
        self.orderer = EventOrderer(settings.log.reorder_window_s)
        self.stage: DescribeStage
        if role == "gate":
            from monitor.cluster.gate_node import RemoteDescribing

            self.stage = RemoteDescribing(settings, self.describer, self.orderer, self.writer)
        else:
            self.stage = LocalDescribing(
                self.describer, self.orderer, self.writer, self.metrics, settings.describer.batch_size
            )
        self.stats_job = StatsJob(self.snapshot, self.writer.redis)
        self.jobs: Jobs | None = None
        # One bounded queue per camera: a stalled describer never holds a reader back; the
        # oldest waiting changes of a camera are coalesced instead (and counted).
        self._candidates = CameraQueues(
            settings.describer.queue_per_camera, on_drop=lambda cand: self.writer.unlogged(cand, NOT_LOGGED_QUEUE_FULL)
        )
        self.cameras = [self._make_run(cam, settings) for cam in settings.cameras]
        self._retired: list[CameraRun] = []  # cameras removed or replaced by a reload
        self._live = 0  # reader threads whose end marker has not been taken yet
        self._tally: StartTally | None = None  # first opens of the cameras started with the run

    def uptime(self) -> float:
        return time.monotonic() - self._started_at if self._started_at else 0.0

    def snapshot(self) -> MonitorSnapshot:
        """What the observers (/healthz, /metrics, the stats job, the status line) read: copies and
        counters only, safe to take from any thread."""
        queues = self._candidates.sizes()
        oldest = self._candidates.oldest_detected()
        writer = self.writer
        last, by_camera = dict(writer.last_event), dict(writer.by_camera)
        spool, captures = writer.spool, writer.captures
        return MonitorSnapshot(
            stopping=self.stop_event.is_set(),
            uptime_s=self.uptime(),
            cameras=tuple(camera_snapshot(run, queues, by_camera, last) for run in self.cameras),
            events_written=writer.written,
            queue_depth=sum(queues.values()),
            describe_lag_s=round(time.time() - oldest, 3) if oldest is not None else 0.0,
            redis_spool_depth=len(spool) if spool is not None else 0,
            captures_saved=captures.saved if captures is not None else 0,
            threads=threading.active_count(),
            last_event=max(last.values(), default=None),
            undescribed=self.stage.undescribed,
            describe_fallbacks=self.stage.fallbacks,
        )

    def _make_run(self, cam: CameraConfig, settings: MonitorSettings) -> CameraRun:
        stop = threading.Event()
        return CameraRun(
            cam,
            VideoSource(cam, realtime=self._realtime, stop=stop),
            ChangeGate(cam.id, settings.gate_for(cam), cam.sample_fps, cam.masks),
            stop=stop,
        )

    def _start_reader(self, run: CameraRun) -> None:
        run.source.not_before = self.stage.time_order.latest.get(run.camera.id)  # clock "run": after the log's last
        if self._tally is None:
            self._tally = StartTally(len(self.cameras))
        # The gate settings of the current config: a reload may have replaced it since.
        reader = CameraReader(
            run, self._candidates, lambda cam: self.settings.gate_for(cam), self._tally, self.stop_event,
            self.writer.onsets,
        )  # fmt: skip
        run.thread = threading.Thread(target=reader, name=f"camera-{run.camera.id}", daemon=True)
        self._live += 1
        if self.stop_event.is_set():  # stop() came during a reload: the camera ends at once
            run.stop.set()
        run.thread.start()
        # Grace: a paced reader waits up to one sample interval between frames.
        grace = 2.0 / run.camera.sample_fps + 1.0
        self.heartbeats.add_probe(f"camera:{run.camera.id}", CameraProbe(run), grace=grace)

    def stop(self) -> None:
        """Stop reading (SIGTERM): what is already queued is still described and written, for
        at most DRAIN_S seconds; then the logs and Redis are flushed and `run()` returns."""
        if self._stop_at is None:
            self._stop_at = time.monotonic()
            self.notifier.stopping("stopping: draining queued changes")
        self.stop_event.set()
        for run in list(self.cameras):
            run.stop.set()

    def request_reload(self) -> None:
        """SIGHUP (`systemctl reload`): between two batches, the main loop reopens the log files
        (after logrotate moved them) and, for a config run, re-reads the config and applies its
        cameras (`_reload_cameras`), with RELOADING=1 ... READY=1 around it."""
        self._reload_requested = True

    def run(self) -> RunResult:
        if not self.cameras:
            raise MonitorError("no cameras configured (give --source or a config with cameras:)")
        last = self.writer.start()
        self.stage.time_order = TimeOrder(self.writer.logged_until)  # per camera, never back in time
        last = self.stage.start(last)  # the gate role: what is still in the candidates stream
        for cam, seq in last.items():
            self.orderer.set_start(cam, seq)
        if last:
            log.debug("seq_continued", last=last)
        self._started_at = time.monotonic()
        self.jobs = daemon_jobs(self.settings, self.writer, self.stats_job)
        self.jobs.start()
        self.heartbeats.beat("main")
        for run in self.cameras:
            self._start_reader(run)
        watchdog = Watchdog(self.notifier, self.heartbeats, status=self.status_line)
        watchdog.start()
        if self.http is not None:
            self.http.start()
        try:
            while self._live or self.stage.pending():
                self.heartbeats.beat("main")
                if self._stop_at is not None and time.monotonic() - self._stop_at > DRAIN_S:
                    log.warning(
                        "drain_timeout", cameras_still_reading=self._live, queued=self._candidates.qsize(),
                        undescribed=self.stage.pending(),
                    )  # fmt: skip
                    break
                batch = self.stage.take(self._candidates)
                self._live -= sum(1 for item in batch if item is DONE)
                cands = [c for c in batch if c is not DONE]
                if cands:
                    self.stage.handle(cands)
                self.stage.poll()
                self._emit(self.orderer.pop_ready())
                self._lifecycle()
                if self._progress is not None:
                    self._progress(self.snapshot)
        finally:
            if self._progress is not None:
                self._progress.done()
            self.stop_event.set()
            for run in self.cameras:
                run.stop.set()
            self.heartbeats.remove("main")  # shutdown is bounded by its own timeouts
            if self._stop_at is None:  # a file run that ended by itself
                self.notifier.stopping("stopping: sources ended")
            try:
                self.jobs.shutdown()
                self._emit(self.orderer.flush())
                self.writer.finish_captures()
                self._final_stats()
            finally:
                self.writer.close()
                watchdog.stop()
                if self.http is not None:
                    self.http.stop()
        result = RunResult(events=self.writer.written)
        for run in [*self._retired, *self.cameras]:  # a camera's current run wins over a replaced one
            cid = run.camera.id
            result.cameras[cid] = run.source.stats
            result.coalesced[cid] = result.coalesced.get(cid, 0) + run.coalesced
            result.dropped[cid] = result.dropped.get(cid, 0) + run.dropped
            if run.error:
                result.errors[cid] = run.error
        for cid, line in self.stage.time_order.errors().items():
            result.errors.setdefault(cid, line)
        return result

    def _final_stats(self) -> None:
        """One last stats record with the run's totals (after the flush, before Redis closes)."""
        try:
            self.stats_job()
        except Exception:  # noqa: BLE001 - diagnostics must not stop the shutdown
            log.exception("final_stats_failed")

    def _lifecycle(self) -> None:
        """READY=1 once every camera's source was opened (or its open attempted: it produced
        frames, failed, ended, or had its open timeout) and the describer is built; reloads."""
        if not self._ready_sent and all(self._open_attempted(r) for r in self.cameras):
            self._ready_sent = True
            self.notifier.ready(self.status_line())
            log.debug("service_ready")
        if self._reload_requested:
            self._reload_requested = False
            self.notifier.reloading()
            self.writer.reopen_logs()
            if self._stop_at is not None:
                log.info("reload_ignored", reason="stopping")
            elif self._reload is None:
                log.info("config_reload_ignored", reason="not a --config run: no config to re-read")
            else:
                self._reload_config()
            self.notifier.ready(self.status_line())

    def _reload_config(self) -> None:
        """Re-read and validate the config; invalid: one error line, the running cameras keep
        going. Valid: cameras are diffed by id (`_reload_cameras`); `cameras` and `gate` apply.
        `log`, `redis`, `describer`, `captures` and `jobs` changes need a restart (a warning
        says so); the Redis sink's alert rules are the ones it was started with."""
        try:
            new = self._reload()
        except MonitorError as exc:  # ConfigError: one line per problem, joined
            problems = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            log.error("config_reload_refused", errors=mask_secrets(problems), keeping="the running config")
            return
        except Exception as exc:  # noqa: BLE001 - a reload must never take the daemon down
            log.error("config_reload_refused", errors=f"{type(exc).__name__}: {mask_secrets(str(exc))}")
            return
        # The describer applies what it can change live (a VLM's LoRA adapter); the rest needs a restart.
        self.settings = self.settings.model_copy(
            update={"describer": self.describer.reload(self.settings.describer, new.describer)}
        )
        old = self.settings
        fixed = [k for k in RESTART_ONLY if getattr(new, k) != getattr(old, k)]
        if fixed:
            log.warning("config_reload_partial", needs_restart=",".join(fixed))
        self.settings = new.model_copy(update={k: getattr(old, k) for k in RESTART_ONLY})
        self._reload_cameras(old)

    def _reload_cameras(self, old: MonitorSettings) -> None:
        """Removed cameras: their readers are stopped and joined (what they queued is still
        described). New cameras: started. Changed ones (any field of the camera, or its
        effective gate settings): stopped, joined and started afresh. The others are untouched
        (same thread, same gate)."""
        new = self.settings
        wanted = {c.id: c for c in new.cameras}
        current = {r.camera.id: r for r in self.cameras}
        keep, stopped, added, changed, removed = [], [], [], [], []
        for cid, run in current.items():
            cam = wanted.get(cid)
            if cam is None:
                removed.append(cid)
                stopped.append(run)
            elif cam != run.camera or new.gate_for(cam) != old.gate_for(run.camera):
                changed.append(cid)
                stopped.append(run)
            else:
                keep.append(run)
        for run in stopped:
            run.stop.set()
        for run in stopped:
            if run.thread is not None:
                run.thread.join(10.0)
                if run.thread.is_alive():
                    log.warning("camera_stop_slow", camera=run.camera.id)
            self.heartbeats.remove(f"camera:{run.camera.id}")
        fresh = []
        for cam in new.cameras:
            if cam.id in current and current[cam.id] in keep:
                fresh.append(current[cam.id])
            else:
                if cam.id not in current:
                    added.append(cam.id)
                fresh.append(self._make_run(cam, new))
        self._retired.extend(stopped)
        self.cameras = fresh  # replaced, never mutated: the watchdog thread reads it
        for run in fresh:
            if run.thread is None:
                self._start_reader(run)
        if self.writer.mqtt is not None:  # Home Assistant learns the cameras added and removed
            self.writer.mqtt.set_cameras([run.camera.id for run in fresh])
        self.stage.set_cameras([run.camera.id for run in fresh])  # the gate role lists them in Redis
        log.info(
            "config_reloaded",
            added=",".join(added) or "-",
            removed=",".join(removed) or "-",
            restarted=",".join(changed) or "-",
            unchanged=len(keep),
        )

    def _open_attempted(self, run: CameraRun) -> bool:
        stats = run.source.stats
        if run.thread is None or not run.thread.is_alive() or run.error:
            return True
        if stats.decoded or stats.sampled or stats.skipped_packets or stats.corrupt:
            return True
        return time.monotonic() - self._started_at > run.camera.open_timeout_s + 1.0

    def status_line(self) -> str:
        """`cameras up 3/4, 12 events/min, 40 events` (systemctl status shows it)."""
        return self._status_line(self.snapshot())

    def _emit(self, events: list[ChangeEvent]) -> None:
        self.writer.write(events)
        self.stage.written(events)


def camera_snapshot(
    run: CameraRun, queues: dict[str, int], events: dict[str, int], last: dict[str, str]
) -> CameraSnapshot:
    cid, stats = run.camera.id, run.source.stats
    return CameraSnapshot(
        id=cid,
        state=run.state(),
        decode_mode=stats.mode,
        frames_decoded=stats.decoded,
        frames_sampled=stats.sampled,
        frames_corrupt=stats.corrupt,
        packets_skipped=stats.skipped_packets,
        gate_fires=run.gate.fires,
        candidates=run.candidates,
        queue=queues.get(cid, 0),
        coalesced=run.coalesced,
        dropped=run.dropped,
        events=events.get(cid, 0),
        last_event=last.get(cid),
        media_s=stats.media_s,
        length_s=stats.length_s,
        error=run.error,
    )
