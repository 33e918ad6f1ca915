"""Configuration, like Frigate's: pydantic sections (`sections`), the checks across them
(`checks`), the whole tree with YAML + `MONITOR_...` environment sources (`settings`,
`yaml_source`) and `load_settings` (`loading`), which `check-config` and `run` share.

The names below are the settings API; import them from `monitor.config`."""

from monitor.config.loading import format_errors, load_settings
from monitor.config.sections import (
    AlertRule,
    CameraConfig,
    CapturesConfig,
    ClusterConfig,
    DescriberConfig,
    DetectorConfig,
    GateConfig,
    HttpConfig,
    JobsConfig,
    LogConfig,
    MqttConfig,
    Point,
    Polygon,
    RedisConfig,
    ReviewConfig,
    Strict,
    Zone,
)
from monitor.config.settings import MonitorSettings
from monitor.config.yaml_source import read_yaml

__all__ = [
    "AlertRule", "CameraConfig", "CapturesConfig", "ClusterConfig", "DescriberConfig", "DetectorConfig", "GateConfig",
    "HttpConfig", "JobsConfig", "LogConfig", "MonitorSettings", "MqttConfig", "Point", "Polygon", "RedisConfig",
    "ReviewConfig", "Strict", "Zone",
    "format_errors", "load_settings", "read_yaml",
]  # fmt: skip
