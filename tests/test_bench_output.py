"""Every `monitor bench` reports the same way: table + JSON; `--json FILE` also writes the JSON;
a bare `--json` prints the JSON alone (each bench run for real, at its smallest settings)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from support import VIDEOS, assert_no_traceback, run_monitor

from monitor.bench.gate import MODES
from monitor.bench.model import VARIANTS
from monitor.bench.output import add_json_option, report

DOC = {"benchmark": "x", "results": [{"variant": "a", "pairs_per_s": 1.5}]}


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_json_option(parser)
    return parser.parse_args(argv)


def test_table_then_json_and_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "deep" / "bench.json"
    report(_parse("--json", str(out)), DOC, lambda: print("TABLE"))
    printed = capsys.readouterr().out
    assert printed.startswith("TABLE\n")
    assert json.loads(printed[len("TABLE\n") :]) == DOC == json.loads(out.read_text(encoding="utf-8"))


def test_without_json_option_prints_both_and_writes_nothing(tmp_path: Path, capsys) -> None:
    report(_parse(), DOC, lambda: print("TABLE"))
    printed = capsys.readouterr().out
    assert printed.startswith("TABLE\n") and json.loads(printed[len("TABLE\n") :]) == DOC
    assert list(tmp_path.iterdir()) == []


def test_bare_json_prints_only_the_json(capsys: pytest.CaptureFixture[str]) -> None:
    report(_parse("--json"), DOC, lambda: print("TABLE"))
    assert json.loads(capsys.readouterr().out) == DOC  # the whole stdout is one JSON document


CLIP = VIDEOS / "one-by-one-person-detection.mp4"

# Each bench at about its smallest settings, all cheap enough to run (on 2 cores: gate and redis
# ~1 s, model ~8 s, service ~15 s): its options, top-level fields of its JSON, and the values the
# options set. `bench finetune` (finetune's own, `--json` = JSON only) is run with a bare --json by
# test_finetune_train.py::test_bench_finetune_json, on the checkpoint built there.
BENCH_RUNS: dict[str, tuple[list[str], set[str], dict[str, Any]]] = {
    "gate": (
        ["--video", str(CLIP), "--seconds", "2", "--repeat", "1"],
        {"benchmark", "sample_fps", "seconds", "timer", "repeat", "machine", "results", "goal"},
        {"benchmark": "gate", "seconds": 2.0, "repeat": 1, "sample_fps": 1.0},
    ),
    "redis": (
        ["--events", "100", "--repeat", "1"],
        {"benchmark", "events", "repeat", "rows"},
        {"benchmark": "redis", "events": 100, "repeat": 1},
    ),
    "service": (
        ["--cameras", "1", "--seconds", "8", "--warmup", "4", "--video", str(CLIP)],
        {"benchmark", "cameras", "cameras_up", "events", "daemon", "latency_s", "goals", "warmup_s", "video"},
        {"benchmark": "service", "cameras": 1, "warmup_s": 4.0, "video": CLIP.name},
    ),
    "model": (
        ["--arch", "tiny", "--batch", "1", "--new-tokens", "1", "--repeat", "1"],
        {"benchmark", "arch", "device", "new_tokens", "repeat", "lm_tokens_per_frame", "results"},
        {"benchmark": "model", "arch": "tiny", "device": "cpu", "new_tokens": 1, "repeat": 1},
    ),
}


# what each bench measured, one entry per row: (list, field of a row, expected); field None = keys
ROWS: dict[str, tuple[str, str | None, list[Any]]] = {
    "gate": ("results", "mode", list(MODES)),
    "redis": ("rows", "events", [100] * 4),  # direct, spool 1 and 100 per call, replay after an outage
    "service": ("latency_s", None, ["after_frame_to_log", "after_frame_to_redis", "change_to_log", "change_to_redis"]),
    "model": ("results", "variant", list(VARIANTS)),  # at batch 1
}


@pytest.mark.parametrize("what", list(BENCH_RUNS))
def test_every_bench_takes_a_bare_json(what: str) -> None:
    """`monitor bench WHAT ... --json`, the real process: stdout is one JSON document and nothing
    else (no table), with the fields that bench reports and the settings it was given."""
    options, fields, values = BENCH_RUNS[what]
    assert CLIP.is_file(), f"shared footage missing: {CLIP}"
    proc = run_monitor("bench", what, *options, "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    doc = json.loads(proc.stdout)  # the whole of stdout: one JSON document
    assert isinstance(doc, dict) and fields <= set(doc), sorted(doc)
    assert {key: doc[key] for key in values} == values
    table, field, expected = ROWS[what]
    got = [row[field] for row in doc[table]] if field else list(doc[table])
    assert got == expected, doc
