"""Scale-out on Redis Streams, with real processes and a real redis-server: `monitor run --role
gate` puts each change in `<prefix>:candidates`, `monitor describe-worker` processes describe
them, and the gate's ordered writer logs them. Faults: a worker SIGKILLed mid-batch, no worker
at all, all workers down then one back mid-run, Redis killed and restarted with AOF, a gate
killed and restarted, foreign entries."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis
import yaml
from support import DETECTOR, assert_no_traceback, free_port, monitor_env, need_video, read_events

from monitor.bench.local_redis import LocalRedisServer

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def write_config(path: Path, tmp: Path, url: str, cameras: list[dict], **cluster) -> Path:
    doc = {
        "cameras": cameras,
        "log": {"dir": str(tmp / "logs")},
        "redis": {"url": url},
        "http": {"bind": None},
        "describer": {"detector": {"model": str(DETECTOR)}},
        "cluster": {"node": "gate-a", "claim_idle_ms": 1000, **cluster},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", *args], env=monitor_env(), stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )  # fmt: skip


def gate(config: Path, log: Path) -> subprocess.Popen:
    return start(["run", "--role", "gate", "--config", str(config), "--quiet"], log)


def worker(config: Path, name: str, log: Path) -> subprocess.Popen:
    return start(["describe-worker", "--config", str(config), "--name", name], log)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 120) -> str:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"did not finish: {log.read_text()[-1500:]}") from None
    text = log.read_text()
    assert proc.returncode == 0, text[-1500:]
    assert_no_traceback(subprocess.CompletedProcess([], 0, "", text))
    return text


def stop(proc: subprocess.Popen, log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    return finish(proc, log, 30)


def wait_for(what, timeout: float = 60.0, every: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    raise AssertionError("timed out")


def assert_once_in_order(events: list[dict], client: redis.Redis) -> None:
    """Every event once, each camera's seq 1, 2, 3 ... in the log and in <prefix>:events."""
    for camera in {e["camera"] for e in events}:
        seqs = [e["seq"] for e in events if e["camera"] == camera]
        assert seqs == list(range(1, len(seqs) + 1)), (camera, seqs)
    streamed = [json.loads(f["json"]) for _, f in client.xrange("monitor:events")]
    assert [(e["camera"], e["seq"]) for e in streamed] == [(e["camera"], e["seq"]) for e in events]
    assert client.xlen("monitor:candidates") == 0  # every candidate left the stream once written


def test_a_worker_killed_mid_batch_loses_nothing(tmp_path: Path) -> None:
    rds = LocalRedisServer(tmp_path / "redis").start()
    client = rds.client()
    try:
        cameras = [
            {"id": "room", "source": str(need_video("one-by-one-person-detection.mp4"))},
            {"id": "aisle", "source": str(need_video("car-detection.mp4"))},
        ]
        config = write_config(tmp_path / "gate.yaml", tmp_path, rds.url, cameras, describe_timeout_s=120)
        g = gate(config, tmp_path / "gate.log")
        wait_for(lambda: client.xlen("monitor:candidates") >= 12, timeout=90, every=0.1)  # no worker yet
        a = worker(config, "a", tmp_path / "a.log")

        def a_holds_a_batch() -> bool:
            try:
                return client.xpending("monitor:candidates", "describers")["pending"] > 0
            except redis.ResponseError:  # the group does not exist yet
                return False

        wait_for(a_holds_a_batch)
        a.send_signal(signal.SIGKILL)  # read, not yet acknowledged: mid-batch
        a.wait(10)
        held = client.xpending("monitor:candidates", "describers")["pending"]
        b = worker(config, "b", tmp_path / "b.log")
        gate_log = finish(g, tmp_path / "gate.log")
        b_log = stop(b, tmp_path / "b.log")
        events = read_events(tmp_path / "logs")
        assert_once_in_order(events, client)
    finally:
        rds.stop()
    assert held > 0 and "candidates_claimed" in b_log, b_log  # b took a's batch over
    assert "describe_fallback" not in gate_log
    assert {e["describer"] for e in events} == {"embedded"}
    room = [e["text"] for e in events if e["camera"] == "room"]
    assert room == ["a person arrived in the centre", "a person left the centre"] * 6, room
    assert len([e for e in events if e["camera"] == "aisle"]) == 3


