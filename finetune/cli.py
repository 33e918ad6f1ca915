"""`monitor finetune ...` and `monitor bench finetune`, hooked into the `monitor` command line
through the `monitor.commands` entry point. Imports nothing heavy: torch and friends load only
when a command runs.

One `add_<step>(steps)` function per subcommand parser and one `cmd_<step>(args)` per command;
a new step is one more pair of functions and one line in `add_commands`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from finetune.cli_common import existing_dir_or_new, guarded, show_scores
from finetune.cli_train import add_bench, add_eval, add_export, add_train  # its own module: many options
from monitor.argtypes import fraction, positive_int
from monitor.errors import MonitorError


def add_commands(sub: Any, bench: Any) -> None:
    f = sub.add_parser(
        "finetune",
        help="build datasets, train LoRA/QLoRA adapters, evaluate and score captions",
        description="Fine-tuning data, training and evaluation for the change captioner.",
    )
    steps = f.add_subparsers(dest="finetune_command", required=True, metavar="STEP")
    add_prepare(steps)
    add_check(steps)
    add_score(steps)
    add_train(steps)
    add_eval(steps)
    add_export(steps)
    add_bench(bench)


# -- prepare ------------------------------------------------------------------------------------
def add_prepare(steps: Any) -> None:
    p = steps.add_parser(
        "prepare",
        help="make a dataset (pairs.jsonl) from Spot-the-Diff, capture folders or the synthetic scene",
        description="Write OUT/pairs.jsonl (one before/after pair per line) and optionally OUT/llava.json.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-spotdiff", type=Path, metavar="ANNOTATIONS", help="Spot-the-Diff annotation JSON")
    src.add_argument("--from-captures", type=Path, metavar="DIR", help="the daemon's capture folder")
    src.add_argument("--synthetic", type=positive_int, metavar="N", help="N pairs from the synthetic scene generator")
    p.add_argument("--images", type=Path, metavar="DIR", help="Spot-the-Diff images (<id>.png, <id>_2.png)")
    p.add_argument(
        "--include-uncorrected", action="store_true", help="captures: use the logged text where no captions.txt"
    )
    p.add_argument(
        "--image-size", type=positive_int, default=96, metavar="S", help="synthetic: S x S frames (default 96)"
    )
    p.add_argument("--seed", type=int, default=0, help="synthetic: seed (default 0)")
    p.add_argument(
        "--no-change-fraction", type=fraction, default=0.2, help="synthetic: share of no-change pairs (default 0.2)"
    )
    p.add_argument(
        "--two-change-fraction",
        type=fraction,
        default=0.3,
        help="synthetic: share of change pairs with two changes, the others have one (default 0.3)",
    )
    p.add_argument("--out", type=existing_dir_or_new, required=True, metavar="DIR", help="dataset folder")
    p.add_argument("--skip-bad", action="store_true", help="drop bad pairs and count them instead of failing")
    p.add_argument("--llava-json", action="store_true", help="also write OUT/llava.json (LLaVA conversations)")
    p.add_argument(
        "--single-answer", action="store_true", help="llava.json: one joined answer instead of one turn per change"
    )
    p.set_defaults(func=guarded(cmd_prepare))


def cmd_prepare(args: argparse.Namespace) -> int:
    from finetune.dataset import load_dataset, to_llava

    if args.images is not None and args.from_spotdiff is None:
        raise MonitorError("--images goes with --from-spotdiff")
    if args.include_uncorrected and args.from_captures is None:
        raise MonitorError("--include-uncorrected goes with --from-captures")
    if args.single_answer and not args.llava_json:
        raise MonitorError("--single-answer goes with --llava-json")
    summary = ""
    if args.from_spotdiff is not None:
        from finetune.convert import from_spotdiff

        if args.images is None:
            raise MonitorError("--from-spotdiff needs --images DIR (the folder of <id>.png and <id>_2.png)")
        path, stats = from_spotdiff(args.from_spotdiff, args.images, args.out, skip_bad=args.skip_bad)
        summary = stats.summary()
    elif args.from_captures is not None:
        from finetune.convert import from_captures

        path, stats = from_captures(
            args.from_captures, args.out, include_uncorrected=args.include_uncorrected, skip_bad=args.skip_bad
        )
        summary = stats.summary()
    else:
        from finetune.synthetic import write_synthetic

        if args.image_size < 32:
            raise MonitorError(f"--image-size: at least 32 px for legible objects (got {args.image_size})")
        path = write_synthetic(
            args.out,
            args.synthetic,
            seed=args.seed,
            size=args.image_size,
            no_change_fraction=args.no_change_fraction,
            two_change_fraction=args.two_change_fraction,
        )
        summary = f"{args.synthetic} pairs, {args.image_size}x{args.image_size} px, seed {args.seed}"
    print(f"wrote {path}: {summary}")
    if args.llava_json:
        dataset = load_dataset(path, check_images=False)  # checked (or written) just now
        llava = args.out / "llava.json"
        n = to_llava(dataset, llava, multi_turn=not args.single_answer)
        print(f"wrote {llava}: {n} conversations ({'single answer' if args.single_answer else 'one turn per change'})")
    return 0


# -- check --------------------------------------------------------------------------------------
def add_check(steps: Any) -> None:
    c = steps.add_parser(
        "check",
        help="validate a dataset and report what is in it",
        description="Check every line of DATASET (JSON, fields, duplicate ids, images present and decodable); "
        "list every problem with its line number.",
    )
    c.add_argument("dataset", type=Path, metavar="DATASET", help="pairs.jsonl, or the folder holding it")
    c.add_argument("--skip-bad", action="store_true", help="report bad lines as skipped instead of failing")
    c.add_argument("--no-images", action="store_true", help="do not open the images (fields only)")
    c.set_defaults(func=guarded(cmd_check))


def cmd_check(args: argparse.Namespace) -> int:
    from collections import Counter

    from finetune.dataset import load_dataset
    from finetune.language import references_direction

    ds = load_dataset(args.dataset, skip_bad=args.skip_bad, check_images=not args.no_images)
    for line in ds.problems:
        print(f"monitor: warning: skipped {line}", file=sys.stderr)
    cameras = Counter(r.camera for r in ds)
    per_pair = Counter(len(r.captions) for r in ds if not r.no_change)
    directions = Counter(references_direction(r.captions) or "none/mixed" for r in ds if not r.no_change)
    checked = "fields only" if args.no_images else f"{2 * len(ds)} images decoded"
    print(f"{ds.path}: {len(ds)} pairs OK ({checked})" + (f", {ds.skipped} bad lines skipped" if ds.skipped else ""))
    print("cameras: " + ", ".join(f"{k} {v}" for k, v in cameras.most_common()))
    print(
        f"captions: {sum(len(r.captions) for r in ds)} sentences; no-change pairs {sum(r.no_change for r in ds)}; "
        "change sentences per pair: " + ", ".join(f"{k}: {v}" for k, v in sorted(per_pair.items()))
    )
    print("direction of change pairs: " + ", ".join(f"{k} {v}" for k, v in directions.most_common()))
    return 0


# -- score --------------------------------------------------------------------------------------
def add_score(steps: Any) -> None:
    s = steps.add_parser(
        "score",
        help="score COCO-format caption predictions against references",
        description="BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (pycocoevalcap, PTB tokenisation; METEOR and the "
        "tokenizer need Java), direction accuracy and no-change accuracy.",
    )
    s.add_argument("refs", type=Path, metavar="REFS", help='COCO references: {"annotations": [{image_id, caption}]}')
    s.add_argument("preds", type=Path, metavar="PREDS", help="COCO results: [{image_id, caption}], one per image")
    s.add_argument("--json", action="store_true", help="print the scores as JSON")
    s.add_argument("--report", type=existing_dir_or_new, metavar="DIR", help="write DIR/scores.json and scores.png")
    s.add_argument("--no-java", action="store_true", help="skip METEOR, approximate PTB tokenisation in Python")
    s.set_defaults(func=guarded(cmd_score))


def cmd_score(args: argparse.Namespace) -> int:
    from finetune.metrics import load_coco_predictions, load_coco_references, score_captions

    refs = load_coco_references(args.refs)
    preds = load_coco_predictions(args.preds, refs)
    scores = score_captions(refs, preds, java=False if args.no_java else None)
    unscored = len(refs) - len(preds)
    if unscored:
        print(f"monitor: warning: {unscored} reference pairs have no prediction and are not scored", file=sys.stderr)
    show_scores(args, {args.preds.stem: scores}, title=f"{args.preds.name} vs {args.refs.name}", single=True)
    return 0
