"""One settings tree: YAML file + `MONITOR_...` environment overrides (nested with `__`)."""

from __future__ import annotations

import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from monitor.errors import ConfigError, mask_secrets

Point = tuple[float, float]
Polygon = list[Point]

_yaml_file: ContextVar[Path | None] = ContextVar("monitor_yaml_file", default=None)


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


class HttpConfig(Strict):
    bind: str | None = Field(
        "127.0.0.1:9108", pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$",
        description="host:port of /healthz and /metrics; null = off",
    )  # fmt: skip


class LogConfig(Strict):
    dir: Path = Field(Path("./monitor-logs"), description="where changes.jsonl and changes.log go")
    max_bytes: int = Field(10_000_000, ge=1024, description="rotate a log file at this size")
    backup_count: int = Field(5, ge=0, le=1000, description="rotated files kept")
    reorder_window_s: float = Field(0.5, ge=0, description="how long events wait to be merged across cameras")


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


class RedisConfig(Strict):
    """Redis streams output (at-least-once, ordered per camera, idempotent)."""

    url: str | None = Field(None, description="redis:// or rediss:// URL (user:password@ allowed); unset = no Redis")
    password_file: Path | None = Field(None, description="file holding the password (systemd credential)")
    password: SecretStr | None = Field(None, description="password, e.g. from MONITOR_REDIS__PASSWORD; never printed")
    prefix: str = Field("monitor", pattern=r"^[A-Za-z0-9_.:-]+$", description="stream key prefix")
    maxlen: int = Field(100_000, ge=100, description="approximate MAXLEN of each stream")
    per_camera_streams: bool = Field(False, description="also write <prefix>:events:<camera>")
    spool_dir: Path | None = Field(None, description="on-disk spool; default <log.dir>/spool")
    spool_max_bytes: int = Field(100_000_000, ge=4096, description="spool size bound; oldest dropped beyond")
    connect_timeout_s: float = Field(5.0, gt=0, description="connect/socket timeout")
    backoff_max_s: float = Field(30.0, gt=0, description="reconnect backoff cap")


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

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class MonitorSettings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(env_prefix="MONITOR_", env_nested_delimiter="__", extra="forbid")

    cameras: list[CameraConfig] = Field(default_factory=list)
    gate: GateConfig = Field(default_factory=GateConfig)
    describer: DescriberConfig = Field(default_factory=DescriberConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    alerts: list[AlertRule] = Field(default_factory=list)
    http: HttpConfig = Field(default_factory=HttpConfig)
    captures: CapturesConfig = Field(default_factory=CapturesConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)

    @model_validator(mode="wrap")
    @classmethod
    def _unique_and_valid_overrides(cls, data: Any, handler: Any) -> MonitorSettings:
        # Checked on the raw input so these errors are listed together with every other one
        # (an "after" validator would only run once all fields are valid).
        extra = _cross_field_errors(data) if isinstance(data, dict) else []
        try:
            settings = handler(data)
        except ValidationError as exc:
            if not extra:
                raise
            raise ValidationError.from_exception_data(exc.title, _rebuildable([*exc.errors(), *extra])) from None
        if extra:
            raise ValidationError.from_exception_data(cls.__name__, _rebuildable(extra))
        return settings

    def gate_for(self, camera: CameraConfig) -> GateConfig:
        return GateConfig.model_validate({**self.gate.model_dump(), **camera.gate})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Command-line values beat the environment, which beats the YAML file.
        return (init_settings, env_settings, _YamlSource(settings_cls))


def _rebuildable(errors: list[Any]) -> list[Any]:
    """`ValidationError.from_exception_data` knows only some error types (not e.g. `path_type`,
    a KeyError otherwise): pass the others on as custom errors with the same type and message."""
    out = []
    for err in errors:
        if isinstance(err.get("type"), str):
            try:
                ValidationError.from_exception_data("check", [err])
            except (KeyError, TypeError, ValueError):
                custom = PydanticCustomError(err["type"], err["msg"])  # no context: not formatted
                err = {"type": custom, "loc": err["loc"], "input": err.get("input")}
        out.append(err)
    return out


def _cross_field_errors(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Duplicate camera ids and invalid per-camera gate overrides, each with its field path."""

    def plain(value: Any) -> Any:  # models given in code are checked like their dicts
        return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value

    cameras = data.get("cameras")
    rules = data.get("alerts")
    rules = list(map(plain, rules)) if isinstance(rules, list | tuple) else []
    alert_errors = _alert_rule_errors(rules, cameras, plain)
    if not isinstance(cameras, list | tuple):
        return alert_errors
    base = plain(data.get("gate"))
    base = base if isinstance(base, dict) else {}
    cams = list(map(plain, cameras))
    errors = _duplicate_errors(cams, "cameras", "id", "camera id", "duplicate_id")
    for i, cam in enumerate(cams):
        if not isinstance(cam, dict):
            continue
        override = cam.get("gate")
        if not isinstance(override, dict) or not override:
            continue
        try:
            GateConfig.model_validate({**base, **override})
        except ValidationError as exc:
            for err in exc.errors():
                loc = err["loc"]
                if loc and loc[0] not in override:
                    continue  # a bad global gate value: reported under gate.*
                errors.append({**err, "loc": ("cameras", i, "gate", *loc)})
    return errors + alert_errors


def _duplicate_errors(items: list[Any], section: str, key: str, what: str, kind: str) -> list[dict[str, Any]]:
    """An error at `section.i.key` for each item whose string `key` an earlier item already has."""
    errors: list[dict[str, Any]] = []
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        value = item.get(key) if isinstance(item, dict) else None
        if not isinstance(value, str):
            continue
        if value in first:
            msg = f"{what} {value!r} is used twice (also {section}.{first[value]}.{key})"
            errors.append(_custom_error((section, i, key), kind, msg, value))
        else:
            first[value] = i
    return errors


def _custom_error(loc: tuple, kind: str, msg: str, value: Any) -> dict[str, Any]:
    """A validation error of our own, in pydantic's error-list form."""
    return {"type": PydanticCustomError(kind, msg), "loc": loc, "input": value}


def _alert_rule_errors(rules: list[Any], cameras: Any, plain: Any) -> list[dict[str, Any]]:
    """Each rule's cameras must exist, and each of its zones on at least one of its cameras
    (on some camera when the rule names none); rule names must be unique."""
    zones_of: dict[str, set[str]] = {}
    for cam in map(plain, cameras if isinstance(cameras, list | tuple) else []):
        if isinstance(cam, dict) and isinstance(cam.get("id"), str):
            zones = cam.get("zones") if isinstance(cam.get("zones"), list | tuple) else []
            names = [z.get("name") for z in map(plain, zones) if isinstance(z, dict)]  # may be unhashable
            zones_of.setdefault(cam["id"], set()).update(n for n in names if isinstance(n, str))

    errors = _duplicate_errors(rules, "alerts", "name", "alert rule name", "duplicate_rule")
    known = ", ".join(zones_of) or "none"
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        rule_cams = rule.get("cameras") if isinstance(rule.get("cameras"), list | tuple) else []
        scope: list[str] = []
        for j, cam_id in enumerate(rule_cams):
            if not isinstance(cam_id, str):
                continue
            if cam_id in zones_of:
                scope.append(cam_id)
            else:
                msg = f"unknown camera {cam_id!r} (cameras: {known})"
                errors.append(_custom_error(("alerts", i, "cameras", j), "unknown_camera", msg, cam_id))
        if rule_cams and not scope:
            continue  # every named camera is unknown: already reported
        scope = scope or list(zones_of)
        rule_zones = rule.get("zones") if isinstance(rule.get("zones"), list | tuple) else []
        for j, zone in enumerate(rule_zones):
            if not isinstance(zone, str) or any(zone in zones_of[c] for c in scope):
                continue
            if len(scope) == 1:
                where = f"camera {scope[0]!r}"
            elif rule_cams:
                where = f"any of the cameras {', '.join(scope)}"
            else:
                where = "any camera"
            defined = sorted(set().union(*(zones_of[c] for c in scope))) if scope else []
            msg = f"zone {zone!r} is not defined on {where} (zones: {', '.join(defined) or 'none'})"
            errors.append(_custom_error(("alerts", i, "zones", j), "unknown_zone", msg, zone))
    return errors


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _yaml_file.get()
        return read_yaml(path) if path is not None else {}


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (cameras:, gate:, ...)")
    # a key such as `5:` or `true:` would otherwise fail as a keyword argument (TypeError)
    return {key if isinstance(key, str) else str(key): value for key, value in data.items()}


def format_errors(exc: ValidationError) -> list[str]:
    """One line per error: `cameras.0.sample_fps: Input should be greater than 0 (got -1)`."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "[key]") or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if "[key]" in err["loc"]:  # a mapping key of the wrong type (`5:` where names go)
            msg = f"invalid key: {msg}"
        scalar_input = "input" in err and not isinstance(err["input"], dict | list)
        # never echo what may be a secret: the value of a password field or of a misspelt one
        secret = any(_SECRET_KEY.search(str(part)) for part in err["loc"])
        if err["type"] not in {"missing", "value_error"} and scalar_input and not secret:
            msg += f" (got {mask_secrets(repr(err['input']))[:80]})"
        lines.append(f"{loc}: {mask_secrets(msg)}".translate(_LINE_BREAKS))
    return lines


_SECRET_KEY = re.compile(r"(?i)pass|pwd|secret|token|auth|credential")

# one error, one line: a value quoted in a message (a camera id "a\nb") must not break it
_LINE_BREAKS = {ord(c): c.encode("unicode_escape").decode() for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def load_settings(path: Path | None = None, **overrides: Any) -> MonitorSettings:
    """Load and validate; raises ConfigError with every problem, one per line."""
    token = _yaml_file.set(path)
    try:
        return MonitorSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError("\n".join(format_errors(exc))) from None
    finally:
        _yaml_file.reset(token)
