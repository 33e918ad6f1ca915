"""What the finetune subcommands share: one error line per dataset problem (`guarded`), the
output-folder argument type, and one way to print scores (`show_scores`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.errors import MonitorError

MAX_PROBLEMS_SHOWN = 100


def guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A dataset with several problems: one `monitor: error:` line per problem (the first
    MAX_PROBLEMS_SHOWN), then the count; exit code 1. Other errors go to monitor.cli.main."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except MonitorError as exc:
            problems = getattr(exc, "problems", ())
            if len(problems) <= 1:
                raise
            for line in problems[:MAX_PROBLEMS_SHOWN]:
                print(f"monitor: error: {line}", file=sys.stderr)
            more = len(problems) - MAX_PROBLEMS_SHOWN
            tail = f" ({more} not shown)" if more > 0 else ""
            source = getattr(exc, "source", "the input")
            print(f"monitor: error: {len(problems)} problems in {source}{tail}", file=sys.stderr)
            return exc.exit_code

    return run


def existing_dir_or_new(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a folder: {text}")
    return path


def show_scores(args: argparse.Namespace, systems: dict[str, Any], *, title: str, single: bool = False) -> None:
    """`score`'s and `eval`'s output: the scores' notes as warnings, then a table (`single`: one
    system's) or `--json`, and `--report DIR` (scores.json + scores.png)."""
    from finetune.report import comparison_table, write_report

    for note in sorted({n for s in systems.values() for n in s.notes}):
        print(f"monitor: warning: {note}", file=sys.stderr)
    first = next(iter(systems.values()))
    if args.json:
        print(json.dumps(first.as_dict() if single else {a: s.as_dict() for a, s in systems.items()}, indent=1))
    else:
        print(first.table() if single else comparison_table(systems))
    if args.report is not None:
        json_path, png_path = write_report(args.report, systems, title=title)
        print(f"wrote {json_path} and {png_path}", file=sys.stderr if args.json else sys.stdout)
