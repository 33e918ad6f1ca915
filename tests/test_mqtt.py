"""MQTT output against Debian's real `mosquitto`, started here on a free loopback port: events
and state on their topics, the availability and its Last Will, a broker restarted mid-run with
every event still arriving in each camera's order, a wrong password said in one line without
the secret; and the spool's cursors, which let Redis and MQTT deliver from one spool."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from support import assert_no_traceback, make_event, monitor_env, need_video

from monitor.bench.local_mqtt import Mosquitto
from monitor.scene.cases import write_busy_road
from monitor.sinks.spool import REDIS, Spool


class Subscriber:
    """Every message under `monitor/#`, with a persistent session (QoS 1): what is published
    while it reconnects after a broker restart is kept for it by the broker."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-subscriber-{port}", clean_session=False
        )  # fmt: skip
        if user:
            self.client.username_pw_set(user, password)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe("monitor/#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(5), "the test subscriber did not subscribe"

    def _on_message(self, _client, _userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def events(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/event")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_every_event_arrives_in_order_across_a_broker_restart(tmp_path: Path) -> None:
    frames = tmp_path / "road"
    write_busy_road(frames)
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port)
    try:
        config = tmp_path / "monitor.yaml"
        cameras = [
            {"id": "road", "source": str(frames), "image_fps": 6, "realtime": True},
            {"id": "room", "source": str(need_video("one-by-one-person-detection.mp4"))},
        ]
        config.write_text(yaml.safe_dump({"cameras": cameras, "log": {"dir": str(tmp_path / "logs")}}))
        url = f"mqtt://127.0.0.1:{broker.port}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(config), "--quiet", "--mqtt", url],
            env=monitor_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not [e for e in sub.events() if e["camera"] == "road"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sub.events(), "no event reached the broker"
        broker.stop()  # mid-run: the road camera keeps changing while the broker is away
        time.sleep(3)
        broker.start()
        _, stderr = proc.communicate(timeout=90)
        assert proc.returncode == 0, stderr
        time.sleep(1)
    finally:
        sub.close()
        broker.stop()
    assert_no_traceback(subprocess.CompletedProcess([], 0, "", stderr))
    assert len([line for line in stderr.splitlines() if "mqtt_unavailable" in line]) == 1, stderr
    logged = [json.loads(line) for line in (tmp_path / "logs" / "changes.jsonl").read_text().splitlines()]
    seen: dict[str, dict] = {}
    for event in sub.events():  # at least once: dedupe by event_id, keep the first arrival
        seen.setdefault(event["event_id"], event)
    for camera in ("road", "room"):
        got = [e["seq"] for e in seen.values() if e["camera"] == camera]
        want = [e["seq"] for e in logged if e["camera"] == camera]
        assert got == want and want, (camera, got, want)  # every one, in its camera's order
    assert list(seen.values())[0] == next(e for e in logged if e["event_id"] == list(seen)[0])  # the log's JSON
    retained = {t: p for t, p, r in sub.messages if r}
    states = [(t, json.loads(p)) for t, p, _ in sub.messages if t.endswith("/state")]
    assert states and all(s["state"] == "online" and s["last"] and s["t"] for _, s in states)
    availability = [p.decode() for t, p, _ in sub.messages if t == "monitor/availability"]
    assert availability[0] == "online" and availability[-1] == "offline", availability
    assert retained.get("monitor/availability") == b"offline" or availability[-1] == "offline"


def test_a_wrong_password_is_one_line_and_no_secret(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", password=("monitor", "right-Pass-77")).start()
    try:
        wrong = f"mqtt://monitor:wrong-Pass-99@127.0.0.1:{broker.port}"
        video = need_video("car-detection.mp4")
        proc = subprocess.run(
            [sys.executable, "-m", "monitor", "run", "--source", video, "--log-dir", tmp_path / "logs", "--quiet",
             "--mqtt", wrong],
            env=monitor_env(), capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr  # the log files are written whatever the broker says
        refused = [line for line in proc.stderr.splitlines() if "mqtt_refused" in line]
        assert len(refused) == 1 and "wrong-Pass-99" not in proc.stderr + proc.stdout, proc.stderr
        assert (tmp_path / "logs" / "changes.jsonl").read_text().count("\n") == 3
        # the right password from the environment: the spooled events go out first
        env = {"MONITOR_MQTT__PASSWORD": "right-Pass-77"}
        sub = Subscriber(broker.port, "monitor", "right-Pass-77")
        try:
            url = f"mqtt://monitor@127.0.0.1:{broker.port}"
            again = subprocess.run(
                [sys.executable, "-m", "monitor", "run", "--source", video, "--log-dir", tmp_path / "logs", "--quiet",
                 "--mqtt", url, "--clock", "run"],
                env=monitor_env(env), capture_output=True, text=True, timeout=90,
            )  # fmt: skip
            assert again.returncode == 0 and "right-Pass-77" not in again.stderr, again.stderr
            time.sleep(0.5)
            assert [e["seq"] for e in sub.events()] == [1, 2, 3, 4, 5, 6]
        finally:
            sub.close()
    finally:
        broker.stop()


def test_spool_cursors_deliver_one_spool_to_two_outputs(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", 10**6, segment_bytes=4096, cursors=(REDIS, "mqtt"))
    spool.append([(make_event(camera="a", seq=s), ()) for s in range(1, 41)])
    assert len(spool.peek(100)) == len(spool.peek(100, cursor="mqtt")) == 40
    spool.commit(40)  # Redis has them all; MQTT none
    assert spool.pending_for(REDIS) == 0 and spool.pending_for("mqtt") == 40 and len(spool) == 40
    first = spool.peek(10, cursor="mqtt")
    assert [r.event.seq for r in first] == list(range(1, 11))
    spool.commit(first[-1].n, cursor="mqtt")
    spool.close()
    again = Spool(tmp_path / "s", 10**6, segment_bytes=4096, cursors=(REDIS, "mqtt"))  # positions survive
    assert again.peek(100) == [] and [r.event.seq for r in again.peek(100, cursor="mqtt")][:1] == [11]
    again.commit(again.peek(100, cursor="mqtt")[-1].n, cursor="mqtt")
    assert len(again) == 0
    again.close()
    assert not list((tmp_path / "s").glob("seg-*")), "done for both: compacted away"
    # a cursor new to a spool starts where the others are, not at the beginning
    late = Spool(tmp_path / "s", 10**6, cursors=(REDIS, "mqtt", "late"))
    late.append([(make_event(camera="a", seq=41), ())])
    assert [r.event.seq for r in late.peek(10, cursor="late")] == [41]
    late.close()


# Home Assistant's documented MQTT options (home-assistant.io, integrations event.mqtt,
# sensor.mqtt, binary_sensor.mqtt): a discovery payload may use only these, and must have the
# required ones.
HA_COMMON = {
    "availability", "availability_mode", "availability_template", "availability_topic", "device", "device_class",
    "enabled_by_default", "encoding", "entity_category", "icon", "json_attributes_template", "json_attributes_topic",
    "name", "object_id", "payload_available", "payload_not_available", "qos", "unique_id", "value_template",
}  # fmt: skip
HA_OPTIONS = {
    "event": (HA_COMMON | {"event_types", "state_topic"}, {"event_types", "state_topic"}),
    "sensor": (HA_COMMON | {"expire_after", "force_update", "last_reset_value_template", "state_class", "state_topic",
                            "unit_of_measurement", "suggested_display_precision"}, {"state_topic"}),
    "binary_sensor": (HA_COMMON | {"expire_after", "force_update", "off_delay", "payload_off", "payload_on",
                                   "state_topic"}, {"state_topic"}),
}  # fmt: skip
HA_DEVICE = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "name",
             "suggested_area", "sw_version", "via_device"}  # fmt: skip


def retained(port: int, pattern: str, wait_s: float = 1.5) -> dict[str, bytes]:
    """The retained messages a fresh subscriber gets on `pattern`."""
    got: dict[str, bytes] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe(pattern, qos=1)
    client.on_message = lambda _c, _u, m: got.__setitem__(m.topic, m.payload) if m.retain else None
    client.connect("127.0.0.1", port)
    client.loop_start()
    time.sleep(wait_s)
    client.loop_stop()
    client.disconnect()
    return got


def test_home_assistant_discovery_is_retained_valid_and_cleared_on_removal(tmp_path: Path) -> None:
    from jinja2 import Environment

    broker = Mosquitto(tmp_path / "broker").start()
    room = str(need_video("one-by-one-person-detection.mp4"))
    config = tmp_path / "monitor.yaml"

    def write(cameras: list[str]) -> None:
        cams = [{"id": c, "source": room, "realtime": True} for c in cameras]
        config.write_text(yaml.safe_dump({"cameras": cams, "log": {"dir": str(tmp_path / "logs")},
                                          "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}"}}))  # fmt: skip

    write(["gate", "yard"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--config", str(config), "--quiet"],
        env=monitor_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        configs: dict[str, bytes] = {}
        while len(configs) < 6 and time.monotonic() < deadline:
            configs = retained(broker.port, "homeassistant/#", 0.5)
        assert len(configs) == 6, sorted(configs)
        env = Environment()
        event = make_event(camera="gate", text="a person arrived in the centre")
        event_json = json.loads(event.model_dump_json())
        state = {"state": "online", "last": event.text, "t": event.t_after, "regions": event_json["regions"],
                 "labels": ["person"]}  # fmt: skip
        unique = set()
        for topic, raw in configs.items():
            prefix, component, node, object_id, last = topic.split("/")
            assert (prefix, node, last) == (
                "homeassistant",
                "surveillance-monitor",
                "config",
            ) and component in HA_OPTIONS
            payload = json.loads(raw)
            allowed, required = HA_OPTIONS[component]
            assert required <= set(payload) <= allowed, (topic, set(payload) - allowed)
            assert set(payload["device"]) <= HA_DEVICE and payload["device"]["identifiers"]
            assert payload["availability_topic"] == "monitor/availability"
            unique.add(payload["unique_id"])
            camera = (
                object_id.rsplit("_", 1)[0] if component != "binary_sensor" else object_id[: -len("_binary_sensor")]
            )
            assert payload["state_topic"].startswith(f"monitor/{camera}/")
            # the templates, rendered by Jinja2 as Home Assistant does, on what is published
            value = event_json if component == "event" else state
            rendered = env.from_string(payload["value_template"]).render(value_json=value)
            if component == "event":
                assert json.loads(rendered)["event_type"] in payload["event_types"] == ["change", "camera_offline",
                                                                                        "camera_online"]  # fmt: skip
            elif component == "sensor":
                assert rendered == event.text
                attrs = json.loads(env.from_string(payload["json_attributes_template"]).render(value_json=state))
                assert attrs["labels"] == ["person"] and attrs["time"] == event.t_after
            else:
                assert rendered == payload["payload_on"] == "online" and payload["device_class"] == "connectivity"
        assert len(unique) == 6
        # a reload that removes a camera clears its entities (empty retained configs)
        write(["gate"])
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            left = retained(broker.port, "homeassistant/#", 0.5)
            if len(left) == 3:
                break
        assert sorted(left) == sorted(t for t in configs if "/gate_" in t), sorted(left)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        assert retained(broker.port, "monitor/availability", 0.5) == {"monitor/availability": b"offline"}
    finally:
        if proc.poll() is None:
            proc.kill()
        broker.stop()


def throwaway_ca(folder: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 made here with openssl, valid for a day."""
    folder.mkdir(parents=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=monitor-test-ca")  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "ext.cnf")  # fmt: skip
    for name in ("server.key", "ca.crt", "server.crt"):
        (folder / name).chmod(0o644)  # mosquitto reads them
    return folder


def test_tls_with_a_password_delivers_and_a_wrong_password_is_one_line(tmp_path: Path) -> None:
    """mqtts:// with a throwaway CA (`mqtt.ca_file`) and a password: the events arrive; the
    wrong password: one line, no secret printed, the log files still written."""
    tls = throwaway_ca(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "broker", password=("cam", "Tls-Secret-31"), tls=tls).start()
    video = need_video("car-detection.mp4")
    got: list[dict] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.username_pw_set("cam", "Tls-Secret-31")
    sub.tls_set(ca_certs=str(tls / "ca.crt"))
    subscribed = threading.Event()
    sub.on_connect = lambda c, *_: c.subscribe("monitor/+/event", qos=1)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        assert subscribed.wait(5)
        config = tmp_path / "monitor.yaml"
        config.write_text(yaml.safe_dump({"mqtt": {"ca_file": str(tls / "ca.crt")}}))
        for password, logs in (("wrong-Tls-66", tmp_path / "wrong"), ("Tls-Secret-31", tmp_path / "right")):
            url = f"mqtts://cam:{password}@127.0.0.1:{broker.port}"
            proc = subprocess.run(
                [sys.executable, "-m", "monitor", "run", "--config", str(config), "--source", str(video),
                 "--log-dir", str(logs), "--quiet", "--mqtt", url],
                env=monitor_env(), capture_output=True, text=True, timeout=90,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert password not in proc.stderr + proc.stdout
            assert (logs / "changes.jsonl").read_text().count("\n") == 3
            if password.startswith("wrong"):
                assert len([line for line in proc.stderr.splitlines() if "mqtt_refused" in line]) == 1, proc.stderr
        time.sleep(0.5)
        assert [e["seq"] for e in got] == [1, 2, 3] and {e["camera"] for e in got} == {"car-detection"}
    finally:
        sub.loop_stop()
        broker.stop()
