"""MQTT output (paho-mqtt 2.x, QoS 1): the events of the write-ahead spool, delivered through its
own cursor (`mqtt`), so a broker that is down or restarting loses nothing and never holds up the
log files or Redis. Delivery is at least once, in spool order (each camera's order); consumers
dedupe by `event_id`.

Topics, under `mqtt.prefix` (default `monitor`):
- `<prefix>/<camera>/event`: each change and health event, the JSON of its changes.jsonl line;
- `<prefix>/<camera>/state` (retained): `{"state": "online" | "offline", "last": sentence, "t": t_after}`;
- `<prefix>/alerts/<rule>`: the event again, for each alert rule it hit; an early rule's (`early:
  true`) first message is its onset (`{"phase": "onset", "change_id", ...}`, sent live by
  `monitor/sinks/onset.py`), then the event with `"phase": "settled"` and `"rule"` added;
- `<prefix>/availability` (retained): `online` while connected, `offline` as the Last Will and on
  a clean stop."""

from __future__ import annotations

import json
import ssl
import threading
import time
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
import structlog

from monitor.backoff import backoff_delay, backoff_policy
from monitor.config import MqttConfig
from monitor.config.secrets import read_secret
from monitor.errors import ConfigError, mask_url
from monitor.records import ChangeEvent
from monitor.sinks import ha_discovery
from monitor.sinks.spool import Spool, SpoolRecord

log = structlog.get_logger(__name__)

CURSOR = "mqtt"
ACK_TIMEOUT_S = 10.0  # a batch whose acknowledgements do not come in time is sent again
BATCH = 100


def read_mqtt_password(cfg: MqttConfig) -> str | None:
    return read_secret(cfg.password, cfg.password_file, "mqtt.password_file")


