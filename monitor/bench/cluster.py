"""`monitor bench cluster`: described pairs per second with 1 and 2 describe workers, and with a
worker SIGKILLed mid-run, all through a throwaway redis-server on this machine.

Per run: a fresh redis-server; a gate (`monitor run --role gate`) reads C file cameras of the
shared clip at full speed, so its candidates are all in `<prefix>:candidates` (a backlog) before
any worker starts; then N `monitor describe-worker` processes (a tiny random-weight LLaVA on the
CPU, one thread each, ~65 ms per pair) describe them, and the gate writes the events. Described
pairs/s = the backlog, less what was described before the last worker joined the group (its
first read), / the time from then to the last event in `<prefix>:events`. Candidate ->
event latency is from a candidate's XADD to its event's XADD (Redis' clock, the entry ids), so
it includes the wait in the backlog. Every run checks that each candidate became exactly one
event, in seq order per camera. Goal: 2 workers >= 1.7x the pairs/s of 1.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import yaml

from monitor.bench.gate import footage_dir
from monitor.bench.local_redis import LocalRedisServer
from monitor.bench.output import report
from monitor.bench.service import DEFAULT_VIDEO, cpu_seconds, percentile, spawn_monitor, terminate
from monitor.errors import MonitorError

GOAL_SPEEDUP = 1.7


def _ms(entry_id: str) -> float:
    return int(entry_id.split("-")[0]) / 1000.0


def _config(path: Path, work: Path, url: str, cameras: int, video: Path, model: Path, affinity: bool) -> None:
    doc = {
        "cameras": [{"id": f"cam{i:02d}", "source": str(video)} for i in range(cameras)],
        "log": {"dir": str(work / "logs"), "reorder_window_s": 0.0},
        "redis": {"url": url, "prefix": "bench"},
        "http": {"bind": None},
        "describer": {"kind": "vlm", "model": str(model), "device": "cpu", "batch_size": 8},
        "cluster": {
            "node": "bench-gate",
            "describe_timeout_s": 3600,
            "max_undescribed": 100_000,
            "claim_idle_ms": 2000,
            "affinity": affinity,
        },  # fmt: skip
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _backlog(client, key: str, timeout: float = 300.0) -> dict[str, float]:
    """Wait until the gate has put every change in the stream (its length still for 2 s);
    returns change_id -> XADD time of each candidate."""
    last, still_since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = client.xlen(key)
        if n != last:
            last, still_since = n, time.monotonic()
        elif n > 0 and time.monotonic() - still_since >= 2.0:
            break
        time.sleep(0.1)
    else:
        raise MonitorError("bench cluster: the gate put no candidates in the stream")
    out = {}
    raw = redis.Redis(port=client.connection_pool.connection_kwargs["port"])  # the frames are bytes
    for entry_id, fields in raw.xrange(key):
        if fields.get(b"kind") == b"change":
            out[json.loads(fields[b"meta"])["change_id"]] = _ms(entry_id.decode())
    raw.close()
    return out


def _all_joined(client, workers: int, timeout: float = 120.0) -> float:
    """When the last worker joined the group (its first read): from then on all of them describe."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(client.xinfo_consumers("bench:candidates", "describers")) >= workers:
                return time.time()
        except redis.ResponseError:  # no group yet: no worker has started
            pass
        time.sleep(0.02)
    raise MonitorError(f"bench cluster: {workers} workers did not join the group within {timeout:g} s")


def _stopped(log: Path, field: str) -> float | None:
    """A number of a worker's last line (None when it was killed): handed_over, frame_cache_hit_rate."""
    found = re.findall(rf"{field}=([0-9.]+)", log.read_text(errors="replace"))
    return float(found[-1]) if found else None


