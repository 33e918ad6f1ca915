"""`monitor finetune train`: train the change captioner on a pairs.jsonl dataset.

One `Trainer` per run: load the checkpoint through pipelines (compressed mode), prepare the
stage (finetune.adapters), then AdamW with linear warmup + cosine decay
(transformers.get_cosine_schedule_with_warmup), gradient accumulation, clipping at 1.0, bf16
autocast on CUDA (trainable weights stay float32), optional gradient checkpointing. Every step
goes to OUT/training_log.jsonl, periodic held-out losses too; OUT/loss.png is drawn at the end.
Checkpoints (finetune.train_state) every `save_every` steps, at the end, and on Ctrl-C, which
then stops cleanly; `resume=True` continues the newest one exactly (same batches, same RNG).
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup, set_seed

from finetune.adapters import (
    LoraSettings,
    count_parameters,
    load_compressor,
    prepare,
    save_output,
    trainable_parameters,
)
from finetune.dataset import load_dataset
from finetune.pairs import PairSource, collate_pairs, split
from finetune.train_state import TrainState, checkpoint_dirs, load_checkpoint, rng_state, save_checkpoint
from monitor.errors import MonitorError

DEFAULT_LR = {"compressor": 1e-3, "lora": 2e-4, "full": 1e-3}
LOG_FILE = "training_log.jsonl"
CURVE_FILE = "loss.png"
SETTINGS_FILE = "train_settings.json"


class StepBoundaryInterrupt:
    """While training: the first Ctrl-C (SIGINT) only asks to stop, at the next step boundary,
    so a checkpoint never holds half a step (parameters updated, step count or RNG not); a
    second one interrupts at once. Outside the main thread it installs nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def _handle(self, _signum: int, _frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StepBoundaryInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class TrainingInterrupted(MonitorError):
    """Ctrl-C: the checkpoint is saved; the message says where and how to continue."""

    exit_code = 130


@dataclass(frozen=True)
class TrainSettings:
    model: Path  # a LLaVA checkpoint (or a saved CompressedCaptioner)
    dataset: Path
    out: Path
    stage: str = "lora"  # compressor | lora | full (finetune.adapters.STAGES)
    eval_dataset: Path | None = None  # default: eval_fraction of `dataset`, held out
    eval_fraction: float = 0.05
    eval_pairs: int = 64  # held-out pairs per periodic evaluation
    eval_every: int = 0  # optimizer steps between evaluations; 0 = at the end only
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 8
    grad_accum: int = 1
    lr: float | None = None  # None: DEFAULT_LR of the stage
    warmup: float = 0.03  # share of the steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora: LoraSettings = field(default_factory=LoraSettings)
    train_projector: bool = False
    qlora: bool = False
    gradient_checkpointing: bool = False
    multi_turn: bool = True
    facts: bool = True  # prompts carry the records' regions as the daemon's facts (pairs.pair_input)
    content_grid: int = 1  # for a LLaVA checkpoint's new compressor
    delta_tokens: int = 2
    init_compressor: Path | None = None  # a stage-1 output folder
    save_every: int = 0  # optimizer steps between checkpoints; 0 = at the end (and on Ctrl-C)
    keep_checkpoints: int = 2
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    workers: int = 0  # DataLoader processes decoding images
    skip_bad: bool = False
    resume: bool = False
    progress: bool = True

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.stage]

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one."""
        keys = ("stage", "batch_size", "grad_accum", "seed", "qlora", "train_projector", "content_grid", "delta_tokens")
        ident = {k: getattr(self, k) for k in keys}
        ident.update(model=str(self.model), dataset=str(self.dataset), lora=asdict(self.lora))
        return ident


@dataclass(frozen=True)
class TrainSummary:
    out: Path
    steps: int
    samples: int
    seconds: float
    samples_per_s: float
    train_loss: float | None  # mean of the last logged steps
    eval_loss: float | None
    trainable_parameters: int
    total_parameters: int
    files: tuple[Path, ...]


class Trainer:
    """Built from TrainSettings; `run()` trains and writes the output folder."""

    def __init__(self, settings: TrainSettings):
        from pipelines.captioner import ChangeCaptioner
        from pipelines.checkpoint import CheckpointError

        s = self.settings = settings
        set_seed(s.seed)
        dataset = load_dataset(s.dataset, skip_bad=s.skip_bad)
        if s.eval_dataset is not None:
            held_ds = load_dataset(s.eval_dataset, skip_bad=s.skip_bad)
            self.train_source, self.eval_source = PairSource(dataset, None, s.facts), PairSource(held_ds, None, s.facts)
        else:
            train, held = split(dataset.records, s.eval_fraction, s.seed)
            self.train_source = PairSource(dataset, train, s.facts)
            self.eval_source = PairSource(dataset, held, s.facts)
        try:
            self.captioner = ChangeCaptioner.load(
                s.model,
                mode="compressed",
                device=s.device,
                dtype=s.dtype,
                quantization="4bit" if s.qlora else None,
                content_grid=s.content_grid,
                delta_tokens=s.delta_tokens,
                batch_size=s.batch_size,
            )
        except CheckpointError as exc:
            raise MonitorError(str(exc)) from None
        model = self.captioner.model
        compute_dtype = model.dtype  # as loaded (bf16/fp16 on CUDA); trainable weights become float32 below
        if s.init_compressor is not None:
            load_compressor(model, s.init_compressor)
        self.trained = prepare(
            model,
            s.stage,
            lora=s.lora,
            train_projector=s.train_projector,
            quantized=s.qlora,
            gradient_checkpointing=s.gradient_checkpointing,
        )
        if hasattr(self.trained, "peft_config"):  # export and the daemon find the base model by it
            self.trained.peft_config["default"].base_model_name_or_path = str(Path(s.model).resolve())
        self.params = trainable_parameters(self.trained)
        self.optimizer = torch.optim.AdamW(self.params.values(), lr=s.learning_rate, weight_decay=s.weight_decay)
        per_epoch = math.ceil(len(self.train_source) / (s.batch_size * s.grad_accum))
        self.total_steps = s.max_steps or max(1, math.ceil(s.epochs * per_epoch))
        self.scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, round(s.warmup * self.total_steps), self.total_steps
        )
        device = self.captioner.device
        low_precision = compute_dtype in (torch.bfloat16, torch.float16)
        self.autocast = torch.autocast(device.type, dtype=compute_dtype, enabled=low_precision)
        self.step = 0
        self.rng: dict[str, Any] | None = None  # generator states at the start of the current step
        self.samples, self.last_losses = 0, []  # samples trained in this run; the last steps' losses

    # -- data ------------------------------------------------------------------------------
    def micro_batches(self, start_step: int) -> list[list[int]]:
        """Index lists of the micro-batches from optimizer step `start_step` on: a seeded
        permutation per epoch, so a resumed run sees exactly the batches it would have."""
        s, n = self.settings, len(self.train_source)
        per_epoch = math.ceil(n / s.batch_size)
        first, last = start_step * s.grad_accum, self.total_steps * s.grad_accum
        out: list[list[int]] = []
        for m in range(first, last):
            epoch, k = divmod(m, per_epoch)
            if not out or k == 0 or m == first:
                order = torch.randperm(n, generator=torch.Generator().manual_seed(s.seed * 100_003 + epoch)).tolist()
            out.append(order[k * s.batch_size : (k + 1) * s.batch_size])
        return out

    def loss(self, pairs, targets) -> torch.Tensor:
        batch = self.captioner.collate(pairs, targets, multi_turn=self.settings.multi_turn)
        with self.autocast:
            return self.trained(**batch).loss

    @torch.no_grad()
    def eval_loss(self) -> float | None:
        """Mean loss over up to eval_pairs held-out pairs (teacher forced)."""
        s = self.settings
        n = min(len(self.eval_source), s.eval_pairs)
        if not n:
            return None
        was_training = self.trained.training
        self.trained.eval()
        total = 0.0
        for start in range(0, n, s.batch_size):
            items = [self.eval_source[i] for i in range(start, min(n, start + s.batch_size))]
            total += float(self.loss(*collate_pairs(items))) * len(items)
        self.trained.train(was_training)
        return total / n

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> TrainSummary:
        s = self.settings
        s.out.mkdir(parents=True, exist_ok=True)
        found = checkpoint_dirs(s.out)
        if s.resume:
            if not found:
                raise MonitorError(f"{s.out}: no checkpoint to resume (checkpoints/step-*)")
            self.step = load_checkpoint(found[-1], s.identity(), self.params, self.optimizer, self.scheduler).step
        elif found:
            raise MonitorError(f"{s.out}: already holds a training run ({found[-1].name}): use --resume or a new --out")
        else:
            (s.out / LOG_FILE).unlink(missing_ok=True)
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()}
        (s.out / SETTINGS_FILE).write_text(json.dumps(settings, indent=1) + "\n")
        trainable, total = count_parameters(self.trained)
        started, self.samples, self.last_losses = time.perf_counter(), 0, []
        loader = DataLoader(
            self.train_source,
            batch_sampler=self.micro_batches(self.step),
            collate_fn=collate_pairs,
            num_workers=s.workers,
            generator=torch.Generator().manual_seed(s.seed),  # not the global RNG: resumed runs draw the same
        )
        bar = tqdm(
            total=self.total_steps, initial=self.step, desc=f"train {s.stage}", unit="step", disable=not s.progress
        )
        log = (s.out / LOG_FILE).open("a", encoding="utf-8")
        self.trained.train()
        interrupt = StepBoundaryInterrupt()
        try:
            with interrupt:
                self._steps(loader, bar, log, interrupt)
        except KeyboardInterrupt:  # a second Ctrl-C, mid-step: that half step is never saved
            bar.close()
            log.close()
            raise TrainingInterrupted(
                f"interrupted during step {self.step + 1}/{self.total_steps} (a second Ctrl-C): that step is not "
                "saved; --resume continues from the last checkpoint"
            ) from None
        if interrupt.requested:  # Ctrl-C: the step under way was finished, then saved
            bar.close()
            log.close()
            where = self.checkpoint()
            plot_losses(s.out / LOG_FILE, s.out / CURVE_FILE)
            raise TrainingInterrupted(
                f"interrupted at step {self.step}/{self.total_steps}: checkpoint saved in {where}; "
                "continue with the same command and --resume"
            )
        bar.close()
        self.rng = None
        eval_loss = self.eval_loss()
        if eval_loss is not None:
            log.write(json.dumps({"step": self.step, "eval_loss": round(eval_loss, 5)}) + "\n")
        log.close()
        self.checkpoint()
        self.trained.eval()
        files = save_output(self.trained, self.captioner, s.out)
        files.append(plot_losses(s.out / LOG_FILE, s.out / CURVE_FILE))
        seconds = time.perf_counter() - started
        return TrainSummary(
            out=s.out,
            steps=self.step,
            samples=self.samples,
            seconds=round(seconds, 2),
            samples_per_s=round(self.samples / max(seconds, 1e-9), 2),
            train_loss=sum(self.last_losses) / len(self.last_losses) if self.last_losses else None,
            eval_loss=eval_loss,
            trainable_parameters=trainable,
            total_parameters=total,
            files=tuple(files),
        )

    def _steps(self, loader, bar, log, interrupt: StepBoundaryInterrupt) -> None:
        """Train until the last step or a Ctrl-C, which takes effect between two steps."""
        s = self.settings
        samples, last_losses = self.samples, self.last_losses
        batches = iter(loader)
        while self.step < self.total_steps and not interrupt.requested:
            self.rng = rng_state()
            t0, step_loss, step_samples = time.perf_counter(), 0.0, 0
            for _ in range(s.grad_accum):
                pairs, targets = next(batches)
                loss = self.loss(pairs, targets) / s.grad_accum
                loss.backward()
                step_loss += loss.item()
                step_samples += len(pairs)
            norm = torch.nn.utils.clip_grad_norm_(self.params.values(), s.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            samples += step_samples
            rate = step_samples / max(1e-9, time.perf_counter() - t0)
            last_losses = (last_losses + [step_loss])[-20:]
            record = {
                "step": self.step,
                "epoch": round(self.step * s.batch_size * s.grad_accum / len(self.train_source), 4),
                "loss": round(step_loss, 5),
                "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": round(float(norm), 4),
                "samples_per_s": round(rate, 2),
            }
            if s.eval_every and self.step % s.eval_every == 0 and self.step < self.total_steps:
                record["eval_loss"] = self.eval_loss()
            log.write(json.dumps(record) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{step_loss:.3f}", samples_s=f"{rate:.1f}", refresh=False)
            bar.update(1)
            self.rng = None  # between steps: the live generator states are the ones to save
            if s.save_every and self.step % s.save_every == 0 and self.step < self.total_steps:
                self.checkpoint()
        self.samples, self.last_losses = samples, last_losses

    def checkpoint(self) -> Path:
        state = TrainState(self.step, self.settings.identity())
        rng = self.rng if self.rng is not None else rng_state()
        out = self.settings.out
        return save_checkpoint(
            out, state, self.params, self.optimizer, self.scheduler, rng, keep=self.settings.keep_checkpoints
        )


def train(settings: TrainSettings) -> TrainSummary:
    return Trainer(settings).run()


def plot_losses(log_path: Path, png: Path) -> Path:
    """Training loss per step (and held-out loss where measured) from training_log.jsonl."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display needed
    from matplotlib.figure import Figure

    steps, losses, eval_steps, eval_losses = [], [], [], []
    for line in log_path.read_text(encoding="utf-8").splitlines() if log_path.is_file() else []:
        rec = json.loads(line)
        if "loss" in rec:
            steps.append(rec["step"])
            losses.append(rec["loss"])
        if rec.get("eval_loss") is not None:
            eval_steps.append(rec["step"])
            eval_losses.append(rec["eval_loss"])
    fig = Figure(figsize=(6.4, 3.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(steps, losses, lw=0.8, alpha=0.6, label="train")
    if len(losses) >= 20:  # a running mean shows the trend under the batch noise
        w = max(5, len(losses) // 50)
        smooth = [
            sum(losses[max(0, i - w + 1) : i + 1]) / len(losses[max(0, i - w + 1) : i + 1]) for i in range(len(losses))
        ]
        ax.plot(steps, smooth, lw=1.6, label=f"train (mean of {w})")
    if eval_steps:
        ax.plot(eval_steps, eval_losses, "o-", lw=1.4, label="held out")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    return png