def test_with_no_worker_the_embedded_sentence_comes_after_the_timeout(tmp_path: Path) -> None:
    rds = LocalRedisServer(tmp_path / "redis").start()
    try:
        # a network camera nobody serves keeps the gate up (retrying) after the file has ended
        cameras = [{"id": "aisle", "source": str(need_video("car-detection.mp4"))},
                   {"id": "gone", "source": f"rtsp://127.0.0.1:{free_port()}/x", "offline_after_s": 600}]  # fmt: skip
        config = write_config(tmp_path / "gate.yaml", tmp_path, rds.url, cameras, describe_timeout_s=2)
        port = free_port()
        config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "http": {"bind": f"127.0.0.1:{port}"}}))
        g = gate(config, tmp_path / "gate.log")
        seen: list[tuple[int, int]] = []  # (undescribed, describe_fallbacks) of /healthz while it runs
        deadline = time.monotonic() + 60
        while g.poll() is None and (not seen or seen[-1][1] < 3) and time.monotonic() < deadline:
            try:
                with DIRECT.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    doc = json.loads(resp.read())
                seen.append((doc["undescribed"], doc["describe_fallbacks"]))
            except OSError:
                pass  # not listening yet
            time.sleep(0.05)
        gate_log = stop(g, tmp_path / "gate.log")
        assert max(u for u, _ in seen) >= 1 and seen[-1][1] == 3, seen[-5:]
        events = [e for e in read_events(tmp_path / "logs") if e["kind"] == "change"]
        assert [e["describer"] for e in events] == ["embedded-fallback"] * 3
        assert events[0]["text"] == "something passed through from bottom to top"
        assert gate_log.count("describe_fallback") == 1  # said once, counted
        assert_once_in_order(events, rds.client())
        # a worker that comes back later finds nothing left to do
        w = worker(config, "late", tmp_path / "late.log")
        time.sleep(2)
        assert "describe_worker_ready" in stop(w, tmp_path / "late.log")
        assert rds.client().xlen("monitor:described:gate-a") == 0
    finally:
        rds.stop()


def test_all_workers_down_then_one_back_mid_run(tmp_path: Path) -> None:
    """The aisle clip at its own pace (changes at 6, 17 and 26 s): no worker at first, so the
    first change gets the embedded sentence after describe_timeout_s; a worker started then
    describes the next two. Nothing lost, nothing twice, in order."""
    rds = LocalRedisServer(tmp_path / "redis").start()
    try:
        cameras = [{"id": "aisle", "source": str(need_video("car-detection.mp4")), "realtime": True}]
        config = write_config(tmp_path / "gate.yaml", tmp_path, rds.url, cameras, describe_timeout_s=2)
        g = gate(config, tmp_path / "gate.log")
        first = wait_for(lambda: read_events(tmp_path / "logs"), timeout=40, every=0.1)
        w = worker(config, "back", tmp_path / "back.log")
        finish(g, tmp_path / "gate.log")
        events = read_events(tmp_path / "logs")
        assert [e["describer"] for e in first] == ["embedded-fallback"]
        assert [e["describer"] for e in events] == ["embedded-fallback", "embedded", "embedded"], events
        assert "described=2" in stop(w, tmp_path / "back.log")
        assert_once_in_order(events, rds.client())
    finally:
        rds.stop()


def test_redis_killed_and_restarted_with_aof_loses_nothing(tmp_path: Path) -> None:
    rds = LocalRedisServer(tmp_path / "redis", aof=True).start()
    try:
        cameras = [{"id": "aisle", "source": str(need_video("car-detection.mp4")), "realtime": True}]
        config = write_config(tmp_path / "gate.yaml", tmp_path, rds.url, cameras, describe_timeout_s=60)
        w = worker(config, "w", tmp_path / "w.log")
        g = gate(config, tmp_path / "gate.log")
        wait_for(lambda: rds.client().xlen("monitor:events") >= 1, timeout=30, every=0.1)
        rds.kill()  # SIGKILL: what the AOF holds survives
        time.sleep(2)
        rds.start()
        gate_log = finish(g, tmp_path / "gate.log")
        stop(w, tmp_path / "w.log")
        events = read_events(tmp_path / "logs")
        assert len(events) == 3 and {e["describer"] for e in events} == {"embedded"}, gate_log
        assert_once_in_order(events, rds.client())
    finally:
        rds.stop()


