"""The settings tree through the real `monitor` process: example config, env overrides, error listing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from support import EXAMPLE_CONFIG, assert_no_traceback, error_lines, need_video, run_monitor

from monitor.config import (
    CameraConfig,
    DescriberConfig,
    GateConfig,
    LogConfig,
    MonitorSettings,
    RedisConfig,
    load_settings,
)
from monitor.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the example config -----------------------------------------------------------------------
def test_example_config_passes_check_config() -> None:
    proc = run_monitor("check-config", EXAMPLE_CONFIG)
    assert proc.returncode == 0, proc.stderr
    assert "OK (2 camera(s))" in proc.stdout
    assert proc.stderr == ""


def test_example_config_values() -> None:
    s = load_settings(EXAMPLE_CONFIG)
    lobby, rtsp = s.cameras
    assert lobby.id == "lobby" and lobby.source.endswith("one-by-one-person-detection.mp4")
    assert (lobby.sample_fps, lobby.image_fps, lobby.masks, lobby.zones, lobby.gate) == (2.0, None, [], [], {})
    assert rtsp.source == "rtsp://user:password@camera.example/stream"
    assert rtsp.sample_fps == 1.0 and rtsp.open_timeout_s == 5.0
    assert len(rtsp.masks) == 2 and rtsp.masks[0][2] == (1.0, 0.35)
    assert [z.name for z in rtsp.zones] == ["driveway"]
    assert rtsp.gate == {"settle_s": 2.0, "cooldown_s": 5.0}
    # The per-camera override changes only its own keys.
    assert s.gate_for(lobby) == GateConfig()
    assert s.gate_for(rtsp) == GateConfig(settle_s=2.0, cooldown_s=5.0)
    assert s.describer.kind == "embedded" and s.describer.model is None and s.describer.batch_size == 8
    assert s.log.dir == Path("./monitor-logs") and s.log.max_bytes == 10_000_000 and s.log.backup_count == 5
    assert s.redis.url is None and s.redis.prefix == "monitor"


def _field_names(model: type[BaseModel], prefix: str = "") -> set[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(prefix + name)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names |= _field_names(ann, f"{prefix}{name}.")
    return names


def _yaml_names(data: dict, prefix: str = "") -> set[str]:
    names: set[str] = set()
    for key, value in data.items():
        names.add(prefix + key)
        if isinstance(value, dict):
            names |= _yaml_names(value, f"{prefix}{key}.")
    return names


def test_example_config_shows_every_field_with_its_default() -> None:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    assert _field_names(MonitorSettings) <= _yaml_names(data)
    assert set(CameraConfig.model_fields) == set(data["cameras"][0])  # the first camera lists them all
    # The documented defaults are the real ones (the file camera and the sections keep them).
    s = load_settings(EXAMPLE_CONFIG)
    assert s.gate == GateConfig()
    assert (s.describer, s.log, s.redis) == (DescriberConfig(), LogConfig(), RedisConfig())
    lobby = s.cameras[0].model_dump(exclude={"id", "source"})
    ref = CameraConfig(id="x", source="x").model_dump(exclude={"id", "source"})
    assert lobby == ref


# -- environment overrides ----------------------------------------------------------------------
def test_env_overrides_yaml_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MONITOR_GATE__SETTLE_S", "2.5")
    monkeypatch.setenv("MONITOR_LOG__DIR", str(tmp_path / "env-logs"))
    s = load_settings(EXAMPLE_CONFIG)
    assert s.gate.settle_s == 2.5
    assert s.log.dir == tmp_path / "env-logs"
    # Siblings of the overridden keys still come from the YAML / defaults (a merge, not a replace).
    assert s.gate.cooldown_s == 3.0 and s.log.backup_count == 5 and len(s.cameras) == 2
    assert s.gate_for(s.cameras[0]).settle_s == 2.5
    assert s.gate_for(s.cameras[1]).settle_s == 2.0  # the camera's own override still wins


def test_env_overrides_reach_the_real_process(tmp_path: Path) -> None:
    video = need_video("car-detection.mp4")
    cfg = write(
        tmp_path / "c.yaml",
        f"""
