"""CompressedCaptioner and pair mode on a tiny random LLaVA loaded through the production path:
LM token counts measured on the real inputs_embeds, save/load, zero-initialised gates, delta
tokens, training batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support import pairs_with_keys, scene

from pipelines.captioner import ChangeCaptioner
from pipelines.compressed import LORA_TARGET_MODULES, CompressedCaptioner
from pipelines.records import FrameInput, PairInput


def lm_input_lengths(captioner: ChangeCaptioner, pairs: list[PairInput]) -> tuple[int, int]:
    """(LM input length, text tokens) of one sample, from the inputs_embeds the LM really gets."""
    seen: list[torch.Tensor] = []
    hook = captioner.model.model.language_model.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["inputs_embeds"]), with_kwargs=True
    )
    try:
        batch = captioner.collate(pairs)
        with torch.no_grad():
            captioner.model(**batch)
    finally:
        hook.remove()
    (embeds,) = seen
    text = int((batch["input_ids"][0] != captioner.placeholder_id).sum())
    return embeds.shape[1], text


@pytest.mark.parametrize(("grid", "per_frame"), [(1, 2), (2, 5)])
def test_compressed_lm_input_holds_tokens_per_frame_plus_delta(tiny_llava: Path, grid: int, per_frame: int) -> None:
    cap = ChangeCaptioner.load(tiny_llava, mode="compressed", content_grid=grid)
    before, after = FrameInput(scene(None), 0.0), FrameInput(scene((0.5, 0.5)), 5.0)
    for history in [(), (FrameInput(scene((0.1, 0.1)), -60.0),)]:
        length, text = lm_input_lengths(cap, [PairInput(before, after, history=history)])
        frames = 2 + len(history)
        assert length - text == per_frame * frames + 2  # + 2 delta tokens per pair


def test_pair_mode_lm_input_holds_every_visual_token(tiny_llava: Path) -> None:
    cap = ChangeCaptioner.load(tiny_llava, mode="pair")
    assert type(cap.model).__name__ == "LlavaForConditionalGeneration"
    pair = PairInput(FrameInput(scene(None), 0.0), FrameInput(scene((0.5, 0.5)), 5.0))
    length, text = lm_input_lengths(cap, [pair])
    assert length - text == (32 // 8) ** 2  # the tiny CLIP's 16 patches, one side-by-side image
    compressed = ChangeCaptioner.load(tiny_llava, mode="compressed")
    c_length, c_text = lm_input_lengths(compressed, [pair])
    assert c_length - c_text == 2 * 2 + 2


def test_frame_tokens_replace_the_placeholders(tiny_llava: Path) -> None:
    cap = ChangeCaptioner.load(tiny_llava)
    batch = cap.collate(pairs_with_keys(n=2))
    model: CompressedCaptioner = cap.model
    embeds = model.get_input_embeddings()(batch["input_ids"])[0]
    slots = batch["input_ids"][0] == cap.placeholder_id
    with torch.no_grad():
        visual = model.visual_tokens(
            embeds[None], batch["query_mask"], batch["frame_index"], model.vision_features(batch["pixel_values"])
        )
    assert visual.shape == (int(slots.sum()), model.config.text_config.hidden_size)
    assert not torch.allclose(visual, embeds[slots])  # real frame tokens, not the placeholder embedding


def test_compressed_save_load_round_trip_gives_identical_logits(tiny_llava: Path, tmp_path: Path) -> None:
    cap = ChangeCaptioner.load(tiny_llava)
    with torch.no_grad():  # a "trained" compressor: every gate open
        for gated in (cap.model.compressor.query, cap.model.compressor.context, cap.model.compressor.delta):
            gated.gate.fill_(0.5)
    batch = cap.collate(pairs_with_keys())
    with torch.no_grad():
        logits = cap.model(**batch).logits
    cap.model.save_pretrained(tmp_path)
    cap.tokenizer.save_pretrained(tmp_path)
    cap.image_processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))

    again = ChangeCaptioner.load(tmp_path)  # a saved CompressedCaptioner keeps its compressor
    assert isinstance(again.model, CompressedCaptioner)
    assert again.model.compressor.delta.gate.item() == 0.5
    with torch.no_grad():
        assert torch.equal(again.model(**again.collate(pairs_with_keys())).logits, logits)
    # the same checkpoint in pair mode: the plain LLaVA sharing the modules
    assert type(ChangeCaptioner.load(tmp_path, mode="pair").model).__name__ == "LlavaForConditionalGeneration"


def test_closed_gates_make_the_compressor_parameter_free(tiny_llava: Path) -> None:
    cap = ChangeCaptioner.load(tiny_llava)
    batch = cap.collate(pairs_with_keys())
    compressor = cap.model.compressor
    assert all(g.item() == 0.0 for n, g in compressor.named_parameters() if n.endswith("gate"))
    with torch.no_grad():
        logits = cap.model(**batch).logits
        for module in (compressor.query, compressor.context, compressor.content, compressor.delta):
            module.proj.weight.normal_(0, 3.0)  # any learned weights: no effect while the gates are 0
        assert torch.equal(cap.model(**batch).logits, logits)
        compressor.context.gate.fill_(0.3)
        assert not torch.allclose(cap.model(**batch).logits, logits)


def test_delta_tokens_follow_time_order_and_the_changed_place(tiny_llava: Path) -> None:
    cap = ChangeCaptioner.load(tiny_llava)
    model: CompressedCaptioner = cap.model
    empty, with_box = FrameInput(scene(None), 0.0), FrameInput(scene((0.5, 0.5)), 5.0)
    with torch.no_grad():
        x = model.multi_modal_projector(model.vision_features(cap.pixel_values([empty, with_box])))
        forward = model.compressor.delta_tokens(x[0], x[1])  # (2, D): what was there, what is there now
        swapped = model.compressor.delta_tokens(x[1], x[0])
        weights = model.compressor.change_weights(x[0], x[1]).reshape(4, 4)
    assert forward.shape == (2, model.config.text_config.hidden_size)
    assert not torch.allclose(forward, swapped)  # time order is in the input
    assert torch.allclose(forward, swapped.flip(0))
    # 128x72 letterboxed into 32x32: the box (x 64-89, y 36-57 px) lies in patch row 2, column 2
    assert float(weights[2, 2]) > 0.8

    # and the LM input differs when the pair is swapped
    def lm_input(pair: PairInput) -> torch.Tensor:
        batch = cap.collate([pair])
        embeds = model.get_input_embeddings()(batch["input_ids"])
        feats = model.vision_features(batch["pixel_values"])
        return model.visual_tokens(embeds, batch["query_mask"], batch["frame_index"], feats)

    with torch.no_grad():
        a, b = lm_input(PairInput(empty, with_box)), lm_input(PairInput(with_box, empty))
    assert not torch.allclose(a[-2:], b[-2:])


def test_training_batch_labels_only_the_answers(tiny_llava: Path) -> None:
    cap = ChangeCaptioner.load(tiny_llava)
    pairs = pairs_with_keys(n=3)
    targets = [["a red box appeared on the right.", "a person left."], []]
    batch = cap.collate(pairs, targets)
    assert batch["attention_mask"][:, 0].tolist() == [1, 1]  # right padding for training
    answers = [cap.tokenizer.decode(row[row != -100]) for row in batch["labels"]]
    assert answers[0] == "a red box appeared on the right . </s> a person left . </s>"
    assert answers[1] == "no visible change </s>"
    single = cap.collate(pairs[:1], targets[:1], multi_turn=False)
    assert cap.tokenizer.decode(single["labels"][0][single["labels"][0] != -100]).count("</s>") == 1

    cap.model.train()
    cap.model.requires_grad_(False)
    cap.model.compressor.requires_grad_(True)  # stage 1: the compressor only
    loss = cap.model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in cap.model.compressor.named_parameters()}
    assert all(grads[f"{m}.gate"].abs() > 0 for m in ("query", "context", "content", "delta"))


def test_lora_target_regex_is_scoped_to_the_language_model(tiny_llava: Path) -> None:
    import re

    cap = ChangeCaptioner.load(tiny_llava)
    names = [n for n, _ in cap.model.named_modules()]
    hits = [n for n in names if re.fullmatch(LORA_TARGET_MODULES, n)]
    assert hits and all(".language_model." in n for n in hits)
    assert any("vision_tower" in n and n.endswith("q_proj") for n in names)  # which it must not touch
    assert {h.rsplit(".", 1)[1] for h in hits} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }


def test_vision_features_stop_at_the_selected_layer(tiny_llava: Path) -> None:
    """Layer -2 of a 2-block tower needs 1 block: the same features as the whole tower's
    hidden_states[-2] (CLS dropped), the last block never runs, and the tower stays whole."""
    cap = ChangeCaptioner.load(tiny_llava)
    model: CompressedCaptioner = cap.model
    pixels = cap.pixel_values([FrameInput(scene((0.3, 0.6)), 0.0), FrameInput(scene(None), 1.0)])
    blocks = model.vision_tower.encoder.layers
    calls: list[int] = []
    hook = blocks[-1].register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            feats = model.vision_features(pixels)
            assert calls == []
            whole = model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
            assert calls == [1]
    finally:
        hook.remove()
    assert model.vision_tower.encoder.layers is blocks and len(blocks) == 2
    assert feats.shape == whole.shape == (2, 16, model.config.vision_config.hidden_size)
    torch.testing.assert_close(feats, whole, rtol=0, atol=0)