def test_a_restarted_gate_continues_its_seq_without_duplicates(tmp_path: Path) -> None:
    rds = LocalRedisServer(tmp_path / "redis").start()
    client = rds.client()
    try:
        room = {"id": "room", "source": str(need_video("one-by-one-person-detection.mp4"))}
        config = write_config(tmp_path / "gate.yaml", tmp_path, rds.url, [room], describe_timeout_s=120)
        first = gate(config, tmp_path / "first.log")
        wait_for(lambda: client.xlen("monitor:candidates") >= 4, timeout=90, every=0.05)
        first.send_signal(signal.SIGKILL)  # nothing described, nothing written yet
        first.wait(10)
        left = client.xlen("monitor:candidates")
        assert not (tmp_path / "logs" / "changes.jsonl").exists() or read_events(tmp_path / "logs") == []
        # the same node again, now on another clip of the same camera id, with a worker
        aisle = {"id": "room", "source": str(need_video("car-detection.mp4")), "clock": "run"}
        config = write_config(tmp_path / "gate2.yaml", tmp_path, rds.url, [aisle], describe_timeout_s=120)
        w = worker(config, "w", tmp_path / "w.log")
        second_log = finish(gate(config, tmp_path / "second.log"), tmp_path / "second.log")
        stop(w, tmp_path / "w.log")
        events = read_events(tmp_path / "logs")
        assert_once_in_order(events, client)
    finally:
        rds.stop()
    assert "gate_resumed" in second_log and f"undescribed={left}" in second_log, second_log
    texts = [e["text"] for e in events]
    expected_room = (["a person arrived in the centre", "a person left the centre"] * 6)[:left]
    assert texts[:left] == expected_room, texts
    assert len(events) == left + 3  # then the new clip's three


def test_foreign_and_damaged_entries_are_acknowledged_and_logged_once(tmp_path: Path) -> None:
    rds = LocalRedisServer(tmp_path / "redis").start()
    client = rds.client()
    try:
        client.xadd("monitor:candidates", {"hello": "world"})
        client.xadd("monitor:candidates", {"v": "1", "node": "x", "reply": "monitor:described:x", "camera": "c",
                                           "seq": "1", "kind": "change", "meta": "{not json"})  # fmt: skip
        cameras = [{"id": "aisle", "source": str(need_video("car-detection.mp4"))}]
        config = write_config(tmp_path / "gate.yaml", tmp_path, rds.url, cameras, describe_timeout_s=60)
        w = worker(config, "w", tmp_path / "w.log")
        finish(gate(config, tmp_path / "gate.log"), tmp_path / "gate.log")
        w_log = stop(w, tmp_path / "w.log")
        assert w_log.count("candidate_malformed") == 2, w_log
        assert "format None" in w_log and "a damaged candidate" in w_log
        assert client.xpending("monitor:candidates", "describers")["pending"] == 0
        assert client.xlen("monitor:candidates") == 0  # acknowledged and deleted
        events = read_events(tmp_path / "logs")
        assert len(events) == 3 and {e["describer"] for e in events} == {"embedded"}
    finally:
        rds.stop()


def test_a_candidate_crosses_the_wire_whole() -> None:
    """What a worker decodes is the gate's candidate: every field, and the frames within JPEG's error."""
    import numpy as np

    from monitor.cluster.wire import WireError, decode_candidate, encode_candidate, header
    from monitor.records import ChangeCandidate, Frame, GateScores, Region, Sighting, Track

    def scene(i: int) -> np.ndarray:  # a smooth background and a box that moves
        img = np.tile(np.linspace(40, 200, 64, dtype=np.uint8), (48, 1))[:, :, None].repeat(3, axis=2).copy()
        img[10:30, 5 + 10 * i : 20 + 10 * i] = (30, 60, 220)
        return img

    frames = [Frame("cam", i, i * 0.5, 1_800_000_000.0 + i * 0.5, scene(i)) for i in range(3)]
    sighting = Sighting(1, 0.5, 0.1, 0.2, 0.3, 0.4, look=97.5)
    track = Track(7, (sighting, Sighting(2, 1.0, 0.5, 0.2, 0.3, 0.4)), False, ((sighting, frames[1]),))
    cand = ChangeCandidate(
        "cam", frames[0], frames[2], 0.25, (Region(0.1, 0.2, 0.3, 0.4, "passed", 0.05, track=7,
        heading="left to right"),), GateScores(0.81, 0.0123), transient=True, settled=False, detected_at=12.5,
        tracks=(track,), change_id="cam-c0123", merged=("cam-c0456",),
    )  # fmt: skip
    fields = {k.encode(): v for k, v in encode_candidate(cand, 42, "gate-a", "monitor:described:gate-a", 95).items()}
    assert header(fields) == ("gate-a", "monitor:described:gate-a", "cam", 42, "change")
    back = decode_candidate(fields)
    assert (back.regions, back.scores, back.transient, back.settled) == (cand.regions, cand.scores, True, False)
    assert (back.change_id, back.merged, back.detected_at, back.onset_media_time) == (
        "cam-c0123",
        ("cam-c0456",),
        12.5,
        0.25,
    )
    assert [(f.seq, f.media_time, f.wall_time) for f in (back.before, back.after)] == [
        (0, 0.0, 1.8e9),
        (2, 1.0, 1.8e9 + 1),
    ]
    assert back.tracks[0].sightings == track.sightings and back.tracks[0].views[0][1].seq == 1
    assert np.abs(back.after.image.astype(int) - frames[2].image.astype(int)).mean() < 4  # JPEG's error
    del fields[b"frame:2"]
    try:
        decode_candidate(fields)
    except WireError as exc:
        assert str(exc) == "frame 2 is missing or not a JPEG"
    else:
        raise AssertionError("a candidate without its after frame was accepted")