def run_once(
    work: Path, model: Path, video: Path, cameras: int, workers: int, kill: bool, affinity: bool = True
) -> dict[str, Any]:
    rds = LocalRedisServer(work / "redis").start()
    client = rds.client()
    gate: subprocess.Popen | None = None
    procs: list[subprocess.Popen] = []
    try:
        cfg = work / "cluster.yaml"
        _config(cfg, work, rds.url, cameras, video, model, affinity)
        gate = spawn_monitor(["run", "--role", "gate", "--config", str(cfg), "--quiet"], work / "gate.log")
        queued = _backlog(client, "bench:candidates")
        procs += [
            spawn_monitor(
                ["describe-worker", "--config", str(cfg), "--name", f"w{i}", "--threads", "1"], work / f"w{i}.log"
            )
            for i in range(workers)
        ]
        t0 = _all_joined(client, workers)
        # what a worker that joined earlier described before the last one joined is not in the rate
        early = sum(1 for _, f in client.xrange("bench:events") if f["kind"] == "change")
        early += client.xlen("bench:described:bench-gate")
        watched = {"gate": gate, "redis": rds.proc, **{f"w{i}": p for i, p in enumerate(procs)}}
        cpu0 = {name: cpu_seconds(p.pid) for name, p in watched.items()}
        cpu1: dict[str, float] = {}
        killed = False
        while gate.poll() is None:
            for name, p in watched.items():  # CPU so far (a process gone keeps its last reading)
                try:
                    cpu1[name] = cpu_seconds(p.pid)
                except OSError:
                    pass
            if kill and not killed and client.xlen("bench:events") >= len(queued) // 3:
                procs[0].send_signal(signal.SIGKILL)  # mid-run: its batch in hand is taken over
                killed = True
            if time.time() - t0 > 600:
                raise MonitorError("bench cluster: the gate did not finish within 600 s")
            time.sleep(0.05)
        if gate.returncode != 0:
            tail = (work / "gate.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise MonitorError(f"bench cluster: the gate exited ({gate.returncode}): {' | '.join(tail)}")
        events = [
            (entry_id, fields) for entry_id, fields in client.xrange("bench:events") if fields["kind"] == "change"
        ]
    finally:
        for proc in [*procs, *([gate] if gate is not None else [])]:
            terminate(proc, 30)
        rds.stop()
    keys = [(f["camera"], int(f["seq"])) for _, f in events]
    in_order = all(
        [s for c, s in keys if c == cam] == sorted(s for c, s in keys if c == cam) for cam in {c for c, _ in keys}
    )
    latency = [_ms(i) - queued[f["change_id"]] for i, f in events if f.get("change_id") in queued]
    span = max(_ms(i) for i, _ in events) - t0 if events else float("nan")
    cpu = {name: round(100.0 * (cpu1.get(name, cpu0[name]) - cpu0[name]) / span, 1) for name in cpu0}
    return {
        "workers": workers,
        "killed_one": kill,
        "affinity": affinity,
        "handed_over": [_stopped(work / f"w{i}.log", "handed_over") for i in range(workers)],
        "frame_cache_hit_rate": [_stopped(work / f"w{i}.log", "frame_cache_hit_rate") for i in range(workers)],
        "candidates": len(queued),
        "events": len(events),
        "lost": len(set(queued) - {f.get("change_id") for _, f in events}),
        "duplicated": len(keys) - len(set(keys)),
        "in_order": in_order,
        "seconds": round(span, 2),
        "pairs_per_s": round((len(events) - early) / span, 2) if events else 0.0,
        "described_before_all_joined": early,
        "latency_s": {"p50": round(percentile(latency, 50) or 0, 3), "p95": round(percentile(latency, 95) or 0, 3)},
        "cpu_percent": cpu,  # of one core, from the last worker joining to the last event
        "fallbacks": (work / "gate.log").read_text(errors="replace").count("describe_fallback"),
    }


def run_cluster_bench(
    workers: list[int], cameras: int = 8, video: Path | None = None, kill: bool = True, repeat: int = 1
) -> dict:
    from pipelines.tiny import save_tiny_llava  # torch: only when this benchmark runs

    video = video or footage_dir() / DEFAULT_VIDEO
    if not video.is_file():
        raise MonitorError(f"bench cluster: no such video: {video}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="monitor-bench-cluster-") as tmp:
        # 12 layers on 784 patches a frame: ~65 ms per pair on one core, compute-bound (a model
        # whose attention maps outgrow the cache measures the memory bus instead), so the
        # workers are what limits
        model = save_tiny_llava(Path(tmp) / "tiny-llava", image_size=224, patch_size=8, layers=12)
        # the largest N again without camera affinity, side by side: what affinity gives; with
        # --repeat the whole plan again (interleaved, so a slower minute of the machine hits all)
        plan = [(n, False, True) for n in workers] + [(max(workers), False, False)] * (max(workers) > 1)
        plan += [(max(2, max(workers)), True, True)] * kill
        for i, (n, k, a) in enumerate(plan * repeat):
            work = Path(tmp) / f"run{i}"
            work.mkdir()
            runs.append(run_once(work, model, video, cameras, n, k, a))
    res: dict[str, Any] = {"benchmark": "cluster", "cameras": cameras, "video": video.name, "repeat": repeat}
    res["runs"] = runs
    exact = all(r["lost"] == 0 and r["duplicated"] == 0 and r["in_order"] for r in runs)
    res["goals"] = {"nothing_lost_or_duplicated": {"goal": "0 lost, 0 duplicated, in order", "value": exact,
                                                   "met": exact}}  # fmt: skip
    one, two, plain = (_median_rate(runs, n, a) for n, a in ((1, True), (2, True), (2, False)))
    if one and two:
        speedup = round(two / one, 2)
        res["speedup_2_vs_1"] = speedup  # of the median pairs/s of the repeats
        if plain:
            res["affinity_gain_2_workers"] = round(two / plain, 2)
        res["goals"]["speedup_2_vs_1"] = {"goal": f">= {GOAL_SPEEDUP:g}", "value": speedup,
                                          "met": speedup >= GOAL_SPEEDUP}  # fmt: skip
    return res


def _median_rate(runs: list[dict], workers: int, affinity: bool) -> float | None:
    key = (workers, False, affinity)
    rates = [r["pairs_per_s"] for r in runs if (r["workers"], r["killed_one"], r["affinity"]) == key]
    return statistics.median(rates) if rates and all(rates) else None


def print_table(res: dict[str, Any]) -> None:
    print(f"{res['cameras']} file cameras of {res['video']}; tiny LLaVA workers on the CPU, one thread each")
    head = f"{'workers':<22} {'pairs':>6} {'pairs/s':>8} {'lat p50':>8} {'lat p95':>8} {'lost':>5} {'dup':>4} order"
    print(head + "  handed over  cache hits  CPU, % of one core")
    for r in res["runs"]:
        name = f"{r['workers']}" + (" (one SIGKILLed)" if r["killed_one"] else "")
        name += "" if r["affinity"] else " (no affinity)"
        lat, order = r["latency_s"], "yes" if r["in_order"] else "NO"
        handed = "+".join("-" if n is None else f"{n:g}" for n in r["handed_over"]) if r["affinity"] else "off"
        hits = "/".join("-" if n is None else f"{n:.2f}" for n in r["frame_cache_hit_rate"])
        print(f"{name:<22} {r['events']:>6} {r['pairs_per_s']:>8} {lat['p50']:>8} {lat['p95']:>8} "
              f"{r['lost']:>5} {r['duplicated']:>4} {order:<5}  {handed:<11}  {hits:<10}  " + " ".join(f"{k} {v:g}"
              for k, v in r["cpu_percent"].items()))  # fmt: skip
    if res["repeat"] > 1:
        print(f"ratios of the median pairs/s of {res['repeat']} interleaved repeats")
    if "affinity_gain_2_workers" in res:
        print(f"camera affinity, 2 workers: {res['affinity_gain_2_workers']}x the pairs/s without it (side by side)")
    for name, g in res["goals"].items():
        print(f"goal {name}: {g['value']} ({g['goal']}) {'PASS' if g['met'] else 'FAIL'}")


def bench_cluster(args: argparse.Namespace) -> int:
    res = run_cluster_bench(args.workers or [1, 2], args.cameras, args.video, not args.no_kill, args.repeat)
    report(args, res, lambda: print_table(res))
    return 0
