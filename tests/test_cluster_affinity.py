"""Camera affinity between describe workers (monitor.cluster.affinity), on a real redis-server
with the real embedded describer: under load a camera's candidates go to the worker rendezvous
hashing names, by XCLAIM, and nothing is lost or described twice, also when that worker dies."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from monitor.bench.local_redis import LocalRedisServer
from monitor.cluster.affinity import HOLD_BATCHES, dealt, owner_of
from monitor.cluster.wire import encode_candidate
from monitor.cluster.worker import GROUP, DescribeWorker, candidates_key, results_key
from monitor.describe.factory import build_describer
from monitor.records import ChangeCandidate, Frame, GateScores, Region

CAMERAS = ["lobby", "gate", "dock", "yard", "stairs", "lift"]


def candidate(camera: str, i: int) -> ChangeCandidate:
    image = np.full((48, 64, 3), 90, np.uint8)
    after = image.copy()
    after[10:30, 10:30] = 220
    before = Frame(camera, 2 * i, 2.0 * i, 1_800_000_000.0 + 2 * i, image)
    after_frame = Frame(camera, 2 * i + 1, 2.0 * i + 1, 1_800_000_001.0 + 2 * i, after)
    region = Region(0.15, 0.2, 0.3, 0.4, "appeared", 0.1)
    return ChangeCandidate(camera, before, after_frame, 2.0 * i, (region,), GateScores(0.8, 0.1))


def fill(client: redis.Redis, per_camera: int) -> None:
    """Candidates of every camera, interleaved as a busy gate node's are."""
    for i in range(per_camera):
        for camera in CAMERAS:
            fields = encode_candidate(candidate(camera, i), i + 1, "gate-a", results_key("monitor", "gate-a"), 80)
            client.xadd(candidates_key("monitor"), fields)


def results(client: redis.Redis) -> list[tuple[str, int, str]]:
    """(camera, seq, worker) of every result the workers sent."""
    out = []
    for _, f in client.xrange(results_key("monitor", "gate-a")):
        out.append((f[b"camera"].decode(), int(f[b"seq"]), f[b"worker"].decode()))
    return out


@pytest.fixture
def client(tmp_path: Path):
    """A bytes client of a throwaway redis-server."""
    rds = LocalRedisServer(tmp_path / "redis").start()
    try:
        yield rds.client(decode=False)
    finally:
        rds.stop()


def workers(client: redis.Redis, names: list[str], page: int, claim_idle_ms: int = 60_000) -> list[DescribeWorker]:
    describer = build_describer("embedded")
    out = [DescribeWorker(client, describer, "monitor", n, claim_idle_ms, page) for n in names]
    for w in out:
        w.ensure_group()
        w.affinity.beat()  # each is seen alive before the first batch
    for w in out:
        w.affinity.beat(look=True)  # and each sees the others
    return out


def test_rendezvous_owners_are_stable_spread_and_move_only_when_their_worker_goes() -> None:
    cams = [f"gate-a\0cam{i:03d}" for i in range(300)]
    three = ["w-a", "w-b", "w-c"]
    owners = {c: owner_of(c, three) for c in cams}
    assert owners == {c: owner_of(c, list(reversed(three))) for c in cams}  # the order of the list is no matter
    counts = [list(owners.values()).count(w) for w in three]
    assert min(counts) >= 70, counts  # 100 each, give or take
    two = ["w-a", "w-c"]
    moved = [c for c in cams if owner_of(c, two) != owners[c]]
    assert moved and all(owners[c] == "w-b" for c in moved)  # only w-b's cameras move


def test_cameras_are_dealt_evenly_whatever_their_names() -> None:
    cams = [f"gate-{g}\0cam{i}" for g in "ab" for i in range(7)]
    owners = dealt(cams, ["w2", "w0", "w1"])
    assert sorted(list(owners.values()).count(w) for w in ("w0", "w1", "w2")) == [4, 5, 5]
    assert owners == dealt(list(reversed(cams)), ["w0", "w1", "w2"])  # the same, whoever computes it
    assert dealt(cams, []) == {}


