"""The settings sections (cameras, gate, describer, log, redis, alerts, http, captures, jobs):
pydantic models whose validation errors name the field."""

from __future__ import annotations

import re
from datetime import tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    field_validator,
    model_validator,
)
from redis.connection import parse_url

from monitor.errors import mask_secrets, mask_url

Point = tuple[float, float]
Polygon = list[Point]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_polygon(poly: Polygon) -> Polygon:
    if len(poly) < 3:
        raise ValueError("a polygon needs at least 3 points")
    for x, y in poly:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"point ({x}, {y}) is outside 0-1 (coordinates are fractions of the frame)")
    return poly


CheckedPolygon = Annotated[Polygon, AfterValidator(_check_polygon)]  # errors name the mask: masks.N


class GateConfig(Strict):
    """Thresholds of the change gate. Cameras may override any of them."""

    working_width: int = Field(256, ge=64, le=1920, description="width of the gate's working image, px")
    pixel_threshold: float = Field(18.0, gt=0, le=255, description="minimum grey-level difference of a changed pixel")
    noise_sigmas: float = Field(4.0, gt=0, description="changed pixel: difference > this many noise sigmas")
    fire_fraction: float = Field(0.0025, gt=0, lt=1, description="changed fraction that starts a change")
    min_region_fraction: float = Field(0.0012, gt=0, lt=1, description="smallest region reported")
    ssim_threshold: float = Field(0.6, gt=0, le=1, description="global SSIM below this also starts a change")
    settle_s: float = Field(1.0, ge=0, description="the scene must be still this long to end a change")
    still_fraction: float = Field(0.0005, gt=0, lt=1, description="motion below this fraction counts as still")
    max_wait_s: float = Field(10.0, gt=0, description="a change that never settles is reported after this")
    cooldown_s: float = Field(3.0, ge=0, description="minimum time between two events of a camera")
    background_history_s: float = Field(60.0, gt=0, description="memory of the motion background model")
    slow_background_s: float = Field(600.0, gt=0, description="time constant of the empty-scene background")
    report_transient: bool = Field(True, description="report changes that revert (someone passing through)")
    transient_min_s: float = Field(1.5, ge=0, description="shortest pass-through reported")

    @model_validator(mode="after")
    def _ordered(self) -> GateConfig:
        if self.min_region_fraction > self.fire_fraction:
            raise ValueError("min_region_fraction must not exceed fire_fraction")
        return self


class Zone(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    polygon: Polygon

    _poly = field_validator("polygon")(_check_polygon)


class CameraConfig(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="camera id used in the log")
    source: str = Field(min_length=1, description="file path, image-sequence pattern/folder, or rtsp:// URL")
    sample_fps: float = Field(2.0, gt=0, le=60, description="frames per second handed to the gate")
    image_fps: float | None = Field(None, gt=0, le=240, description="frame rate of an image-sequence source")
    realtime: bool = Field(False, description="pace file sources at their own speed")
    clock: Literal["recorded", "run"] = Field(
        "recorded",
        description="files: stamp events from when the file was recorded (its creation_time, else its "
        "modification time less its length), or from the run's start; live streams use the wall clock",
    )
    open_timeout_s: float = Field(10.0, gt=0, description="RTSP/network open timeout")
    read_timeout_s: float = Field(10.0, gt=0, description="RTSP/network read timeout")
    reconnect_max_s: float = Field(30.0, gt=0, description="network sources: cap of the reconnect backoff")
    offline_after_s: float = Field(10.0, gt=0, description="network sources: down this long = camera_offline event")
    retry_at_start: bool | None = Field(
        None,
        description="network sources unreachable at start: true = keep retrying, false = fail the camera, "
        "null = retry only while another camera of the run is up (a run where no camera opens exits 1)",
    )
    masks: list[CheckedPolygon] = Field(default_factory=list, description="regions the gate ignores")
    zones: list[Zone] = Field(default_factory=list, description="named regions (used by alert rules)")
    gate: dict[str, Any] = Field(default_factory=dict, description="overrides of the gate defaults")

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", value)
        if scheme and scheme.group(1).lower() not in {"rtsp", "rtsps", "rtmp", "http", "https", "file"}:
            raise ValueError(f"unsupported URL scheme {scheme.group(1)!r} (use rtsp://, http(s):// or a path)")
        return value


# What the detector's classes are called in the log; classes not listed are ignored (a COCO
# model also "sees" scissors and clocks in empty rooms). COCO names, as in the model's labels.
DEFAULT_DETECTOR_CLASSES: dict[str, str] = {
    "person": "person",
    "bicycle": "bicycle",
    "car": "car",
    "motorcycle": "motorcycle",
    "bus": "bus",
    "truck": "truck",
    "backpack": "bag",
    "handbag": "bag",
    "suitcase": "bag",
    "umbrella": "umbrella",
    "dog": "dog",
    "cat": "cat",
    "bird": "bird",
    "horse": "horse",
    "chair": "chair",
    "bench": "bench",
}


class DetectorConfig(Strict):
    """The object detector that names what changed: an ONNX model on CPU, run only on the frames
    the gate hands over. `model: null` = none (the embedded describer then guesses from shapes)."""

    model: FilePath | None = Field(None, description="ONNX detector (CenterNet or YOLO export layout); null = none")
    labels: FilePath | None = Field(
        None, description="class names, one per line; default: labels.txt beside the model, else its metadata"
    )
    min_score: float = Field(0.2, gt=0, lt=1, description="detections below this score are ignored")
    iou: float = Field(0.4, gt=0, le=1, description="non-maximum suppression: overlap that merges two boxes")
    max_detections: int = Field(20, ge=1, le=300, description="boxes kept per frame")
    fit: Literal["stretch", "letterbox"] = Field(
        "stretch", description="how a frame is fitted to the model input (stretch: as the model was trained)"
    )
    threads: int = Field(1, ge=1, le=64, description="onnxruntime threads")
    crop: int = Field(
        128, ge=0, le=1024,
        description="long side in pixels of the model input for a crop around each changed region "
        "(CenterNet models take any size); 0 = always the whole frame",
    )  # fmt: skip
    classes: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_DETECTOR_CLASSES),
        description="model class -> name in the log ('handbag': 'bag'); classes not listed are ignored",
    )


