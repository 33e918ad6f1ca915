"""Find, check, load and describe LLaVA-family checkpoints in Hugging Face format, offline.

A checkpoint is a directory (or a repo id already in the Hugging Face cache) holding
`config.json` (model_type `llava`, or `compressed_captioner` for a saved CompressedCaptioner),
safetensors weights, a tokenizer and an image processor. Remote code is never run. Every
problem is a one-line `CheckpointError` naming the path and what is wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoImageProcessor, AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration
from transformers.utils import is_torchvision_available
from transformers.utils import logging as hf_logging

from pipelines.compressed import CompressedCaptioner, CompressedCaptionerConfig

LLAVA_TYPES = {"llava": LlavaConfig, "compressed_captioner": CompressedCaptionerConfig}
QUANTIZATIONS = ("none", "8bit", "4bit")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line naming the path and the problem."""


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """A local directory, or a repo id ("owner/name") already downloaded to the HF cache."""
    path = Path(path_or_name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path}: not a directory (a checkpoint is a directory with config.json)")
        return path
    name = str(path_or_name)
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(name, local_files_only=True))
        except Exception:  # noqa: BLE001 - any cache miss reads the same to the user
            raise CheckpointError(
                f"{name}: no such directory and not in the Hugging Face cache (download it: monitor models pull {name})"
            ) from None
    raise CheckpointError(f"{path}: no such checkpoint directory")


