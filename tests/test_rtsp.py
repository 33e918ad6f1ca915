"""Network cameras against a real RTSP server (GStreamer's rtsp-server, `tests/rtsp_server.py`).

- a camera on the RTSP stream of the shared clip gets frames and logs its changes;
- the server is killed mid-stream and comes back on the same port after more than
  `offline_after_s`: one camera_offline event, then one camera_online event (consecutive seq,
  the outage in its text and `outage_s`), the first frame back within 5 s of the server being
  up again, change events after it, no crash;
- a config with a live camera and one whose RTSP server never existed: the live one logs its
  changes, the dead one logs camera_offline, and the daemon keeps running until SIGTERM;
- `ReconnectWait`: exponential, jittered, capped, and cut short when the server is reachable again.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rtsp_server import RtspServer
from support import REPO, assert_no_traceback, free_port, monitor_env, need_video, read_events

from monitor.config import load_settings
from monitor.daemon.service import Monitor, RunResult
from monitor.records import unix_time
from monitor.sources.reconnect import ReconnectWait

CLIP = "one-by-one-person-detection.mp4"  # 10 fps; a person walks in at 6.1 s, stays until 20 s


@pytest.fixture(autouse=True)
def _gstreamer_installed() -> None:
    # Not a skip: .ci/run installs GStreamer's RTSP server, so its absence is a failure.
    missing = RtspServer.available()
    assert missing is None, missing


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def changes(events: list[dict]) -> list[dict]:
    return [e for e in events if e["kind"] == "change"]


class Running:
    """A Monitor running in a thread, stopped (and joined) at the end."""

    def __init__(self, log_dir: Path, cameras: list[dict]):
        self.log_dir = log_dir
        settings = load_settings(None, cameras=cameras, log={"dir": str(log_dir), "reorder_window_s": 0})
        self.monitor = Monitor(settings)
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.monitor.run()
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def events(self) -> list[dict]:
        return read_events(self.log_dir)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.monitor.stop()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the monitor did not stop"
        assert self.error is None, repr(self.error)


@pytest.fixture
def server() -> Iterator[RtspServer]:
    srv = RtspServer(need_video(CLIP), free_port(), "/lobby")
    srv.start()
    yield srv
    srv.stop()


def rtsp_camera(url: str, cam_id: str = "lobby", **extra) -> dict:
    return {
        "id": cam_id,
        "source": url,
        "sample_fps": 4,
        "open_timeout_s": 3,
        "read_timeout_s": 3,
        "offline_after_s": 1.5,
        "reconnect_max_s": 4,
        **extra,
    }


# -- (a) a live stream ---------------------------------------------------------------------------
def test_rtsp_camera_gets_frames_and_logs_changes(tmp_path: Path, server: RtspServer) -> None:
    with Running(tmp_path / "logs", [rtsp_camera(server.url)]) as run:
        # The person walks in at 6.1 s of the clip (streamed in real time): an arrival event.
        wait_for(lambda: changes(run.events()), 25, "a change event from the RTSP camera")
        stats = run.monitor.cameras[0].source.stats
        assert stats.sampled >= 20, stats  # 4 fps for ~8 s of stream
    events = run.events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["kind"] == "change" for e in events), events  # never went offline
    first = events[0]
    assert 5.0 <= first["media_t_onset"] <= 9.0, first
    assert any(r["change"] == "appeared" for r in first["regions"]), first
    assert run.result is not None and not run.result.errors


# -- (b) the server dies and comes back ----------------------------------------------------------
def test_server_killed_and_restarted(tmp_path: Path, server: RtspServer) -> None:
    # The default backoff cap (30 s): only the reachability probe can bring it back within 5 s.
    with Running(tmp_path / "logs", [rtsp_camera(server.url, reconnect_max_s=30)]) as run:
        wait_for(lambda: changes(run.events()), 25, "a change event before the outage")
        before = len(run.events())
        server.kill()
        killed_at = time.time()
        wait_for(lambda: any(e["kind"] == "camera_offline" for e in run.events()), 10, "the camera_offline event")
        time.sleep(2.5)  # down well beyond offline_after_s (1.5 s); the backoff has grown to 2-4 s
        server.start()
        back_at = time.time()
        online = wait_for(
            lambda: [e for e in run.events() if e["kind"] == "camera_online"], 10, "the camera_online event"
        )[0]
        # The clip starts again at the empty room: the person who stood there has gone.
        wait_for(lambda: changes(run.events()[before:]), 20, "a change event after the outage")
        assert run.thread.is_alive()
    events = run.events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), events
    kinds = [e["kind"] for e in events]
    assert kinds.count("camera_offline") == 1 and kinds.count("camera_online") == 1, kinds
    off = kinds.index("camera_offline")
    assert kinds[off + 1] == "camera_online", kinds  # consecutive seq: nothing in between
    assert "change" in kinds[:off] and "change" in kinds[off + 2 :], kinds
    offline = events[off]
    # Declared offline about offline_after_s after the last frame, not long after.
    assert 1.4 <= unix_time(offline["t_after"]) - unix_time(offline["t_before"]) <= 4.0, offline
    assert unix_time(offline["t_before"]) <= killed_at + 0.5
    # The first frame after the restart came within 5 s of the server listening again.
    assert unix_time(online["t_after"]) - back_at < 5.0, (online, back_at)
    outage = unix_time(online["t_after"]) - unix_time(online["t_before"])
    assert online["outage_s"] == pytest.approx(outage, abs=0.2)
    assert online["text"] == f"camera back online after {online['outage_s']:.0f} s"
    assert outage > 1.5
    # Media time keeps running across the outage (the gate never sees time going backwards).
    after = [e for e in events[off + 2 :] if e["kind"] == "change"]
    assert after[0]["media_t_onset"] >= online["media_t_after"] >= offline["media_t_after"]
    # The gate kept its reference (the person standing there): the scene the camera came back
    # to (the empty room, the clip restarted) is one change at once, a departure.
    assert after[0]["media_t_onset"] == pytest.approx(online["media_t_after"], abs=0.6), after[0]
    assert {r["change"] for r in after[0]["regions"]} == {"disappeared"}, after[0]
    assert run.monitor.cameras[0].source.opens == 2
    assert run.result is not None and not run.result.errors


# -- (c) one dead camera among live ones ---------------------------------------------------------
def test_dead_camera_in_config_does_not_stop_the_daemon(tmp_path: Path) -> None:
    video = need_video(CLIP)
    dead_port = free_port()
    log_dir = tmp_path / "logs"
    cfg = tmp_path / "two.yaml"
    cfg.write_text(
        f"""
