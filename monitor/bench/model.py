"""`monitor bench model`: what one before/after pair costs the VLM describer, four ways.

The model is built from its config with random weights (no download: time and memory do not
depend on weight values), in one process, and each way is measured side by side:

- `two_image`: plain LLaVA, the two frames as two images, all visual tokens of both;
- `pair`: plain LLaVA, one side-by-side image (the `pair` mode);
- `compressed`: CompressedCaptioner, 2 LM tokens per frame + 2 delta tokens, both frames encoded;
- `compressed_cached`: the same with the frame cache, as a stream runs it: each pair's "before"
  was the previous pair's "after", so one vision-tower pass per pair.

Per pair: LM input tokens, FLOPs (torch.utils.flop_counter on a batch-1 run: preprocessing,
vision, prefill and every decode step), wall time (best of --repeat, whole `generate` call incl.
image preprocessing, a fixed number of new tokens), KV-cache size, peak GPU memory (CUDA only:
CPU has no allocator statistics), and the speed-up against `two_image` at the same batch size.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from monitor.bench.output import report

VARIANTS = ("two_image", "pair", "compressed", "compressed_cached")


@dataclass
class Measurement:
    variant: str
    batch: int
    lm_tokens_per_pair: int  # what the language model reads per pair (text + visual)
    lm_tokens_per_frame: float  # visual LM tokens per frame (delta tokens not included)
    vision_passes_per_pair: float
    gflops_per_pair: float | None  # counted at batch 1
    seconds_per_pair: float
    pairs_per_s: float
    kv_cache_mib_per_pair: float
    peak_mem_mib: float | None  # CUDA: peak allocated above the weights, for the whole batch
    speedup_vs_two_image: float | None = None


def build_config(arch: str):
    from pipelines.tiny import tiny_llava_config, tiny_tokenizer, tinyllava_15b_config

    return tiny_llava_config(len(tiny_tokenizer())) if arch == "tiny" else tinyllava_15b_config()


class Bench:
    """One random-weight model, shared by the four ways (the compressed model wraps the same modules)."""

    def __init__(self, arch: str, device: str, new_tokens: int):
        import torch
        from transformers import LlavaForConditionalGeneration
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        from pipelines.captioner import ChangeCaptioner
        from pipelines.compressed import CompressedCaptioner
        from pipelines.tiny import tiny_tokenizer

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = torch.float32 if device == "cpu" else torch.bfloat16
        self.new_tokens = new_tokens
        config = build_config(arch)
        torch.manual_seed(0)
        with self.device:
            llava = LlavaForConditionalGeneration(config).to(self.dtype).eval()
        size = config.vision_config.image_size
        processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        # The word-level test tokenizer: its ids are valid in any vocabulary, and the prompts are the real ones.
        tokenizer = tiny_tokenizer()
        self.pair = ChangeCaptioner(llava, tokenizer, processor, mode="pair", device=self.device)
        compressed = CompressedCaptioner.from_llava(llava).eval()
        self.compressed = ChangeCaptioner(compressed, tokenizer, processor, mode="compressed", device=self.device)
        self.config = config
        self.weights_bytes = sum(p.numel() * p.element_size() for p in llava.parameters())
        self._seq = 0
        self._last: dict[int, Any] = {}  # compressed_cached: each camera's latest frame

    # -- inputs ----------------------------------------------------------------------------
    def frames(self, n: int, keyed: bool, camera: int = 0) -> list:
        """n 720p frames (random texture), keyed for the cache or not."""
        from pipelines.records import FrameInput

        rng = np.random.default_rng(self._seq)
        out = []
        for _ in range(n):
            self._seq += 1
            key = (f"cam{camera}", self._seq) if keyed else None
            out.append(FrameInput(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8), float(self._seq), key))
        return out

    def pairs(self, batch: int, keyed: bool = False) -> list:
        from pipelines.records import PairInput

        if not keyed:
            return [PairInput(*self.frames(2, False), "the change is at the lower left") for _ in range(batch)]
        # a stream: each camera's "before" is its previous "after", already in the frame cache
        out = []
        for cam in range(batch):
            before = self._last.get(cam) or self.frames(1, True, cam)[0]
            after = self.frames(1, True, cam)[0]
            self._last[cam] = after
            out.append(PairInput(before, after, "the change is at the lower left"))
        return out

    def two_image_batch(self, pairs: list) -> dict:
        """Plain LLaVA with two images per prompt (the baseline ChangeCaptioner does not offer)."""
        from pipelines.checkpoint import visual_tokens_per_image
        from pipelines.prompt import INSTRUCTION, Piece, clock, encode, gap_words

        cap, n = self.pair, visual_tokens_per_image(self.config)
        encoded = []
        for p in pairs:
            after = f" after, at {clock(p.after.time)}, {gap_words(p.after.time - p.before.time)}:"
            pieces = [Piece("USER:"), Piece(f" before, at {clock(p.before.time)}:"), Piece(role="visual", slots=n),
                      Piece("\n"), Piece(after), Piece(role="visual", slots=n), Piece("\n"),
                      Piece(f"{p.regions_text}. {INSTRUCTION}", "query"), Piece("\nASSISTANT:")]  # fmt: skip
            encoded.append(encode(pieces, cap.tokenizer, cap.placeholder_id).input_ids)
        length = max(len(e) for e in encoded)
        ids = self.torch.tensor([[cap.pad_id] * (length - len(e)) + e for e in encoded])
        mask = self.torch.tensor([[0] * (length - len(e)) + [1] * len(e) for e in encoded])
        pixels = cap.pixel_values([f for p in pairs for f in (p.before, p.after)])
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device), "pixel_values": pixels}

    # -- one measurement -------------------------------------------------------------------
    def run(self, variant: str, pairs: list) -> tuple[float, int]:
        """One batch through `generate`: (seconds, LM input tokens per pair)."""
        torch = self.torch
        cap = self.pair if variant in ("two_image", "pair") else self.compressed
        gen = cap.generation_config(self.new_tokens)
        gen.min_new_tokens = self.new_tokens  # a fixed decode length, whatever random weights say
        self._sync()
        start = time.perf_counter()
        with torch.inference_mode():
            if variant == "two_image":
                batch = self.two_image_batch(pairs)
            else:
                batch = cap.collate(pairs, frame_cache=variant == "compressed_cached")
            out = cap.model.generate(**batch, generation_config=gen)
        self._sync()
        seconds = time.perf_counter() - start
        assert out.shape[1] - batch["input_ids"].shape[1] == self.new_tokens
        return seconds, int(batch["attention_mask"][0].sum())

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def measure(self, variant: str, batch: int, repeat: int) -> Measurement:
        torch = self.torch
        keyed = variant == "compressed_cached"
        if keyed:
            self._last = {}
            self.compressed.frame_cache.clear()
            self.pairs(batch, keyed=True)  # the stream's first frames
            self.compressed.frame_features([self._last[c] for c in range(batch)])
        gflops = None
        if batch == 1:  # counted (and warmed up) on one pair, untimed
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                self.run(variant, self.pairs(1, keyed))
            gflops = counter.get_total_flops() / 1e9
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if self.device.type == "cuda" else 0
        best, tokens = float("inf"), 0
        for _ in range(repeat):
            seconds, tokens = self.run(variant, self.pairs(batch, keyed))
            best = min(best, seconds)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if self.device.type == "cuda" else None
        text = self.config.text_config
        head_dim = text.hidden_size // text.num_attention_heads
        kv = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * (tokens + self.new_tokens)
        image = float(self.pair.image_tokens)
        per_frame = {"two_image": image, "pair": image / 2}.get(
            variant, float(self.compressed.model.config.tokens_per_frame)
        )
        return Measurement(
            variant=variant,
            batch=batch,
            lm_tokens_per_pair=tokens,
            lm_tokens_per_frame=per_frame,
            vision_passes_per_pair={"pair": 1.0, "compressed_cached": 1.0}.get(variant, 2.0),
            gflops_per_pair=None if gflops is None else round(gflops, 4),
            seconds_per_pair=best / batch,
            pairs_per_s=batch / best,
            kv_cache_mib_per_pair=round(kv * (2 if self.dtype != torch.float32 else 4) / 2**20, 4),
            peak_mem_mib=None if peak is None else round(peak, 1),
        )


def format_table(rows: list[Measurement]) -> str:
    head = (f"{'variant':<18} {'batch':>5} {'LM tok/pair':>11} {'tok/frame':>9} {'ViT/pair':>8} {'GFLOP/pair':>10} "
            f"{'s/pair':>8} {'pairs/s':>8} {'KV MiB':>7} {'peak MiB':>8} {'speedup':>7}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in rows:
        g = r.gflops_per_pair
        gflops = "-" if g is None else f"{g:.3f}" if g < 10 else f"{g:,.0f}"
        peak = "-" if r.peak_mem_mib is None else f"{r.peak_mem_mib:,.0f}"
        lines.append(
            f"{r.variant:<18} {r.batch:>5} {r.lm_tokens_per_pair:>11} {r.lm_tokens_per_frame:>9g} "
            f"{r.vision_passes_per_pair:>8g} {gflops:>10} {r.seconds_per_pair:>8.3f} {r.pairs_per_s:>8.2f} "
            f"{r.kv_cache_mib_per_pair:>7.2f} {peak:>8} {r.speedup_vs_two_image or 0:>6.1f}x"
        )
    return "\n".join(lines)


def bench_model(args: Any) -> int:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        print(f"monitor: error: bench model needs {exc.name}: pip install '.[vlm]'",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.device == "cuda" and not torch.cuda.is_available():
        print("monitor: error: --device cuda but no CUDA GPU is available", file=sys.stderr)
        return 1
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    batches = sorted(set(args.batch or [1, 8]))
    if 1 not in batches:
        batches.insert(0, 1)  # FLOPs are counted (and everything warmed up) at batch 1
    started = time.perf_counter()
    bench = Bench(args.arch, args.device, args.new_tokens)
    build_s = time.perf_counter() - started
    rows: list[Measurement] = []
    for batch in batches:
        for variant in VARIANTS:
            rows.append(bench.measure(variant, batch, args.repeat))
            print(f"  measured {variant} batch {batch}: {rows[-1].seconds_per_pair:.3f} s/pair", file=sys.stderr)
    flops = {r.variant: r.gflops_per_pair for r in rows if r.gflops_per_pair is not None}
    for r in rows:
        base = next(b for b in rows if b.batch == r.batch and b.variant == "two_image")
        r.speedup_vs_two_image = round(base.seconds_per_pair / r.seconds_per_pair, 2)
        r.gflops_per_pair = flops.get(r.variant)
    doc = {
        "benchmark": "model",
        "arch": args.arch,
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "dtype": str(bench.dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "parameters": sum(p.numel() for p in bench.pair.model.parameters()),
        "new_tokens": args.new_tokens,
        "repeat": args.repeat,
        "build_s": round(build_s, 1),
        "lm_tokens_per_frame": {r.variant: r.lm_tokens_per_frame for r in rows if r.batch == batches[0]},
        "delta_tokens_per_pair": bench.compressed.model.config.delta_tokens,
        "results": [asdict(r) for r in rows],
    }
    report(args, doc, lambda: print(format_table(rows)))
    return 0