cameras:
  - id: cars
    source: {video}
    sample_fps: 1
gate:
  settle_s: 1.0
log:
  dir: {tmp_path / "yaml-logs"}
""",
    )
    env_dir = tmp_path / "env-logs"
    proc = run_monitor("run", "--config", cfg, "--quiet", env={"MONITOR_LOG__DIR": str(env_dir)})
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    assert (env_dir / "changes.jsonl").exists()
    assert not (tmp_path / "yaml-logs").exists()
    # A bad env value is reported with its field path, like a YAML one.
    bad = run_monitor("check-config", cfg, env={"MONITOR_GATE__SETTLE_S": "-2"})
    assert bad.returncode == 2
    assert error_lines(bad, "config error") == ["gate.settle_s: Input should be greater than or equal to 0 (got '-2')"]
    ok = run_monitor("check-config", cfg, env={"MONITOR_GATE__SETTLE_S": "2.5"})
    assert ok.returncode == 0, ok.stderr


# -- many errors at once --------------------------------------------------------------------------
BAD_CONFIG = """
cameras:
  - id: front
    source: front.mp4
    sample_fps: -1
    colour: red
  - id: "bad id!"
    source: side.mp4
    masks:
      - [[0.1, 0.1], [1.5, 0.2], [0.3, 0.9]]
  - id: front
    source: back.mp4
    realtime: maybe
gate:
  settle_s: soon
"""

EXPECTED_PATHS = [
    "cameras.0.sample_fps",  # negative
    "cameras.0.colour",  # unknown key
    "cameras.1.id",  # bad id
    "cameras.1.masks.0",  # point outside 0-1
    "cameras.2.id",  # duplicate id
    "cameras.2.realtime",  # wrong type
    "gate.settle_s",  # wrong type
]


def test_check_config_lists_every_error_with_its_path(tmp_path: Path) -> None:
    proc = run_monitor("check-config", write(tmp_path / "bad.yaml", BAD_CONFIG))
    assert proc.returncode == 2
    assert_no_traceback(proc)
    assert proc.stdout == ""
    lines = error_lines(proc, "config error")
    assert len(lines) == len(proc.stderr.splitlines()) == len(EXPECTED_PATHS), proc.stderr
    paths = sorted(line.split(":", 1)[0] for line in lines)
    assert paths == sorted(EXPECTED_PATHS)
    by_path = {line.split(":", 1)[0]: line for line in lines}
    assert "greater than 0" in by_path["cameras.0.sample_fps"] and "-1" in by_path["cameras.0.sample_fps"]
    assert "Extra inputs" in by_path["cameras.0.colour"]
    assert "outside 0-1" in by_path["cameras.1.masks.0"]
    assert "used twice" in by_path["cameras.2.id"] and "cameras.0.id" in by_path["cameras.2.id"]
    assert "boolean" in by_path["cameras.2.realtime"]
    assert "number" in by_path["gate.settle_s"]


def test_run_with_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    proc = run_monitor("run", "--config", write(tmp_path / "bad.yaml", BAD_CONFIG), "--log-dir", tmp_path / "logs")
    assert proc.returncode == 2
    assert_no_traceback(proc)
    assert len(error_lines(proc, "config error")) == len(EXPECTED_PATHS)
    assert not (tmp_path / "logs").exists()  # nothing started


def test_duplicate_ids_alone(tmp_path: Path) -> None:
    proc = run_monitor(
        "check-config",
        write(tmp_path / "dup.yaml", "cameras:\n  - {id: a, source: a.mp4}\n  - {id: a, source: b.mp4}\n"),
    )
    assert proc.returncode == 2
    assert error_lines(proc, "config error") == [
        "cameras.1.id: camera id 'a' is used twice (also cameras.0.id) (got 'a')"
    ]


def test_per_camera_gate_override_error_names_the_camera_field(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "gate.yaml",
        """
