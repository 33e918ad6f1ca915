"""Datasets from other sources: Spot-the-Diff annotations and the daemon's capture folders.

Spot-the-Diff (`[{"img_id": "256", "sentences": [...]}]`, images `<id>.png` = before and
`<id>_2.png` = after): entries with the same img_id are merged; every sentence is cleaned
(`clean_sentence`: lower case, whitespace collapsed, stray punctuation at the ends dropped;
sentences with fewer than MIN_WORDS words, e.g. "", "1", "less", are dropped; exact repeats
within a pair dropped); sentences that say there is no difference become "no visible change"
when that is all a pair's annotators said, and are dropped from pairs where others describe a
change. Pairs left without any sentence are dropped and counted.

Captures (the daemon's `<dir>/<camera>/<day>/<event_id>/{before.jpg, after.jpg, event.json,
captions.txt}`): `captions.txt` (the operator's corrections, one sentence per change per line)
when present; else the event's `text`, only with `include_uncorrected`; "no visible change"
(or a paraphrase) becomes a no-change pair. The images are hard-linked (copied across file
systems) into the dataset, so capture retention cannot break it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from finetune.dataset import (
    PAIRS_FILE,
    DatasetError,
    PairRecord,
    Region,
    validate_records,
    validation_problems,
    write_jsonl,
)
from finetune.language import is_no_change
from monitor.errors import MonitorError
from pipelines.prompt import NO_CHANGE

MIN_WORDS = 2
_EDGE_JUNK = re.compile(r"^[^a-z0-9]+|[^a-z0-9]+$")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")  # file-name-safe camera and event ids


@dataclass
class ConvertStats:
    """What a conversion kept and dropped, by reason."""

    pairs: int = 0
    counts: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        parts = [f"{v} {k}" for k, v in sorted(self.counts.items()) if v]
        return f"{self.pairs} pairs" + (f" ({', '.join(parts)})" if parts else "")


def clean_sentence(text: str) -> str:
    """Lower case, one space between words, no punctuation at either end ("_there is" -> "there is")."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _EDGE_JUNK.sub("", " ".join(text.split()))


def _clean_pair(sentences: list[str], stats: ConvertStats) -> list[str]:
    kept: list[str] = []
    no_change = 0
    for raw in sentences:
        s = clean_sentence(raw)
        if is_no_change(s):
            no_change += 1
            continue
        if len(s.split()) < MIN_WORDS:
            stats.counts["sentences dropped (too short)"] += 1
            continue
        if s in kept:
            stats.counts["repeated sentences dropped"] += 1
            continue
        kept.append(s)
    stats.counts["no-change sentences"] += no_change
    if kept:
        return kept
    return [NO_CHANGE] if no_change else []


def parse_spotdiff(path: Path) -> tuple[dict[str, list[str]], ConvertStats]:
    """{img_id: cleaned sentences} from a Spot-the-Diff annotation file, in file order."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MonitorError(f"annotations not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MonitorError(f"{path}: not a JSON annotation file ({exc})") from None
    if not isinstance(data, list):
        raise MonitorError(f"{path}: expected a list of {{img_id, sentences}} objects")
    merged: dict[str, list[str]] = {}
    stats = ConvertStats()
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "img_id" not in item or "sentences" not in item:
            raise MonitorError(f"{path}: [{i}]: expected an object with 'img_id' and 'sentences'")
        sentences = item["sentences"]
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise MonitorError(f"{path}: [{i}].sentences: expected a list of strings")
        img_id = str(item["img_id"])
        if img_id in merged:
            stats.counts["entries merged into an earlier img_id"] += 1
        merged.setdefault(img_id, []).extend(sentences)
        stats.counts["sentences read"] += len(sentences)
    out: dict[str, list[str]] = {}
    for img_id, sentences in merged.items():
        cleaned = _clean_pair(sentences, stats)
        if not cleaned:
            stats.counts["pairs without a usable sentence dropped"] += 1
            continue
        stats.counts["no-change pairs"] += cleaned == [NO_CHANGE]
        out[img_id] = cleaned
    stats.pairs = len(out)
    return out, stats


def _image_ref(path: Path, out_dir: Path) -> str:
    """Relative to the dataset's folder when the image lies under it, else absolute."""
    path, base = path.resolve(), out_dir.resolve()
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def _finish(
    good: list, problems: dict, order: list[str], source: str, skip_bad: bool, stats: ConvertStats
) -> list[PairRecord]:
    """Raise with every problem (in the source's order), or (skip_bad) count them; the good records."""
    if problems and not skip_bad:
        rank = {key: i for i, key in enumerate(order)}
        keys = sorted(problems, key=lambda k: rank.get(k, len(rank)))
        raise DatasetError(source, [f"{source}: {key}: {p}" for key in keys for p in problems[key]])
    stats.counts["bad pairs skipped"] += len(problems)
    if not good:
        raise DatasetError(source, [f"{source}: no usable pairs ({stats.summary()})"])
    stats.pairs = len(good)
    return [rec for _, rec in good]