class MqttSink:
    """`start()`, then the delivery thread follows the spool; `close()` delivers what it can,
    says `offline` and disconnects."""

    def __init__(
        self,
        cfg: MqttConfig,
        spool: Spool,
        cameras: list[str] | tuple[str, ...] = (),
        early: frozenset[str] = frozenset(),
    ):
        assert cfg.url
        self.cfg = cfg
        self.spool = spool
        self.url = mask_url(cfg.url)
        parts = urlsplit(cfg.url)
        self.host, self.port = parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.topic = cfg.prefix
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv311, clean_session=True
        )
        password = unquote(parts.password) if parts.password else read_mqtt_password(cfg)
        if parts.username or password:
            client.username_pw_set(unquote(parts.username or ""), password)
        if parts.scheme == "mqtts":
            if cfg.ca_file is not None and not cfg.ca_file.is_file():
                raise ConfigError(f"mqtt.ca_file: no such file: {cfg.ca_file}")
            client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
        client.will_set(f"{self.topic}/availability", "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(cfg.backoff_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self.client = client
        self.connected = threading.Event()
        self.cameras = list(cameras)  # announced to Home Assistant (mqtt.discovery_prefix)
        self.early = early  # early alert rules: their settled alert says so
        self.delivered = 0
        self._refused: str | None = None  # the broker's last refusal (bad password), said once
        self._down_since: float | None = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    # -- connection ----------------------------------------------------------------------
    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            if self._refused != str(reason_code):
                log.error("mqtt_refused", url=self.url, reason=str(reason_code))
            self._refused = str(reason_code)
            return
        self._refused = None
        client.publish(f"{self.topic}/availability", "online", qos=1, retain=True)
        self._announce(self.cameras)
        if self._down_since is not None:
            log.info("mqtt_recovered", url=self.url, down_s=round(time.monotonic() - self._down_since, 1))
            self._down_since = None
        else:
            log.info("mqtt_connected", url=self.url)
        self.connected.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self.connected.clear()
        if self._down_since is None and not self._closing.is_set():
            self._down_since = time.monotonic()
            log.warning(
                "mqtt_unavailable", url=self.url, reason=str(reason_code),
                note="events wait in the spool; reconnecting",
            )  # fmt: skip

    def _announce(self, cameras: list[str]) -> None:
        if self.cfg.discovery_prefix:
            for camera in cameras:
                for topic, payload in ha_discovery.discovery(self.cfg, camera).items():
                    self.client.publish(topic, ha_discovery.encode(payload), qos=1, retain=True)

    def set_cameras(self, cameras: list[str]) -> None:
        """A reload changed the cameras: the new ones are announced, the removed ones' entities
        cleared from Home Assistant (an empty retained config)."""
        gone = [c for c in self.cameras if c not in cameras]
        new = [c for c in cameras if c not in self.cameras]
        self.cameras = list(cameras)
        if self.cfg.discovery_prefix:
            for camera in gone:
                for topic in ha_discovery.removal(self.cfg, camera):
                    self.client.publish(topic, "", qos=1, retain=True)
        self._announce(new)

    def start(self) -> None:
        try:
            self.client.connect_async(self.host, self.port, keepalive=self.cfg.keepalive_s)
        except (OSError, ValueError) as exc:
            log.warning("mqtt_unavailable", url=self.url, error=f"{type(exc).__name__}: {exc}")
        self.client.loop_start()  # paho's network thread: connects and reconnects by itself
        self._thread = threading.Thread(target=self._deliver_loop, name="mqtt-delivery", daemon=True)
        self._thread.start()

    # -- delivery ------------------------------------------------------------------------
    def _publish(self, records: list[SpoolRecord]) -> bool:
        """Every record's messages, then wait for each acknowledgement; False: send it again."""
        infos = []
        for rec in records:
            event = rec.event
            body = event.model_dump_json()
            infos.append(self.client.publish(f"{self.topic}/{event.camera}/event", body, qos=1))
            infos.append(self.client.publish(f"{self.topic}/{event.camera}/state", _state(event), qos=1, retain=True))
            for rule in rec.alerts:
                alert = _settled(event, rule) if rule in self.early else body
                infos.append(self.client.publish(f"{self.topic}/alerts/{rule}", alert, qos=1))
        deadline = time.monotonic() + ACK_TIMEOUT_S
        for info in infos:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return False
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                return False
            if not info.is_published():
                return False
        return True

    def _deliver_loop(self) -> None:
        backoff, attempt = backoff_policy(cap=self.cfg.backoff_max_s, base=0.1), 0
        while True:
            batch = self.spool.peek(BATCH, timeout=0.2, cursor=CURSOR)
            if not batch:
                if self._closing.is_set():
                    return
                continue
            if not self.connected.wait(0.5):
                if self._closing.is_set():
                    return
                continue
            if not self._publish(batch):
                if self._closing.is_set():
                    return
                attempt += 1
                self._closing.wait(backoff_delay(backoff, attempt))
                continue
            attempt = 0
            self.delivered += len(batch)
            self.spool.commit(batch[-1].n, cursor=CURSOR)

    def publish_live(self, rule: str, body: str) -> bool:
        """An early alert, outside the spool: queued by paho in publish order (so before the
        settled alert that follows it), sent at once while connected."""
        return self.client.publish(f"{self.topic}/alerts/{rule}", body, qos=1).rc in (
            mqtt.MQTT_ERR_SUCCESS,
            mqtt.MQTT_ERR_NO_CONN,  # kept in paho's queue until the broker is back
        )

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is spooled (up to `timeout`), say `offline` (retained), disconnect."""
        deadline = time.monotonic() + timeout
        while self.spool.pending_for(CURSOR) and self.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._closing.set()
        if self._thread is not None:
            self._thread.join(max(0.5, deadline - time.monotonic()))
        if self.connected.is_set():
            self.client.publish(f"{self.topic}/availability", "offline", qos=1, retain=True).wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
        left = self.spool.pending_for(CURSOR)
        if left:
            log.warning("mqtt_undelivered", url=self.url, spooled=left, note="kept in the spool for the next start")
        log.info("mqtt_closed", url=self.url, delivered=self.delivered)


def _settled(event: ChangeEvent, rule: str) -> str:
    return json.dumps({"phase": "settled", "rule": rule, **event.model_dump(mode="json")})


def _state(event: ChangeEvent) -> str:
    state = "offline" if event.kind == "camera_offline" else "online"
    regions = [r.model_dump() for r in event.regions]
    labels = sorted({r.label for r in event.regions if r.label})
    return json.dumps({"state": state, "last": event.text, "t": event.t_after, "regions": regions, "labels": labels})
