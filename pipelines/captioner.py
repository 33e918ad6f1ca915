"""ChangeCaptioner: a LLaVA checkpoint turned into a before/after change describer.

Two modes, one interface:
- `compressed` (default): CompressedCaptioner, 2 LM tokens per frame (+2 delta tokens per pair);
  each frame's vision features are cached by `FrameInput.key`, so a frame that is the "after" of
  one pair and the "before" of the next goes through the vision tower once.
- `pair`: plain LlavaForConditionalGeneration on one side-by-side image (earlier on the left),
  all the checkpoint's visual tokens.
Records become tensors in `pipelines.processor.ChangeProcessor` (one per captioner, built here);
this module keeps the model side: loading, the frame cache, generation, adapters.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import GenerationConfig, LlavaForConditionalGeneration

from pipelines.checkpoint import (
    CheckpointError,
    load_image_processor,
    load_model,
    load_tokenizer,
    resolve_checkpoint,
    visual_tokens_per_image,
)
from pipelines.compressed import CompressedCaptioner
from pipelines.processor import MODES, ChangeProcessor
from pipelines.prompt import NO_CHANGE, caption_sentences
from pipelines.records import FrameInput, PairInput

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """CUDA: bf16 where supported, else fp16. CPU: fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r}: use auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


class FrameCache:
    """Vision features by frame key, the newest `per_group` frames of each group (a tuple key's
    first element: the camera). `hits` / `misses` count the lookups."""

    def __init__(self, per_group: int = 8):
        self.per_group = per_group
        self._groups: dict[Hashable, OrderedDict[Hashable, torch.Tensor]] = {}
        self.hits = self.misses = 0

    @staticmethod
    def _group(key: Hashable) -> Hashable:
        return key[0] if isinstance(key, tuple) and key else None

    def get(self, key: Hashable) -> torch.Tensor | None:
        found = self._groups.get(self._group(key), {}).get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: Hashable, features: torch.Tensor) -> None:
        group = self._groups.setdefault(self._group(key), OrderedDict())
        group[key] = features
        while len(group) > self.per_group:
            group.popitem(last=False)

    def clear(self) -> None:
        self._groups.clear()

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups.values())