cameras:
  - id: a
    source: a.mp4
  - id: b
    source: b.mp4
    gate:
      settle_s: -3
      bogus: 1
  - id: c
    source: c.mp4
    gate: {min_region_fraction: 0.5}
gate:
  settle_s: 1.0
""",
    )
    proc = run_monitor("check-config", cfg)
    assert proc.returncode == 2
    assert_no_traceback(proc)
    assert error_lines(proc, "config error") == [
        "cameras.1.gate.settle_s: Input should be greater than or equal to 0 (got -3)",
        "cameras.1.gate.bogus: Extra inputs are not permitted (got 1)",
        "cameras.2.gate: min_region_fraction must not exceed fire_fraction",
    ]


def test_gate_override_error_listed_with_other_errors(tmp_path: Path) -> None:
    cfg = write(tmp_path / "gate2.yaml", "cameras:\n  - {id: a, source: a.mp4, sample_fps: 0, gate: {cooldown_s: x}}\n")
    proc = run_monitor("check-config", cfg)
    assert proc.returncode == 2
    paths = [line.split(":", 1)[0] for line in error_lines(proc, "config error")]
    assert paths == ["cameras.0.sample_fps", "cameras.0.gate.cooldown_s"]


# -- unreadable files --------------------------------------------------------------------------
def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    cfg = write(tmp_path / "indent.yaml", "cameras:\n  - id: a\n   source: a.mp4\n")
    for args in (("check-config", cfg), ("run", "--config", cfg)):
        proc = run_monitor(*args)
        assert proc.returncode == 2
        assert_no_traceback(proc)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"monitor: config error: {cfg} line 3: ")


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    for args in (("check-config", missing), ("run", "--config", missing)):
        proc = run_monitor(*args)
        assert proc.returncode == 2
        assert_no_traceback(proc)
        assert proc.stderr.splitlines() == [f"monitor: config error: config file not found: {missing}"]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    proc = run_monitor("check-config", write(tmp_path / "list.yaml", "- a\n- b\n"))
    assert proc.returncode == 2
    assert_no_traceback(proc)
    assert len(proc.stderr.splitlines()) == 1 and "top level must be a mapping" in proc.stderr


# -- secrets -----------------------------------------------------------------------------------
@pytest.mark.parametrize("password", ["TopSecret9", "p@ss@word"])
def test_password_in_invalid_config_never_printed(tmp_path: Path, password: str) -> None:
    cfg = write(
        tmp_path / "pw.yaml",
        f"""
cameras:
  - id: "bad id"
    source: rtsp://admin:{password}@10.0.0.1/live
    sample_fps: 0
  - "rtsp://admin:{password}@10.0.0.2/live"
  - id: ftp
    source: ftp://admin:{password}@10.0.0.3/live
  - id: extra
    source: rtsp://admin:{password}@10.0.0.4/live
    url: rtsp://admin:{password}@10.0.0.4/live
redis:
  url: 5
  extra: redis://:{password}@host:6379/0?password={password}
""",
    )
    for args in (("check-config", cfg), ("run", "--config", cfg)):
        proc = run_monitor(*args)
        assert proc.returncode == 2
        assert_no_traceback(proc)
        out = proc.stdout + proc.stderr
        assert password not in out
        assert "ss@word" not in out
        lines = error_lines(proc, "config error")
        assert len(lines) == 7, proc.stderr
        # The URL is still recognisable, only the password is masked.
        assert "rtsp://admin:***@10.0.0.2/live" in out and "rtsp://admin:***@10.0.0.4/live" in out


def test_load_settings_raises_config_error_in_process(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path / "bad.yaml", BAD_CONFIG))
    assert len(str(info.value).splitlines()) == len(EXPECTED_PATHS)
