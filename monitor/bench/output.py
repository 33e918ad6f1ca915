"""How every `monitor bench` command reports: a table and its JSON on stdout; `--json FILE` also
writes the JSON to FILE; a bare `--json` prints the JSON alone (for scripts)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

JSON_ONLY = "-"


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        nargs="?",
        const=JSON_ONLY,
        metavar="FILE",
        help="also write the results to FILE as JSON; bare --json prints only the JSON",
    )


def report(args: argparse.Namespace, doc: dict[str, Any], print_table: Callable[[], None]) -> None:
    """Print the table (unless a bare --json) and the JSON; write the JSON to --json FILE."""
    target = getattr(args, "json", None)
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    if target != JSON_ONLY:
        print_table()
    print(text)
    if target not in (None, JSON_ONLY):
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
