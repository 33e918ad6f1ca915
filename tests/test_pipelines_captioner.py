"""ChangeCaptioner on a tiny random LLaVA through the production load path: determinism, batching,
the frame cache, LoRA adapters, quantization, bad checkpoints, inspection, prompt clean-up."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from support import make_adapter, pairs_with_keys, scene

from pipelines.captioner import ChangeCaptioner
from pipelines.checkpoint import CheckpointError, inspect_checkpoint
from pipelines.prompt import NO_CHANGE, clean_caption, gap_words
from pipelines.records import FrameInput, PairInput


def varied_pairs() -> list[PairInput]:
    """Prompts of different lengths (regions text, history), so a batch needs padding."""
    a, b, c = (
        FrameInput(scene(box, seed=2), 1_795_000_000.0 + t) for box, t in [(None, 0), ((0.5, 0.5), 6), ((0, 0), 90)]
    )
    return [
        PairInput(a, b, "the change is at the lower right"),
        PairInput(b, c),
        PairInput(a, c, "the change is at the top left and on the right", history=(b,)),
        PairInput(c, a),
    ]


@pytest.mark.parametrize("mode", ["compressed", "pair"])
def test_batched_generation_equals_one_by_one_and_is_deterministic(tiny_llava: Path, mode: str) -> None:
    cap = ChangeCaptioner.load(tiny_llava, mode=mode)
    pairs = varied_pairs()
    batch = cap.collate(pairs)
    assert (batch["attention_mask"][:, 0] == 0).any() and (batch["attention_mask"][:, -1] == 1).all()  # left pad
    together = cap.generate(pairs, max_new_tokens=12)
    alone = [cap.generate([p], max_new_tokens=12)[0] for p in pairs]
    assert together == alone
    assert len(set(together)) > 1  # the inputs matter
    assert ChangeCaptioner.load(tiny_llava, mode=mode).generate(pairs, max_new_tokens=12) == together
    assert cap.caption(pairs, max_new_tokens=12) == [clean_caption(t) for t in together]


def test_multi_turn_inference_asks_for_each_further_change(tiny_llava: Path) -> None:
    cap = ChangeCaptioner.load(tiny_llava)
    pairs = varied_pairs()
    follow = cap.collate(pairs[:1], answered=[["a car left."]])
    assert cap.tokenizer.decode(follow["input_ids"][0]).endswith(
        "assistant : a car left . </s> user : what else changed ? assistant :"
    )
    first = cap.caption(pairs, max_new_tokens=6)
    more = cap.caption(pairs, max_new_tokens=6, turns=[1, 2, 3, 3])
    assert more[0] == first[0]
    assert all(m.startswith(f) for f, m in zip(first, more) if f != NO_CHANGE)
    assert sum(m.count(".") for m in more) > sum(f.count(".") for f in first)  # later turns added sentences
    assert [cap.caption([p], max_new_tokens=6, turns=t)[0] for p, t in zip(pairs, [1, 2, 3, 3])] == more


class _Favour:
    """A logits processor that makes one token id the greedy choice at every step."""

    def __init__(self, token_id: int):
        self.token_id = token_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        scores[:, self.token_id] += 1e4
        return scores


def test_a_generated_frame_placeholder_is_an_ordinary_token(tiny_llava: Path) -> None:
    """The model can emit the frame placeholder (an undertrained one did, in the adapter loop):
    decoding steps get no frames, so it is a plain token there, and the captioner suppresses it."""
    from transformers import GenerationConfig, LogitsProcessorList

    cap = ChangeCaptioner.load(tiny_llava)
    pairs = varied_pairs()[:2]
    batch = cap.collate(pairs, frame_cache=True)
    favour = LogitsProcessorList([_Favour(cap.placeholder_id)])
    unsuppressed = GenerationConfig(**cap.generation_config(4).to_dict() | {"suppress_tokens": None})
    out = cap.model.generate(**batch, generation_config=unsuppressed, logits_processor=favour)
    assert (out[:, batch["input_ids"].shape[1] :] == cap.placeholder_id).all()  # generated, and no crash
    out = cap.model.generate(**batch, generation_config=cap.generation_config(4), logits_processor=favour)
    assert not (out[:, batch["input_ids"].shape[1] :] == cap.placeholder_id).any()  # the captioner's config


def test_frame_cache_encodes_each_frame_once(tiny_llava: Path) -> None:
    cap = ChangeCaptioner.load(tiny_llava, cache_frames=3)
    encoded: list[int] = []
    cap.model.vision_tower.register_forward_hook(lambda _m, args, _out: encoded.append(args[0].shape[0]))
    pairs = pairs_with_keys("cam", n=5)  # 4 consecutive pairs over 5 frames
    for pair in pairs:
        cap.caption([pair], max_new_tokens=2)
    assert sum(encoded) == 5  # not 8: each "after" is the next pair's "before"
    assert len(cap.frame_cache) == 3  # bounded per camera
    cap.caption(pairs[-1:], max_new_tokens=2)
    assert sum(encoded) == 5

    # one batch across cameras: shared frames encoded once; unkeyed frames always encoded
    fresh = ChangeCaptioner.load(tiny_llava)
    rows: list[int] = []
    fresh.model.vision_tower.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[0]))
    fresh.caption(pairs_with_keys("east", n=4) + pairs_with_keys("west", n=3), max_new_tokens=2)
    assert rows == [4 + 3]
    unkeyed = PairInput(FrameInput(scene(None), 0.0), FrameInput(scene((0.2, 0.2)), 5.0))
    fresh.caption([unkeyed, unkeyed], max_new_tokens=2)
    assert rows[-1] == 4

    # cached features give the same captions as encoding afresh
    assert cap.caption(pairs, max_new_tokens=8) == ChangeCaptioner.load(tiny_llava).caption(pairs, max_new_tokens=8)


def test_adapter_loads_changes_the_output_swaps_and_unloads(tiny_llava: Path, tmp_path: Path) -> None:
    first = make_adapter(tiny_llava, tmp_path / "first", seed=1)
    second = make_adapter(tiny_llava, tmp_path / "second", seed=2)
    cap = ChangeCaptioner.load(tiny_llava)
    pairs = pairs_with_keys()

    def logits() -> torch.Tensor:
        with torch.no_grad():
            return cap.model(**cap.collate(pairs)).logits

    base = logits()
    cap.load_adapter(first)
    with_first = logits()
    assert not torch.allclose(with_first, base, atol=1e-3)
    assert cap.adapter == str(first)
    lora = [n for n, _ in cap.model.named_modules() if n.endswith("lora_A")]
    assert lora and all(".language_model." in n for n in lora)

    cap.load_adapter(second)  # hot swap: one adapter active at a time
    assert not torch.allclose(logits(), with_first, atol=1e-3)
    with pytest.raises(CheckpointError, match="missing adapter_config.json"):
        cap.load_adapter(tmp_path)  # a bad adapter keeps the current one
    assert cap.adapter == str(second)

    cap.unload_adapter()
    assert torch.allclose(logits(), base, atol=1e-6)
    assert not any("lora" in n for n, _ in cap.model.named_modules())
    assert torch.allclose(
        ChangeCaptioner.load(tiny_llava, adapter=first).model(**cap.collate(pairs)).logits, with_first
    )


def test_4bit_quantization_quantises_the_language_model_only(tiny_llava: Path) -> None:
    cap = ChangeCaptioner.load(tiny_llava, quantization="4bit")
    kinds = {n: type(m).__name__ for n, m in cap.model.named_modules()}
    assert kinds["model.language_model.layers.0.self_attn.q_proj"] == "Linear4bit"
    assert "Linear4bit" not in {k for n, k in kinds.items() if "language_model" not in n}
    assert all(isinstance(t, str) and t for t in cap.caption(pairs_with_keys(), max_new_tokens=6))


def _damage(path: Path, how: str) -> None:
    if how == "no config":
        (path / "config.json").unlink()
    elif how == "not llava":
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "model_type": "llama", "architectures": ["X"]}))
    elif how == "no weights":
        (path / "model.safetensors").unlink()
    elif how == "bin weights":
        (path / "model.safetensors").rename(path / "pytorch_model.bin")
    elif how == "missing tensor":
        tensors = load_file(path / "model.safetensors")
        del tensors[next(k for k in tensors if "language_model" in k and "layers.1.mlp.up_proj" in k)]
        save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    elif how == "corrupt weights":
        (path / "model.safetensors").write_bytes(b"\x00" * 64)
    elif how == "no tokenizer":
        (path / "tokenizer.json").unlink()
    elif how == "no image processor":
        (path / "preprocessor_config.json").unlink()


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("no config", "missing config.json"),
        ("not llava", "architecture 'llama' (X) is not supported"),
        ("no weights", "missing model.safetensors"),
        ("bin weights", "only pytorch_model.bin weights; safetensors required"),
        ("missing tensor", "weights missing from the checkpoint: model.language_model.layers.1."),
        ("corrupt weights", "cannot load the weights"),
        ("no tokenizer", "missing tokenizer.json"),
        ("no image processor", "missing preprocessor_config.json"),
    ],
)
def test_bad_checkpoint_is_a_one_line_error_naming_the_problem(
    tiny_llava: Path, tmp_path: Path, how: str, message: str
) -> None:
    broken = shutil.copytree(tiny_llava, tmp_path / "broken")
    _damage(broken, how)
    with pytest.raises(CheckpointError) as err:
        ChangeCaptioner.load(broken)
    text = str(err.value)
    assert message in text and str(broken) in text and "\n" not in text


def test_missing_checkpoint_names_the_path_or_the_cache(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no such checkpoint directory"):
        ChangeCaptioner.load(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match=r"not in the Hugging Face cache.*monitor models pull nobody/none"):
        inspect_checkpoint("nobody/none")


def test_inspect_checkpoint(tiny_llava: Path) -> None:
    info = inspect_checkpoint(tiny_llava)
    assert info.architecture.startswith("llava (LlavaForConditionalGeneration): clip_vision_model + llama")
    parts = {k: v for k, v in info.parameters.items() if k != "total"}
    assert set(parts) == {"vision_tower", "multi_modal_projector", "language_model", "lm_head"}
    loaded = ChangeCaptioner.load(tiny_llava, mode="pair").model
    assert sum(parts.values()) == info.parameters["total"] == sum(p.numel() for p in loaded.parameters())
    assert info.lm_tokens_per_frame == {"two_image": 16, "pair": 8, "compressed": 2, "compressed_grid2": 5}
    assert (info.image_size, info.visual_tokens_per_image, info.context_length, info.dtype) == (32, 16, 512, "float32")
    assert json.loads(json.dumps(info.to_dict()))["delta_tokens_per_pair"] == 2


def test_clean_caption() -> None:
    assert clean_caption("1. a car left . 2. a car left.\n3) a person arrived") == "a car left. a person arrived."
    assert clean_caption("a car parked a car parked a car parked") == "a car parked."
    assert clean_caption("- a van parked; no visible change.") == "a van parked."
    assert clean_caption("a person arrived. USER: what else changed? ASSISTANT: a dog") == "a person arrived."
    for nothing in ["", " . , ", "No change.", "there is no visible change", "Nothing changed."]:
        assert clean_caption(nothing) == NO_CHANGE
    assert [gap_words(s) for s in (1, 7.4, 600, 7200)] == [
        "1 second later",
        "7 seconds later",
        "10 minutes later",
        "2 hours later",
    ]


def test_a_checkpoint_saved_by_plain_transformers_5_calls(tmp_path: Path) -> None:
    """`LlavaForConditionalGeneration.save_pretrained` + `LlavaProcessor.save_pretrained`, as a user
    of transformers 5 writes a checkpoint: the image processor sits inside processor_config.json
    and there is no preprocessor_config.json. Written here, never by the project's own writer."""
    import numpy as np
    from transformers import CLIPImageProcessor, GenerationConfig, LlavaForConditionalGeneration, LlavaProcessor

    from monitor.cli import main
    from pipelines.records import FrameInput, PairInput
    from pipelines.tiny import tiny_llava_config, tiny_tokenizer

    tokenizer = tiny_tokenizer(())
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(tiny_llava_config(len(tokenizer), image_size=32, patch_size=8))
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=3, do_sample=False)
    model.save_pretrained(tmp_path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp_path)
    assert (tmp_path / "processor_config.json").is_file() and not (tmp_path / "preprocessor_config.json").exists()

    assert main(["models", "inspect", str(tmp_path), "--json"]) == 0
    cap = ChangeCaptioner.load(tmp_path, mode="pair")
    frame = np.zeros((24, 40, 3), np.uint8)
    (text,) = cap.caption([PairInput(FrameInput(frame, 0.0), FrameInput(frame, 1.0))], max_new_tokens=4)
    assert isinstance(text, str) and text
