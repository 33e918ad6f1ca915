"""`monitor bench service`: the real daemon (`monitor run --config`, a subprocess) on N RTSP
cameras of looped real footage at 1 fps, with the embedded describer, Redis and the jobs on.

Everything runs on this machine: GStreamer's RTSP server (`monitor/bench/rtsp_server.py`, one
process, one mount per camera, each client its own looping stream), a throwaway redis-server,
the daemon. After a warm-up it measures, over the rest of the run:

* the daemon's CPU (utime+stime from /proc/PID/stat; % of one core) and RSS (VmRSS, sampled
  every second), in total and per camera; RSS growth (median of the last 30 s against the
  median of the first 30 s after the warm-up: RSS swings with what the cameras see); native
  threads (/proc) and Python threads (the daemon's own stats records) after the warm-up and at
  the end (a soak: `--minutes 30`); the RTSP server's and Redis' CPU, for context;
* end-to-end latency of each change event: from its after frame (`t_after`, the wall time the
  frame was read; for a settled change the frame on which the gate decided) to its line in
  changes.jsonl (seen by polling the file every 10 ms) and to its entry in `<prefix>:events`
  (the stream entry id: Redis' clock at the XADD). "From the change" adds `gate.settle_s`: the
  scene must have been still that long before the after frame, so the change itself was
  complete `settle_s` earlier. The goal, p95 <= settle + 1 s, is checked on that.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import redis
import yaml

from monitor.bench.gate import footage_dir
from monitor.bench.local_redis import LocalRedisServer, free_port
from monitor.bench.output import report
from monitor.bench.rtsp_server import RtspServer
from monitor.config import GateConfig
from monitor.errors import MonitorError
from monitor.records import unix_time

DEFAULT_VIDEO = "one-by-one-person-detection.mp4"  # H.264 768x432, 10 fps, 1 s GOP
GOAL_CAMERAS, GOAL_EXTRA_S, GOAL_RSS_MB = 16, 1.0, 300.0
RSS_WINDOW_S = 30.0  # RSS at the start and at the end of the measurement: the median over this long
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def memory(pid: int) -> tuple[float, int]:
    """(VmRSS in MB, threads) of a process."""
    rss, threads = 0.0, 0
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class _LogTail(threading.Thread):
    """Arrival time of each changes.jsonl line (polled every 10 ms)."""

    def __init__(self, path: Path):
        super().__init__(name="bench-log-tail", daemon=True)
        self.path = path
        self.seen: list[tuple[float, dict]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.path.exists() and not self.stop.wait(0.05):
            pass
        if self.stop.is_set():
            return
        buf = b""
        with self.path.open("rb") as fh:
            while not self.stop.is_set():
                chunk = fh.read()
                if not chunk:
                    self.stop.wait(0.01)
                    continue
                now = time.time()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                self.seen.extend((now, json.loads(line)) for line in lines if line.strip())


class StreamTail(threading.Thread):
    """Each entry of the given streams, with Redis' own clock at its XADD (the entry id, ms):
    `entries[key]` is a list of (time, fields)."""

    def __init__(self, port: int, keys: list[str]):
        super().__init__(name="bench-redis-tail", daemon=True)
        self.client = redis.Redis(port=port, decode_responses=True)
        self.keys = dict.fromkeys(keys, "0-0")
        self.entries: dict[str, list[tuple[float, dict]]] = {k: [] for k in keys}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                got = self.client.xread(self.keys, block=200, count=1000)
            except redis.RedisError:
                self.stop.wait(0.2)
                continue
            for key, entries in got or []:
                for entry_id, fields in entries:
                    self.keys[key] = entry_id
                    self.entries[key].append((int(entry_id.split("-")[0]) / 1000.0, fields))


def spawn_monitor(args: list[str], log: Path) -> subprocess.Popen:
    """`python -m monitor ARGS` as its own process, diagnostics to `log`, no `MONITOR_...` of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    with open(log, "wb") as diag:
        return subprocess.Popen(
            [sys.executable, "-m", "monitor", *args], stdout=subprocess.DEVNULL, stderr=diag, env=env
        )


