"""A change an early rule announced at its onset and that then gets no event after all still gets
its settled record (same change_id, outcome nothing_logged, the reason as its text): dropped
from a full camera queue, or refused by the log's time order. Real redis-server, real sink."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from monitor.bench.local_redis import LocalRedisServer
from monitor.config import AlertRule, CameraConfig, RedisConfig
from monitor.daemon.camera_health import HealthNotice
from monitor.daemon.queues import CameraQueues
from monitor.records import ChangeCandidate, ChangeStart, Frame, GateScores, Region
from monitor.sinks.alerts import AlertRules
from monitor.sinks.onset import NOT_LOGGED_BACK_IN_TIME, NOT_LOGGED_QUEUE_FULL, OnsetAlerts
from monitor.sinks.redis_streams import RedisSink

REGION = Region(0.2, 0.2, 0.3, 0.3, "changed", 0.09)


def frame(seq: int) -> Frame:
    return Frame("yard", seq, seq * 0.5, 1_800_000_000.0 + seq * 0.5, np.zeros((32, 32, 3), np.uint8))


def candidate(change_id: str, onset_seq: int) -> ChangeCandidate:
    return ChangeCandidate(
        "yard", frame(onset_seq - 1), frame(onset_seq + 4), onset_seq * 0.5, (REGION,), GateScores(0.7, 0.09),
        change_id=change_id,
    )  # fmt: skip


def onset(change_id: str, onset_seq: int) -> ChangeStart:
    f = frame(onset_seq)
    return ChangeStart("yard", change_id, f.media_time, f.wall_time, f, (REGION,), 0.09)


def alerts_of(client, change_id: str, count: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = [f for _, f in client.xrange("monitor:alerts") if f.get("change_id") == change_id]
        if len(got) >= count:
            return got
        time.sleep(0.02)
    raise AssertionError(f"{change_id}: {count} alerts expected, got {got}")


def test_announced_changes_that_are_not_logged_get_their_settled_record(tmp_path: Path) -> None:
    rds = LocalRedisServer(tmp_path / "redis").start()
    client = rds.client()
    rules = AlertRules([AlertRule(name="yard-early", early=True)], [CameraConfig(id="yard", source="yard.mp4")])
    sink = RedisSink(RedisConfig(url=rds.url), None, rules)
    onsets = OnsetAlerts(rules, redis=sink)
    onsets.start()
    try:
        # dropped: a queue of one, a health notice between every two candidates (nothing to merge)
        onsets.observe(onset("yard-c1", 2))
        alerts_of(client, "yard-c1", 1)
        run = SimpleNamespace(camera=SimpleNamespace(id="yard"), coalesced=0, dropped=0)
        queues = CameraQueues(1, on_drop=lambda cand: onsets.unlogged(cand, NOT_LOGGED_QUEUE_FULL))
        queues.put(run, candidate("yard-c1", 2))
        queues.put(run, HealthNotice("yard", "camera_offline", 1_800_000_003.0, 1_800_000_004.0, 4.0))
        queues.put(run, candidate("yard-c2", 12))  # never announced: no record for it
        assert run.dropped == 1
        first = alerts_of(client, "yard-c1", 2)
        # refused by the time order (what the describe stages call for such a change)
        onsets.observe(onset("yard-c3", 20))
        alerts_of(client, "yard-c3", 1)
        onsets.unlogged(candidate("yard-c3", 20), NOT_LOGGED_BACK_IN_TIME)
        third = alerts_of(client, "yard-c3", 2)
        assert not [f for _, f in client.xrange("monitor:alerts") if f.get("change_id") == "yard-c2"]
    finally:
        onsets.stop()
        rds.stop()
    for got, why, onset_seq in ((first, NOT_LOGGED_QUEUE_FULL, 2), (third, NOT_LOGGED_BACK_IN_TIME, 20)):
        assert [f["phase"] for f in got] == ["onset", "settled"], got
        body = json.loads(got[1]["json"])
        assert (body["outcome"], body["text"], body["event_id"]) == ("nothing_logged", why, None)
        assert body["t_onset"] == json.loads(got[0]["json"])["t_onset"]  # the same onset, to the frame
        assert body["media_t_onset"] == onset_seq * 0.5
