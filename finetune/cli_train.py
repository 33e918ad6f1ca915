"""`monitor finetune train | eval | export` and `monitor bench finetune`: the parsers and commands
(added to the command line by finetune.cli.add_commands). Imports nothing heavy: torch and friends
load only when a command runs."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from finetune.cli_common import existing_dir_or_new, guarded, show_scores
from monitor.argtypes import fraction, non_negative_int, positive_float, positive_int

# bitsandbytes (imported by peft) warns on every start that its optional `kernels` package for
# faster CPU 4-bit matmuls is missing; 4-bit works without it. Keep the commands' stderr clean.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


# -- train --------------------------------------------------------------------------------------
def add_train(steps: Any) -> None:
    t = steps.add_parser(
        "train",
        help="train the captioner: stage 1 (compressor), stage 2 (LoRA / QLoRA) or full",
        description="Train on DATASET (pairs.jsonl). Writes OUT: a peft adapter (adapter_config.json, "
        "adapter_model.safetensors; stage full: a whole checkpoint), compressor.safetensors, "
        "training_log.jsonl, loss.png and resumable checkpoints. Ctrl-C saves a checkpoint; --resume continues it.",
    )
    t.add_argument("--model", type=Path, required=True, metavar="DIR", help="LLaVA checkpoint (HF format)")
    t.add_argument("--dataset", type=Path, required=True, metavar="D", help="pairs.jsonl or its folder")
    t.add_argument("--out", type=existing_dir_or_new, required=True, metavar="DIR", help="output folder")
    t.add_argument("--stage", choices=("compressor", "lora", "full"), default="lora", help="default lora")
    t.add_argument("--qlora", action="store_true", help="stage lora with the LM in 4-bit nf4 (bitsandbytes)")
    t.add_argument("--train-projector", action="store_true", help="the projector trains too")
    t.add_argument("--init-compressor", type=Path, metavar="DIR", help="start from a stage-1 output folder")
    t.add_argument("--lora-r", type=positive_int, default=32, help="LoRA rank (default 32)")
    t.add_argument("--lora-alpha", type=positive_int, default=64, help="LoRA alpha (default 64)")
    t.add_argument("--lora-dropout", type=fraction, default=0.05, help="LoRA dropout (default 0.05)")
    t.add_argument("--lr", type=positive_float, help="learning rate (default: compressor 1e-3, lora 2e-4, full 1e-3)")
    t.add_argument("--epochs", type=positive_float, default=1.0, help="default 1")
    t.add_argument("--max-steps", type=positive_int, help="optimizer steps (overrides --epochs)")
    t.add_argument("--batch-size", type=positive_int, default=8, help="pairs per micro-batch (default 8)")
    t.add_argument("--grad-accum", type=positive_int, default=1, help="micro-batches per optimizer step (default 1)")
    t.add_argument("--warmup", type=fraction, default=0.03, help="warmup share of the steps (default 0.03)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    t.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations: less memory")
    t.add_argument("--single-answer", action="store_true", help="one answer with every sentence, not one per turn")
    t.add_argument("--no-facts", action="store_true", help="prompts without the regions' facts: pixels only")
    t.add_argument("--eval-dataset", type=Path, metavar="D", help="held-out pairs (default: a share of DATASET)")
    t.add_argument("--eval-fraction", type=fraction, default=0.05, help="held-out share (default 0.05)")
    t.add_argument("--eval-every", type=non_negative_int, default=0, help="steps between held-out losses (0: end)")
    t.add_argument("--eval-pairs", type=positive_int, default=64, help="held-out pairs per evaluation (default 64)")
    t.add_argument("--save-every", type=non_negative_int, default=0, help="steps between checkpoints (0: end)")
    t.add_argument("--resume", action="store_true", help="continue the newest checkpoint in OUT")
    t.add_argument("--seed", type=int, default=0, help="default 0")
    t.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    t.add_argument("--workers", type=non_negative_int, default=0, help="image decoding processes (default 0)")
    t.add_argument("--skip-bad", action="store_true", help="drop bad dataset lines instead of failing")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=guarded(cmd_train))


def cmd_train(args: argparse.Namespace) -> int:
    from finetune.adapters import LoraSettings
    from finetune.train import TrainingInterrupted, TrainSettings, train

    settings = TrainSettings(
        model=args.model,
        dataset=args.dataset,
        out=args.out,
        stage=args.stage,
        qlora=args.qlora,
        train_projector=args.train_projector,
        init_compressor=args.init_compressor,
        lora=LoraSettings(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout),
        lr=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        gradient_checkpointing=args.gradient_checkpointing,
        multi_turn=not args.single_answer,
        facts=not args.no_facts,
        eval_dataset=args.eval_dataset,
        eval_fraction=args.eval_fraction,
        eval_every=args.eval_every,
        eval_pairs=args.eval_pairs,
        save_every=args.save_every,
        resume=args.resume,
        seed=args.seed,
        device=args.device,
        workers=args.workers,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
    )
    try:
        summary = train(settings)
    except TrainingInterrupted as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return exc.exit_code
    loss = "-" if summary.train_loss is None else f"{summary.train_loss:.4f}"
    held = "-" if summary.eval_loss is None else f"{summary.eval_loss:.4f}"
    print(
        f"trained {summary.steps} steps ({summary.samples} pairs, {summary.samples_per_s:.1f} pairs/s); "
        f"loss {loss}, held-out loss {held}; {summary.trainable_parameters:,} of "
        f"{summary.total_parameters:,} parameters trained"
    )
    print(f"wrote {summary.out}: " + ", ".join(p.name for p in summary.files))
    return 0


# -- eval ---------------------------------------------------------------------------------------
def add_eval(steps: Any) -> None:
    e = steps.add_parser(
        "eval",
        help="caption a dataset with a model (+ adapter) and score it",
        description="Generate a caption per pair (the daemon's ChangeCaptioner, batched) and score them: "
        "BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, direction and no-change accuracy.",
    )
    e.add_argument("--model", type=Path, required=True, metavar="DIR", help="checkpoint (LLaVA or trained full)")
    e.add_argument("--adapter", type=Path, metavar="A", help="a finetune train/export adapter folder")
    e.add_argument("--dataset", type=Path, required=True, metavar="D", help="pairs.jsonl or its folder")
    e.add_argument("--mode", choices=("compressed", "pair"), default="compressed", help="default compressed")
    e.add_argument(
        "--arrangement",
        choices=("normal", "swapped", "shuffled", "all"),
        default="normal",
        help="controls: before/after swapped, images shuffled across pairs, or all three (default normal)",
    )
    e.add_argument("--limit", type=positive_int, metavar="N", help="the first N pairs only")
    e.add_argument("--batch-size", type=positive_int, default=8, help="pairs per generation batch (default 8)")
    e.add_argument("--max-new-tokens", type=positive_int, default=32, help="default 32")
    e.add_argument("--device", help="cpu, cuda (default: cuda if available)")
    e.add_argument("--no-java", action="store_true", help="skip METEOR, approximate PTB tokenisation in Python")
    e.add_argument("--no-facts", action="store_true", help="prompts without the regions' facts (as trained)")
    e.add_argument("--skip-bad", action="store_true", help="drop bad dataset lines instead of failing")
    e.add_argument("--json", action="store_true", help="print the scores as JSON")
    e.add_argument("--report", type=existing_dir_or_new, metavar="DIR", help="write scores.json, scores.png")
    e.set_defaults(func=guarded(cmd_eval))


def cmd_eval(args: argparse.Namespace) -> int:
    from finetune.evaluate import evaluate

    arrangements = ("normal", "swapped", "shuffled") if args.arrangement == "all" else (args.arrangement,)
    results = evaluate(
        args.model,
        args.dataset,
        adapter=args.adapter,
        mode=args.mode,
        arrangements=arrangements,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        java=False if args.no_java else None,
        skip_bad=args.skip_bad,
        max_new_tokens=args.max_new_tokens,
        facts=not args.no_facts,
    )
    title = f"{args.adapter or args.model} on {args.dataset}"
    show_scores(args, {a: r.scores for a, r in results.items()}, title=title)
    return 0


# -- export -------------------------------------------------------------------------------------
def add_export(steps: Any) -> None:
    x = steps.add_parser(
        "export",
        help="package a trained adapter for the daemon, or merge it into a checkpoint",
        description="Check that ADAPTER applies to its base model, then copy it to OUT (the daemon loads it "
        "on reload) or, with --merge, write a whole checkpoint with the LoRA folded in.",
    )
    x.add_argument("--adapter", type=Path, required=True, metavar="A", help="a finetune train output folder")
    x.add_argument("--model", type=Path, metavar="DIR", help="base checkpoint (default: the one the adapter names)")
    x.add_argument("--merge", action="store_true", help="write a merged full checkpoint")
    x.add_argument("--out", type=existing_dir_or_new, required=True, metavar="DIR", help="new folder")
    x.set_defaults(func=guarded(cmd_export))


def cmd_export(args: argparse.Namespace) -> int:
    from finetune.export import export_adapter

    files = export_adapter(args.adapter, args.out, model=args.model, merge=args.merge)
    what = "merged checkpoint" if args.merge else "adapter"
    print(f"wrote {what} {args.out}: " + ", ".join(p.name for p in files))
    return 0


# -- bench finetune -----------------------------------------------------------------------------
def add_bench(bench: Any) -> None:
    b = bench.add_parser(
        "finetune",
        help="training throughput and peak memory: stage 1, LoRA, QLoRA",
        description="Samples/s and peak memory of a few training steps per method on synthetic pairs, side by "
        "side in one run. --arch tiny (default, seconds on CPU) or tinyllava (the TinyLLaVA-1.5B architecture "
        "with random weights: meant for a GPU; on CPU it runs, slowly).",
    )
    b.add_argument("--arch", choices=("tiny", "tinyllava"), default="tiny", help="default tiny")
    b.add_argument("--methods", default="compressor,lora,qlora", help="comma list (default compressor,lora,qlora)")
    b.add_argument("--steps", type=positive_int, default=5, help="measured steps per method (default 5)")
    b.add_argument("--batch-size", type=positive_int, default=8, help="default 8")
    b.add_argument("--gradient-checkpointing", action="store_true", help="with activation checkpointing")
    b.add_argument("--device", help="cpu, cuda (default: cuda if available)")
    b.add_argument("--json", action="store_true", help="print JSON only")
    b.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from finetune.bench import bench_finetune

    return bench_finetune(args)
