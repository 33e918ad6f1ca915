"""The main job end to end through the real CLI: log files, schema, several cameras, rotation,
`monitor tail`, the demo, and --help everywhere."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support import assert_no_traceback, monitor_env, read_events, run_monitor

from monitor.cli import build_parser
from monitor.scene.scripted import render_sample_scene

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    paths = []
    for seed in (5, 9):
        path = out / f"scene{seed}.mp4"
        render_sample_scene(path, seconds=60, seed=seed)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def single_run(scenes, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    proc = run_monitor("run", "--source", scenes[0], "--camera-id", "lot-east", "--log-dir", logs, timeout=120)
    return proc, logs


def test_run_exits_0_and_echoes_the_change_log(single_run):
    proc, logs = single_run
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    text_lines = (logs / "changes.log").read_text().splitlines()
    assert text_lines and proc.stdout.splitlines() == text_lines
    for line in text_lines:
        # date, time and UTC offset in the host's zone (UTC here unless TZ says otherwise)
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d lot-east: \S.*$", line), line
    assert "decode_mode" in proc.stderr or "mode=" in proc.stderr  # the decoding mode is reported


def test_jsonl_events_have_the_full_schema(single_run):
    _, logs = single_run
    events = read_events(logs)
    assert len(events) >= 3
    assert len({e["event_id"] for e in events}) == len(events)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for e in events:
        assert e["camera"] == "lot-east" and e["kind"] == "change" and e["describer"] == "embedded"
        assert ISO_MS.match(e["t_before"]) and ISO_MS.match(e["t_after"])
        assert e["t_before"] <= e["t_after"]
        assert 0 <= e["media_t_before"] <= e["media_t_onset"] <= e["media_t_after"]
        assert e["text"] and not e["text"].endswith(" ")
        assert e["regions"], e
        for r in e["regions"]:
            assert set(r) == {"x", "y", "w", "h", "change", "label", "track", "heading", "stood_s"}
            assert 0 <= r["x"] <= 1 and 0 <= r["y"] <= 1 and 0 < r["w"] <= 1 and 0 < r["h"] <= 1
            assert r["change"] in {"appeared", "disappeared", "moved", "changed"}
        assert 0 < e["scores"]["ssim"] <= 1 and 0 < e["scores"]["changed_fraction"] < 1
        assert e["latency_ms"] >= 0
    times = [e["t_after"] for e in events]
    assert times == sorted(times)


def test_two_cameras_from_a_config_file(scenes, tmp_path):
    config = {
        "cameras": [
            {"id": "north", "source": str(scenes[0])},
            {"id": "south", "source": str(scenes[1]), "sample_fps": 1},
        ],
        "log": {"dir": str(tmp_path / "logs"), "reorder_window_s": 0.5},
    }
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = run_monitor("run", "--config", cfg, "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # --quiet
    events = read_events(tmp_path / "logs")
    for cam in ("north", "south"):
        mine = [e for e in events if e["camera"] == cam]
        assert len(mine) >= 3
        assert [e["seq"] for e in mine] == list(range(1, len(mine) + 1))
        assert all(a["t_after"] <= b["t_after"] for a, b in zip(mine, mine[1:]))


def test_log_files_rotate_by_size_and_count(scenes, tmp_path):
    proc = run_monitor(
        "run",
        "--source",
        scenes[0],
        "--log-dir",
        tmp_path,
        "--quiet",
        env={"MONITOR_LOG__MAX_BYTES": "1024", "MONITOR_LOG__BACKUP_COUNT": "2"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "changes.jsonl.1" in files and "changes.jsonl.2" in files
    assert "changes.jsonl.3" not in files and "changes.log.3" not in files
    kept = []
    for name in ("changes.jsonl.2", "changes.jsonl.1", "changes.jsonl"):
        path = tmp_path / name
        if path.exists():
            kept += [json.loads(line) for line in path.read_text().splitlines()]
    seqs = [e["seq"] for e in kept]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # the newest events, contiguous


def test_tail_prints_filters_and_formats(single_run):
    _, logs = single_run
    events = read_events(logs)
    proc = run_monitor("tail", "--log-dir", logs, "-n", "2")
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == (logs / "changes.log").read_text().splitlines()[-2:]
    proc = run_monitor("tail", "--log-dir", logs, "--json", "-n", "0")
    assert [json.loads(line)["event_id"] for line in proc.stdout.splitlines()] == [e["event_id"] for e in events]
    proc = run_monitor("tail", "--log-dir", logs, "--camera", "nobody")  # never silently nothing
    assert proc.returncode == 1 and proc.stdout == ""
    assert (
        proc.stderr.strip()
        == f"monitor: error: no events of camera 'nobody' in {logs}/changes.jsonl (cameras: lot-east)"
    )


def test_tail_follow_sees_new_events(scenes, tmp_path):
    logs = tmp_path / "logs"
    tail = subprocess.Popen(
        [sys.executable, "-m", "monitor", "tail", "-f", "--log-dir", str(logs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=monitor_env(),
    )
    try:
        time.sleep(0.5)
        run = run_monitor("run", "--source", scenes[1], "--camera-id", "yard", "--log-dir", logs, timeout=120)
        assert run.returncode == 0, run.stderr
        expected = (logs / "changes.log").read_text().splitlines()
        deadline = time.monotonic() + 10
        got: list[str] = []
        while len(got) < len(expected) and time.monotonic() < deadline:
            got.append(tail.stdout.readline().rstrip("\n"))
        assert got == expected
    finally:
        tail.terminate()
        tail.wait(timeout=10)


def test_demo_runs_the_embedded_default(tmp_path):
    proc = run_monitor(
        "run", "--demo", "--log-dir", tmp_path / "logs", env={"XDG_CACHE_HOME": str(tmp_path)}, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) >= 4 and all(" lot-demo: " in line for line in lines)
    assert any("arrived" in line for line in lines) and any("left" in line for line in lines)


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, its parser) for `monitor` and every subcommand under it, at any depth."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


COMMANDS = dict(_commands(build_parser()))
OPTION = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")  # an option string as a whole word


@pytest.mark.parametrize("command", list(COMMANDS), ids=lambda path: " ".join(path) or "monitor")
def test_help_everywhere(command):
    """`monitor ... --help` prints that command's own help: its usage line and every option,
    positional and subcommand its argparse parser defines (and, in the usage, no other option)."""
    parser = COMMANDS[command]
    proc = run_monitor(*command, "--help")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    usage = proc.stdout.split("\n\n", 1)[0]
    assert re.match(rf"usage: {re.escape(' '.join(('monitor', *command)))}(\s|$)", usage), proc.stdout
    optionals = [a for a in parser._actions if a.option_strings]
    for option in (o for a in optionals for o in a.option_strings):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", proc.stdout), (option, proc.stdout)
    # the usage shows each option once by its first spelling: exactly this parser's options
    assert set(OPTION.findall(usage)) == {a.option_strings[0] for a in optionals}, usage
    for action in parser._actions:
        if action.option_strings:
            continue
        assert re.search(rf"(?<![\w-]){re.escape(action.metavar or action.dest)}(?![\w-])", usage), usage
        for name in action.choices if isinstance(action, argparse._SubParsersAction) else ():  # each listed
            assert re.search(rf"^ +{re.escape(name)}(\s|$)", proc.stdout, re.MULTILINE), (name, proc.stdout)


def test_sample_writes_video_and_truth(tmp_path: Path):
    out = tmp_path / "s.mp4"
    proc = run_monitor("sample", out, "--seconds", "15", "--seed", "4")
    assert proc.returncode == 0, proc.stderr
    truth = json.loads(out.with_suffix(".truth.json").read_text())
    assert truth["seed"] == 4 and truth["seconds"] == 15 and out.stat().st_size > 10_000


def test_source_with_a_config_keeps_what_still_applies(scenes, tmp_path):
    """`run --source` replaces the config's cameras; a same-id camera lends its zones, and alert
    rules for cameras that are gone no longer block the run."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "cameras": [
                    {
                        "id": "gate",
                        "source": "/nonexistent.mp4",
                        "zones": [{"name": "drive", "polygon": [[0, 0], [1, 0], [1, 1]]}],
                    },
                ],
                "alerts": [
                    {"name": "in-drive", "cameras": ["gate"], "zones": ["drive"]},
                    {"name": "any", "keywords": ["arrived"]},
                ],
            }
        )
    )
    for camera_id, logs in (("yard", tmp_path / "a"), ("gate", tmp_path / "b")):
        args = ("run", "--config", cfg, "--source", scenes[0], "--camera-id", camera_id, "--log-dir", logs, "--quiet")
        proc = run_monitor(*args, timeout=120)
        assert proc.returncode == 0, proc.stderr
    assert read_events(tmp_path / "b") and {e["camera"] for e in read_events(tmp_path / "b")} == {"gate"}