def terminate(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _write_config(path: Path, urls: list[str], work: Path, redis_url: str, http_port: int, window: float) -> None:
    doc = {
        "cameras": [
            {"id": f"cam{i:02d}", "source": url, "sample_fps": 1.0, "open_timeout_s": 10, "read_timeout_s": 10}
            for i, url in enumerate(urls)
        ],
        "log": {"dir": str(work / "logs"), "reorder_window_s": window},
        "redis": {"url": redis_url, "prefix": "bench"},
        "http": {"bind": f"127.0.0.1:{http_port}"},
        # jobs run before the warm-up ends, so their worker threads exist when threads are counted
        "jobs": {"stats_interval_s": 10.0, "spool_interval_s": 10.0},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def rtsp_bench_inputs(name: str, seconds: float, warmup: float, video: Path | None) -> Path:
    """The footage an RTSP benchmark serves, after checking its arguments and the RTSP server."""
    if seconds <= warmup:
        raise MonitorError(f"bench {name}: --seconds ({seconds:g}) must be longer than --warmup ({warmup:g})")
    video = video or footage_dir() / DEFAULT_VIDEO
    if not video.is_file():
        raise MonitorError(f"bench {name}: no such video: {video}")
    missing = RtspServer.available()
    if missing:
        raise MonitorError(f"bench {name}: {missing}")
    return video


def run_service_bench(
    cameras: int = GOAL_CAMERAS,
    seconds: float = 120.0,
    warmup: float = 30.0,
    video: Path | None = None,
    loop_seconds: float | None = None,
    reorder_window: float = 0.5,
    sample_every: float = 1.0,
) -> dict[str, Any]:
    """Run the service for `seconds` (warm-up included) and return the measurements."""
    video = rtsp_bench_inputs("service", seconds, warmup, video)
    settle = GateConfig().settle_s
    with tempfile.TemporaryDirectory(prefix="monitor-bench-service-") as tmp:
        work = Path(tmp)
        server = RtspServer(video, free_port(), [f"/cam{i:02d}" for i in range(cameras)], True, loop_seconds)
        rds = LocalRedisServer(work)
        server.start()
        rds.start()
        cfg, http_port = work / "service.yaml", free_port()
        _write_config(cfg, server.urls, work, rds.url, http_port, reorder_window)
        log_tail = _LogTail(work / "logs" / "changes.jsonl")
        redis_tail = StreamTail(rds.port, ["bench:events", "bench:stats"])
        log_tail.start()
        redis_tail.start()
        proc = spawn_monitor(["run", "--config", str(cfg), "--quiet"], work / "daemon.log")
        try:
            t0 = time.time()
            samples: list[tuple[float, float, int]] = []  # (t, rss MB, threads)
            warm: dict[str, float] | None = None
            while (now := time.time()) < t0 + seconds:
                if proc.poll() is not None:
                    tail = (work / "daemon.log").read_text(errors="replace").strip().splitlines()[-3:]
                    raise MonitorError(f"bench service: the daemon exited ({proc.returncode}): {' | '.join(tail)}")
                if warm is None and now >= t0 + warmup:
                    warm = {"t": now, "cpu": cpu_seconds(proc.pid), "server": cpu_seconds(server.proc.pid),
                            "redis": cpu_seconds(rds.proc.pid)}  # fmt: skip
                if warm is not None:
                    rss, threads = memory(proc.pid)
                    samples.append((now, rss, threads))
                time.sleep(min(sample_every, max(0.05, t0 + seconds - time.time())))
            end = {"t": time.time(), "cpu": cpu_seconds(proc.pid), "server": cpu_seconds(server.proc.pid),
                   "redis": cpu_seconds(rds.proc.pid)}  # fmt: skip
            rss_end, threads_end = memory(proc.pid)
            health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=5).read())
            time.sleep(reorder_window + 0.5)  # events decided before the end reach the log
        finally:
            terminate(proc)
            log_tail.stop.set()
            redis_tail.stop.set()
            server.stop()
            rds.stop()
        log_tail.join(5)
        redis_tail.join(5)
    assert warm is not None
    return _report(cameras, video, warmup, settle, reorder_window, loop_seconds, warm, end, samples,
                   (rss_end, threads_end), health, log_tail.seen, redis_tail)  # fmt: skip


