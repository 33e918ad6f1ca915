"""`monitor bench finetune`: training samples/s and peak memory per method, side by side in one run.

Each method (stage 1 `compressor`, stage 2 `lora`, `qlora`: LoRA on a 4-bit nf4 LM) runs in its
own fresh process (multiprocessing spawn), so its peak memory is its own: CUDA
`max_memory_allocated`, or on CPU the process's peak resident set (ru_maxrss, which includes the
~0.5 GB of the Python/torch runtime itself). Steps run the real training path
(finetune.adapters.prepare, ChangeCaptioner.collate, AdamW, clipping) on synthetic pairs; one
warm-up step is not timed.

Architectures: `tiny` (pipelines.tiny, 32 px frames) or `tinyllava` (the TinyLLaVA-1.5B shape:
CLIP ViT-L/14-336 + TinyLlama-1.1B, random weights built here, saved once in bf16 on CUDA):
meant for a GPU; on CPU it runs but takes minutes per step.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from monitor.errors import MonitorError

METHODS = ("compressor", "lora", "qlora")


def build_checkpoint(arch: str, root: Path, device: str) -> Path:
    from finetune.synthetic import SYNTHETIC_WORDS
    from pipelines.tiny import save_tiny_llava, tinyllava_15b_config

    tiny = save_tiny_llava(root / "tiny", words=SYNTHETIC_WORDS, image_size=32, hidden_size=64)
    if arch == "tiny":
        return tiny
    import torch
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    config = tinyllava_15b_config(
        vocab_size=len(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(dtype)
    path = root / "tinyllava"
    model.save_pretrained(path)
    del model
    tokenizer.save_pretrained(path)
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(path)
    return path


def measure(checkpoint: str, method: str, steps: int, batch_size: int, device: str | None, checkpointing: bool):
    """One method's steps in this process: {samples_per_s, peak_mb, ...}."""
    import torch

    from finetune.adapters import count_parameters, prepare, trainable_parameters
    from finetune.pairs import pair_input
    from finetune.synthetic import synthetic_pair
    from pipelines.captioner import ChangeCaptioner

    torch.manual_seed(0)
    cap = ChangeCaptioner.load(checkpoint, device=device, quantization="4bit" if method == "qlora" else None)
    stage = "compressor" if method == "compressor" else "lora"
    trained = prepare(
        cap.model, stage, quantized=method == "qlora", gradient_checkpointing=checkpointing, train_projector=False
    )
    trained.train()
    params = trainable_parameters(trained)
    optimizer = torch.optim.AdamW(params.values(), lr=1e-4)
    size = cap.image_size
    pairs = [synthetic_pair(i, size=max(32, min(size, 96))) for i in range(batch_size)]
    inputs = [pair_input(p.before, p.after, _Rec(p.t_before, p.t_after), facts=False) for p in pairs]
    batch = cap.collate(inputs, [list(p.captions) for p in pairs])
    cuda = cap.device.type == "cuda"
    autocast = torch.autocast(cap.device.type, dtype=torch.bfloat16, enabled=cap.model.dtype == torch.bfloat16)

    def step() -> float:
        with autocast:
            loss = trained(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    step()  # warm-up: kernels, allocator, optimizer state
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = [step() for _ in range(steps)]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    trainable, total = count_parameters(trained)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "method": method,
        "samples_per_s": round(steps * batch_size / seconds, 2),
        "step_ms": round(1000 * seconds / steps, 1),
        "peak_mb": round(peak, 1),
        "memory": "cuda max_memory_allocated" if cuda else "process peak RSS",
        "trainable_params": trainable,
        "total_params": total,
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
    }


class _Rec:  # the two fields pair_input reads from a dataset record
    def __init__(self, t_before: float, t_after: float):
        self.t_before, self.t_after = t_before, t_after


def _child(queue: Any, *args: Any) -> None:
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)  # see finetune/cli_train.py
    try:
        queue.put(measure(*args))
    except Exception as exc:  # noqa: BLE001 - reported as one line by the parent
        queue.put({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})


def bench_finetune(args: argparse.Namespace) -> int:
    import torch

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise MonitorError(f"--methods: unknown method {bad[0] if bad else '(none)'}: use {', '.join(METHODS)}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.arch == "tinyllava" and not device.startswith("cuda"):
        print("monitor: warning: --arch tinyllava on CPU: minutes per step", file=sys.stderr)
    rows = []
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        checkpoint = build_checkpoint(args.arch, Path(tmp), device)
        for method in methods:
            queue = ctx.Queue()
            proc = ctx.Process(
                target=_child,
                args=(queue, str(checkpoint), method, args.steps, args.batch_size, device, args.gradient_checkpointing),
            )
            proc.start()
            result = queue.get()
            proc.join()
            if "error" in result:
                raise MonitorError(f"bench finetune {method}: {result['error']}")
            rows.append(result)
    doc = {
        "arch": args.arch,
        "device": torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else f"cpu ({torch.get_num_threads()} threads)",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "gradient_checkpointing": args.gradient_checkpointing,
        "methods": rows,
    }
    if not args.json:
        print(f"bench finetune: arch {args.arch}, {doc['device']}, batch {args.batch_size}, {args.steps} steps")
        print(f"{'method':<12}{'pairs/s':>10}{'step ms':>10}{'peak MB':>10}{'trainable':>12}{'total':>14}")
        for r in rows:
            print(
                f"{r['method']:<12}{r['samples_per_s']:>10.1f}{r['step_ms']:>10.1f}{r['peak_mb']:>10.0f}"
                f"{r['trainable_params']:>12,}{r['total_params']:>14,}"
            )
        print(f"peak memory: {rows[0]['memory']}")
    print(json.dumps(doc, indent=None if not args.json else 1))
    return 0
