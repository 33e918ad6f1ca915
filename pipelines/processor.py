"""ChangeProcessor: what turns `PairInput`/`FrameInput` records into the model's input tensors.

Kept apart from the model side (`pipelines.captioner`) the way transformers keeps
`processing_*.py` apart from `modeling_*.py`: no model weights here, only the tokenizer, the image
processor's mean/std and a few numbers from the model's config, all passed to the constructor.
- images: frames resized to fit and padded with the mean colour to the square input (never
  centre-cropped: objects enter at the edges); `pair` mode puts before/after side by side in one.
- batches: prompts (pipelines.prompt) tokenised and padded, labels for training, and per mode the
  pixels (`pair`: one side-by-side image per pair; `compressed`: every frame once per batch, with
  `frame_index` (B, F) and `query_mask` (B, L)).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.prompt import Piece, compressed_prompt, conversation, encode, follow_up, pair_prompt
from pipelines.records import FrameInput, PairInput

MODES = ("compressed", "pair")


class ChangeProcessor:
    """Records -> tensors for one ChangeCaptioner mode. `pair`: `image_tokens` placeholders per
    side-by-side image. `compressed`: `tokens_per_frame` per frame and `delta_tokens` per pair (the
    CompressedCaptioner's config)."""

    def __init__(
        self,
        tokenizer,
        image_processor,
        *,
        mode: str,
        image_size: int,
        placeholder_id: int,
        image_tokens: int,
        device: torch.device,
        tokens_per_frame: int | None = None,
        delta_tokens: int | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: use one of {', '.join(MODES)}")
        if mode == "compressed" and (tokens_per_frame is None or delta_tokens is None):
            raise ValueError("mode 'compressed' needs tokens_per_frame and delta_tokens")
        self.tokenizer = tokenizer
        self.mode = mode
        self.image_size = image_size
        self.placeholder_id = placeholder_id
        self.image_tokens = image_tokens
        self.tokens_per_frame = tokens_per_frame
        self.delta_tokens = delta_tokens
        self.device = device
        self._mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).view(3, 1, 1)  # (3, 1, 1) 0-1
        self._std = torch.tensor(image_processor.image_std, dtype=torch.float32).view(3, 1, 1)  # (3, 1, 1)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)

    # -- images ----------------------------------------------------------------------------
    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()  # (3, H, W) 0-255

    def _square(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) 0-255 -> (3, S, S) normalised: resized to fit, padded with the mean colour."""
        size = self.image_size
        h, w = image.shape[1:]
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        resized = F.interpolate(image[None], size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        canvas = (self._mean * 255.0).expand(3, size, size).clone()  # (3, S, S) 0-255
        top, left = (size - nh) // 2, (size - nw) // 2
        canvas[:, top : top + nh, left : left + nw] = resized[0].clamp(0, 255)
        return (canvas / 255.0 - self._mean) / self._std

    def side_by_side(self, pair: PairInput) -> torch.Tensor:
        """(3, S, S): before on the left, after on the right (resized to the before's size)."""
        before, after = self._tensor(pair.before.image), self._tensor(pair.after.image)  # (3, H, W)
        if after.shape != before.shape:
            after = F.interpolate(after[None], size=before.shape[1:], mode="bilinear", antialias=True)[0]
        return self._square(torch.cat([before, after], dim=2))  # (3, H, 2W) -> (3, S, S)

    def pixel_values(self, frames: Sequence[FrameInput], dtype: torch.dtype) -> torch.Tensor:
        """(N, 3, S, S) in `dtype` (the vision tower's), on the device."""
        pixels = torch.stack([self._square(self._tensor(f.image)) for f in frames])
        return pixels.to(self.device, dtype)

    # -- batches ---------------------------------------------------------------------------
    def _pieces(self, pair: PairInput) -> list[Piece]:
        if self.mode == "pair":
            return pair_prompt(pair, image_tokens=self.image_tokens)
        return compressed_prompt(pair, tokens_per_frame=self.tokens_per_frame, delta_tokens=self.delta_tokens)

    def collate(
        self,
        pairs: Sequence[PairInput],
        targets: Sequence[Sequence[str]] | None = None,
        *,
        dtype: torch.dtype,
        multi_turn: bool = True,
        frame_features: Callable[[Sequence[FrameInput]], torch.Tensor] | None = None,
        answered: Sequence[Sequence[str]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The model's inputs, on the device; pixels in `dtype`. Inference (targets None): left
        padding. Training: right padding and `labels` (-100 everywhere but the answer tokens).
        Compressed: every frame once per batch, as `pixel_values` (N, 3, S, S) or, given
        `frame_features` (frames -> (N, P, Dv), e.g. the captioner's frame cache), as
        `frame_features`; `frame_index` (B, F) and `query_mask` (B, L). `answered` (inference):
        each pair's earlier answers; a pair with some is asked the next turn."""
        pieces = [self._pieces(p) for p in pairs]
        if targets is not None:
            pieces = [conversation(pc, list(t), multi_turn=multi_turn) for pc, t in zip(pieces, targets)]
        elif answered is not None:
            pieces = [follow_up(pc, list(a)) if a else pc for pc, a in zip(pieces, answered)]
        encoded = [encode(pc, self.tokenizer, self.placeholder_id) for pc in pieces]
        length = max(len(e.input_ids) for e in encoded)
        left = targets is None  # generation continues at the right edge: pad on the left
        batch_size = len(encoded)
        input_ids = torch.full((batch_size, length), self.pad_id, dtype=torch.long)  # (B, L)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        query_mask = torch.zeros((batch_size, length), dtype=torch.bool)
        labels = torch.full((batch_size, length), -100, dtype=torch.long)
        for b, e in enumerate(encoded):
            n = len(e.input_ids)
            span = slice(length - n, length) if left else slice(0, n)
            ids = torch.tensor(e.input_ids)
            input_ids[b, span] = ids
            attention_mask[b, span] = 1
            query_mask[b, span] = torch.tensor(e.query_mask)
            labels[b, span] = torch.where(torch.tensor(e.label_mask), ids, -100)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if targets is not None:
            batch["labels"] = labels
        if self.mode == "pair":
            pixels = torch.stack([self.side_by_side(p) for p in pairs])  # (B, 3, S, S)
            batch["pixel_values"] = pixels.to(dtype)
        else:
            frames, frame_index = self._unique_frames(pairs)
            batch["frame_index"] = frame_index
            batch["query_mask"] = query_mask
            if frame_features is not None:
                batch["frame_features"] = frame_features(frames)  # (N, P, Dv)
            else:
                batch["pixel_values"] = self.pixel_values(frames, dtype)  # (N, 3, S, S)
        return {k: v.to(self.device) for k, v in batch.items()}

    @staticmethod
    def _unique_frames(pairs: Sequence[PairInput]) -> tuple[list[FrameInput], torch.Tensor]:
        """Each keyed frame once per batch; (B, F) rows per sample in time order, -1 = none."""
        frames: list[FrameInput] = []
        rows: dict[Hashable, int] = {}
        index = []
        for pair in pairs:
            sample = []
            for frame in pair.frames:
                if frame.key is None or frame.key not in rows:
                    if frame.key is not None:
                        rows[frame.key] = len(frames)
                    sample.append(len(frames))
                    frames.append(frame)
                else:
                    sample.append(rows[frame.key])
            index.append(sample)
        width = max(len(s) for s in index)
        return frames, torch.tensor([s + [-1] * (width - len(s)) for s in index], dtype=torch.long)
