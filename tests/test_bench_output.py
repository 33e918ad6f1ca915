"""Every `monitor bench` reports the same way: table + JSON; `--json FILE` also writes the JSON;
a bare `--json` prints the JSON alone."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("what", ["gate", "redis", "service", "model"])
def test_every_bench_takes_a_bare_json(what: str) -> None:
    from monitor.cli import build_parser

    args = build_parser().parse_args(["bench", what, "--json"])
    assert args.json == "-"