def test_bench_cluster_reports_every_pair_once() -> None:
    """`monitor bench cluster` at its smallest (1 camera, 1 worker), the real processes: its JSON."""
    from support import run_monitor

    proc = run_monitor("bench", "cluster", "--cameras", "1", "--workers", "1", "--no-kill", "--json", timeout=240)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    (run,) = res["runs"]
    assert run["workers"] == 1 and run["candidates"] == run["events"] == 12, run
    assert (run["lost"], run["duplicated"], run["in_order"], run["fallbacks"]) == (0, 0, True, 0)
    assert run["pairs_per_s"] > 0 and set(run["cpu_percent"]) == {"gate", "redis", "w0"}
    assert res["goals"]["nothing_lost_or_duplicated"]["met"] is True and "speedup_2_vs_1" not in res["goals"]


def test_a_full_stream_makes_the_gate_coalesce_and_counts_it(tmp_path: Path) -> None:
    """Backpressure: the stream never holds more than cluster.max_undescribed candidates; the
    camera's queue coalesces meanwhile (counted), and the seq has no gap."""
    rds = LocalRedisServer(tmp_path / "redis").start()
    client = rds.client()
    try:
        room = {"id": "room", "source": str(need_video("one-by-one-person-detection.mp4"))}
        config = write_config(
            tmp_path / "gate.yaml", tmp_path, rds.url, [room], describe_timeout_s=1.5, max_undescribed=2
        )
        doc = yaml.safe_load(config.read_text())
        doc["describer"]["queue_per_camera"] = 2
        config.write_text(yaml.safe_dump(doc))
        g = gate(config, tmp_path / "gate.log")
        most = 0
        while g.poll() is None:
            most = max(most, client.xlen("monitor:candidates"))
            time.sleep(0.01)
        gate_log = finish(g, tmp_path / "gate.log")
        events = read_events(tmp_path / "logs")
        assert_once_in_order(events, client)
    finally:
        rds.stop()
    assert 1 <= most <= 2, most
    summary = next(line for line in gate_log.splitlines() if "camera_summary" in line)
    coalesced = int(summary.split("coalesced=")[1].split()[0])
    assert coalesced > 0 and len(events) == 12 - coalesced, (coalesced, len(events))
    assert {e["describer"] for e in events} == {"embedded-fallback"}


def test_a_reload_updates_the_cameras_a_gate_lists(tmp_path: Path) -> None:
    """<prefix>:cameras (what the workers deal out) follows the gate's cameras across a SIGHUP."""
    rds = LocalRedisServer(tmp_path / "redis").start()
    client = rds.client()
    try:
        clip = str(need_video("car-detection.mp4"))
        cameras = [{"id": "aisle", "source": clip, "realtime": True}, {"id": "dock", "source": clip, "realtime": True}]
        config = write_config(tmp_path / "gate.yaml", tmp_path, rds.url, cameras)
        g = gate(config, tmp_path / "gate.log")
        wait_for(lambda: client.hget("monitor:cameras", "gate-a") == '["aisle", "dock"]', timeout=30, every=0.05)
        config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "cameras": cameras[:1]}))
        g.send_signal(signal.SIGHUP)
        wait_for(lambda: client.hget("monitor:cameras", "gate-a") == '["aisle"]', timeout=30, every=0.05)
        gate_log = stop(g, tmp_path / "gate.log")
        assert "config_reloaded" in gate_log
    finally:
        rds.stop()