def from_spotdiff(
    annotations: Path, images: Path, out_dir: Path, *, skip_bad: bool = False
) -> tuple[Path, ConvertStats]:
    """Spot-the-Diff -> out_dir/pairs.jsonl (images referenced in place, every one checked)."""
    pairs, stats = parse_spotdiff(annotations)
    if not images.is_dir():
        raise MonitorError(f"--images: not a folder: {images}")
    out_dir.mkdir(parents=True, exist_ok=True)
    numbered = [
        (
            f"img_id {img_id}",
            PairRecord(
                id=img_id,
                camera="spotdiff",
                before=_image_ref(images / f"{img_id}.png", out_dir),
                after=_image_ref(images / f"{img_id}_2.png", out_dir),
                captions=sentences,
            ),
        )
        for img_id, sentences in pairs.items()
    ]
    problems: dict[str, list[str]] = {}
    good = validate_records(numbered, out_dir, problems)
    records = _finish(good, problems, [k for k, _ in numbered], str(annotations), skip_bad, stats)
    path = out_dir / PAIRS_FILE
    write_jsonl(path, records)
    return path, stats


# -- capture folders ----------------------------------------------------------------------------
def _read_captions_txt(path: Path) -> list[str]:
    lines = [" ".join(line.split()) for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def from_captures(
    captures: Path, out_dir: Path, *, include_uncorrected: bool = False, skip_bad: bool = False
) -> tuple[Path, ConvertStats]:
    """The daemon's capture folders -> out_dir/pairs.jsonl + out_dir/images/<camera>/."""
    from monitor.records import ChangeEvent

    if not captures.is_dir():
        raise MonitorError(f"--from-captures: not a folder: {captures}")
    stats = ConvertStats()
    numbered: list[tuple[str, PairRecord]] = []
    problems: dict[str, list[str]] = {}
    seen: set[str] = set()
    order: list[str] = []  # capture folders in walk order, for the problem list
    # <camera>/<day>/<event_id>/event.json; "<event_id>.tmp" folders are captures being written
    for event_file in sorted(captures.glob("*/*/*/event.json")):
        folder = event_file.parent
        key = str(folder.relative_to(captures))
        order.append(key)
        if folder.name.endswith(".tmp"):
            stats.counts["unfinished captures ignored"] += 1
            continue
        try:
            event = ChangeEvent.model_validate_json(event_file.read_bytes())
        except (OSError, ValidationError, ValueError) as exc:
            first = str(exc).splitlines()
            problems[key] = [f"event.json: not a change event ({first[0] if first else exc})"]
            continue
        if event.kind != "change":
            stats.counts["non-change events ignored"] += 1
            continue
        corrected = folder / "captions.txt"
        if corrected.is_file():
            try:
                captions = _read_captions_txt(corrected)
            except (OSError, UnicodeDecodeError) as exc:
                problems[key] = [f"captions.txt: unreadable ({exc})"]
                continue
            stats.counts["corrected"] += 1
        elif include_uncorrected:
            captions = [event.text]
            stats.counts["uncorrected"] += 1
        else:
            stats.counts["uncorrected skipped (use --include-uncorrected)"] += 1
            continue
        if captions and all(is_no_change(s) for s in captions):
            captions = [NO_CHANGE]
            stats.counts["no-change pairs"] += 1
        if event.event_id in seen:
            problems[key] = [f"event id {event.event_id!r} captured twice"]
            continue
        seen.add(event.event_id)
        try:
            record = PairRecord(
                id=event.event_id,
                camera=event.camera,
                before=str(folder / "before.jpg"),
                after=str(folder / "after.jpg"),
                t_before=event.t_before,
                t_after=event.t_after,
                captions=captions,
                regions=[Region(**r.model_dump()) for r in event.regions] or None,
                transient=event.transient or None,
                settled=None if event.settled else False,
            )
        except ValidationError as exc:
            problems[key] = validation_problems(exc)
            continue
        numbered.append((key, record))
    good = validate_records(numbered, captures, problems)
    records = _finish(good, problems, order, str(captures), skip_bad, stats)
    # Hard-link the checked images into the dataset: capture retention cannot break it then.
    linked = []
    for rec in records:
        names = {}
        for which in ("before", "after"):
            name = f"images/{_SAFE.sub('-', rec.camera)}/{_SAFE.sub('-', rec.id)}_{which}.jpg"
            _link_or_copy(Path(getattr(rec, which)), out_dir / name)
            names[which] = name
        linked.append(rec.model_copy(update=names))
    path = out_dir / PAIRS_FILE
    write_jsonl(path, linked)
    return path, stats
