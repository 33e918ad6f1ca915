"""Fixtures for the VLM tests: one tiny random LLaVA checkpoint per session (built offline and
saved with save_pretrained, loaded back through the production path), and synthetic scenes.

Use: `from vlm_fixtures import scene, tiny_llava  # noqa: F401` in a test module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.captioner import ChangeCaptioner
from pipelines.compressed import LORA_TARGET_MODULES
from pipelines.records import FrameInput, PairInput
from pipelines.tiny import save_tiny_llava


def tiny_training_setup(root: Path, pairs: int, seed: int) -> tuple[Path, Path]:
    """A tiny checkpoint whose vocabulary covers the synthetic captions, and `pairs` synthetic
    pairs of `seed` at its 32 px: what the training tests train on."""
    from finetune.synthetic import SYNTHETIC_WORDS, write_synthetic

    checkpoint = save_tiny_llava(root / "checkpoint", words=SYNTHETIC_WORDS, image_size=32)
    return checkpoint, write_synthetic(root / "data", pairs, seed=seed, size=32)


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava") / "checkpoint")


def scene(box: tuple[float, float] | None, *, seed: int = 0, size: tuple[int, int] = (72, 128)) -> np.ndarray:
    """A 16:9 RGB frame: textured grey background (same for every call with the same seed) and,
    if `box` = (x, y) in 0-1, a red 20 % x 30 % rectangle with its top-left corner there."""
    h, w = size
    rng = np.random.default_rng(seed)
    img = np.clip(110 + rng.normal(0, 25, (h, w, 1)), 0, 255).repeat(3, axis=2).astype(np.uint8)
    if box is not None:
        x, y = int(box[0] * w), int(box[1] * h)
        img[y : y + int(0.3 * h), x : x + int(0.2 * w)] = (200, 30, 30)
    return img


def pairs_with_keys(camera: str = "cam", n: int = 4) -> list[PairInput]:
    """n-1 consecutive pairs of one camera: frame i is the after of pair i-1 and the before of pair i."""
    frames = [
        FrameInput(scene((0.1 + 0.15 * i, 0.5), seed=1), 1_795_000_000.0 + 5 * i, key=(camera, i)) for i in range(n)
    ]
    return [PairInput(frames[i], frames[i + 1], "the change is at the lower left") for i in range(n - 1)]


def make_adapter(checkpoint: Path, out: Path, seed: int) -> Path:
    """A peft LoRA adapter on the checkpoint's language model, with a non-zero (trained-looking) B."""
    from peft import LoraConfig, get_peft_model

    cap = ChangeCaptioner.load(checkpoint)
    peft_model = get_peft_model(cap.model, LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGET_MODULES))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # B starts at zero
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    peft_model.save_pretrained(out)
    return out