cameras:
  - id: live
    source: {video}
    sample_fps: 2
  - id: dead
    source: rtsp://admin:s3cret@127.0.0.1:{dead_port}/never
    open_timeout_s: 2
    read_timeout_s: 2
    offline_after_s: 1.5
    reconnect_max_s: 2
log:
  dir: {log_dir}
  reorder_window_s: 0
""",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--config", str(cfg), "--quiet"],
        cwd=REPO,
        env=monitor_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: {"live", "dead"} <= {e["camera"] for e in read_events(log_dir)} or proc.poll() is not None,
            40,
            "events of both cameras",
        )
        assert proc.poll() is None, "the daemon exited: " + proc.stderr.read()
        # The file camera has finished; the dead one keeps the daemon up, retrying.
        time.sleep(2.0)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert_no_traceback(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert "s3cret" not in out + err
    events = read_events(log_dir)
    live = [e for e in events if e["camera"] == "live"]
    dead = [e for e in events if e["camera"] == "dead"]
    assert len(live) >= 8 and all(e["kind"] == "change" for e in live), live  # 6 arrivals, 6 departures
    assert [e["seq"] for e in live] == list(range(1, len(live) + 1))
    assert [(e["kind"], e["seq"]) for e in dead] == [("camera_offline", 1)], dead  # once, not per retry
    assert dead[0]["text"].startswith("camera offline: no frames since "), dead[0]
    assert "admin:***@" in dead[0]["text"] and "Connection refused" in dead[0]["text"], dead[0]
    assert "camera_unreachable_retrying" in err and "monitor: error" not in err, err


def test_retry_at_start_waits_for_a_lone_camera(tmp_path: Path) -> None:
    """`retry_at_start: true`: a lone camera whose server is not up yet waits for it."""
    srv = RtspServer(need_video(CLIP), free_port(), "/late")
    cam = rtsp_camera(srv.url, "late", retry_at_start=True, offline_after_s=60)
    with Running(tmp_path / "logs", [cam]) as run:
        time.sleep(1.5)
        assert run.thread.is_alive()  # without the flag, the run would have ended with an error
        with srv:
            up = time.time()
            wait_for(lambda: run.monitor.cameras[0].source.stats.sampled > 0, 10, "the first frame")
            assert time.time() - up < 5.0
    assert run.events() == []  # back before offline_after_s: no offline/online events
    assert run.result is not None and not run.result.errors


# -- ReconnectWait ---------------------------------------------------------------------------------
def test_backoff_grows_jitters_and_caps() -> None:
    b = ReconnectWait("rtsp://127.0.0.1:1/x", cap=8.0, base=0.5)
    delays = []
    for n in range(8):
        b.attempt = n
        delays.append(b.delay())
    for n, d in enumerate(delays):
        full = min(8.0, 0.5 * 2**n)
        assert 0.5 * full <= d <= full, (n, d)
    assert max(delays) <= 8.0 and delays[-1] >= 4.0


def test_backoff_wait_ends_when_the_server_is_back() -> None:
    port = free_port()
    b = ReconnectWait(f"rtsp://127.0.0.1:{port}/x", cap=30.0, base=30.0, probe_s=0.1)
    stop = threading.Event()
    listener = socket.socket()

    def come_back() -> None:
        time.sleep(0.6)
        listener.bind(("127.0.0.1", port))
        listener.listen()

    t = threading.Thread(target=come_back)
    t.start()
    t0 = time.monotonic()
    try:
        assert b.wait(stop)
        assert time.monotonic() - t0 < 2.0  # not the 15-30 s of the backoff
        assert b.attempt == 0
    finally:
        t.join()
        listener.close()
    # ...and `stop` ends a wait at once.
    stop.set()
    t0 = time.monotonic()
    assert not ReconnectWait("rtsp://127.0.0.1:1/x", cap=30.0, base=30.0).wait(stop)
    assert time.monotonic() - t0 < 1.0


def test_offline_event_reaches_redis(tmp_path: Path) -> None:
    """Health events take the change events' path: the orderer's seq, the log files and Redis."""
    from redis_server import RedisServer

    redis = RedisServer(tmp_path / "redis").start()
    try:
        dead = rtsp_camera(f"rtsp://127.0.0.1:{free_port()}/gone", "gone", retry_at_start=True, offline_after_s=1.0)
        settings = load_settings(
            None, cameras=[dead], log={"dir": str(tmp_path / "logs"), "reorder_window_s": 0}, redis={"url": redis.url}
        )
        monitor = Monitor(settings)
        thread = threading.Thread(target=monitor.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: read_events(tmp_path / "logs"), 10, "the camera_offline event")
        finally:
            monitor.stop()
            thread.join(15)
        assert not thread.is_alive()
        logged = read_events(tmp_path / "logs")
        assert [(e["kind"], e["seq"]) for e in logged] == [("camera_offline", 1)]
        got = [fields for _id, fields in redis.client().xrange("monitor:events")]
        assert [(f["kind"], f["seq"], f["event_id"]) for f in got] == [("camera_offline", "1", logged[0]["event_id"])]
    finally:
        redis.kill()