@pytest.mark.parametrize("listed", [True, False], ids=["cameras-listed", "rendezvous"])
def test_under_load_each_camera_is_described_by_its_worker_and_nothing_twice(client: redis.Redis, listed: bool) -> None:
    if listed:  # as a gate node lists its cameras at its start
        client.hset("monitor:cameras", "gate-a", json.dumps(CAMERAS))
    fill(client, per_camera=8)  # 48 candidates, batches of 4: every read is a full one until the end
    a, b = workers(client, ["w-a", "w-b"], page=4)
    owners = {c: a.affinity.owner("gate-a", c) for c in CAMERAS}
    assert owners == {c: b.affinity.owner("gate-a", c) for c in CAMERAS}  # both see the same owners
    if listed:  # dealt in turn: 3 cameras each
        assert sorted(owners.values()) == ["w-a"] * 3 + ["w-b"] * 3, owners
    else:
        assert owners == {c: owner_of(f"gate-a\0{c}", ["w-a", "w-b"]) for c in CAMERAS}
    total = 0
    for _ in range(40):
        for w in (a, b):
            w.read_new(block_ms=1)
        total = len(results(client))
        if total == 48:
            break
    got = results(client)
    assert sorted((c, s) for c, s, _ in got) == sorted((c, i) for c in CAMERAS for i in range(1, 9))
    by_owner = sum(1 for c, _, w in got if w == owners[c])
    assert by_owner >= 40, got  # the last partial reads may stay where they are read
    assert a.affinity.handed_over + b.affinity.handed_over > 0
    assert client.xpending(candidates_key("monitor"), GROUP)["pending"] == 0


def test_an_owner_holding_two_batches_gets_no_more(client: redis.Redis) -> None:
    fill(client, per_camera=10)
    a, b = workers(client, ["w-a", "w-b"], page=3)
    for _ in range(12):  # only a reads: b is busy with something long
        a.read_new(block_ms=1)
    held = client.xpending(candidates_key("monitor"), GROUP)
    by_name = {c["name"].decode(): int(c["pending"]) for c in held["consumers"]}
    assert by_name.get("w-b", 0) <= HOLD_BATCHES * 3, by_name
    assert len(results(client)) > 12 and {w for *_, w in results(client)} == {"w-a"}  # a never waits on b


def test_candidates_handed_to_a_worker_that_died_are_claimed_and_described_once(client: redis.Redis) -> None:
    fill(client, per_camera=4)  # 24
    a, b = workers(client, ["w-a", "w-b"], page=4, claim_idle_ms=1000)
    a.read_new(block_ms=1)  # hands b's cameras to b ... which dies now, holding them
    handed = a.affinity.handed_over
    assert handed > 0
    deadline = time.monotonic() + 20
    while len(results(client)) < 24 and time.monotonic() < deadline:
        a.run(count=a.handled + 1, should_stop=lambda: time.monotonic() > deadline)
    got = results(client)
    assert sorted((c, s) for c, s, _ in got) == sorted((c, i) for c in CAMERAS for i in range(1, 5))
    assert {w for *_, w in got} == {"w-a"} and a.claimed >= handed
    while client.exists("monitor:describer:w-b") and time.monotonic() < deadline:
        time.sleep(0.05)  # its key expires: b is seen gone and leaves the set
    a.affinity.beat(look=True)
    assert a.affinity.live == ["w-a"] and client.smembers("monitor:describers") == {b"w-a"}
    assert client.xpending(candidates_key("monitor"), GROUP)["pending"] == 0


def test_cluster_status_shows_the_candidates_workers_and_gates(client: redis.Redis) -> None:
    """`monitor cluster-status`, the real command, on what two workers left: one alive that
    described its share, one gone holding what was handed to it."""
    from support import assert_no_traceback, free_port, run_monitor

    client.hset("monitor:cameras", "gate-a", json.dumps(CAMERAS))
    fill(client, per_camera=2)  # 12
    a, b = workers(client, ["w-a", "w-b"], page=4)
    a.read_new(block_ms=1)  # a full read: b's cameras handed to b
    b.affinity.leave()  # b is gone, holding them
    url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}"
    proc = run_monitor("cluster-status", "--redis", url, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    handed = a.affinity.handed_over
    assert handed > 0 and (doc["candidates"], doc["in_hand"]) == (12, handed)
    assert doc["workers"] == [
        {"name": "w-a", "alive": True, "pending": 0, "idle_s": doc["workers"][0]["idle_s"], "cameras": 6},
        {"name": "w-b", "alive": False, "pending": handed, "idle_s": doc["workers"][1]["idle_s"], "cameras": 0},
    ]
    assert doc["gates"] == [{"node": "gate-a", "cameras": 6, "results_waiting": a.described}]
    table = run_monitor("cluster-status", "--redis", url)
    assert f"candidates: 12 in the stream, {handed} in a worker's hand" in table.stdout, table.stdout
    down = run_monitor("cluster-status", "--redis", f"redis://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and down.stderr.count("\n") == 1, down.stderr
    assert "cluster-status: Redis at redis://127.0.0.1:" in down.stderr
    assert_no_traceback(down)
