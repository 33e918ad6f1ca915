"""`/healthz` (JSON) and `/metrics` (Prometheus text) over HTTP, loopback by default.

Metrics are read from the daemon's own counters at scrape time (a custom collector), so the
data path carries no extra bookkeeping; only the describe latency is a histogram it observes."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = structlog.get_logger("monitor.http")


class Metrics:
    """The registry of one daemon: its counters (collected from `monitor`) and the describe
    latency histogram."""

    def __init__(self, monitor: Any):
        self.monitor = monitor
        self.registry = CollectorRegistry(auto_describe=False)
        self.describe_seconds = Histogram(
            "monitor_describe_seconds", "Time to describe one batch of changes",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry,
        )  # fmt: skip
        self.registry.register(self)

    def collect(self):
        m = self.monitor
        per_camera = [
            ("monitor_frames_decoded", "Frames the decoder produced", lambda r: r.source.stats.decoded),
            ("monitor_frames_sampled", "Frames handed to the gate", lambda r: r.source.stats.sampled),
            ("monitor_frames_corrupt", "Packets or frames that failed to decode", lambda r: r.source.stats.corrupt),
            ("monitor_packets_skipped", "Packets never decoded", lambda r: r.source.stats.skipped_packets),
            ("monitor_gate_fires", "Changes the gate started", lambda r: r.gate.fires),
            ("monitor_candidates", "Settled changes handed to the describer", lambda r: r.candidates),
            ("monitor_candidates_coalesced", "Changes merged because the queue was full", lambda r: r.coalesced),
            ("monitor_candidates_dropped", "Changes dropped because the queue was full", lambda r: r.dropped),
        ]  # fmt: skip
        for name, doc, value in per_camera:
            family = CounterMetricFamily(name, doc, labels=["camera"])
            for run in m.cameras:
                family.add_metric([run.camera.id], value(run))
            yield family
        up = GaugeMetricFamily("monitor_camera_up", "1 while the camera's reader runs and delivers", labels=["camera"])
        for run in m.cameras:
            up.add_metric([run.camera.id], 1.0 if camera_state(run) == "up" else 0.0)
        yield up
        events = CounterMetricFamily("monitor_events_written", "Events written to the change log")
        events.add_metric([], m.sink.written)
        yield events
        queued = GaugeMetricFamily("monitor_queue_depth", "Changes waiting for the describer")
        queued.add_metric([], m._candidates.qsize())
        yield queued
        spool = GaugeMetricFamily("monitor_redis_spool_depth", "Events spooled, not yet in Redis")
        spool.add_metric([], spool_depth(m))
        yield spool


def camera_state(run: Any) -> str:
    if run.error:
        return "failed"
    if run.thread is None or not run.thread.is_alive():
        return "finished"
    return "down" if run.online is False else "up"


def spool_depth(monitor: Any) -> int:
    redis = monitor.redis
    return len(redis.spool) if redis is not None and redis.spool is not None else 0


def health(monitor: Any) -> dict[str, Any]:
    queues = monitor._candidates.sizes()
    oldest = monitor.oldest_waiting()
    return {
        "status": "stopping" if monitor.stop_event.is_set() else "running",
        "cameras": {
            run.camera.id: {
                "state": camera_state(run),
                "decode_mode": run.source.stats.mode,
                "sampled": run.source.stats.sampled,
                "queue": queues.get(run.camera.id, 0),
                "coalesced": run.coalesced,
                "dropped": run.dropped,
                "last_event": monitor.last_event.get(run.camera.id),
                "error": run.error,
            }
            for run in monitor.cameras
        },
        "queue_depth": sum(queues.values()),
        "describe_lag_s": round(time.time() - oldest, 3) if oldest is not None else 0.0,
        "last_event": max(monitor.last_event.values(), default=None),
        "events_written": monitor.sink.written,
        "redis_spool_depth": spool_depth(monitor),
    }


class HealthServer:
    """Serves /healthz and /metrics for `monitor` on `bind` ("host:port") in a daemon thread. A
    port that cannot be bound is logged, not fatal: the cameras matter more than the endpoint."""

    def __init__(self, monitor: Any, bind: str):
        self.monitor = monitor
        self.bind = bind
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        host, _, port = self.bind.rpartition(":")
        handler = type("Handler", (_Handler,), {"monitor": self.monitor})
        try:
            self._server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), handler)
        except OSError as exc:
            log.error("http_unavailable", bind=self.bind, error=exc.strerror or str(exc))
            return
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="http", daemon=True).start()
        log.info("http_listening", bind=f"{host}:{self._server.server_address[1]}")

    @property
    def port(self) -> int | None:
        return self._server.server_address[1] if self._server is not None else None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Handler(BaseHTTPRequestHandler):
    monitor: Any = None

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            body, ctype = json.dumps(health(self.monitor)).encode(), "application/json"
        elif path == "/metrics":
            body, ctype = generate_latest(self.monitor.metrics.registry), "text/plain; version=0.0.4; charset=utf-8"
        else:
            self.send_error(404, "try /healthz or /metrics")
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: scrapes are not news
        pass
