"""sd_notify and the watchdog: a real unix datagram socket stands in for systemd's NOTIFY_SOCKET.

The real daemon (`python -m monitor run`, a realtime synthetic scene) must send READY=1, STATUS=,
WATCHDOG=1 at about half of WATCHDOG_USEC, and STOPPING=1 on SIGTERM, then exit 0. In-process, a
describer that really blocks inside `describe()` must stop the pings until it is released, and
candidates queued before `stop()` must still be described and written."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO, monitor_env, read_events, running

from monitor.bench.local_redis import LocalRedisServer
from monitor.config import load_settings
from monitor.daemon.notify import Heartbeats, Notifier
from monitor.daemon.service import Monitor
from monitor.describe.embedded import EmbeddedDescriber
from monitor.scene.scripted import render_sample_scene


class NotifySocket:
    """A bound AF_UNIX/SOCK_DGRAM socket collecting (monotonic time, message) in a thread."""

    def __init__(self, path: str | None = None):
        self.dir = tempfile.mkdtemp(prefix="notify-")  # short: sun_path holds 108 bytes
        self.path = path or os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path if not self.path.startswith("@") else "\0" + self.path[1:])
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def fields(self, since: float = 0.0) -> list[str]:
        return [f for t, m in list(self.messages) if t >= since for f in m.split("\n")]

    def count(self, field: str, since: float = 0.0) -> int:
        return sum(1 for f in self.fields(since) if f == field)

    def wait_for(self, field: str, timeout: float) -> float:
        """Monotonic time the first message with `field` (a prefix) arrived; fails on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, m in list(self.messages):
                if any(f.startswith(field) for f in m.split("\n")):
                    return t
            time.sleep(0.02)
        raise AssertionError(f"no {field} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def popen_monitor(*args: str, env: dict[str, str]) -> subprocess.Popen:
    """`python -m monitor ARGS` as systemd would start it (env: NOTIFY_SOCKET, WATCHDOG_USEC)."""
    env = monitor_env(env)
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", *args], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    s = NotifySocket()
    yield s
    s.close()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "scene.mp4"
    render_sample_scene(path, seconds=30.0, seed=7)  # two scripted changes
    return path


# -- Notifier ------------------------------------------------------------------------------
def test_notifier_is_a_noop_without_socket() -> None:
    n = Notifier.from_env({})
    assert not n.enabled and n.watchdog_interval is None
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False


def test_notifier_abstract_socket_and_watchdog_env() -> None:
    name = f"@monitor-test-{os.getpid()}-{time.monotonic_ns()}"
    s = NotifySocket(name)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())})
        assert n.watchdog_interval == pytest.approx(0.4)
        assert n.ready("cameras up 1/1") and n.watchdog() and n.reloading() and n.stopping()
        s.wait_for("STOPPING=1", 2)
        fields = s.fields()
        assert fields[:3] == ["READY=1", "STATUS=cameras up 1/1", "WATCHDOG=1"]
        assert "RELOADING=1" in fields
        usec = [f for f in fields if f.startswith("MONOTONIC_USEC=")]
        assert len(usec) == 1 and abs(int(usec[0].split("=")[1]) - time.monotonic_ns() // 1000) < 5_000_000
    finally:
        s.close()
    # The watchdog of another process (WATCHDOG_PID) is not ours to ping.
    other = Notifier.from_env({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None


def test_heartbeats_busy_and_stale() -> None:
    hb = Heartbeats()
    hb.beat("main")
    assert hb.stale(0.2) == []
    with hb.busy("describer"):
        time.sleep(0.3)
        hb.beat("main")
        assert hb.stale(0.2) == ["describer"]
    assert hb.stale(0.2) == []  # idle between calls is fine
    hb.add_probe("camera:a", lambda: None)  # finished: no longer tracked
    assert hb.stale(0.2) == [] and "camera:a" not in hb._beats


# -- the real daemon -------------------------------------------------------------------------
def test_daemon_ready_watchdog_status_stopping(tmp_path: Path, scene: Path, notify_socket: NotifySocket) -> None:
    proc = popen_monitor(
        "run", "--source", str(scene), "--realtime", "--quiet", "--camera-id", "lot", "--log-dir",
        str(tmp_path / "logs"), env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "400000"},
    )  # fmt: skip
    try:
        ready = notify_socket.wait_for("READY=1", 30)
        time.sleep(3.0)
        pings = notify_socket.count("WATCHDOG=1", since=ready)
        window = time.monotonic() - ready
        # One ping per WATCHDOG_USEC/2 = 0.2 s: about 15 in 3 s; loose bounds, no tight timing.
        assert window / 0.2 * 0.4 <= pings <= window / 0.2 * 1.5 + 2, (pings, window)
        statuses = [f for f in notify_socket.fields() if f.startswith("STATUS=")]
        assert any(s.startswith("STATUS=cameras up 1/1") and "events/min" in s for s in statuses), statuses
        assert notify_socket.count("STOPPING=1") == 0
        # SIGHUP (systemctl reload): RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
        t_hup = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        notify_socket.wait_for("RELOADING=1", 10)
        while notify_socket.count("READY=1", since=t_hup) < 1:
            assert time.monotonic() - t_hup < 10, notify_socket.messages
            time.sleep(0.05)
        assert any(f.startswith("MONOTONIC_USEC=") for f in notify_socket.fields(t_hup))
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert notify_socket.count("STOPPING=1") >= 1, notify_socket.messages
    assert "Traceback" not in err


def test_describe_worker_ready_watchdog_status_stopping(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """monitor describe-worker under systemd: READY=1, WATCHDOG=1 while it waits for work (its
    reads), a STATUS line with its counts, STOPPING=1 and exit 0 on SIGTERM."""
    rds = LocalRedisServer(tmp_path / "redis").start()
    env = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "2000000"}
    try:
        with running(popen_monitor("describe-worker", "--redis", rds.url, "--name", "w0", env=env)) as proc:
            ready = notify_socket.wait_for("READY=1", 30)
            time.sleep(3.5)
            pings = notify_socket.count("WATCHDOG=1", since=ready)
            # at most one per WATCHDOG_USEC/2 = 1 s, at its reads (a blocking read lasts up to 1 s)
            assert 2 <= pings <= 5, notify_socket.messages
            statuses = [f for f in notify_socket.fields() if f.startswith("STATUS=")]
            assert "STATUS=described 0, claimed 0, malformed 0" in statuses, statuses
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    finally:
        rds.stop()
    assert proc.returncode == 0, err
    assert notify_socket.count("STOPPING=1") >= 1 and "Traceback" not in err


# -- in-process: a describer stuck for real ------------------------------------------------
class BlockingDescriber(EmbeddedDescriber):
    """The embedded describer, except that describe() blocks until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def describe(self, candidates):
        self.calls += 1
        self.entered.set()
        assert self.release.wait(60), "never released"
        return super().describe(candidates)


def _monitor(tmp_path: Path, scene: Path, sock: NotifySocket, describer: BlockingDescriber) -> Monitor:
    # "fast-N": the file as fast as it decodes, so its changes are queued at once and the camera
    # ends; "live": the same scene paced in real time, so the daemon keeps running.
    fast = [{"id": f"fast-{i}", "source": str(scene)} for i in range(3)]
    settings = load_settings(
        None,
        cameras=[*fast, {"id": "live", "source": str(scene), "realtime": True}],
        log={"dir": str(tmp_path / "logs"), "reorder_window_s": 0.0},
    )
    return Monitor(settings, describer=describer, notifier=Notifier(sock.path, watchdog_usec=400_000))


def test_hung_describer_stops_watchdog_and_resumes(tmp_path: Path, scene: Path, notify_socket: NotifySocket) -> None:
    describer = BlockingDescriber()
    monitor = _monitor(tmp_path, scene, notify_socket, describer)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(monitor.run()), daemon=True)
    thread.start()
    try:
        notify_socket.wait_for("WATCHDOG=1", 15)
        assert describer.entered.wait(30), "no change reached the describer"
        time.sleep(1.0)  # > the 0.4 s watchdog interval: the stuck describer is now stale
        t_stuck = time.monotonic()
        time.sleep(1.5)
        assert notify_socket.count("WATCHDOG=1", since=t_stuck) == 0, notify_socket.messages
        describer.release.set()
        t_released = time.monotonic()
        # The pings resume (the queued changes are described first: HOG, in a busy process).
        while notify_socket.count("WATCHDOG=1", since=t_released) < 3:
            assert time.monotonic() - t_released < 15, notify_socket.messages
            time.sleep(0.1)
    finally:
        describer.release.set()
        monitor.stop()
        thread.join(30)
    assert not thread.is_alive() and result


def test_sigterm_drains_queued_candidates(tmp_path: Path, scene: Path, notify_socket: NotifySocket) -> None:
    describer = BlockingDescriber()
    monitor = _monitor(tmp_path, scene, notify_socket, describer)
    fast = [r for r in monitor.cameras if r.camera.id.startswith("fast-")]
    result: list = []
    thread = threading.Thread(target=lambda: result.append(monitor.run()), daemon=True)
    thread.start()
    try:
        assert describer.entered.wait(30), "no change reached the describer"
        deadline = time.monotonic() + 30
        while any(r.thread is None or r.thread.is_alive() for r in fast):  # every change is queued
            assert time.monotonic() < deadline
            time.sleep(0.05)
        queued = {r.camera.id: r.candidates for r in fast}
        assert sum(queued.values()) >= 4  # one in the stuck describe() call, the rest queued
        monitor.stop()  # what SIGTERM does
        assert notify_socket.wait_for("STOPPING=1", 5)
        time.sleep(0.3)
        describer.release.set()
        thread.join(30)
    finally:
        describer.release.set()
        monitor.stop()
    assert not thread.is_alive() and result
    events = read_events(tmp_path / "logs")
    for cam, n in queued.items():
        assert [e["seq"] for e in events if e["camera"] == cam] == list(range(1, n + 1)), (queued, events)
