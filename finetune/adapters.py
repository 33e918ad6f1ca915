"""What trains in each stage, and the adapter directory a stage writes.

Stages (LLaMA-VID's recipe on a LLaVA checkpoint):
- `compressor` (stage 1): the compressor (and with `train_projector` the projector) trains; the
  vision tower and the LM are frozen.
- `lora` (stage 2): LoRA on the LM's q/k/v/o/gate/up/down projections (LORA_TARGET_MODULES, scoped
  to the LM) plus the compressor (and optionally the projector); with `qlora` the LM is loaded in
  4-bit nf4 (bitsandbytes).
- `full`: every weight trains (the tiny-model learnability proof; small models only).

`compressor` and `lora` train through peft: the compressor/projector are peft `modules_to_save`,
so the saved adapter directory (adapter_config.json + adapter_model.safetensors) carries them and
plain `PeftModel.from_pretrained` (and `ChangeCaptioner.load_adapter`) restores all of it. Stage 1
has no LoRA layers: its LoraConfig targets peft's dummy target (modules_to_save only).
`compressor.safetensors` (+ `compressor.json`, the settings it was trained with) is written next
to it, for starting stage 2 from stage 1 (`init_compressor`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from peft.utils.constants import DUMMY_TARGET_MODULES
from safetensors.torch import load_file, save_file

from monitor.errors import MonitorError
from pipelines.compressed import LORA_TARGET_MODULES, CompressedCaptioner

STAGES = ("compressor", "lora", "full")
COMPRESSOR_FILE = "compressor.safetensors"
COMPRESSOR_SETTINGS = "compressor.json"
COMPRESSOR_KEYS = ("content_grid", "delta_tokens", "context_temperature", "delta_temperature")


@dataclass(frozen=True)
class LoraSettings:
    r: int = 32  # the TinyLLaVA image-difference study's rank and alpha
    alpha: int = 64
    dropout: float = 0.05


def prepare(
    model: CompressedCaptioner,
    stage: str,
    *,
    lora: LoraSettings = LoraSettings(),
    train_projector: bool = False,
    quantized: bool = False,
    gradient_checkpointing: bool = False,
) -> torch.nn.Module:
    """Freeze what the stage keeps fixed and wrap the model for training. Returns the module to
    train (a PeftModel for `compressor`/`lora`, the model itself for `full`); trainable
    parameters are float32 whatever the model's dtype (bf16 runs under autocast)."""
    if stage not in STAGES:
        raise MonitorError(f"stage {stage!r}: use one of {', '.join(STAGES)}")
    if quantized and stage != "lora":
        raise MonitorError("--qlora goes with --stage lora (a 4-bit LM cannot be trained directly)")
    if quantized:
        # Freezes everything and upcasts the non-quantised weights to float32 (norms, embeddings,
        # lm_head: stable LoRA training). The frozen vision tower gains nothing from float32: back.
        vision_dtype = model.vision_tower.dtype
        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model.vision_tower.to(vision_dtype)
    if gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
        model.config.use_cache = False
    if stage == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        trained: torch.nn.Module = model
    else:
        keep = ["compressor"] + (["multi_modal_projector"] if train_projector else [])
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=LORA_TARGET_MODULES if stage == "lora" else DUMMY_TARGET_MODULES,
            modules_to_save=keep,
        )
        with warnings.catch_warnings():  # peft still calls transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            trained = get_peft_model(model, config)
        if gradient_checkpointing and stage == "lora":
            # reentrant checkpointing through a frozen LM needs inputs that require grad
            model.enable_input_require_grads()
    for p in trained.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return trained


def trainable_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def count_parameters(module: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total); 4-bit weights count as their unpacked number of values."""
    trainable = total = 0
    for p in module.parameters():
        n = p.numel() * (2 if p.__class__.__name__ == "Params4bit" else 1)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def save_model_folder(model: torch.nn.Module, captioner, out: Path) -> list[Path]:
    """A whole checkpoint that ChangeCaptioner.load reads: `model` (config + safetensors) with the
    captioner's tokenizer and image processor. Returns the weight files written."""
    model.save_pretrained(out)
    captioner.tokenizer.save_pretrained(out)
    captioner.image_processor.save_pretrained(out)
    return [out / "config.json", out / "model.safetensors"]


def save_output(trained: torch.nn.Module, captioner, out: Path) -> list[Path]:
    """Write the stage's result into `out`: the peft adapter + compressor weights, or (stage
    `full`) a whole checkpoint that ChangeCaptioner.load reads. Returns the files written."""
    model: CompressedCaptioner = captioner.model
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(trained, PeftModel):
        trained.save_pretrained(out)
        written = [out / "adapter_config.json", out / "adapter_model.safetensors"]
    else:
        written = save_model_folder(model, captioner, out)
    compressor = _module(trained, "compressor")
    save_file(
        {k: v.detach().float().cpu().contiguous() for k, v in compressor.state_dict().items()}, out / COMPRESSOR_FILE
    )
    settings = {k: getattr(model.config, k) for k in COMPRESSOR_KEYS}
    settings["hidden_size"] = model.config.text_config.hidden_size
    (out / COMPRESSOR_SETTINGS).write_text(json.dumps(settings, indent=1) + "\n")
    return [*written, out / COMPRESSOR_FILE]


def _module(trained: torch.nn.Module, name: str) -> torch.nn.Module:
    """The module as trained: a peft modules_to_save copy where there is one."""
    base = trained.get_base_model() if isinstance(trained, PeftModel) else trained
    module = getattr(base, name)
    copies = getattr(module, "modules_to_save", None)  # peft's ModulesToSaveWrapper
    return copies["default"] if copies is not None else module


def load_compressor(model: CompressedCaptioner, directory: Path) -> None:
    """Start from an earlier stage's compressor (stage 2 from stage 1). One-line errors."""
    file = directory / COMPRESSOR_FILE
    if not file.is_file():
        raise MonitorError(f"{directory}: missing {COMPRESSOR_FILE} (not a finetune train output)")
    settings_file = directory / COMPRESSOR_SETTINGS
    if settings_file.is_file():
        settings = json.loads(settings_file.read_text())
        for key in COMPRESSOR_KEYS:
            if key in settings and settings[key] != getattr(model.config, key):
                raise MonitorError(
                    f"{settings_file}: {key} {settings[key]} differs from the model's {getattr(model.config, key)}"
                )
    try:
        state = load_file(file)
        model.compressor.load_state_dict({k: v.to(model.compressor.query.proj.weight.dtype) for k, v in state.items()})
    except Exception as exc:  # noqa: BLE001 - wrong shapes, corrupt file: one line
        raise MonitorError(
            f"{file}: cannot load the compressor ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