class DescriberConfig(Strict):
    kind: Literal["embedded", "vlm"] = Field("embedded", description="embedded needs no weights")
    model: str | None = Field(None, description="VLM checkpoint directory or cached repo id (kind: vlm)")
    mode: Literal["compressed", "pair"] = Field("compressed", description="vlm: 2 tokens/frame, or side by side")
    adapter: str | None = Field(None, description="vlm: LoRA adapter directory; swapped live on reload")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="vlm: auto = cuda if available")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="vlm: auto = bf16 on cuda")
    quantization: Literal["none", "8bit", "4bit"] = Field("none", description="vlm: bitsandbytes LM weights")
    max_new_tokens: int = Field(32, ge=1, le=512, description="vlm: longest description, tokens")
    max_wait_ms: float = Field(50.0, ge=0, le=10_000, description="vlm: wait this long for a fuller batch")
    history_frames: int = Field(
        0, ge=0, le=8, description="vlm compressed: the scenes before the camera's last changes, shown oldest first"
    )
    batch_size: int = Field(8, ge=1, le=256)
    queue_per_camera: int = Field(
        8, ge=1, le=4096, description="changes queued per camera; beyond, the oldest are coalesced"
    )
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="names what changed")


def _port_in_range(value: str | None) -> str | None:
    if value is not None and not 1 <= int(value.rsplit(":", 1)[1]) <= 65535:
        raise ValueError(f"port out of range 1-65535 (got {value!r})")
    return value


class HttpConfig(Strict):
    bind: str | None = Field(
        "127.0.0.1:9108", pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$",
        description="host:port of /healthz and /metrics; null = off",
    )  # fmt: skip

    _port = field_validator("bind")(_port_in_range)


class ReviewConfig(Strict):
    """`monitor review`, the web page over the log and the captures."""

    bind: str = Field(
        "127.0.0.1:8765", pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$",
        description="host:port; anything but loopback requires a token",
    )  # fmt: skip
    token: SecretStr | None = Field(None, description="access token, e.g. from MONITOR_REVIEW__TOKEN; never printed")
    token_file: Path | None = Field(None, description="file holding the access token")

    _port = field_validator("bind")(_port_in_range)


class LogConfig(Strict):
    dir: Path = Field(Path("./monitor-logs"), description="where changes.jsonl and changes.log go")
    max_bytes: int = Field(10_000_000, ge=1024, description="rotate a log file at this size")
    backup_count: int = Field(5, ge=0, le=1000, description="rotated files kept")
    reorder_window_s: float = Field(0.5, ge=0, description="how long events wait to be merged across cameras")
    timezone: str | None = Field(
        None, description="zone of the human-readable lines (IANA name, e.g. Europe/Paris); null = the host's"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Paris or UTC)") from None
        return value

    def zone(self) -> tzinfo | None:
        """The zone of `timezone`; None = the host's local zone."""
        return ZoneInfo(self.timezone) if self.timezone else None


class CapturesConfig(Strict):
    """Before/after JPEGs + event.json of every change event, for review and fine-tuning."""

    enabled: bool = Field(False, description="save a capture folder per change event")
    dir: Path = Field(Path("./monitor-captures"), description="<dir>/<camera>/<YYYY-MM-DD>/<event_id>/")
    max_age_days: float = Field(30.0, gt=0, description="captures older than this are deleted")
    max_bytes: int = Field(10_000_000_000, ge=1, description="beyond this total size the oldest are deleted")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of before.jpg / after.jpg")


class JobsConfig(Strict):
    """Periodic jobs (apscheduler; a job still running is never started again)."""

    stats_interval_s: float = Field(60.0, gt=0, description="heartbeat/stats record to the log (and Redis)")
    retention_interval_s: float = Field(600.0, gt=0, description="capture retention by age and size")
    spool_interval_s: float = Field(300.0, gt=0, description="Redis spool maintenance and depth report")