def _latencies(seen: list[tuple[float, dict]], t_from: float, t_to: float) -> list[float]:
    out = []
    for arrived, event in seen:
        if event.get("kind") != "change":
            continue
        t_after = unix_time(event["t_after"])
        if t_from <= t_after <= t_to:
            out.append(arrived - t_after)
    return out


def latency_stats(values: list[float], extra: float = 0.0) -> dict[str, Any]:
    def r(v):
        return None if v is None else round(v + extra, 3)

    return {"n": len(values), "p50": r(percentile(values, 50)), "p95": r(percentile(values, 95)),
            "max": r(max(values, default=None))}  # fmt: skip


def _report(cameras, video, warmup, settle, window, loop_seconds, warm, end, samples, last, health, logged, redis_tail):
    span = end["t"] - warm["t"]
    # RSS rises and falls with what the cameras see (frames held by changes under way, the
    # describer's buffers): compare the medians of a window at each end, not two instants.
    rss_window = min(RSS_WINDOW_S, span / 3)
    rss_warm = percentile([r for t, r, _ in samples if t <= warm["t"] + rss_window], 50)
    rss_end = percentile([r for t, r, _ in samples if t >= end["t"] - rss_window], 50)
    _rss_now, threads_end = last
    daemon_cpu = 100.0 * (end["cpu"] - warm["cpu"]) / span
    log_lat = _latencies(logged, warm["t"], end["t"])
    redis_lat = _latencies(redis_tail.entries["bench:events"], warm["t"], end["t"])
    # Python threads, from the daemon's own stats records (every 10 s) after the warm-up
    stats = [(t, json.loads(f["json"])) for t, f in redis_tail.entries["bench:stats"]]
    py_threads = [rec["threads"] for t, rec in stats if warm["t"] <= t <= end["t"]]
    events = [e for t, e in logged if e.get("kind") == "change" and warm["t"] <= unix_time(e["t_after"]) <= end["t"]]
    third = span / 3
    first = sum(1 for e in events if unix_time(e["t_after"]) < warm["t"] + third)
    final = sum(1 for e in events if unix_time(e["t_after"]) >= end["t"] - third)
    from_change = latency_stats(log_lat, settle)
    up = sum(1 for c in health["cameras"].values() if c["state"] == "up")
    result = {
        "benchmark": "service",
        "cameras": cameras,
        "cameras_up": up,
        "sample_fps": 1.0,
        "video": Path(video).name,
        "loop_seconds": loop_seconds,
        "warmup_s": warmup,
        "measured_s": round(span, 1),
        "settle_s": settle,
        "reorder_window_s": window,
        "events": len(events),
        "events_per_min": round(len(events) * 60.0 / span, 1),
        "events_first_third": first,
        "events_last_third": final,
        "non_change_events": sum(1 for _, e in logged if e.get("kind") != "change"),
        "daemon": {
            "cpu_percent": round(daemon_cpu, 1),
            "cpu_percent_per_camera": round(daemon_cpu / cameras, 2),
            "rss_mb_warm": round(rss_warm, 1),
            "rss_mb_end": round(rss_end, 1),
            "rss_mb_max": round(max(s[1] for s in samples), 1),
            "rss_mb_per_camera": round(rss_end / cameras, 1),
            "rss_growth_percent": round(100.0 * (rss_end - rss_warm) / rss_warm, 2),
            "threads_warm": samples[0][2],
            "threads_end": threads_end,
            "threads_max": max(s[2] for s in samples),
            "python_threads": py_threads,
            # (seconds after the warm-up, RSS MB), at most ~60 points
            "rss_series": [(round(t - warm["t"], 1), round(r, 1)) for t, r, _ in samples[:: 1 + len(samples) // 60]],
        },
        "rtsp_server_cpu_percent": round(100.0 * (end["server"] - warm["server"]) / span, 1),
        "redis_cpu_percent": round(100.0 * (end["redis"] - warm["redis"]) / span, 1),
        "latency_s": {
            "after_frame_to_log": latency_stats(log_lat),
            "after_frame_to_redis": latency_stats(redis_lat),
            "change_to_log": from_change,
            "change_to_redis": latency_stats(redis_lat, settle),
        },
    }
    p95 = from_change["p95"]
    result["goals"] = {
        "cameras": {"goal": f">= {GOAL_CAMERAS}", "value": up, "met": up >= GOAL_CAMERAS},
        "p95_change_to_log_s": {"goal": f"<= settle + {GOAL_EXTRA_S:g} = {settle + GOAL_EXTRA_S:g}", "value": p95,
                                "met": p95 is not None and p95 <= settle + GOAL_EXTRA_S},
        "rss_mb": {"goal": f"<= {GOAL_RSS_MB:g}", "value": round(rss_end, 1), "met": rss_end <= GOAL_RSS_MB},
    }  # fmt: skip
    return result


def latency_row(name: str, s: dict[str, Any]) -> tuple[str, str]:
    return f"latency {name}", f"p50 {s['p50']} s, p95 {s['p95']} s, max {s['max']} s (n={s['n']})"


def print_rows(rows: list[tuple[str, str]], goals: dict[str, dict[str, Any]]) -> None:
    """Name / value rows aligned, then one PASS / FAIL line per goal."""
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for name, g in goals.items():
        print(f"goal {name}: {g['value']} ({g['goal']}) {'PASS' if g['met'] else 'FAIL'}")


def print_table(res: dict[str, Any]) -> None:
    d, lat = res["daemon"], res["latency_s"]
    rows = [
        ("cameras (up at the end)", f"{res['cameras']} ({res['cameras_up']} up), RTSP, {res['sample_fps']:g} fps"),
        ("footage", f"{res['video']}, looped" + (f" (first {res['loop_seconds']:g} s)" if res["loop_seconds"] else "")),
        ("measured", f"{res['measured_s']:g} s after a {res['warmup_s']:g} s warm-up"),
        ("change events", f"{res['events']} ({res['events_per_min']:g}/min; first/last third "
                          f"{res['events_first_third']}/{res['events_last_third']})"),
        ("daemon CPU", f"{d['cpu_percent']:g} % of one core, {d['cpu_percent_per_camera']:g} % per camera"),
        ("daemon RSS", f"{d['rss_mb_end']:g} MB ({d['rss_mb_per_camera']:g} MB per camera), max {d['rss_mb_max']:g}"),
        ("RSS growth", f"{d['rss_growth_percent']:+g} % ({d['rss_mb_warm']:g} -> {d['rss_mb_end']:g} MB)"),
        ("threads (warm / end / max)", f"{d['threads_warm']} / {d['threads_end']} / {d['threads_max']}; "
                                       f"Python threads {sorted(set(d['python_threads']))}"),
        ("RTSP server / Redis CPU", f"{res['rtsp_server_cpu_percent']:g} % / {res['redis_cpu_percent']:g} %"),
    ]  # fmt: skip
    for name, key in (("after frame -> log", "after_frame_to_log"), ("after frame -> Redis", "after_frame_to_redis"),
                      ("change -> log", "change_to_log"), ("change -> Redis", "change_to_redis")):  # fmt: skip
        rows.append(latency_row(name, lat[key]))
    print_rows(rows, res["goals"])


def bench_service(args: argparse.Namespace) -> int:
    seconds = args.minutes * 60.0 if args.minutes else args.seconds
    res = run_service_bench(
        cameras=args.cameras,
        seconds=seconds,
        warmup=args.warmup,
        video=args.video,
        loop_seconds=args.loop_seconds,
        reorder_window=args.reorder_window,
    )
    report(args, res, lambda: print_table(res))
    return 0
