"""/healthz and /metrics of a running daemon, over real HTTP on a free loopback port."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml
from support import free_port, monitor_env

from monitor.scene.scripted import render_sample_scene

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body); status 0 while nothing listens yet."""
    try:
        with _DIRECT.open(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except urllib.error.URLError:
        return 0, ""


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "scene.mp4"
    render_sample_scene(path, seconds=30, seed=6)
    return path


def start(tmp_path, scene, bind: str) -> subprocess.Popen:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "cameras": [{"id": "lot", "source": str(scene), "realtime": True}],
                "log": {"dir": str(tmp_path / "logs"), "reorder_window_s": 0},
                "http": {"bind": bind},
            }
        )
    )
    cmd = [sys.executable, "-m", "monitor", "run", "--config", str(cfg), "--quiet"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=monitor_env())


def test_healthz_and_metrics_report_the_running_daemon(tmp_path, scene):
    port = free_port()
    proc = start(tmp_path, scene, f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 40
        doc: dict = {}
        while time.monotonic() < deadline:
            status, body = get(port, "/healthz") if proc.poll() is None else (0, "")
            if status == 200:
                doc = json.loads(body)
                if doc["events_written"] >= 1:
                    break
            time.sleep(0.3)
        assert doc.get("events_written", 0) >= 1, doc
        assert doc["status"] == "running"
        cam = doc["cameras"]["lot"]
        assert cam["state"] == "up" and cam["sampled"] > 0 and cam["last_event"] == doc["last_event"]
        assert re.match(r"^\d{4}-\d\d-\d\dT", doc["last_event"])
        assert doc["queue_depth"] >= 0 and doc["describe_lag_s"] >= 0 and doc["redis_spool_depth"] == 0

        status, text = get(port, "/metrics")
        assert status == 200
        values = dict(re.findall(r"^(monitor_\w+(?:\{[^}]*\})?) (\S+)$", text, re.M))
        assert float(values['monitor_frames_sampled_total{camera="lot"}']) >= cam["sampled"]
        assert float(values["monitor_events_written_total"]) >= 1
        assert float(values["monitor_describe_seconds_count"]) >= 1
        assert values['monitor_camera_up{camera="lot"}'] == "1.0"
        assert get(port, "/nope")[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_a_busy_port_does_not_stop_the_daemon(tmp_path, scene):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start(tmp_path, scene, f"127.0.0.1:{port}")
        try:
            time.sleep(3)
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "http_unavailable" in err and "Traceback" not in err
