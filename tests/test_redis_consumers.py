"""`monitor tail --redis` and `monitor alerts` against a real redis-server, with the streams
written here in the delivery layout (`<prefix>:events`, `<prefix>:alerts`)."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer
from support import REPO, assert_no_traceback, error_lines, free_port, make_event, monitor_env, run_monitor

from monitor.records import ChangeEvent

PREFIX = "monitor"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield srv
    srv.kill()


@pytest.fixture
def r(server: RedisServer):
    client = server.client()
    client.flushall()
    return client


def fields(e: ChangeEvent) -> dict[str, str]:
    return {
        "event_id": e.event_id,
        "camera": e.camera,
        "seq": str(e.seq),
        "kind": e.kind,
        "t_after": e.t_after,
        "text": e.text,
        "json": e.model_dump_json(),
    }


def add_event(r, e: ChangeEvent, prefix: str = PREFIX) -> str:
    return r.xadd(f"{prefix}:events", fields(e))


def add_alert(r, e: ChangeEvent, rule: str, prefix: str = PREFIX) -> str:
    return r.xadd(f"{prefix}:alerts", {"rule": rule, **fields(e)})


EVENTS = [
    make_event("lot-east", 1, "a vehicle arrived on the right", 0),
    make_event("gate", 1, "a person arrived in the centre", 3),
    make_event("lot-east", 2, "a vehicle left on the right", 61),
    make_event("gate", 2, "a person left on the left", 75),
    make_event("lot-east", 3, "a bag appeared in the centre", 125),
]


def run_alerts(server: RedisServer, consumer: str, *args: str, **kw):
    """`monitor alerts` as consumer `consumer` of group g."""
    return run_monitor("alerts", "--redis", server.url, "--group", "g", "--consumer", consumer, *args, **kw)


def alert_line(e: ChangeEvent, rule: str) -> str:
    return f"{e.t_after[11:19]} {e.camera} [{rule}]: {e.text}"


class Proc:
    """A `monitor` process whose stdout lines are collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "monitor", *args],
            cwd=REPO,
            env=monitor_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))

    def read(self, n: int, timeout: float = 10.0) -> list[str]:
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            try:
                out.append(self.lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    break
        return out

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout=10)
        finally:
            if self.p.poll() is None:
                self.p.kill()
        assert self.p.stderr is not None
        return rc, self.p.stderr.read()


