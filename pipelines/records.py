"""What the change captioner takes: frames and before/after pairs (numpy only, immutable)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class FrameInput:
    """One camera frame.

    `key` names the frame for the frame-encoding cache, e.g. `(camera, frame_seq)`: a frame with
    the same key is encoded by the vision tower once, however many pairs use it. The first element
    of a tuple key is the cache's group (the camera), which bounds how many frames are kept per
    camera. None = never cached."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    time: float  # seconds (UNIX or media time); the prompt shows it as a clock time and the gaps
    key: Hashable | None = None

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            shape = getattr(img, "shape", None)
            raise ValueError(f"FrameInput.image must be an (H, W, 3) uint8 RGB array, got {shape} {type(img).__name__}")


@dataclass(frozen=True, eq=False)
class PairInput:
    """A before/after pair to describe, optionally with older frames of the same camera."""

    before: FrameInput
    after: FrameInput
    regions_text: str = ""  # where the gate saw the change, in words: "the change is at the lower left"
    history: tuple[FrameInput, ...] = ()  # older frames, oldest first (compressed mode only)
    question: str | None = None  # asked in place of the change instruction (`monitor ask`)

    @property
    def frames(self) -> tuple[FrameInput, ...]:
        """Every frame in time order: history..., before, after."""
        return (*self.history, self.before, self.after)
