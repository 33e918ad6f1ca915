"""`monitor bench alerts`: how soon an early alert (`alerts[].early`) reaches Redis and MQTT after a
change starts, next to how soon the settled event does.

The real daemon (`monitor run --config`, a subprocess) reads N RTSP cameras of looped real
footage (GStreamer's RTSP server, `monitor/bench/rtsp_server.py`) at 2 fps, with one early rule
that every change fires, a throwaway redis-server and Debian's mosquitto on loopback ports. After
a warm-up, for each change:

* onset -> alert: from `t_onset`, the wall time the first frame that fired was read (the gate's
  onset), to the onset entry in `<prefix>:alerts` (the entry id: Redis' clock at the XADD) and
  to its arrival at an MQTT subscriber on `<prefix>/alerts/<rule>`;
* onset -> settled event: from the same `t_onset` to the change's entry in `<prefix>:events`
  (it waits for the scene to settle, `gate.settle_s`, and for the describer), and, as in
  `monitor bench service`, from its after frame (`t_after`) to that entry.
The goal, onset -> alert p95 <= 0.5 s on both outputs, is checked on the Redis and MQTT figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from monitor.bench.local_mqtt import Mosquitto
from monitor.bench.local_redis import LocalRedisServer, free_port
from monitor.bench.output import report
from monitor.bench.rtsp_server import RtspServer
from monitor.bench.service import (
    StreamTail,
    cpu_seconds,
    latency_row,
    latency_stats,
    print_rows,
    rtsp_bench_inputs,
    spawn_monitor,
    terminate,
)
from monitor.errors import MonitorError
from monitor.records import unix_time

GOAL_P95_S = 0.5
RULE = "any-change"


class _Subscriber:
    """Every message on `<prefix>/alerts/#`, with its arrival time here."""

    def __init__(self, port: int, prefix: str):
        self.got: list[tuple[float, dict]] = []
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-alerts")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/alerts/#", qos=1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = lambda _c, _u, msg: self.got.append((time.time(), json.loads(msg.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not ready.wait(10):
            raise MonitorError("bench alerts: could not subscribe to the local mosquitto")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _config(path: Path, urls: list[str], work: Path, redis_url: str, mqtt_url: str, fps: float) -> None:
    doc = {
        "cameras": [
            {"id": f"cam{i:02d}", "source": url, "sample_fps": fps, "open_timeout_s": 10, "read_timeout_s": 10}
            for i, url in enumerate(urls)
        ],
        "log": {"dir": str(work / "logs")},
        "redis": {"url": redis_url, "prefix": "bench"},
        "mqtt": {"url": mqtt_url, "prefix": "bench", "discovery_prefix": None},
        "alerts": [{"name": RULE, "early": True}],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def run_alerts_bench(
    cameras: int = 8, seconds: float = 120.0, warmup: float = 20.0, sample_fps: float = 2.0, video: Path | None = None
) -> dict[str, Any]:
    video = rtsp_bench_inputs("alerts", seconds, warmup, video)
    with tempfile.TemporaryDirectory(prefix="monitor-bench-alerts-") as tmp:
        work = Path(tmp)
        server = RtspServer(video, free_port(), [f"/cam{i:02d}" for i in range(cameras)], True)
        rds, broker = LocalRedisServer(work / "redis"), Mosquitto(work / "mqtt")
        server.start()
        rds.start()
        broker.start()
        streams = StreamTail(rds.port, ["bench:alerts", "bench:events"])
        sub = _Subscriber(broker.port, "bench")
        streams.start()
        cfg = work / "alerts.yaml"
        _config(cfg, server.urls, work, rds.url, f"mqtt://127.0.0.1:{broker.port}", sample_fps)
        proc = spawn_monitor(["run", "--config", str(cfg), "--quiet"], work / "daemon.log")
        try:
            t0 = time.time()
            cpu0 = None
            while time.time() < t0 + seconds:
                if proc.poll() is not None:
                    tail = (work / "daemon.log").read_text(errors="replace").strip().splitlines()[-3:]
                    raise MonitorError(f"bench alerts: the daemon exited ({proc.returncode}): {' | '.join(tail)}")
                if cpu0 is None and time.time() >= t0 + warmup:
                    cpu0 = (time.time(), cpu_seconds(proc.pid))
                time.sleep(0.5)
            cpu1 = (time.time(), cpu_seconds(proc.pid))
            time.sleep(GOAL_P95_S + 1.0)  # what was decided before the end arrives
        finally:
            terminate(proc)
            streams.stop.set()
            sub.close()
            server.stop()
            rds.stop()
            broker.stop()
        streams.join(5)
    assert cpu0 is not None
    return _report(cameras, sample_fps, video, warmup, cpu0, cpu1, streams, sub)


def _report(cameras, fps, video, warmup, cpu0, cpu1, streams: StreamTail, sub: _Subscriber) -> dict[str, Any]:
    t_from, t_to = cpu0[0], cpu1[0]
    onset_at: dict[str, float] = {}  # change_id -> t_onset (the onset frame's read time)
    redis_onset, mqtt_onset, settled_from_onset, settled_from_after = [], [], [], []
    for at, f in streams.entries["bench:alerts"]:
        if f.get("phase") == "onset" and t_from <= (t := unix_time(f["t_onset"])) <= t_to:
            onset_at[f["change_id"]] = t
            redis_onset.append(at - t)
    for at, body in sub.got:
        if body.get("phase") == "onset" and body["change_id"] in onset_at:
            mqtt_onset.append(at - onset_at[body["change_id"]])
    for at, f in streams.entries["bench:events"]:
        if f.get("kind") == "change" and f.get("change_id") in onset_at:
            settled_from_onset.append(at - onset_at[f["change_id"]])
            settled_from_after.append(at - unix_time(f["t_after"]))
    nothing = sum(1 for _, f in streams.entries["bench:alerts"] if f.get("phase") == "settled" and "event_id" not in f)
    span = t_to - t_from
    res: dict[str, Any] = {
        "benchmark": "alerts",
        "cameras": cameras,
        "sample_fps": fps,
        "video": Path(video).name,
        "warmup_s": warmup,
        "measured_s": round(span, 1),
        "changes": len(onset_at),
        "changes_per_min": round(len(onset_at) * 60.0 / span, 1),
        "events": len(settled_from_onset),
        "ended_unlogged": nothing,
        "daemon_cpu_percent": round(100.0 * (cpu1[1] - cpu0[1]) / span, 1),
        "latency_s": {
            "onset_to_alert_redis": latency_stats(redis_onset),
            "onset_to_alert_mqtt": latency_stats(mqtt_onset),
            "onset_to_settled_event_redis": latency_stats(settled_from_onset),
            "after_frame_to_event_redis": latency_stats(settled_from_after),
        },
    }
    res["goals"] = {
        f"p95_onset_to_alert_{out}_s": {
            "goal": f"<= {GOAL_P95_S:g}", "value": (p95 := res["latency_s"][f"onset_to_alert_{out}"]["p95"]),
            "met": p95 is not None and p95 <= GOAL_P95_S,
        }
        for out in ("redis", "mqtt")
    }  # fmt: skip
    return res


def print_table(res: dict[str, Any]) -> None:
    rows = [
        ("cameras", f"{res['cameras']}, RTSP, {res['sample_fps']:g} fps, {res['video']} looped"),
        ("measured", f"{res['measured_s']:g} s after a {res['warmup_s']:g} s warm-up"),
        ("changes (onsets)", f"{res['changes']} ({res['changes_per_min']:g}/min); {res['events']} events, "
                             f"{res['ended_unlogged']} ended unlogged"),
        ("daemon CPU", f"{res['daemon_cpu_percent']:g} % of one core"),
    ]  # fmt: skip
    names = {
        "onset_to_alert_redis": "onset -> onset alert, Redis",
        "onset_to_alert_mqtt": "onset -> onset alert, MQTT",
        "onset_to_settled_event_redis": "onset -> settled event, Redis",
        "after_frame_to_event_redis": "after frame -> event, Redis",
    }
    for key, name in names.items():
        rows.append(latency_row(name, res["latency_s"][key]))
    print_rows(rows, res["goals"])


def bench_alerts(args: argparse.Namespace) -> int:
    res = run_alerts_bench(args.cameras, args.seconds, args.warmup, args.sample_fps, args.video)
    report(args, res, lambda: print_table(res))
    return 0
