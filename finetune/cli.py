"""`monitor finetune ...` and `monitor bench finetune`, hooked into the `monitor` command line
through the `monitor.commands` entry point. Imports nothing heavy: torch and friends load only
when a command runs."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any, bench: Any) -> None:
    f = sub.add_parser("finetune", help="build datasets, train LoRA/QLoRA adapters, evaluate and score captions")
    f.add_subparsers(dest="finetune_command", required=True, metavar="STEP")
    _ = bench, argparse  # filled in by the finetune issue
