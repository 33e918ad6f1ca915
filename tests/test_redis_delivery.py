"""Redis delivery: every event reaches `<prefix>:events` exactly once and in order, across Redis
outages (frozen or killed server), a SIGKILLed daemon, a full spool, bad URLs and wrong
passwords. Each test runs a real redis-server on a free loopback port (tests/redis_server.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from redis_server import RedisServer
from support import REPO, assert_no_traceback, monitor_env, need_video, read_events, run_monitor

from monitor.bench.redis_sink import synthetic_event
from monitor.config import RedisConfig
from monitor.errors import MonitorError
from monitor.sinks.redis_streams import RedisSink
from monitor.sinks.spool import Spool

VIDEO = "one-by-one-person-detection.mp4"


@pytest.fixture
def server(tmp_path: Path):
    srv = RedisServer(tmp_path / "redis").start()
    yield srv
    srv.kill()


def stream(client, key: str = "monitor:events") -> list[dict]:
    return [fields for _id, fields in client.xrange(key)]


def make_sink(tmp_path: Path, url: str, max_bytes: int = 10_000_000, **cfg) -> RedisSink:
    rc = RedisConfig(url=url, connect_timeout_s=0.3, backoff_max_s=0.4, spool_max_bytes=max_bytes, **cfg)
    return RedisSink(rc, Spool(tmp_path / "spool", max_bytes))


# -- the daemon, end to end ----------------------------------------------------------------
def test_every_event_of_a_run_arrives_in_order(tmp_path: Path, server: RedisServer) -> None:
    video = need_video(VIDEO)
    logs = tmp_path / "logs"
    env = {"MONITOR_REDIS__URL": server.url, "MONITOR_REDIS__PER_CAMERA_STREAMS": "true"}
    proc = run_monitor("run", "--source", video, "--camera-id", "room", "--log-dir", logs, "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    events = read_events(logs)
    assert len(events) == 12
    c = server.client()
    got = stream(c)
    assert c.xlen("monitor:events") == len(events)
    assert [f["event_id"] for f in got] == [e["event_id"] for e in events]
    assert [int(f["seq"]) for f in got] == list(range(1, 13))
    assert [json.loads(f["json"]) for f in got] == events
    assert {k: got[0][k] for k in ("camera", "kind", "t_after", "text")} == {
        k: events[0][k] for k in ("camera", "kind", "t_after", "text")
    }
    assert [f["event_id"] for f in stream(c, "monitor:events:room")] == [e["event_id"] for e in events]
    assert c.hgetall("monitor:delivered") == {"room": "12"}
    assert not list((logs / "spool").glob("seg-*")), "a delivered spool is compacted away"

    # A second run continues the numbering (13..24) instead of being dropped as duplicates
    # (stamped from now: the recording's own time would go back in this log dir).
    proc = run_monitor(
        "run", "--source", video, "--camera-id", "room", "--log-dir", logs, "--quiet", "--redis", server.url,
        "--clock", "run",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert [int(f["seq"]) for f in stream(c)] == list(range(1, 25))
    assert [f["event_id"] for f in stream(c)] == [e["event_id"] for e in read_events(logs)]


def test_alerts_go_to_the_alerts_stream(tmp_path: Path, server: RedisServer) -> None:
    video = need_video(VIDEO)
    logs = tmp_path / "logs"
    config = tmp_path / "monitor.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cameras": [{"id": "room", "source": str(video)}],
                "log": {"dir": str(logs)},
                "alerts": [{"name": "arrivals", "keywords": ["arrived"]}, {"name": "nobody", "keywords": ["zebra"]}],
            }
        )
    )
    proc = run_monitor("run", "--config", config, "--quiet", "--redis", server.url)
    assert proc.returncode == 0, proc.stderr
    events = read_events(logs)
    arrived = [e for e in events if "arrived" in e["text"]]
    assert len(arrived) == 6
    alerts = stream(server.client(), "monitor:alerts")
    assert [a["rule"] for a in alerts] == ["arrivals"] * 6
    assert [a["event_id"] for a in alerts] == [e["event_id"] for e in arrived]
    assert [json.loads(a["json"]) for a in alerts] == arrived
    assert server.client().xlen("monitor:events") == len(events)


def test_second_monitor_on_the_same_spool_is_refused(tmp_path: Path) -> None:
    first = Spool(tmp_path / "s", 10**6)
    try:
        with pytest.raises(MonitorError, match="in use by another running monitor"):
            Spool(tmp_path / "s", 10**6)
    finally:
        first.close()
    Spool(tmp_path / "s", 10**6).close()  # free again once closed


def test_sigkilled_daemon_delivers_its_spool_first(tmp_path: Path) -> None:
    video = need_video(VIDEO)
    srv = RedisServer(tmp_path / "redis")  # not started: Redis is down during the first run
    logs = tmp_path / "logs"
    config = tmp_path / "monitor.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cameras": [
                    {"id": "fast", "source": str(video)},
                    # keeps the daemon alive (real-time pace) until it is killed
                    {"id": "slow", "source": str(video), "realtime": True},
                ],
                "log": {"dir": str(logs), "reorder_window_s": 0},
                "redis": {"connect_timeout_s": 0.5, "backoff_max_s": 0.5},
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--config", str(config), "--quiet", "--redis", srv.url],
        env=monitor_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len([e for e in read_events(logs) if e["camera"] == "fast"]) == 12:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    first = read_events(logs)
    assert len([e for e in first if e["camera"] == "fast"]) == 12
    left = Spool(logs / "spool", 10**8)  # (the killed daemon's lock went with it)
    assert len(left) == len(first), "every logged event is still spooled"
    left.close()

    srv.start()
    try:
        proc2 = run_monitor(  # the same clip again: stamped from now, after the killed run's events
            "run", "--source", video, "--camera-id", "fast", "--log-dir", logs, "--quiet", "--redis", srv.url,
            "--clock", "run",
        )  # fmt: skip
        assert proc2.returncode == 0, proc2.stderr
        assert_no_traceback(proc2)
        got = stream(srv.client())
        everything = read_events(logs)
        # the spooled events first, in their order, then the new run's; each exactly once
        assert [f["event_id"] for f in got] == [e["event_id"] for e in everything]
        fast = [int(f["seq"]) for f in got if f["camera"] == "fast"]
        assert fast == list(range(1, 25)), "seq continues after the killed run's last event"
    finally:
        srv.kill()


def test_wrong_password_keeps_running_then_password_file_delivers(tmp_path: Path) -> None:
    video = need_video(VIDEO)
    srv = RedisServer(tmp_path / "redis", password="right-pass-4711").start()
    try:
        logs = tmp_path / "logs"
        wrong = f"redis://:wrong-pass-0815@127.0.0.1:{srv.port}/0"
        proc = run_monitor("run", "--source", video, "--camera-id", "room", "--log-dir", logs, "--redis", wrong)
        assert proc.returncode == 0, proc.stderr
        assert_no_traceback(proc)
        assert "wrong-pass-0815" not in proc.stdout + proc.stderr
        down = [line for line in proc.stderr.splitlines() if "redis_unavailable" in line]
        assert len(down) == 1 and "AuthenticationError" in down[0] and "***" in down[0], proc.stderr
        assert len(read_events(logs)) == 12, "the log files are written whatever Redis does"
        assert srv.client().xlen("monitor:events") == 0

        # The right password from a file: the spooled run goes first, then the new one.
        pw = tmp_path / "pw"
        pw.write_text("right-pass-4711\n")
        env = {"MONITOR_REDIS__PASSWORD_FILE": str(pw)}
        url = f"redis://127.0.0.1:{srv.port}/0"
        again = ("--clock", "run")  # the same clip again: stamped from now
        proc = run_monitor(
            "run", "--source", video, "--camera-id", "room", "--log-dir", logs, "--redis", url, *again, env=env
        )
        assert proc.returncode == 0, proc.stderr
        assert "right-pass-4711" not in proc.stdout + proc.stderr
        got = stream(srv.client())
        assert [f["event_id"] for f in got] == [e["event_id"] for e in read_events(logs)]
        assert [int(f["seq"]) for f in got] == list(range(1, 25))
    finally:
        srv.kill()


@pytest.mark.parametrize(
    "url", ["http://user:hunter2@localhost:6379", "redis://:hunter2@localhost:notaport/0", "nonsense"]
)
def test_bad_url_is_a_config_error(tmp_path: Path, url: str) -> None:
    proc = run_monitor("run", "--source", "x.mp4", "--log-dir", tmp_path, "--redis", url)
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc)
    assert proc.stderr.startswith("monitor: config error: redis.url: "), proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr


# -- the sink under outages ----------------------------------------------------------------
def _write_paced(sink: RedisSink, seqs: range, pause: float = 0.002, camera: str = "cam") -> None:
    for seq in seqs:
        sink.write(synthetic_event(camera, seq))
        time.sleep(pause)


def test_frozen_redis_mid_stream_exactly_once(tmp_path: Path, server: RedisServer, capsys) -> None:
    """SIGSTOP: sent commands time out on the client but run later on the server, so the sink's
    re-sends reach Redis twice; the idempotency script must drop the copies."""
    sink = make_sink(tmp_path, server.url)
    sink.start()
    writer = threading.Thread(target=_write_paced, args=(sink, range(1, 1501)))
    writer.start()
    while sink.spool.appended < 500:
        time.sleep(0.01)
    os.kill(server.proc.pid, signal.SIGSTOP)
    time.sleep(1.5)
    os.kill(server.proc.pid, signal.SIGCONT)
    writer.join()
    sink.close(timeout=20)
    seqs = [int(f["seq"]) for f in stream(server.client())]
    assert seqs == list(range(1, 1501))
    # (a batch whose reply was lost counts as a duplicate when re-sent, so no count is exact)
    assert sink.delivered + sink.duplicates >= 1500
    out = capsys.readouterr()
    logged = out.out + out.err
    # one line when Redis goes away, one when it is back (a slow machine may see two outages)
    assert 1 <= logged.count("redis_unavailable") == logged.count("redis_recovered"), logged


def test_killed_redis_restarted_on_same_port(tmp_path: Path, server: RedisServer, capsys) -> None:
    sink = make_sink(tmp_path, server.url)
    sink.start()
    _write_paced(sink, range(1, 301), pause=0)
    assert sink.spool.wait_empty(10)
    before = stream(server.client())  # the server loses everything when killed: keep a copy
    server.kill()
    _write_paced(sink, range(301, 601), pause=0.001)  # spooled while Redis is down
    assert len(sink.spool) > 0
    server.start()
    _write_paced(sink, range(601, 901), pause=0.001)
    sink.close(timeout=20)
    after = stream(server.client())
    assert [int(f["seq"]) for f in before + after] == list(range(1, 901))
    out = capsys.readouterr()
    logged = out.out + out.err
    assert logged.count("redis_unavailable") == 1 and logged.count("redis_recovered") == 1, logged
    assert "replaying=" in logged


def test_full_spool_drops_oldest_and_says_so(tmp_path: Path, capsys) -> None:
    srv = RedisServer(tmp_path / "redis")  # down while the events are spooled
    sink = make_sink(tmp_path, srv.url, max_bytes=4096)
    sink.start()
    for seq in range(1, 51):
        sink.write(synthetic_event("cam", seq))
    kept = len(sink.spool)
    assert 0 < kept < 50 and sink.spool.dropped == 50 - kept
    assert sink.spool.pending_bytes <= 4096
    srv.start()
    try:
        sink.close(timeout=10)
        seqs = [int(f["seq"]) for f in stream(srv.client())]
        assert seqs == list(range(51 - kept, 51)), "the newest are kept, in order"
    finally:
        srv.kill()
    out = capsys.readouterr()
    assert "spool_full_dropped_oldest" in out.out + out.err


def test_spool_survives_reopen_and_compacts(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", 10**6, segment_bytes=4096)
    spool.append([(synthetic_event("a", i), ["r1"] if i % 2 else []) for i in range(1, 41)])
    spool.commit(spool.peek(15)[-1].n)
    spool.close()
    # a crash in the middle of a write leaves a torn last line: it is ignored
    seg = sorted((tmp_path / "s").glob("seg-*"))[-1]
    with seg.open("ab") as fh:
        fh.write(b'{"n": 41, "alerts": [], "ev')
    again = Spool(tmp_path / "s", 10**6, segment_bytes=4096)
    recs = again.peek(100)
    assert [r.event.seq for r in recs] == list(range(16, 41))
    assert recs[0].alerts == () and recs[1].alerts == ("r1",)
    assert again.last_seqs() == {"a": 40}
    again.append([(synthetic_event("a", 41), [])])
    again.commit(again.peek(100)[-1].n)
    again.close()
    assert not list((tmp_path / "s").glob("seg-*")), "all delivered: no segment left"
    assert len(Spool(tmp_path / "s", 10**6)) == 0


def test_seq_continues_from_rotated_logs_without_redis(tmp_path: Path) -> None:
    from monitor.sinks.logfiles import last_logged

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "changes.jsonl").write_text("")  # just rotated: the newest events are in .1
    (logs / "changes.jsonl.1").write_text(synthetic_event("a", 7).model_dump_json() + "\n")
    (logs / "changes.jsonl.2").write_text(
        "\n".join(json.dumps(synthetic_event(c, s).model_dump(mode="json")) for c, s in [("a", 5), ("b", 9)]) + "\n"
    )
    (logs / "changes.jsonl.bak").write_text(synthetic_event("a", 99).model_dump_json() + "\n")  # not a rotation
    assert {cam: seq for cam, (seq, _) in last_logged(logs).items()} == {"a": 7, "b": 9}

    video = need_video(VIDEO)
    for _ in range(2):  # stamped from now, after the log's (synthetic) events of b
        proc = run_monitor("run", "--source", video, "--camera-id", "b", "--log-dir", logs, "--quiet", "--clock", "run")
        assert proc.returncode == 0, proc.stderr
    assert [e["seq"] for e in read_events(logs)] == list(range(10, 34))


def test_password_from_the_environment_for_daemon_and_consumers(tmp_path: Path) -> None:
    secret = "Env-Only-Pw-42"
    server = RedisServer(tmp_path / "redis", password=secret).start()
    try:
        bare = f"redis://127.0.0.1:{server.port}/0"
        env = {"MONITOR_REDIS__PASSWORD": secret}
        run = run_monitor(
            "run",
            "--source",
            need_video("car-detection.mp4"),
            "--camera-id",
            "aisle",
            "--log-dir",
            tmp_path / "logs",
            "--redis",
            bare,
            "--quiet",
            env=env,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        logged = read_events(tmp_path / "logs")
        assert logged and [e["event_id"] for e in stream(server.client())] == [e["event_id"] for e in logged]
        tail = run_monitor("tail", "--redis", bare, "-n", "0", env=env)
        assert tail.returncode == 0, tail.stderr
        assert tail.stdout.splitlines() == (tmp_path / "logs" / "changes.log").read_text().splitlines()
        for proc in (run, tail):
            assert secret not in proc.stdout + proc.stderr
        denied = run_monitor("tail", "--redis", bare, "-n", "0")  # no password: refused, one line
        assert denied.returncode == 1 and "authentication" in denied.stderr.lower()
    finally:
        server.kill()