def read_config(path: Path) -> LlavaConfig:
    """The checkpoint's config; refuses anything that is not LLaVA."""
    file = path / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{path}: missing config.json (not a Hugging Face checkpoint directory)")
    try:
        raw = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: unreadable JSON ({exc})") from None
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type not in LLAVA_TYPES:
        archs = ",".join(raw.get("architectures") or []) if isinstance(raw, dict) else ""
        custom = (
            " with custom code (auto_map), which is never run" if isinstance(raw, dict) and "auto_map" in raw else ""
        )
        raise CheckpointError(
            f"{path}: architecture {model_type!r}{f' ({archs})' if archs else ''}{custom} is not supported: "
            "need a LLaVA checkpoint in Hugging Face format (model_type llava, LlavaForConditionalGeneration)"
        )
    try:
        return LLAVA_TYPES[model_type].from_pretrained(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - strict config validation errors are many types
        raise CheckpointError(f"{file}: invalid {model_type} config ({_first_line(exc)})") from None


def check_files(path: Path) -> None:
    """Weights (safetensors only, every shard), tokenizer and image processor are present."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"{index}: unreadable index ({exc})") from None
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            raise CheckpointError(
                f"{path}: missing weight shard {missing[0]} ({len(missing)} of {len(shards)} missing)"
            )
    elif not (path / "model.safetensors").is_file():
        if any(path.glob("pytorch_model*.bin")):
            raise CheckpointError(f"{path}: only pytorch_model.bin weights; safetensors required (model.safetensors)")
        raise CheckpointError(f"{path}: missing model.safetensors (no weights)")
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file()):
        raise CheckpointError(f"{path}: missing tokenizer.json (no tokenizer)")
    if not (path / "preprocessor_config.json").is_file() and not _nested_image_processor(path):
        raise CheckpointError(
            f"{path}: missing preprocessor_config.json (no image processor; nor one inside processor_config.json)"
        )


def _nested_image_processor(path: Path) -> bool:
    """transformers 5's `LlavaProcessor.save_pretrained` writes the image processor inside
    processor_config.json ("image_processor") and no preprocessor_config.json."""
    try:
        return isinstance(json.loads((path / "processor_config.json").read_text()).get("image_processor"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _quantization_config(quantization: str, dtype: torch.dtype) -> Any:
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise CheckpointError(f"quantization {quantization} needs bitsandbytes: pip install '.[qlora]'") from None
    # The vision tower, projector, compressor and LM head stay in the compute dtype.
    # (module-name prefixes; LLaVA and CompressedCaptioner use the same names)
    skip = ["model.vision_tower", "model.multi_modal_projector", "compressor", "lm_head"]
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=True,
        llm_int8_skip_modules=skip,
    )


def load_model(
    path: Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    quantization: str = "none",
) -> LlavaForConditionalGeneration | CompressedCaptioner:
    """The checkpoint's model as saved (LLaVA or CompressedCaptioner), in eval mode on `device`.
    Missing weights are an error (never silently random)."""
    config = read_config(path)
    check_files(path)
    if quantization not in QUANTIZATIONS:
        raise CheckpointError(f"quantization {quantization!r}: use one of {', '.join(QUANTIZATIONS)}")
    cls = CompressedCaptioner if isinstance(config, CompressedCaptionerConfig) else LlavaForConditionalGeneration
    kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True, "trust_remote_code": False}
    if quantization != "none":
        kwargs["quantization_config"] = _quantization_config(quantization, dtype)
        kwargs["device_map"] = {"": torch.device(device)}
    hf_logging.disable_progress_bar()
    try:
        model, info = cls.from_pretrained(path, config=config, dtype=dtype, output_loading_info=True, **kwargs)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt files, shape mismatches: one line
        raise CheckpointError(f"{path}: cannot load the weights ({_first_line(exc)})") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise CheckpointError(f"{path}: weights missing from the checkpoint: {missing[0]} ({len(missing)} missing)")
    if quantization == "none":
        model.to(device)
    return model.eval()


def load_tokenizer(path: Path):
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot load the tokenizer ({_first_line(exc)})") from None
    if tokenizer.eos_token_id is None:
        raise CheckpointError(f"{path}: the tokenizer has no end-of-sequence token")
    return tokenizer


def load_image_processor(path: Path):
    backend = "torchvision" if is_torchvision_available() else "pil"
    try:
        return AutoImageProcessor.from_pretrained(path, local_files_only=True, trust_remote_code=False, backend=backend)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot load the image processor ({_first_line(exc)})") from None


# -- inspect -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    architecture: str  # e.g. "llava (LlavaForConditionalGeneration): clip_vision_model + llama"
    parameters: dict[str, int]  # per part and "total"
    dtype: str
    image_size: int
    patch_size: int
    visual_tokens_per_image: int  # what the checkpoint's LLaVA puts in the LM per image
    lm_tokens_per_frame: dict[str, float]  # per mode: two_image, pair, compressed, compressed_grid2
    delta_tokens_per_pair: int
    context_length: int  # LM positions
    frames_in_context: dict[str, int] = field(default_factory=dict)  # how many frames fit, per mode

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def visual_tokens_per_image(config: LlavaConfig) -> int:
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    return patches + (1 if config.vision_feature_select_strategy == "full" else 0)


def inspect_checkpoint(path_or_name: str | Path) -> CheckpointInfo:
    """Everything about a checkpoint that decides its cost, without loading its weights."""
    path = resolve_checkpoint(path_or_name)
    config = read_config(path)
    check_files(path)
    compressed = isinstance(config, CompressedCaptionerConfig)
    with torch.device("meta"):  # parameter counts without allocating
        model = (CompressedCaptioner if compressed else LlavaForConditionalGeneration)(config)
    parts = {
        "vision_tower": model.model.vision_tower,
        "multi_modal_projector": model.model.multi_modal_projector,
        "language_model": model.model.language_model,
        "lm_head": model.lm_head,
    }
    if compressed:
        parts["compressor"] = model.compressor
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
    counts["total"] = sum(p.numel() for p in model.parameters())
    image_tokens = visual_tokens_per_image(config)
    grid = config.content_grid if compressed else 1
    delta = config.delta_tokens if compressed else 2
    per_frame = {
        "two_image": float(image_tokens),
        "pair": image_tokens / 2,  # one side-by-side image holds both frames
        "compressed": float(1 + grid**2),
        "compressed_grid2": 5.0,
    }
    context = int(config.text_config.max_position_embeddings)
    text_budget = 64  # prompt words and the answer
    fits = {
        mode: int((context - text_budget - delta * (mode.startswith("compressed"))) // n)
        for mode, n in per_frame.items()
    }
    dtype = config.dtype if isinstance(config.dtype, str) else str(config.dtype or "float32").replace("torch.", "")
    return CheckpointInfo(
        path=str(path),
        architecture=f"{config.model_type} ({(config.architectures or [type(model).__name__])[0]}): "
        f"{config.vision_config.model_type} + {config.text_config.model_type}",
        parameters=counts,
        dtype=dtype,
        image_size=int(config.vision_config.image_size),
        patch_size=int(config.vision_config.patch_size),
        visual_tokens_per_image=image_tokens,
        lm_tokens_per_frame=per_frame,
        delta_tokens_per_pair=delta,
        context_length=context,
        frames_in_context=fits,
    )
