"""`monitor finetune eval`: caption a dataset with a checkpoint (+ adapter) and score it.

Captions come from pipelines' ChangeCaptioner (batched greedy decoding, the daemon's path);
scores from finetune.metrics (COCO caption toolkit + direction / no-change accuracy). The
controls of the learnability proof run the same evaluation on rearranged inputs: before/after
swapped, or images shuffled across pairs (finetune.pairs.arranged).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finetune.dataset import load_dataset
from finetune.metrics import CaptionScores, score_captions
from finetune.pairs import ARRANGEMENTS, PairSource, arranged
from monitor.errors import MonitorError


@dataclass(frozen=True)
class Evaluation:
    arrangement: str
    predictions: dict[str, str]  # pair id -> caption
    references: dict[str, list[str]]
    scores: CaptionScores


def load_captioner(model: Path, *, adapter: Path | None = None, mode: str = "compressed", **kwargs):
    """ChangeCaptioner with CheckpointError turned into a one-line MonitorError."""
    from pipelines.captioner import ChangeCaptioner
    from pipelines.checkpoint import CheckpointError

    try:
        return ChangeCaptioner.load(model, mode=mode, adapter=adapter, **kwargs)
    except CheckpointError as exc:
        raise MonitorError(str(exc)) from None


def caption_source(
    captioner, source: PairSource, *, arrangement: str = "normal", seed: int = 0, max_new_tokens: int = 32
) -> dict[str, str]:
    """{pair id: caption} for every pair of `source`, inputs rearranged as asked."""
    if arrangement not in ARRANGEMENTS:
        raise MonitorError(f"arrangement {arrangement!r}: use one of {', '.join(ARRANGEMENTS)}")
    pairs = [source[i][0] for i in range(len(source))]
    captions = captioner.caption(arranged(pairs, arrangement, seed), max_new_tokens=max_new_tokens)
    return {rec.id: text for rec, text in zip(source.records, captions)}


def evaluate_source(
    captioner,
    source: PairSource,
    *,
    arrangement: str = "normal",
    seed: int = 0,
    java: bool | None = None,
    max_new_tokens: int = 32,
) -> Evaluation:
    predictions = caption_source(captioner, source, arrangement=arrangement, seed=seed, max_new_tokens=max_new_tokens)
    references = {rec.id: list(rec.captions) for rec in source.records}
    return Evaluation(arrangement, predictions, references, score_captions(references, predictions, java=java))


def evaluate(
    model: Path,
    dataset: Path,
    *,
    adapter: Path | None = None,
    mode: str = "compressed",
    arrangements: tuple[str, ...] = ("normal",),
    limit: int | None = None,
    batch_size: int = 8,
    device: str | None = None,
    java: bool | None = None,
    skip_bad: bool = False,
    seed: int = 0,
    max_new_tokens: int = 32,
    facts: bool = True,
) -> dict[str, Evaluation]:
    """Evaluate `model` (+ `adapter`) on `dataset` under each arrangement (`facts`: prompts with
    the records' regions, as in training)."""
    ds = load_dataset(dataset, skip_bad=skip_bad)
    source = PairSource(ds, ds.records[:limit] if limit else None, facts)
    captioner = load_captioner(model, adapter=adapter, mode=mode, device=device, batch_size=batch_size)
    return {
        a: evaluate_source(captioner, source, arrangement=a, seed=seed, java=java, max_new_tokens=max_new_tokens)
        for a in arrangements
    }
