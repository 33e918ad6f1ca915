"""The data path, wired: per-camera reader+gate threads -> describer -> order -> sinks."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import structlog

from monitor.camera_health import CameraHealth, FirstOpen, HealthNotice, StartTally, outage_reason
from monitor.config import CameraConfig, MonitorSettings
from monitor.describe import Describer, build_describer
from monitor.errors import MonitorError, SourceError, mask_secrets
from monitor.gate import ChangeGate
from monitor.http_health import HealthServer, Metrics
from monitor.notify import BeatingDescriber, CameraProbe, Heartbeats, Notifier, Watchdog
from monitor.order import EventOrderer
from monitor.queues import CameraQueues
from monitor.records import ChangeCandidate, ChangeEvent, RegionOut, ScoresOut, iso_utc, make_event_id
from monitor.sinks import LogFileSink, last_logged_seqs
from monitor.sources import Backoff, SourceStats, VideoSource

log = structlog.get_logger("monitor.daemon")

_DONE = object()  # a camera thread's end marker
DRAIN_S = 20.0  # after stop(): at most this long to describe and write what is already queued


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
    ):
        self.settings = settings
        self._realtime = realtime
        # SIGHUP: re-reads the config (raises ConfigError when invalid); None = nothing to reload.
        self._reload = reload
        # systemd integration (monitor/notify.py): READY/STATUS/STOPPING/RELOADING and a
        # watchdog that pings only while the main loop, every camera reader and the describer
        # are alive. A no-op outside systemd (no NOTIFY_SOCKET).
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.heartbeats = Heartbeats()
        self.describer = BeatingDescriber(
            describer or build_describer(settings.describer.kind, settings.describer.model), self.heartbeats
        )
        self.stop_event = threading.Event()
        self._stop_at: float | None = None  # monotonic time of the first stop()
        self._reload_requested = False
        self._ready_sent = False
        self._started_at = 0.0
        self._rate: list[tuple[float, int]] = []  # (monotonic, events written) for events/min
        self._rate_lock = threading.Lock()
        self.last_event: dict[str, str] = {}  # camera -> t_after of its last event (/healthz)
        self.metrics = Metrics(self)
        self.http = HealthServer(self, settings.http.bind) if settings.http.bind else None
        self.sink = LogFileSink(settings.log, echo=echo)
        self.orderer = EventOrderer(settings.log.reorder_window_s)
        self.redis = None
        if settings.redis.url:
            from monitor.alerts import AlertRules
            from monitor.redis_sink import RedisSink

            self.redis = RedisSink.from_settings(settings, AlertRules(settings.alerts, settings.cameras))
        # One bounded queue per camera: a stalled describer never holds a reader back; the
        # oldest waiting changes of a camera are coalesced instead (and counted).
        self._candidates = CameraQueues(settings.describer.queue_per_camera)
        self.cameras = [self._make_run(cam, settings) for cam in settings.cameras]
        self._retired: list[CameraRun] = []  # cameras removed or replaced by a reload
        self._live = 0  # reader threads whose end marker has not been taken yet

    def _make_run(self, cam: CameraConfig, settings: MonitorSettings) -> CameraRun:
        stop = threading.Event()
        return CameraRun(
            cam,
            VideoSource(cam, realtime=self._realtime, stop=stop),
            ChangeGate(cam.id, settings.gate_for(cam), cam.sample_fps, cam.masks),
            stop=stop,
        )

    def _start_reader(self, run: CameraRun) -> None:
        run.thread = threading.Thread(
            target=self._read_camera, args=(run,), name=f"camera-{run.camera.id}", daemon=True
        )
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
        self._continue_seqs()
        self._started_at = time.monotonic()
        self.heartbeats.beat("main")
        for run in self.cameras:
            self._start_reader(run)
        watchdog = Watchdog(self.notifier, self.heartbeats, status=self.status_line)
        watchdog.start()
        if self.http is not None:
            self.http.start()
        try:
            while self._live:
                self.heartbeats.beat("main")
                if self._stop_at is not None and time.monotonic() - self._stop_at > DRAIN_S:
                    log.warning("drain_timeout", cameras_still_reading=self._live, queued=self._candidates.qsize())
                    break
                batch = self._next_batch()
                self._live -= sum(1 for item in batch if item is _DONE)
                cands = [c for c in batch if c is not _DONE]
                if cands:
                    self._describe(cands)
                self._emit(self.orderer.pop_ready())
                self._lifecycle()
        finally:
            self.stop_event.set()
            for run in self.cameras:
                run.stop.set()
            self.heartbeats.remove("main")  # shutdown is bounded by its own timeouts
            if self._stop_at is None:  # a file run that ended by itself
                self.notifier.stopping("stopping: sources ended")
            try:
                self._emit(self.orderer.flush())
            finally:
                self.sink.close()
                if self.redis is not None:
                    self.redis.close()
                watchdog.stop()
                if self.http is not None:
                    self.http.stop()
        result = RunResult(events=self.sink.written)
        for run in [*self._retired, *self.cameras]:  # a camera's current run wins over a replaced one
            cid = run.camera.id
            result.cameras[cid] = run.source.stats
            result.coalesced[cid] = result.coalesced.get(cid, 0) + run.coalesced
            result.dropped[cid] = result.dropped.get(cid, 0) + run.dropped
            if run.error:
                result.errors[cid] = run.error
        return result

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
            echo, written = self.sink.echo, self.sink.written
            self.sink = LogFileSink(self.settings.log, echo=echo)  # closes the old handlers
            self.sink.written = written
            log.info("log_files_reopened", log_dir=str(self.settings.log.dir))
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
        `log`, `redis` and `describer` changes need a restart (a warning says so); the Redis
        sink's alert rules are the ones it was started with."""
        try:
            new = self._reload()
        except MonitorError as exc:  # ConfigError: one line per problem, joined
            problems = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            log.error("config_reload_refused", errors=mask_secrets(problems), keeping="the running config")
            return
        except Exception as exc:  # noqa: BLE001 - a reload must never take the daemon down
            log.error("config_reload_refused", errors=f"{type(exc).__name__}: {mask_secrets(str(exc))}")
            return
        old = self.settings
        fixed = [k for k in ("log", "redis", "describer") if getattr(new, k) != getattr(old, k)]
        if fixed:
            log.warning("config_reload_partial", needs_restart=",".join(fixed))
        self.settings = new.model_copy(update={k: getattr(old, k) for k in ("log", "redis", "describer")})
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

    def oldest_waiting(self) -> float | None:
        """When the oldest change still waiting for the describer was detected (UNIX time)."""
        return self._candidates.oldest_detected()

    def status_line(self) -> str:
        """`cameras up 3/4, 12 events/min` (systemctl status shows it)."""
        now = time.monotonic()
        cameras = self.cameras
        up = sum(1 for r in cameras if r.thread is not None and r.thread.is_alive() and not r.error)
        written = self.sink.written
        with self._rate_lock:
            self._rate = [(t, n) for t, n in self._rate if now - t <= 60.0] + [(now, written)]
            t0, n0 = self._rate[0]
        per_min = (written - n0) * 60.0 / (now - t0) if now - t0 >= 1.0 else 0.0
        state = "stopping, " if self._stop_at is not None else ""
        return f"{state}cameras up {up}/{len(cameras)}, {per_min:.0f} events/min, {written} events"

    def _emit(self, events: list[ChangeEvent]) -> None:
        if not events:
            return
        if self.redis is not None:
            self.redis.write_many(events)  # into the durable spool first, then the log files
        for event in events:
            self.sink.write(event)
            self.last_event[event.camera] = event.t_after

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
        """Up to batch_size items, taken round-robin across the cameras' queues."""
        return self._candidates.take(self.settings.describer.batch_size, timeout=0.2)

    def _read_camera(self, run: CameraRun) -> None:
        tally = self._start_tally()
        health: CameraHealth | None = None
        first_open = FirstOpen(tally)
        try:
            if run.source.network:
                health = CameraHealth(run.camera, lambda notice: self._candidates.put(run, notice))
                self._read_network_camera(run, health, tally, first_open)
            else:
                try:
                    run.source.open()
                except SourceError:
                    first_open(False)
                    raise
                first_open(True)
                for frame in run.source.frames():
                    self._gate(run, frame)
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
            self._candidates.put(run, _DONE)

    def _gate(self, run: CameraRun, frame) -> None:
        cand = run.gate.detect(frame)
        if cand is not None:
            run.candidates += 1
            self._candidates.put(run, cand)

    def _start_tally(self) -> StartTally:
        # Made on first use by whichever camera thread comes first (dict.setdefault is atomic).
        return self.__dict__.setdefault("_tally", StartTally(len(self.cameras)))

    def _read_network_camera(
        self, run: CameraRun, health: CameraHealth, tally: StartTally, first_open: FirstOpen
    ) -> None:
        """Read a network camera until stopped, reconnecting whenever it fails or ends.

        Each drop (read error, read timeout, end of stream) or failed open is followed by a
        `Backoff` wait (exponential, jittered, capped at `reconnect_max_s`, cut short when the
        server starts accepting connections again). `CameraHealth` writes one camera_offline
        event when the camera has been down `offline_after_s`, and one camera_online event when
        its first frame is back. The gate is kept across an outage: what changed while the
        camera was away is reported as one change once the scene settles after it returns
        (`ChangeGate.resume`; a new gate only when the frame size changed). A camera whose very first open fails is
        retried according to `retry_at_start` (see `_retry_at_start`)."""
        src, cam, stop = run.source, run.camera, run.stop
        backoff = Backoff(cam.source, cam.reconnect_max_s)
        shape: tuple[int, ...] | None = None
        while not stop.is_set():
            try:
                src.open()
            except SourceError as exc:
                if not first_open.done:
                    first_open(False)
                    if not self._retry_at_start(cam, tally):
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
                                run.gate = ChangeGate(cam.id, self.settings.gate_for(cam), cam.sample_fps, cam.masks)
                            elif shape is not None:
                                run.gate.resume()
                            shape = now_shape
                        self._gate(run, frame)
                except SourceError as exc:
                    reason = outage_reason(exc, cam.id)
                if stop.is_set():
                    break
                run.online = False
                health.down(src.last_wall or time.time(), reason, src.last_media or 0.0)
                log.warning("camera_dropped", camera=cam.id, reason=reason)
            if not backoff.wait(stop):
                break

    def _retry_at_start(self, cam: CameraConfig, tally: StartTally) -> bool:
        """A network camera that cannot be opened at start: `retry_at_start: true` keeps trying,
        `false` fails it; null (the default) keeps trying as long as some camera of this run
        opened, and fails when none did, so `monitor run --source rtsp://...` with a wrong URL
        still exits 1 at once with one line, while one dead camera of many never stops the rest."""
        if cam.retry_at_start is not None:
            return cam.retry_at_start
        return tally.any_opened(self.stop_event)

    def _describe(self, cands: list) -> None:
        real = [c for c in cands if not isinstance(c, HealthNotice)]
        with self.metrics.describe_seconds.time():
            descriptions = iter(self.describer.describe(real) if real else [])
        for item in cands:  # in arrival order: a camera's seq follows what happened to it
            if isinstance(item, HealthNotice):
                self.orderer.push(self._health_event(item))
            else:
                desc = next(descriptions)
                self.orderer.push(self._event(item, desc.text, desc.labels))

    def _health_event(self, notice: HealthNotice) -> ChangeEvent:
        since = iso_utc(notice.down_since)
        outage = None if notice.outage_s is None else round(notice.outage_s, 1)
        if notice.kind == "camera_offline":
            text = f"camera offline: no frames since {since[11:19]}"
            if notice.reason:
                text += f" ({notice.reason})"
        else:
            text = f"camera back online after {outage:.0f} s"
        digest = hashlib.sha1(f"{notice.camera_id}|{notice.kind}|{notice.down_since:.3f}".encode()).hexdigest()[:16]
        media = round(notice.media_time, 3)
        return ChangeEvent(
            event_id=f"{notice.camera_id}-{digest}",
            camera=notice.camera_id,
            seq=self.orderer.next_seq(notice.camera_id),
            kind=notice.kind,
            t_before=since,
            t_after=iso_utc(notice.at),
            media_t_before=media,
            media_t_after=media,
            media_t_onset=media,
            text=mask_secrets(text),
            describer="monitor",
            latency_ms=round((time.time() - notice.at) * 1000.0, 1),
            outage_s=outage,
        )

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
