"""Home Assistant MQTT discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery):
per camera one device with three entities, published retained to
`<discovery_prefix>/<component>/<client_id>/<camera>_<entity>/config`:

- `event` (event types change, camera_offline, camera_online) on `<prefix>/<camera>/event`,
  with the sentence and event id as event attributes;
- `sensor`, the last sentence, on `<prefix>/<camera>/state` (attributes: time, regions, labels);
- `binary_sensor` (device class connectivity), online / offline on the same state topic.

All three are unavailable while `<prefix>/availability` says `offline` (the Last Will). An empty
retained payload on a config topic removes its entity (a camera removed by a reload)."""

from __future__ import annotations

import json

from monitor.config import MqttConfig

COMPONENTS = ("event", "sensor", "binary_sensor")
EVENT_TYPES = ["change", "camera_offline", "camera_online"]


def config_topic(cfg: MqttConfig, component: str, camera: str) -> str:
    return f"{cfg.discovery_prefix}/{component}/{cfg.client_id}/{camera}_{component}/config"


def discovery(cfg: MqttConfig, camera: str) -> dict[str, dict]:
    """{config topic: payload} of one camera's entities."""
    base = f"{cfg.prefix}/{camera}"
    common = {
        "availability_topic": f"{cfg.prefix}/availability",
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
        "device": {
            "identifiers": [f"{cfg.client_id}-{camera}"],
            "name": camera,
            "manufacturer": "surveillance-change-monitor",
            "model": "camera change log",
        },
    }
    entities = {
        "event": {
            "name": "Change",
            "state_topic": f"{base}/event",
            "event_types": EVENT_TYPES,
            # the event's JSON as the log has it -> HA's event payload: event_type plus attributes
            "value_template": '{{ {"event_type": value_json.kind, "text": value_json.text, '
            '"event_id": value_json.event_id} | tojson }}',
        },
        "sensor": {
            "name": "Last change",
            "state_topic": f"{base}/state",
            "value_template": "{{ value_json.last[:255] }}",
            "json_attributes_topic": f"{base}/state",
            "json_attributes_template": '{{ {"time": value_json.t, "regions": value_json.regions, '
            '"labels": value_json.labels} | tojson }}',
            "icon": "mdi:cctv",
        },
        "binary_sensor": {
            "name": "Connected",
            "state_topic": f"{base}/state",
            "value_template": "{{ value_json.state }}",
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
        },
    }
    return {
        config_topic(cfg, component, camera): {
            **payload,
            **common,
            "unique_id": f"{cfg.client_id}-{camera}-{component}",
        }  # fmt: skip
        for component, payload in entities.items()
    }


def removal(cfg: MqttConfig, camera: str) -> list[str]:
    """The config topics to clear (an empty retained payload) when `camera` goes."""
    return [config_topic(cfg, component, camera) for component in COMPONENTS]


def encode(payload: dict) -> str:
    return json.dumps(payload, separators=(",", ":"))