class ChangeCaptioner:
    """Loaded once; `caption(pairs)` gives one clean sentence (or "no visible change") per pair."""

    def __init__(
        self,
        model: CompressedCaptioner | LlavaForConditionalGeneration,
        tokenizer,
        image_processor,
        *,
        mode: str,
        device: torch.device,
        batch_size: int = 8,
        cache_frames: int = 8,
    ):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: use one of {', '.join(MODES)}")
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.mode = mode
        self.device = device
        self.batch_size = batch_size
        self.frame_cache = FrameCache(cache_frames)
        self.adapter: str | None = None
        self._peft = None  # the PeftModel wrapper while an adapter is loaded
        self._adapters = 0
        config = model.config
        self.placeholder_id = int(config.image_token_id)
        self.image_size = int(config.vision_config.image_size)
        self.image_tokens = visual_tokens_per_image(config)
        compressed = mode == "compressed"
        self.processor = ChangeProcessor(
            tokenizer,
            image_processor,
            mode=mode,
            image_size=self.image_size,
            placeholder_id=self.placeholder_id,
            image_tokens=self.image_tokens,
            device=device,
            tokens_per_frame=int(config.tokens_per_frame) if compressed else None,
            delta_tokens=int(config.delta_tokens) if compressed else None,
        )
        self.pad_id = self.processor.pad_id

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        mode: str = "compressed",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        quantization: str | None = None,
        adapter: str | Path | None = None,
        content_grid: int = 1,
        delta_tokens: int = 2,
        batch_size: int = 8,
        cache_frames: int = 8,
    ) -> ChangeCaptioner:
        """Offline, safetensors only. A LLaVA checkpoint in `compressed` mode gets a new
        (untrained, zero-shot) compressor with `content_grid`/`delta_tokens`; a saved
        CompressedCaptioner keeps its own."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: use one of {', '.join(MODES)}")
        path = resolve_checkpoint(path)
        dev = pick_device(device)
        model = load_model(path, dtype=pick_dtype(dtype, dev), device=dev, quantization=quantization or "none")
        if mode == "compressed" and not isinstance(model, CompressedCaptioner):
            model = CompressedCaptioner.from_llava(model, content_grid=content_grid, delta_tokens=delta_tokens).eval()
        elif mode == "pair" and isinstance(model, CompressedCaptioner):
            model = model.to_llava().eval()
        tokenizer = load_tokenizer(path)
        if model.config.image_token_id >= len(tokenizer):
            raise CheckpointError(f"{path}: image_token_index {model.config.image_token_id} is not in the tokenizer")
        captioner = cls(
            model,
            tokenizer,
            load_image_processor(path),
            mode=mode,
            device=dev,
            batch_size=batch_size,
            cache_frames=cache_frames,
        )
        if adapter is not None:
            captioner.load_adapter(adapter)
        return captioner

    # -- images (ChangeProcessor) ---------------------------------------------------------
    def side_by_side(self, pair: PairInput) -> torch.Tensor:
        """(3, S, S): before on the left, after on the right (resized to the before's size)."""
        return self.processor.side_by_side(pair)

    def pixel_values(self, frames: Sequence[FrameInput]) -> torch.Tensor:
        """(N, 3, S, S) in the vision tower's dtype, on the device."""
        return self.processor.pixel_values(frames, self.model.dtype)

    def frame_features(self, frames: Sequence[FrameInput]) -> torch.Tensor:
        """(N, P, Dv) vision features; frames with a key already seen come from the cache."""
        found = [self.frame_cache.get(f.key) if f.key is not None else None for f in frames]
        todo = [i for i, feats in enumerate(found) if feats is None]
        if todo:
            encoded = self.model.vision_features(self.pixel_values([frames[i] for i in todo]))
            for i, feats in zip(todo, encoded):
                found[i] = feats
                if frames[i].key is not None:
                    self.frame_cache.put(frames[i].key, feats)
        return torch.stack(found)

    # -- batches (ChangeProcessor) --------------------------------------------------------
    def collate(
        self,
        pairs: Sequence[PairInput],
        targets: Sequence[Sequence[str]] | None = None,
        *,
        multi_turn: bool = True,
        frame_cache: bool = False,
        answered: Sequence[Sequence[str]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The model's inputs. Inference (targets None): left padding. Training: right padding and
        `labels` (-100 everywhere but the answer tokens); `model(**batch).loss` is the loss.
        Compressed: every frame once per batch (`pixel_values`, or cached `frame_features` with
        frame_cache=True), `frame_index` (B, F) and `query_mask` (B, L). `answered` (inference):
        each pair's earlier answers; a pair with some is asked the next turn ("What else changed?")."""
        return self.processor.collate(
            pairs,
            targets,
            dtype=self.model.dtype,
            multi_turn=multi_turn,
            frame_features=self.frame_features if frame_cache else None,
            answered=answered,
        )

    # -- captions --------------------------------------------------------------------------
    def generation_config(self, max_new_tokens: int) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.pad_id,
            eos_token_id=self.tokenizer.eos_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
            suppress_tokens=[self.placeholder_id],  # a frame placeholder is never an answer word
        )

    @torch.inference_mode()
    def generate(
        self,
        pairs: Sequence[PairInput],
        *,
        max_new_tokens: int = 32,
        answered: Sequence[Sequence[str]] | None = None,
    ) -> list[str]:
        """One batch, raw decoded text (before clean-up)."""
        batch = self.collate(pairs, frame_cache=True, answered=answered)
        prompt_len = batch["input_ids"].shape[1]
        out = self.model.generate(**batch, generation_config=self.generation_config(max_new_tokens))
        return self.tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)

    def caption(
        self, pairs: Sequence[PairInput], *, max_new_tokens: int = 32, turns: int | Sequence[int] = 1
    ) -> list[str]:
        """One clean sentence per change, or "no visible change", per pair; in batches of
        `batch_size`. `turns` (per pair or for all): how many changes to ask for, one per turn as
        the multi-turn training format has it; a pair stops early at "no visible change" or a
        repeated sentence. CUDA out of memory: the batch is halved and retried (down to 1)."""
        wanted = [turns] * len(pairs) if isinstance(turns, int) else list(turns)
        answers: list[list[str]] = [[] for _ in pairs]
        active = list(range(len(pairs)))
        for turn in range(max(wanted, default=0)):
            active = [i for i in active if wanted[i] > turn]
            raw = self._generate_batches([pairs[i] for i in active], [answers[i] for i in active], max_new_tokens)
            still = []
            for i, text in zip(active, raw):
                known = {a.lower() for a in answers[i]}
                new = [s for s in caption_sentences(text) if s.lower() not in known]
                if new:
                    answers[i] += new
                    still.append(i)
            active = still
        return [" ".join(a) if a else NO_CHANGE for a in answers]

    def _generate_batches(self, pairs: list[PairInput], answered: list[list[str]], max_new_tokens: int) -> list[str]:
        texts: list[str] = []
        size = max(1, self.batch_size)
        start = 0
        while start < len(pairs):
            end = start + size
            try:
                texts += self.generate(pairs[start:end], max_new_tokens=max_new_tokens, answered=answered[start:end])
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                torch.cuda.empty_cache()
                size //= 2
                continue
            start = end
        return texts

    def warm_up(self) -> None:
        """One caption on a synthetic pair: kernels, allocator and caches are ready before the
        first real change."""
        rng = np.random.default_rng(0)
        img = rng.integers(0, 255, (self.image_size, self.image_size, 3), dtype=np.uint8)
        self.caption([PairInput(FrameInput(img, 0.0), FrameInput(img[::-1].copy(), 1.0))], max_new_tokens=2)

    # -- adapters --------------------------------------------------------------------------
    def load_adapter(self, path: str | Path) -> None:
        """Apply a peft LoRA adapter directory; replaces the current one (hot swap). A bad adapter
        raises CheckpointError and leaves the current one in place."""
        from peft import PeftModel

        path = Path(path).expanduser()
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            if not (path / name).is_file():
                raise CheckpointError(f"{path}: missing {name} (not a peft LoRA adapter directory)")
        self._adapters += 1
        name = f"adapter_{self._adapters}"
        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.model, path, adapter_name=name, is_trainable=False)
            else:
                old = self._peft.active_adapter
                self._peft.load_adapter(path, adapter_name=name, is_trainable=False)
                self._peft.set_adapter(name)
                self._peft.delete_adapter(old)
        except Exception as exc:  # noqa: BLE001 - wrong shapes, wrong target modules: one line
            message = f"{path}: cannot apply the adapter ({type(exc).__name__}: {exc})".splitlines()[0]
            raise CheckpointError(message) from None
        self._peft.eval()
        self.adapter = str(path)
        self.frame_cache.clear()  # an adapter may carry its own projector or compressor

    def unload_adapter(self) -> None:
        """Back to the checkpoint's own weights."""
        if self._peft is not None:
            from peft.utils import ModulesToSaveWrapper

            # peft's unload() keeps the adapter's trained copy of a modules_to_save module (the
            # compressor a finetune adapter carries): put the checkpoint's own module back.
            wrapped = self._peft.get_base_model().named_modules()
            originals = [(name, m.original_module) for name, m in wrapped if isinstance(m, ModulesToSaveWrapper)]
            self.model = self._peft.unload()
            for name, module in originals:
                self.model.set_submodule(name, module)
            self._peft = None
        self.adapter = None
        self.frame_cache.clear()
