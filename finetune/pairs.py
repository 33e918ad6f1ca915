"""Dataset records -> the captioner's inputs, for training and evaluation.

`PairSource` reads a record's two images and gives `(PairInput, reference sentences)`; it is a
torch Dataset so a DataLoader can decode images in worker processes. `split` holds out a seeded
share of the pairs. `arranged` builds the control inputs of the learnability proof: before/after
swapped, or images shuffled across pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset as TorchDataset

from finetune.dataset import Dataset, PairRecord
from pipelines.phrases import facts_text
from pipelines.records import FrameInput, PairInput

ARRANGEMENTS = ("normal", "swapped", "shuffled")


def pair_input(before: np.ndarray, after: np.ndarray, record: PairRecord, facts: bool = True) -> PairInput:
    """The pair as the daemon shows it: times from the record (0 when absent) and, with `facts`,
    the record's regions in the words the daemon's prompt uses ("seen: a person arrived on the
    left"). `facts=False`: the captions must come from the pixels alone (the learnability proof)."""
    t0 = record.t_before if record.t_before is not None else 0.0
    t1 = record.t_after if record.t_after is not None else t0
    text = facts_text(record.regions, bool(record.transient), record.settled is not False) if facts else ""
    return PairInput(FrameInput(before, t0), FrameInput(after, max(t0, t1)), text)


class PairSource(TorchDataset):
    """(PairInput, reference sentences) per record; the images are decoded on access."""

    def __init__(self, dataset: Dataset, records: Sequence[PairRecord] | None = None, facts: bool = True):
        self.dataset = dataset
        self.records = list(dataset.records if records is None else records)
        self.facts = facts

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[PairInput, list[str]]:
        rec = self.records[i]
        before, after = self.dataset.images(rec)
        return pair_input(before, after, rec, self.facts), list(rec.captions)


def collate_pairs(items: list[tuple[PairInput, list[str]]]) -> tuple[list[PairInput], list[list[str]]]:
    """DataLoader collate: keep the records (the captioner tokenises in the main process)."""
    return [p for p, _ in items], [t for _, t in items]


def split(records: Sequence[PairRecord], fraction: float, seed: int) -> tuple[list[PairRecord], list[PairRecord]]:
    """(train, held out): a seeded `fraction` of the pairs held out (at least 1 when > 0)."""
    if fraction <= 0:
        return list(records), []
    order = np.random.default_rng(seed).permutation(len(records))
    n = min(len(records) - 1, max(1, round(fraction * len(records))))
    held = set(order[:n].tolist())
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def arranged(pairs: Sequence[PairInput], arrangement: str, seed: int = 0) -> list[PairInput]:
    """normal: as given. swapped: after shown as before and before as after (times kept).
    shuffled: every before and every after comes from another pair (two seeded derangements)."""
    if arrangement == "normal":
        return list(pairs)
    if arrangement == "swapped":
        return [
            PairInput(FrameInput(p.after.image, p.before.time), FrameInput(p.before.image, p.after.time)) for p in pairs
        ]
    if arrangement != "shuffled":
        raise ValueError(f"arrangement {arrangement!r}: use one of {', '.join(ARRANGEMENTS)}")
    n = len(pairs)
    if n < 2:
        raise ValueError("shuffling images across pairs needs at least 2 pairs")
    rng = np.random.default_rng(seed)
    shift_b, shift_a = (int(s) for s in rng.choice(np.arange(1, n), size=2, replace=n < 3))
    perm = rng.permutation(n)
    # perm[(k + shift) % n] is a derangement of perm: no pair keeps its own before or after
    src_b = {int(perm[k]): int(perm[(k + shift_b) % n]) for k in range(n)}
    src_a = {int(perm[k]): int(perm[(k + shift_a) % n]) for k in range(n)}
    return [
        PairInput(
            FrameInput(pairs[src_b[i]].before.image, p.before.time),
            FrameInput(pairs[src_a[i]].after.image, p.after.time),
        )
        for i, p in enumerate(pairs)
    ]