def redis_url_problem(url: str) -> str | None:
    """Why redis-py cannot use `url` (password masked), or None: one check for `check-config`
    and `run` alike."""
    try:
        parse_url(url)
    except (ValueError, TypeError) as exc:
        return f"{mask_secrets(str(exc))} (got {mask_url(url)!r})"
    return None


class RedisConfig(Strict):
    """Redis streams output (at-least-once, ordered per camera, idempotent)."""

    url: str | None = Field(None, description="redis:// or rediss:// URL (user:password@ allowed); unset = no Redis")

    @field_validator("url")
    @classmethod
    def _usable(cls, value: str | None) -> str | None:
        problem = redis_url_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    password_file: Path | None = Field(None, description="file holding the password (systemd credential)")
    password: SecretStr | None = Field(None, description="password, e.g. from MONITOR_REDIS__PASSWORD; never printed")
    prefix: str = Field("monitor", pattern=r"^[A-Za-z0-9_.:-]+$", description="stream key prefix")
    maxlen: int = Field(100_000, ge=100, description="approximate MAXLEN of each stream")
    per_camera_streams: bool = Field(False, description="also write <prefix>:events:<camera>")
    spool_dir: Path | None = Field(None, description="on-disk spool; default <log.dir>/spool")
    spool_max_bytes: int = Field(100_000_000, ge=4096, description="spool size bound; oldest dropped beyond")
    connect_timeout_s: float = Field(5.0, gt=0, description="connect/socket timeout")
    backoff_max_s: float = Field(30.0, gt=0, description="reconnect backoff cap")


def mqtt_url_problem(url: str) -> str | None:
    """Why `url` is no broker address (password masked), or None."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        return f"{exc} (got {mask_url(url)!r})"
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        return f"need mqtt://[user:pass@]host[:port] or mqtts://... (got {mask_url(url)!r})"
    if port == 0:
        return f"port 0 (got {mask_url(url)!r})"
    return None


class MqttConfig(Strict):
    """MQTT output (paho-mqtt, QoS 1), delivered from the same spool as Redis, with its own position."""

    url: str | None = Field(None, description="mqtt:// or mqtts:// URL (user:password@ allowed); unset = no MQTT")

    @field_validator("url")
    @classmethod
    def _usable(cls, value: str | None) -> str | None:
        problem = mqtt_url_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    password_file: Path | None = Field(None, description="file holding the password (systemd credential)")
    password: SecretStr | None = Field(None, description="password, e.g. from MONITOR_MQTT__PASSWORD; never printed")
    ca_file: Path | None = Field(None, description="mqtts: the CA certificate that signed the broker's")
    client_id: str = Field("surveillance-monitor", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="MQTT client id")
    prefix: str = Field("monitor", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", description="topic prefix")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive")
    discovery_prefix: str | None = Field(
        "homeassistant", pattern=r"^[A-Za-z0-9_.-]+$", description="Home Assistant discovery topics; null = none"
    )
    backoff_max_s: float = Field(30.0, gt=0, description="reconnect backoff cap")


class ClusterConfig(Strict):
    """Scale-out on Redis Streams: `run --role gate` nodes and `describe-worker` processes."""

    node: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="this gate node's name; default the host name"
    )
    max_undescribed: int = Field(
        256, ge=1, description="candidates in the stream beyond which a gate coalesces locally"
    )
    describe_timeout_s: float = Field(30.0, gt=0, description="undescribed this long: the embedded sentence, marked so")
    claim_idle_ms: int = Field(60_000, ge=100, description="workers take over candidates read but unacked this long")
    jpeg_quality: int = Field(90, ge=30, le=100, description="frames in the candidates stream")
    affinity: bool = Field(
        True, description="under load, a camera's changes go to one worker, whose frame cache then holds its frames"
    )


class AlertRule(Strict):
    """Which events also go to <prefix>:alerts. Every condition given must hold."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="named in each alert entry")
    cameras: list[str] = Field(default_factory=list, description="camera ids; empty = all cameras")
    zones: list[str] = Field(default_factory=list, description="a region must touch one of these zones")
    keywords: list[str] = Field(default_factory=list, description="any of these words in the text")
    regex: str | None = Field(None, description="the text must match this regular expression")
    labels: list[str] = Field(default_factory=list, description="a region label among these (person, vehicle)")
    min_changed_fraction: float = Field(0.0, ge=0, le=1, description="scores.changed_fraction at least this")
    cooldown_s: float = Field(0.0, ge=0, description="per camera: at most one alert of this rule per period")
    early: bool = Field(
        False, description="also alert when the change starts (phase onset), before it settles and is described"
    )

    @model_validator(mode="after")
    def _early_needs_no_text(self) -> AlertRule:
        if self.early and (self.keywords or self.regex is not None):
            raise ValueError(
                "early: keywords and regex need the sentence, which a change does not have when it starts"
                " (use cameras, zones, labels or min_changed_fraction)"
            )
        return self

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value
