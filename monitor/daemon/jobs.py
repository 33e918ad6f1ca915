"""Periodic jobs of the daemon, run by apscheduler's BackgroundScheduler: a heartbeat/stats
record, capture retention and Redis spool maintenance. Every job is `max_instances=1` (a job
still running when its next run is due is not started again: the run is skipped and counted)
and `coalesce=True` (runs missed while the process was busy become one).

The stats record is diagnostics, not an event: it goes to the diagnostic log (`stats` line) and,
with Redis, to its own stream `<redis.prefix>:stats` (XADD, MAXLEN ~STATS_MAXLEN, fields `t`
and `json`). It never passes the orderer, so it takes no camera's `seq`, and it is never
written to changes.jsonl or `<prefix>:events`; nor is it spooled: a record that cannot reach
Redis is simply lost (the next one comes an interval later)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from monitor.config import MonitorSettings
from monitor.daemon.snapshot import MonitorSnapshot
from monitor.records import iso_utc
from monitor.sinks.captures import prune_captures
from monitor.sinks.redis_streams import RedisSink
from monitor.sinks.writer import EventWriter

log = structlog.get_logger(__name__)

STATS_MAXLEN = 10_000  # entries kept in <prefix>:stats (a week at one a minute)
SPOOL_WARN_FRACTION = 0.8  # spool maintenance warns when the spool is this full


class Jobs:
    """`add(name, func, interval_s)` before `start()`; `shutdown()` waits for running jobs."""

    def __init__(self, workers: int = 3):
        # apscheduler logs a plain-text warning per skipped run through the standard logging
        # root; the listener below reports them through structlog instead.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=workers)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            timezone="UTC",
        )
        self.scheduler.add_listener(self._on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)
        self.skipped: dict[str, int] = {}  # job id -> runs not started because it was still running
        self.failed: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, func: Callable[[], Any], interval_s: float) -> None:
        self.scheduler.add_job(func, "interval", seconds=interval_s, id=name, name=name)

    def start(self) -> None:
        self.scheduler.start()

    def shutdown(self, wait: bool = True) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)

    def _on_event(self, event) -> None:
        with self._lock:
            if event.code == EVENT_JOB_MAX_INSTANCES:
                n = self.skipped[event.job_id] = self.skipped.get(event.job_id, 0) + 1
                log.warning("job_still_running", job=event.job_id, skipped=n, note="this run is skipped")
            else:
                n = self.failed[event.job_id] = self.failed.get(event.job_id, 0) + 1
                exc = event.exception
                log.error("job_failed", job=event.job_id, error=f"{type(exc).__name__}: {exc}", failures=n)


# -- the daemon's jobs ----------------------------------------------------------------------------
class StatsJob:
    """The heartbeat/stats record: per camera frames read (decoded) and sampled, events
    written, queue depth and state; the totals; from the daemon's snapshot to the log and, with
    Redis, to `<prefix>:stats`."""

    def __init__(self, snapshot: Callable[[], MonitorSnapshot], redis: RedisSink | None):
        self.snapshot = snapshot
        self.redis = redis
        self.written = 0  # records added to Redis
        self._redis_ok = True
        self.last: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        snap = self.snapshot()
        cameras = {
            cam.id: {
                "state": cam.state,
                "frames_read": cam.frames_decoded,
                "frames_sampled": cam.frames_sampled,
                "events": cam.events,
                "queue": cam.queue,
                "coalesced": cam.coalesced,
                "dropped": cam.dropped,
            }
            for cam in snap.cameras
        }
        return {
            "t": iso_utc(time.time()),
            "uptime_s": round(snap.uptime_s, 1),
            "cameras_up": snap.cameras_up,
            "cameras_total": len(snap.cameras),
            "events_written": snap.events_written,
            "queue_depth": snap.queue_depth,
            "redis_spool_depth": snap.redis_spool_depth,
            "undescribed": snap.undescribed,
            "describe_fallbacks": snap.describe_fallbacks,
            "captures_saved": snap.captures_saved,
            "threads": snap.threads,
            "cameras": cameras,
        }

    def __call__(self) -> None:
        rec = self.last = self.record()
        body = json.dumps(rec, separators=(",", ":"))
        per_camera = " ".join(
            f"{cid}:{c['state']}/{c['frames_sampled']}f/{c['events']}e/q{c['queue']}"
            for cid, c in rec["cameras"].items()
        )
        log.info(
            "stats", cameras_up=f"{rec['cameras_up']}/{rec['cameras_total']}", events=rec["events_written"],
            queue=rec["queue_depth"], spool=rec["redis_spool_depth"], captures=rec["captures_saved"],
            uptime_s=rec["uptime_s"], cameras=per_camera,
        )  # fmt: skip
        redis = self.redis
        if redis is None:
            return
        key = f"{redis.cfg.prefix}:stats"
        try:
            redis.client.xadd(key, {"t": rec["t"], "json": body}, maxlen=STATS_MAXLEN, approximate=True)
        except Exception as exc:  # noqa: BLE001 - Redis down: the next record comes an interval later
            if self._redis_ok:
                log.warning("stats_not_in_redis", key=key, error=f"{type(exc).__name__}: {exc}")
            self._redis_ok = False
            return
        self._redis_ok = True
        self.written += 1


class RetentionJob:
    """Capture retention: `captures.max_age_days`, then `captures.max_bytes` (oldest first)."""

    def __init__(self, cfg, lock: threading.Lock | None = None):
        self.cfg = cfg
        self.lock = lock
        self.last = None

    def __call__(self) -> None:
        report = self.last = prune_captures(self.cfg.dir, self.cfg.max_age_days, self.cfg.max_bytes, lock=self.lock)
        if report.deleted_by_age or report.deleted_by_size or report.stale_tmp_removed:
            log.info("captures_pruned", **report.__dict__)


class SpoolJob:
    """Redis spool maintenance: removes empty segment files a crash left behind (never the
    newest, which may be the one being written) and reports the spool's depth; warns when the
    spool is more than SPOOL_WARN_FRACTION of `redis.spool_max_bytes` (events will be dropped)."""

    def __init__(self, spool):
        self.spool = spool
        self.last: dict[str, Any] | None = None

    def __call__(self) -> None:
        spool = self.spool
        segments = sorted(spool.dir.glob("seg-*.jsonl"))
        removed = 0
        for path in segments[:-1]:
            try:
                if path.stat().st_size == 0:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # compacted meanwhile
        disk = 0
        for path in spool.dir.glob("seg-*.jsonl"):
            try:
                disk += path.stat().st_size
            except FileNotFoundError:
                pass
        depth, pending = len(spool), spool.pending_bytes
        full = pending / spool.max_bytes
        self.last = {"depth": depth, "pending_bytes": pending, "disk_bytes": disk, "removed_empty": removed,
                     "dropped": spool.dropped, "fill": round(full, 4)}  # fmt: skip
        if full >= SPOOL_WARN_FRACTION:
            log.warning("spool_nearly_full", **self.last, max_bytes=spool.max_bytes)
        else:
            log.info("spool_status", **self.last)


def daemon_jobs(settings: MonitorSettings, writer: EventWriter, stats: StatsJob) -> Jobs:
    """The jobs of a running daemon, per its settings (`jobs`, `captures`, `redis`)."""
    jobs = Jobs()
    jobs.add("stats", stats, settings.jobs.stats_interval_s)
    if writer.captures is not None:
        retention = RetentionJob(settings.captures, writer.captures.lock)
        jobs.add("capture-retention", retention, settings.jobs.retention_interval_s)
    if writer.spool is not None:
        jobs.add("spool-maintenance", SpoolJob(writer.spool), settings.jobs.spool_interval_s)
    return jobs
