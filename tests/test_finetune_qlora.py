"""QLoRA on CPU: the tiny LM in 4-bit nf4 (bitsandbytes), LoRA on top; the loss falls, and the
saved adapter reloads with plain peft onto a fresh 4-bit base and gives the trained model's loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import tiny_training_setup

from finetune.adapters import LoraSettings
from finetune.train import LOG_FILE, Trainer, TrainSettings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_training_setup(tmp_path_factory.mktemp("finetune-qlora"), 16, seed=5)


def test_qlora_trains_and_the_adapter_reloads(tiny, tmp_path: Path) -> None:
    import bitsandbytes as bnb
    from peft import PeftModel

    from finetune.pairs import collate_pairs
    from pipelines.captioner import ChangeCaptioner

    checkpoint, dataset = tiny
    out = tmp_path / "qlora"
    settings = TrainSettings(
        model=checkpoint,
        dataset=dataset,
        out=out,
        stage="lora",
        qlora=True,
        gradient_checkpointing=True,
        max_steps=12,
        batch_size=8,
        lr=1e-2,
        warmup=0.0,
        eval_fraction=0.0,
        lora=LoraSettings(dropout=0.0),  # no dropout: the reloaded model must match exactly
        progress=False,
    )
    trainer = Trainer(settings)
    model = trainer.captioner.model
    four_bit = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == 7 * 2 and all("language_model" in n for n in four_bit)  # every LM projection, 2 layers
    for part in (model.vision_tower, model.multi_modal_projector, model.lm_head):
        assert not any(isinstance(m, bnb.nn.Linear4bit) for m in part.modules())  # skipped from quantization
    items = [trainer.train_source[i] for i in range(8)]
    batch = trainer.captioner.collate(*collate_pairs(items))
    summary = trainer.run()
    losses = [json.loads(line)["loss"] for line in (out / LOG_FILE).read_text().splitlines()]
    print(f"QLoRA losses: first {losses[0]:.3f}, last {losses[-1]:.3f} over {len(losses)} steps")
    assert len(losses) == 12 and summary.steps == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.25  # the loss falls (from ~ln(vocab))
    saved = load_file(out / "adapter_model.safetensors")
    assert any("lora_A" in k for k in saved) and any("lora_B" in k for k in saved)

    with torch.no_grad():
        trained_loss = float(trainer.trained(**batch).loss)
        fresh = ChangeCaptioner.load(checkpoint, quantization="4bit").model
        base_loss = float(fresh(**batch).loss)
        reloaded = PeftModel.from_pretrained(fresh, out).eval()
        reloaded_loss = float(reloaded(**batch).loss)
    print(f"QLoRA batch loss: base {base_loss:.4f}, trained {trained_loss:.4f}, reloaded {reloaded_loss:.4f}")
    assert reloaded_loss == pytest.approx(trained_loss, rel=1e-4, abs=1e-4)
    assert reloaded_loss < base_loss - 0.5
