"""Early alerts (`alerts[].early`): the real daemon on two real clips read at their own pace, with
a real redis-server, Debian's mosquitto and the real detector. Each change of an early rule is
announced at its onset (with the labels the detector gives then) before its settled alert, in
Redis and on MQTT, under one `change_id`; onset alerts never take a seq or enter the log; a
change that ends with nothing logged still gets its settled record; plain rules are unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import paho.mqtt.client as mqtt
import yaml
from support import DETECTOR, assert_no_traceback, monitor_env, need_video

from monitor.bench.local_mqtt import Mosquitto
from monitor.bench.local_redis import LocalRedisServer
from monitor.config import load_settings
from monitor.errors import ConfigError


def first_seconds(video: Path, seconds: float, out: Path) -> Path:
    """The clip's first `seconds`, its packets copied as they are (no re-encoding)."""
    with av.open(str(video)) as src, av.open(str(out), "w") as dst:
        stream = src.streams.video[0]
        copy = dst.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.dts is None:
                continue
            if packet.pts is not None and packet.pts * stream.time_base > seconds:
                break
            packet.stream = copy
            dst.mux(packet)
    return out


class AlertSubscriber:
    def __init__(self, port: int):
        self.got: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-alerts")
        self.client.on_connect = lambda c, *_: c.subscribe("monitor/alerts/#", qos=1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(5)

    def _message(self, _client, _userdata, msg) -> None:
        with self.lock:
            self.got.append((msg.topic, json.loads(msg.payload)))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_early_alerts_come_at_onset_then_settle(tmp_path: Path) -> None:
    room = first_seconds(need_video("one-by-one-person-detection.mp4"), 22.5, tmp_path / "room.mp4")
    aisle = first_seconds(need_video("car-detection.mp4"), 12.0, tmp_path / "aisle.mp4")  # one car passes
    broker = Mosquitto(tmp_path / "broker").start()
    rds = LocalRedisServer(tmp_path / "redis").start()
    sub = AlertSubscriber(broker.port)
    try:
        config = tmp_path / "monitor.yaml"
        doc = {
            "cameras": [
                {"id": "room", "source": str(room), "realtime": True},
                # pass-throughs shorter than a minute are not logged here: its changes end unlogged
                {"id": "aisle", "source": str(aisle), "realtime": True, "gate": {"transient_min_s": 60}},
            ],
            "log": {"dir": str(tmp_path / "logs")},
            "redis": {"url": rds.url},
            "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}", "discovery_prefix": None},
            "describer": {"detector": {"model": str(DETECTOR)}},
            "alerts": [
                {"name": "anything", "early": True},
                {"name": "person-early", "early": True, "labels": ["person"], "cameras": ["room"]},
                {"name": "person", "keywords": ["person"]},
            ],
        }
        config.write_text(yaml.safe_dump(doc))
        proc = subprocess.run(
            [sys.executable, "-m", "monitor", "run", "--config", str(config), "--quiet"],
            env=monitor_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert_no_traceback(proc)
        time.sleep(0.5)
        entries = rds.client().xrange("monitor:alerts")
    finally:
        sub.close()
        broker.stop()
        rds.stop()

    logged = [json.loads(line) for line in (tmp_path / "logs" / "changes.jsonl").read_text().splitlines()]
    assert all("phase" not in e and e["seq"] >= 1 for e in logged)  # onset alerts never enter the log
    room_events = [e for e in logged if e["camera"] == "room" and e["kind"] == "change"]
    assert [e["text"] for e in room_events] == ["a person arrived in the centre", "a person left the centre"]
    assert not [e for e in logged if e["camera"] == "aisle"]  # every aisle change ended unlogged

    def phases(rule: str, change_id: str) -> list[tuple[str, dict]]:  # Redis, in stream order
        return [(f.get("phase", ""), f) for _, f in entries if f["rule"] == rule and f.get("change_id") == change_id]

    for event in room_events:
        for rule in ("anything", "person-early"):
            got = phases(rule, event["change_id"])
            assert [p for p, _ in got] == ["onset", "settled"], (rule, got)
            onset, settled = got[0][1], got[1][1]
            assert "seq" not in onset and "event_id" not in onset
            body = json.loads(onset["json"])
            assert body["labels"] == ["person"] and onset["t_onset"] == body["t_onset"]
            assert body["media_t_onset"] == event["media_t_onset"]  # the first frame that fired
            assert body["text"].startswith("under way: a person"), json.dumps(body)
            assert settled["event_id"] == event["event_id"] and settled["seq"] == str(event["seq"])
            # on MQTT too, in the same order, the settled message carrying the event
            mq = [b for t, b in sub.got if t == f"monitor/alerts/{rule}" and b.get("change_id") == event["change_id"]]
            assert [b["phase"] for b in mq] == ["onset", "settled"], mq
            assert mq[1]["event_id"] == event["event_id"] and mq[1]["text"] == event["text"]
        plain = [f for _, f in entries if f["rule"] == "person" and f["event_id"] == event["event_id"]]
        assert len(plain) == 1 and "phase" not in plain[0]  # rules without early: as before
    mq_plain = [b for t, b in sub.got if t == "monitor/alerts/person"]
    assert [b["event_id"] for b in mq_plain] == [e["event_id"] for e in room_events]
    assert all("phase" not in b for b in mq_plain)

    aisle_onsets = [f for _, f in entries if f["camera"] == "aisle" and f.get("phase") == "onset"]
    assert aisle_onsets and all(f["rule"] == "anything" for f in aisle_onsets)  # no person there
    for onset in aisle_onsets:
        got = phases("anything", onset["change_id"])
        assert [p for p, _ in got] == ["onset", "settled"], got
        assert json.loads(got[1][1]["json"])["outcome"] == "nothing_logged"


def test_an_early_rule_cannot_wait_for_words(tmp_path: Path) -> None:
    config = tmp_path / "monitor.yaml"
    alerts = [{"name": "van", "early": True, "keywords": ["van"]}]
    config.write_text(yaml.safe_dump({"cameras": [{"id": "a", "source": "a.mp4"}], "alerts": alerts}))
    try:
        load_settings(config)
    except ConfigError as exc:
        assert str(exc).startswith("alerts.0: early: keywords and regex need the sentence"), exc
    else:
        raise AssertionError("an early rule with keywords was accepted")
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "check-config", str(config)],
        env=monitor_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "alerts.0: early: keywords" in proc.stderr, proc.stderr
    assert_no_traceback(proc)


def test_labels_at_onset_without_a_detector_is_a_warning(tmp_path: Path) -> None:
    config = tmp_path / "monitor.yaml"
    alerts = [{"name": "plain"}, {"name": "person-early", "early": True, "labels": ["person"]}]
    cameras = [{"id": "a", "source": str(need_video("car-detection.mp4"))}]
    config.write_text(yaml.safe_dump({"cameras": cameras, "alerts": alerts}))
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "check-config", str(config)],
        env=monitor_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("monitor: warning: alerts.1.labels: an early rule knows labels at the onset only")
    assert "OK (1 camera(s), 1 warning)" in proc.stdout