# -- tail --redis ------------------------------------------------------------------------------------
def test_tail_prints_the_last_n_events(server: RedisServer, r) -> None:
    for e in EVENTS:
        add_event(r, e)
    proc = run_monitor("tail", "--redis", server.url, "-n", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [EVENTS[3].line(), EVENTS[4].line()]
    everything = run_monitor("tail", "--redis", server.url, "-n", "0")
    assert everything.stdout.splitlines() == [e.line() for e in EVENTS]


def test_tail_camera_filter_and_json(server: RedisServer, r) -> None:
    for e in EVENTS:
        add_event(r, e)
    proc = run_monitor("tail", "--redis", server.url, "--camera", "lot-east", "-n", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [EVENTS[2].line(), EVENTS[4].line()]
    js = run_monitor("tail", "--redis", server.url, "--camera", "gate", "--json")
    assert [ChangeEvent.model_validate_json(x) for x in js.stdout.splitlines()] == [EVENTS[1], EVENTS[3]]


def test_tail_pages_back_through_a_long_stream(server: RedisServer, r) -> None:
    # More entries than one XREVRANGE page, the wanted camera only at the start.
    add_event(r, EVENTS[1])
    pipe = r.pipeline()
    for i in range(1200):
        pipe.xadd(f"{PREFIX}:events", fields(make_event("busy", i + 1, f"change {i}", 200 + i)))
    pipe.execute()
    proc = run_monitor("tail", "--redis", server.url, "--camera", "gate", "-n", "5")
    assert proc.stdout.splitlines() == [EVENTS[1].line()], proc.stderr
    last = run_monitor("tail", "--redis", server.url, "-n", "3")
    assert [x.split(": ")[1] for x in last.stdout.splitlines()] == ["change 1197", "change 1198", "change 1199"]


def test_tail_other_prefix_and_missing_stream(server: RedisServer, r) -> None:
    add_event(r, EVENTS[0], prefix="site2")
    proc = run_monitor("tail", "--redis", server.url, "--prefix", "site2")
    assert proc.stdout.splitlines() == [EVENTS[0].line()], proc.stderr
    missing = run_monitor("tail", "--redis", server.url)
    assert missing.returncode == 1
    assert_no_traceback(missing)
    assert error_lines(missing) == [f"no stream monitor:events at {server.url} (is --prefix right?)"]


def test_tail_follow_sees_new_entries(server: RedisServer, r) -> None:
    for e in EVENTS[:3]:
        add_event(r, e)
    tail = Proc("tail", "--redis", server.url, "-f", "-n", "1", "--camera", "gate")
    try:
        assert tail.read(1) == [EVENTS[1].line()]
        time.sleep(0.3)  # it is blocked in XREAD now
        add_event(r, EVENTS[3])  # gate: printed
        add_event(r, EVENTS[4])  # lot-east: filtered out
        later = make_event("gate", 3, "a cat appeared on the left", 300)
        add_event(r, later)
        assert tail.read(2) == [EVENTS[3].line(), later.line()]
        assert tail.read(1, timeout=0.5) == []
    finally:
        rc, err = tail.stop(signal.SIGTERM)
    assert rc == 0, err
    assert "Traceback" not in err


def test_tail_follow_waits_for_the_stream_to_exist(server: RedisServer, r) -> None:
    tail = Proc("tail", "--redis", server.url, "-f", "--json")
    try:
        time.sleep(0.5)
        add_event(r, EVENTS[0])
        got = tail.read(1)
        assert [ChangeEvent.model_validate_json(x) for x in got] == [EVENTS[0]]
    finally:
        rc, err = tail.stop(signal.SIGINT)
    assert rc == 0, err


# -- alerts ----------------------------------------------------------------------------------------------
def pending(r, group: str) -> int:
    return r.xpending(f"{PREFIX}:alerts", group)["pending"]


def test_alerts_prints_and_acks(server: RedisServer, r) -> None:
    # Alerts already in the stream before the group exists are delivered (group starts at 0).
    for i, e in enumerate(EVENTS):
        add_alert(r, e, f"rule-{i % 2}")
    proc = run_alerts(server, "c1", "--count", "3", timeout=15)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [alert_line(EVENTS[i], f"rule-{i % 2}") for i in range(3)]
    assert pending(r, "g") == 0
    # The group remembers: the next run gets the rest, then exits after --count.
    js = run_alerts(server, "c1", "--count", "2", "--json", timeout=15)
    assert js.returncode == 0, js.stderr
    objs = [json.loads(x) for x in js.stdout.splitlines()]
    assert [(o["rule"], ChangeEvent.model_validate(o["event"])) for o in objs] == [
        ("rule-1", EVENTS[3]),
        ("rule-0", EVENTS[4]),
    ]
    assert all(o["id"] for o in objs)
    assert pending(r, "g") == 0
    assert r.xinfo_groups(f"{PREFIX}:alerts")[0]["last-delivered-id"] == objs[-1]["id"]


def test_alerts_creates_the_stream_and_waits(server: RedisServer, r) -> None:
    consumer = Proc("alerts", "--redis", server.url, "--group", "g", "--consumer", "c1", "--count", "1")
    try:
        deadline = time.monotonic() + 10  # the consumer's start-up time varies with the machine's load
        while not r.exists(f"{PREFIX}:alerts") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.exists(f"{PREFIX}:alerts")  # MKSTREAM: the group is created before any alert exists
        add_alert(r, EVENTS[2], "vehicles")
        assert consumer.read(1) == [alert_line(EVENTS[2], "vehicles")]
        assert consumer.p.wait(timeout=10) == 0  # --count 1: done
    finally:
        if consumer.p.poll() is None:
            consumer.p.kill()
    assert pending(r, "g") == 0


def test_failover_claims_what_a_dead_consumer_left(server: RedisServer, r) -> None:
    key = f"{PREFIX}:alerts"
    r.xgroup_create(key, "g", id="0", mkstream=True)
    for e in EVENTS:
        add_alert(r, e, "any")
    # c1 reads three alerts and dies before XACK: what a SIGKILLed consumer leaves behind.
    got = r.xreadgroup("g", "c1", {key: ">"}, count=3)
    assert len(got[0][1]) == 3 and pending(r, "g") == 3
    time.sleep(0.3)  # idle longer than --claim-idle-ms
    proc = run_alerts(server, "c2", "--claim-idle-ms", "200", "--count", "5", timeout=15)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == sorted(alert_line(e, "any") for e in EVENTS)
    assert pending(r, "g") == 0


def test_failover_of_a_killed_consumer_process(server: RedisServer, r) -> None:
    """A real consumer killed while an alert is delivered to it but not acked: a live one
    takes it over once it is idle long enough."""
    key = f"{PREFIX}:alerts"
    r.xgroup_create(key, "g", id="0", mkstream=True)
    c1 = Proc("alerts", "--redis", server.url, "--group", "g", "--consumer", "c1", "--claim-idle-ms", "600000")
    try:
        for attempt in range(5):
            first = make_event("gate", 10 + attempt, f"warm-up {attempt}", attempt)
            add_alert(r, first, "first")
            assert c1.read(1) == [alert_line(first, "first")]
            while pending(r, "g"):  # acked, and (shortly) blocked in XREADGROUP again
                time.sleep(0.01)
            time.sleep(0.1)
            # Freeze c1 and deliver to it: Redis answers its blocked XREADGROUP, c1 never acks.
            c1.p.send_signal(signal.SIGSTOP)
            lost = make_event("gate", 20 + attempt, f"left behind {attempt}", 100 + attempt)
            add_alert(r, lost, "second")
            deadline = time.monotonic() + 0.5
            while pending(r, "g") != 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            if pending(r, "g") == 1:
                break
            # Its blocking read had just timed out: let it take this one normally and retry.
            c1.p.send_signal(signal.SIGCONT)
            assert c1.read(1) == [alert_line(lost, "second")]
        else:
            pytest.fail("could not catch c1 blocked in XREADGROUP")
        assert r.xpending_range(key, "g", "-", "+", 10)[0]["consumer"] == "c1"
    finally:
        c1.p.kill()
        c1.p.wait(timeout=10)
    c2 = run_alerts(server, "c2", "--claim-idle-ms", "300", "--count", "1", timeout=15)
    assert c2.returncode == 0, c2.stderr
    assert c2.stdout.splitlines() == [alert_line(lost, "second")]
    assert pending(r, "g") == 0


def test_restarted_consumer_resumes_its_own_pending(server: RedisServer, r) -> None:
    key = f"{PREFIX}:alerts"
    r.xgroup_create(key, "g", id="0", mkstream=True)
    for e in EVENTS[:2]:
        add_alert(r, e, "any")
    r.xreadgroup("g", "c1", {key: ">"}, count=2)  # read, never acked
    # Far from idle enough to be claimed: c1 gets them back because they are its own.
    proc = run_alerts(server, "c1", "--claim-idle-ms", "600000", "--count", "2", timeout=15)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [alert_line(e, "any") for e in EVENTS[:2]]
    assert pending(r, "g") == 0


def test_claim_leaves_fresh_pending_entries_alone(server: RedisServer, r) -> None:
    key = f"{PREFIX}:alerts"
    r.xgroup_create(key, "g", id="0", mkstream=True)
    add_alert(r, EVENTS[0], "any")
    r.xreadgroup("g", "c1", {key: ">"}, count=1)  # c1 is (presumably) still working on it
    c2 = Proc("alerts", "--redis", server.url, "--group", "g", "--consumer", "c2", "--claim-idle-ms", "60000")
    try:
        assert c2.read(1, timeout=1.5) == []
    finally:
        rc, err = c2.stop()
    assert rc == 0, err
    assert r.xpending_range(key, "g", "-", "+", 10)[0]["consumer"] == "c1"


def test_two_live_consumers_share_without_duplicates(server: RedisServer, r) -> None:
    key = f"{PREFIX}:alerts"
    r.xgroup_create(key, "g", id="0", mkstream=True)
    common = ["alerts", "--redis", server.url, "--group", "g", "--claim-idle-ms", "60000"]
    c1, c2 = Proc(*common, "--consumer", "c1"), Proc(*common, "--consumer", "c2")
    n = 24
    sent = [make_event("gate", i + 1, f"change number {i}", i) for i in range(n)]
    try:
        time.sleep(0.8)  # both are blocked in XREADGROUP
        for e in sent:
            add_alert(r, e, "all")
            time.sleep(0.03)
        deadline = time.monotonic() + 10
        got1: list[str] = []
        got2: list[str] = []
        while len(got1) + len(got2) < n and time.monotonic() < deadline:
            got1 += c1.read(1, timeout=0.05)
            got2 += c2.read(1, timeout=0.05)
        time.sleep(0.3)
        got1 += c1.read(n, timeout=0.1)
        got2 += c2.read(n, timeout=0.1)
    finally:
        rc1, err1 = c1.stop()
        rc2, err2 = c2.stop(signal.SIGINT)
    assert (rc1, rc2) == (0, 0), err1 + err2
    assert got1 and got2, (got1, got2)  # both took part
    assert sorted(got1 + got2) == sorted(alert_line(e, "all") for e in sent)  # each exactly once
    assert pending(r, "g") == 0


# -- connection errors ----------------------------------------------------------------------------
def test_wrong_password_is_one_line_without_the_password(tmp_path: Path) -> None:
    srv = RedisServer(tmp_path / "redis", password="s3cret-right").start()
    try:
        bad_url = f"redis://:Wr0ngPassw0rd@127.0.0.1:{srv.port}/0"
        for args in (["tail", "--redis", bad_url], ["alerts", "--redis", bad_url, "--count", "1"]):
            proc = run_monitor(*args, timeout=30)
            assert proc.returncode == 1, proc.stderr
            assert_no_traceback(proc)
            assert "Wr0ngPassw0rd" not in proc.stdout + proc.stderr
            assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line
            (line,) = error_lines(proc)
            assert line.startswith(f"authentication failed at redis://:***@127.0.0.1:{srv.port}/0"), line
        # The right password works.
        srv.client().xadd(f"{PREFIX}:alerts", {"rule": "r", **fields(EVENTS[0])})
        ok = run_monitor("alerts", "--redis", srv.url, "--count", "1", timeout=30)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.splitlines() == [alert_line(EVENTS[0], "r")]
    finally:
        srv.kill()


def test_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    proc = run_monitor("alerts", "--redis", f"redis://:pw-secret@127.0.0.1:{port}/0", "--count", "1", timeout=30)
    assert proc.returncode == 1
    assert_no_traceback(proc)
    (line,) = error_lines(proc)
    assert line.startswith(f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0"), line
    assert "pw-secret" not in proc.stderr
