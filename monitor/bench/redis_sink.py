"""`monitor bench redis`: events/s through the Redis sink with and without the write-ahead spool,
and how fast a spool is replayed after an outage. Starts its own redis-server (the binary of the
Debian package `redis-server`) on a free loopback port, without persistence."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from monitor.bench.local_redis import LocalRedisServer
from monitor.bench.output import report
from monitor.config import RedisConfig
from monitor.errors import MonitorError
from monitor.records import ChangeEvent, RegionOut, ScoresOut, iso_utc
from monitor.sinks.redis_streams import RedisSink
from monitor.sinks.spool import Spool

_T0 = 1_790_000_000.0


def synthetic_event(camera: str, seq: int) -> ChangeEvent:
    """A realistic-sized change event (one region, scores), for tests and the benchmark."""
    return ChangeEvent(
        event_id=f"{camera}-{seq:016x}",
        camera=camera,
        seq=seq,
        t_before=iso_utc(_T0 + seq * 10.0),
        t_after=iso_utc(_T0 + seq * 10.0 + 4.0),
        media_t_before=seq * 10.0,
        media_t_after=seq * 10.0 + 4.0,
        media_t_onset=seq * 10.0 + 1.5,
        text=f"a person arrived in the centre (#{seq})",
        regions=[RegionOut(x=0.4875, y=0.0056, w=0.1906, h=0.9278, change="appeared", label="person")],
        scores=ScoresOut(ssim=0.8922, changed_fraction=0.092),
        describer="embedded",
        latency_ms=3.5,
    )


def _cfg(url: str) -> RedisConfig:
    return RedisConfig(url=url, backoff_max_s=0.2, connect_timeout_s=1.0)


def _run_direct(url: str, n: int) -> float:
    sink = RedisSink(_cfg(url), spool=None)
    start = time.perf_counter()
    for seq in range(1, n + 1):
        sink.write(synthetic_event("bench", seq))
    elapsed = time.perf_counter() - start
    sink.close()
    return elapsed


def _run_spooled(url: str, n: int, spool_dir: Path, per_call: int) -> float:
    sink = RedisSink(_cfg(url), Spool(spool_dir, 10**9))
    sink.start()
    events = [synthetic_event("bench", seq) for seq in range(1, n + 1)]
    start = time.perf_counter()
    for i in range(0, n, per_call):
        sink.write_many(events[i : i + per_call])
    if not sink.spool.wait_empty(120):
        raise MonitorError("bench redis: the spool did not drain")
    elapsed = time.perf_counter() - start
    sink.close()
    return elapsed


def _run_replay(server: LocalRedisServer, n: int, spool_dir: Path) -> tuple[float, float]:
    """Spool n events while Redis is down, start it, time the drain (from the first success)."""
    server.kill()  # an outage: events go to the spool
    sink = RedisSink(_cfg(server.url), Spool(spool_dir, 10**9))
    sink.start()
    t0 = time.perf_counter()
    sink.write_many([synthetic_event("bench", seq) for seq in range(1, n + 1)])
    spool_s = time.perf_counter() - t0
    server.start()
    # the delivery thread is in backoff (<= 0.2 s); measure from its first delivered batch
    while sink.delivered == 0:
        time.sleep(0.001)
    start = time.perf_counter()
    if not sink.spool.wait_empty(120):
        raise MonitorError("bench redis: the spool did not drain")
    elapsed = time.perf_counter() - start
    first_batch = sink.batch_size
    sink.close()
    return spool_s, elapsed * n / max(1, n - first_batch)


def bench_redis(args: argparse.Namespace) -> int:
    n = max(100, int(getattr(args, "events", 5000) or 5000))
    repeat = max(1, int(getattr(args, "repeat", 3) or 3))
    rows = []
    with tempfile.TemporaryDirectory(prefix="monitor-bench-redis-") as tmp:
        server = LocalRedisServer(Path(tmp))
        server.start()
        try:
            cases = [
                ("direct (no spool)", "1 event/call", lambda i: _run_direct(server.url, n)),
                ("spool", "1 event/call", lambda i: _run_spooled(server.url, n, Path(tmp) / f"s1-{i}", 1)),
                ("spool", "100 events/call", lambda i: _run_spooled(server.url, n, Path(tmp) / f"s100-{i}", 100)),
            ]
            for mode, batching, fn in cases:
                best = float("inf")
                for i in range(repeat):
                    server.flush()
                    best = min(best, fn(i))
                rows.append(
                    {
                        "mode": mode,
                        "writes": batching,
                        "events": n,
                        "seconds": round(best, 3),
                        "events_per_s": round(n / best),
                    }
                )
            best_replay, spool_s = float("inf"), 0.0
            for i in range(repeat):
                server.flush()
                s, r = _run_replay(server, n, Path(tmp) / f"replay-{i}")
                if r < best_replay:
                    best_replay, spool_s = r, s
            rows.append(
                {
                    "mode": "replay after outage",
                    "writes": f"{n} spooled while down ({n / spool_s:.0f}/s)",
                    "events": n,
                    "seconds": round(best_replay, 3),
                    "events_per_s": round(n / best_replay),
                }
            )
        finally:
            server.stop()
    cols = [("mode", 20), ("writes", 34), ("events", 7), ("seconds", 8), ("events_per_s", 12)]
    lines = ["  ".join(f"{name:<{w}}" for name, w in cols), "  ".join("-" * w for _, w in cols)]
    lines += ["  ".join(f"{str(row[name]):<{w}}" for name, w in cols) for row in rows]
    report(args, {"benchmark": "redis", "events": n, "repeat": repeat, "rows": rows}, lambda: print("\n".join(lines)))
    return 0
