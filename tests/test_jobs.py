"""The daemon's periodic jobs (monitor/daemon/jobs.py, apscheduler): no overlap of a job with itself,
the stats record in the log and in Redis (never as an event), capture retention and spool
maintenance inside a running daemon."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import structlog
from redis_server import RedisServer
from support import make_event, need_video, read_events

from monitor.config import load_settings
from monitor.daemon.jobs import Jobs, SpoolJob
from monitor.daemon.service import Monitor
from monitor.sinks.spool import Spool


def test_a_job_still_running_is_not_started_again() -> None:
    jobs = Jobs()
    lock = threading.Lock()
    running = 0
    most = 0
    slow_runs = 0
    fast_runs = 0

    def slow() -> None:  # takes 5 intervals
        nonlocal running, most, slow_runs
        with lock:
            running += 1
            most = max(most, running)
            slow_runs += 1
        time.sleep(0.5)
        with lock:
            running -= 1

    def fast() -> None:
        nonlocal fast_runs
        fast_runs += 1

    jobs.add("slow", slow, 0.1)
    jobs.add("fast", fast, 0.1)
    jobs.start()
    try:
        time.sleep(1.75)
    finally:
        jobs.shutdown()
    assert most == 1  # never two runs of the slow job at once
    assert 2 <= slow_runs <= 4, slow_runs  # ~1.65 s / 0.5 s, not ~16 runs
    assert jobs.skipped.get("slow", 0) >= 5, jobs.skipped  # the due runs it skipped were counted
    assert "fast" not in jobs.skipped and fast_runs >= 8, (jobs.skipped, fast_runs)  # not held up by the slow one
    assert not jobs.scheduler.running


def test_spool_job_removes_empty_segments_and_reports_depth(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=4096)
    try:
        (tmp_path / "spool" / "seg-000000000000000.jsonl").touch()  # left by a crash before writing
        spool.append([(make_event(seq=n), []) for n in range(1, 6)])
        newest = sorted((tmp_path / "spool").glob("seg-*.jsonl"))[-1]
        job = SpoolJob(spool)
        with structlog.testing.capture_logs() as logs:
            job()
        assert [p.name for p in sorted((tmp_path / "spool").glob("seg-*.jsonl"))] == [newest.name]
        assert job.last["depth"] == 5 and job.last["removed_empty"] == 1
        assert job.last["disk_bytes"] == newest.stat().st_size == job.last["pending_bytes"]
        assert [e["event"] for e in logs] == ["spool_status"]
        # nearly full (> 80 % of spool_max_bytes): a warning
        spool.append([(make_event(seq=n), []) for n in range(6, 9)])
        with structlog.testing.capture_logs() as logs:
            job()
        assert job.last["fill"] >= 0.8, job.last
        assert [(e["event"], e["log_level"]) for e in logs] == [("spool_nearly_full", "warning")]
    finally:
        spool.close()


def test_daemon_jobs_stats_in_redis_retention_and_spool(tmp_path: Path) -> None:
    """A running daemon with Redis and captures: stats records reach `<prefix>:stats` (per camera
    frames, events, queue, state) and the log, never `<prefix>:events` or changes.jsonl, and take
    no seq; retention removes old captures while the daemon writes new ones."""
    redis = RedisServer(tmp_path / "redis").start()
    logs, caps = tmp_path / "logs", tmp_path / "captures"
    old = caps / "cars" / "2026-01-01" / "cars-0000000000000000"
    old.mkdir(parents=True)
    (old / "event.json").write_text("{}")
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    settings = load_settings(
        None,
        cameras=[{"id": "cars", "source": str(need_video("car-detection.mp4")), "sample_fps": 2, "realtime": True}],
        log={"dir": str(logs), "reorder_window_s": 0},
        redis={"url": redis.url, "prefix": "mon"},
        captures={"enabled": True, "dir": str(caps)},
        jobs={"stats_interval_s": 0.5, "retention_interval_s": 0.3, "spool_interval_s": 0.3},
        http={"bind": None},
    )
    monitor = Monitor(settings)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(monitor.run()), daemon=True)
    client = redis.client()
    try:
        with structlog.testing.capture_logs() as diag:
            thread.start()
            deadline = time.monotonic() + 30
            while not read_events(logs) or client.xlen("mon:stats") < 4:
                assert time.monotonic() < deadline, (read_events(logs), client.xlen("mon:stats"))
                time.sleep(0.1)
            monitor.stop()
            thread.join(30)
        assert not thread.is_alive() and result and not result[0].errors
        records = [(f["t"], json.loads(f["json"])) for _id, f in client.xrange("mon:stats")]
        events = read_events(logs)
        redis_events = [f for _id, f in client.xrange("mon:events")]
    finally:
        redis.kill()

    # stats: well-formed, counting up, the last one (written at shutdown) with the run's totals
    assert len(records) >= 5
    for t, rec in records:
        assert rec["t"] == t and rec["cameras_total"] == 1 and set(rec["cameras"]) == {"cars"}
    sampled = [rec["cameras"]["cars"]["frames_sampled"] for _, rec in records]
    assert sampled == sorted(sampled) and sampled[0] < sampled[-1]
    assert records[1][1]["cameras"]["cars"]["state"] == "up"
    last = records[-1][1]
    assert last["events_written"] == len(events) and last["cameras"]["cars"]["events"] == len(events)
    assert last["cameras"]["cars"]["frames_sampled"] == result[0].cameras["cars"].sampled
    assert last["cameras"]["cars"]["frames_read"] == result[0].cameras["cars"].decoded > 0
    assert last["captures_saved"] == len(events) and last["queue_depth"] == 0
    # ... in the diagnostic log too, one line per record
    assert len([e for e in diag if e["event"] == "stats"]) == len(records)
    # never an event: changes.jsonl and <prefix>:events have the change events only, seq 1..n
    assert events and all(e["kind"] == "change" for e in events)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [(f["kind"], int(f["seq"])) for f in redis_events] == [("change", e["seq"]) for e in events]
    # retention ran: the 40-day-old capture went, the run's own are all there
    assert not old.exists() and not (caps / "cars" / "2026-01-01").exists()
    assert len(list(caps.glob("cars/*/*"))) == len(events)
    assert any(e["event"] == "captures_pruned" and e["deleted_by_age"] == 1 for e in diag)
    # spool maintenance ran and saw the spool
    assert any(e["event"] == "spool_status" for e in diag)
