"""SIGHUP reloads the config: cameras added, removed or changed without restarting the others;
an invalid new config is refused with one logged error line and the old one keeps running.

The real daemon (`python -m monitor run --config cfg.yaml`) on realtime synthetic scenes, then
an in-process check that an untouched camera keeps its very reader thread and a changed one is
restarted."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from support import REPO, StderrLines, monitor_env, read_events

from monitor.config import load_settings
from monitor.daemon.notify import Notifier
from monitor.daemon.service import Monitor
from monitor.errors import ConfigError
from monitor.scene.scripted import render_sample_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "scene.mp4"
    render_sample_scene(path, seconds=60.0, seed=7)  # changes done at about 6, 13, 22, 37, 46, 55 s
    return path


def _write_config(path: Path, log_dir: Path, cameras: dict[str, Path]) -> None:
    data = {
        "cameras": [{"id": cid, "source": str(src), "realtime": True} for cid, src in cameras.items()],
        "log": {"dir": str(log_dir), "reorder_window_s": 0.0},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def _wait_events(log_dir: Path, camera: str, n: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mine = [e for e in read_events(log_dir) if e["camera"] == camera]
        if len(mine) >= n:
            return mine
        time.sleep(0.1)
    raise AssertionError(f"{camera}: fewer than {n} events in {timeout} s: {read_events(log_dir)}")


def test_sighup_reloads_cameras_and_refuses_invalid_config(tmp_path: Path, scene: Path) -> None:
    cfg, logs = tmp_path / "cfg.yaml", tmp_path / "logs"
    _write_config(cfg, logs, {"keep": scene, "gone": scene})
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--config", str(cfg), "--quiet"],
        env=monitor_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    err = StderrLines(proc)
    try:
        _wait_events(logs, "gone", 1, 30)
        # Add "new", remove "gone", leave "keep" as it is.
        _write_config(cfg, logs, {"keep": scene, "new": scene})
        proc.send_signal(signal.SIGHUP)
        line = err.wait_for("config_reloaded", 15)
        assert "added=new" in line and "removed=gone" in line and "unchanged=1" in line, line
        time.sleep(1.0)  # what "gone" had queued is still described and written
        gone = len([e for e in read_events(logs) if e["camera"] == "gone"])
        _wait_events(logs, "new", 1, 30)

        # An invalid config: refused with one error line naming the fields; nothing changes.
        cfg.write_text("cameras:\n  - id: bad\n    sample_fps: -1\nlog:\n  max_bytes: 1\n", encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        refused = err.wait_for("config_reload_refused", 15)
        assert "cameras.0" in refused and "log.max_bytes" in refused, refused
        assert proc.poll() is None
        before = len([e for e in read_events(logs) if e["camera"] == "keep"])
        deadline = time.monotonic() + 30
        while len([e for e in read_events(logs) if e["camera"] == "keep"]) <= before:
            # still logging, with the cameras of the last valid config
            assert time.monotonic() < deadline, read_events(logs)
            assert proc.poll() is None, "\n".join(err.lines)
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=45)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err.reader.join(5)
    assert proc.returncode == 0, "\n".join(err.lines)
    stderr = "\n".join(err.lines)
    assert "Traceback" not in stderr, stderr
    assert len([line for line in err.lines if "config_reload_refused" in line]) == 1, stderr
    events = read_events(logs)
    assert len([e for e in events if e["camera"] == "gone"]) == gone, events  # it stopped
    assert not any(e["camera"] == "bad" for e in events)
    # The end-of-run summary reports each camera's queue overflow counts (none here).
    summary = [line for line in err.lines if "camera_summary" in line and "camera=keep" in line]
    assert summary and "coalesced=0" in summary[0] and "dropped=0" in summary[0], stderr
    for cam in ("keep", "new", "gone"):
        seqs = [e["seq"] for e in events if e["camera"] == cam]
        assert seqs == list(range(1, len(seqs) + 1)), (cam, seqs)
    keep = [e for e in events if e["camera"] == "keep"]
    assert len(keep) >= 2, keep  # it went on through both reloads (never restarted at media 0)
    assert [e["media_t_after"] for e in keep] == sorted(e["media_t_after"] for e in keep)


def test_reload_in_process_keeps_untouched_readers(tmp_path: Path, scene: Path) -> None:
    logs = tmp_path / "logs"

    def cams(**extra: dict) -> list[dict]:
        base = {cid: {"id": cid, "source": str(scene), "realtime": True} for cid in ("a", "b", "c")}
        for cid, fields in extra.items():
            base[cid] = {**base[cid], **fields} if fields else None
        return [c for c in base.values() if c]

    settings = load_settings(None, cameras=cams(), log={"dir": str(logs), "reorder_window_s": 0.0})
    pending: list = []

    def reload():
        item = pending.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    monitor = Monitor(settings, notifier=Notifier(None), reload=reload)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(monitor.run()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while any(r.thread is None for r in monitor.cameras):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        threads = {r.camera.id: r.thread for r in monitor.cameras}
        # b changes (sample_fps), c is removed, d is added; a is untouched.
        new = cams(b={"sample_fps": 3.0}, c={})
        new.append({"id": "d", "source": str(scene), "realtime": True})
        pending.append(load_settings(None, cameras=new, log={"dir": str(logs), "reorder_window_s": 0.0}))
        monitor.request_reload()
        deadline = time.monotonic() + 15
        while [r.camera.id for r in monitor.cameras] != ["a", "b", "d"]:
            assert time.monotonic() < deadline, [r.camera.id for r in monitor.cameras]
            time.sleep(0.05)
        runs = {r.camera.id: r for r in monitor.cameras}
        assert runs["a"].thread is threads["a"] and threads["a"].is_alive()
        assert runs["b"].thread is not threads["b"] and runs["b"].camera.sample_fps == 3.0
        assert not threads["b"].is_alive() and not threads["c"].is_alive()
        assert runs["d"].thread is not None and runs["d"].thread.is_alive()
        # An invalid config is refused: the same readers keep running.
        pending.append(ConfigError("cameras.0.source: Field required"))
        monitor.request_reload()
        deadline = time.monotonic() + 5
        while pending:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        assert [r.thread for r in monitor.cameras] == [runs[c].thread for c in ("a", "b", "d")]
        assert all(r.thread is not None and r.thread.is_alive() for r in monitor.cameras)
    finally:
        monitor.stop()
        thread.join(30)
    assert not thread.is_alive() and result and not result[0].errors
