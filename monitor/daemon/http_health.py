"""`/healthz` (JSON) and `/metrics` (Prometheus text) over HTTP, loopback by default.

Both read the daemon's `MonitorSnapshot` at request time (`/metrics` through a custom
collector), so the data path carries no extra bookkeeping; only the describe latency is a
histogram the daemon observes."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from monitor.daemon.snapshot import MonitorSnapshot

log = structlog.get_logger(__name__)

Snapshot = Callable[[], MonitorSnapshot]


class Metrics:
    """The registry of one daemon: its counters (collected from `snapshot()` at scrape time) and
    the describe latency histogram."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot
        self.registry = CollectorRegistry(auto_describe=False)
        self.describe_seconds = Histogram(
            "monitor_describe_seconds", "Time to describe one batch of changes",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry,
        )  # fmt: skip
        self.registry.register(self)

    def collect(self):
        snap = self.snapshot()
        per_camera = [
            ("monitor_frames_decoded", "Frames the decoder produced", lambda c: c.frames_decoded),
            ("monitor_frames_sampled", "Frames handed to the gate", lambda c: c.frames_sampled),
            ("monitor_frames_corrupt", "Packets or frames that failed to decode", lambda c: c.frames_corrupt),
            ("monitor_packets_skipped", "Packets never decoded", lambda c: c.packets_skipped),
            ("monitor_gate_fires", "Changes the gate started", lambda c: c.gate_fires),
            ("monitor_candidates", "Settled changes handed to the describer", lambda c: c.candidates),
            ("monitor_candidates_coalesced", "Changes merged because the queue was full", lambda c: c.coalesced),
            ("monitor_candidates_dropped", "Changes dropped because the queue was full", lambda c: c.dropped),
        ]  # fmt: skip
        for name, doc, value in per_camera:
            family = CounterMetricFamily(name, doc, labels=["camera"])
            for cam in snap.cameras:
                family.add_metric([cam.id], value(cam))
            yield family
        up = GaugeMetricFamily("monitor_camera_up", "1 while the camera's reader runs and delivers", labels=["camera"])
        for cam in snap.cameras:
            up.add_metric([cam.id], 1.0 if cam.state == "up" else 0.0)
        yield up
        events = CounterMetricFamily("monitor_events_written", "Events written to the change log")
        events.add_metric([], snap.events_written)
        yield events
        queued = GaugeMetricFamily("monitor_queue_depth", "Changes waiting for the describer")
        queued.add_metric([], snap.queue_depth)
        yield queued
        spool = GaugeMetricFamily("monitor_redis_spool_depth", "Events spooled, not yet in Redis")
        spool.add_metric([], snap.redis_spool_depth)
        yield spool
        undescribed = GaugeMetricFamily("monitor_undescribed", "Gate role: changes with describe workers, not back")
        undescribed.add_metric([], snap.undescribed)
        yield undescribed
        fallbacks = CounterMetricFamily(
            "monitor_describe_fallbacks", "Gate role: changes no describe worker described in time"
        )
        fallbacks.add_metric([], snap.describe_fallbacks)
        yield fallbacks


def health(snap: MonitorSnapshot) -> dict[str, Any]:
    """The /healthz document."""
    return {
        "status": "stopping" if snap.stopping else "running",
        "cameras": {
            cam.id: {
                "state": cam.state,
                "decode_mode": cam.decode_mode,
                "sampled": cam.frames_sampled,
                "queue": cam.queue,
                "coalesced": cam.coalesced,
                "dropped": cam.dropped,
                "last_event": cam.last_event,
                "error": cam.error,
            }
            for cam in snap.cameras
        },
        "queue_depth": snap.queue_depth,
        "describe_lag_s": snap.describe_lag_s,
        "last_event": snap.last_event,
        "events_written": snap.events_written,
        "redis_spool_depth": snap.redis_spool_depth,
        "undescribed": snap.undescribed,
        "describe_fallbacks": snap.describe_fallbacks,
    }


class HealthServer:
    """Serves /healthz and /metrics on `bind` ("host:port") in a daemon thread. A port that
    cannot be bound is logged, not fatal: the cameras matter more than the endpoint."""

    def __init__(self, snapshot: Snapshot, registry: CollectorRegistry, bind: str):
        self.snapshot = snapshot
        self.registry = registry
        self.bind = bind
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        host, _, port = self.bind.rpartition(":")
        handler = type("Handler", (_Handler,), {"snapshot": staticmethod(self.snapshot), "registry": self.registry})
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
    snapshot: Snapshot
    registry: CollectorRegistry

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            body, ctype = json.dumps(health(self.snapshot())).encode(), "application/json"
        elif path == "/metrics":
            body, ctype = generate_latest(self.registry), "text/plain; version=0.0.4; charset=utf-8"
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
