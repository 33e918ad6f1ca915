"""The fine-tuning dataset: JSONL, one before/after pair per line, and its LLaVA export.

One line:

    {"id": "lot-east-00a1", "camera": "lot-east", "before": "images/a_before.jpg",
     "after": "images/a_after.jpg", "t_before": 1795000000.0, "t_after": 1795000012.5,
     "captions": ["a red car appeared in the lower left"],
     "regions": [{"x": 0.1, "y": 0.6, "w": 0.2, "h": 0.15, "change": "appeared", "label": "car"}]}

`before`/`after`: image paths, relative to the JSONL's folder or absolute. `captions`: one
sentence per change, in the order to be said; a pair without a visible change has exactly
["no visible change"]. `t_before`/`t_after`: UNIX or media seconds (ISO-8601 strings are
converted), optional like `camera`, `regions` and the event's `transient` / `settled`. With
`regions`, training and evaluation prompts carry the facts the daemon shows the model
(`pipelines.phrases.facts_text`: "seen: a person arrived on the left").

`load_dataset` checks every line (JSON, fields, duplicate ids, both images present and
decodable) and raises one `DatasetError` listing every problem with its line number, or with
`skip_bad=True` drops the bad lines and counts them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from finetune.language import is_no_change
from monitor.errors import MonitorError
from pipelines.prompt import NEXT_TURN, NO_CHANGE

PAIRS_FILE = "pairs.jsonl"
IMAGE_TOKEN = "<image>"
# The questions of the exported conversations (the first one follows the two image tokens).
QUESTION = "What changed between the first image and the second image?"


class DatasetError(MonitorError):
    """Everything wrong with a dataset: `problems` holds one line per problem."""

    def __init__(self, source: str | Path, problems: Sequence[str]):
        self.source = str(source)
        self.problems = tuple(problems)
        first = self.problems[0] if self.problems else "no problems"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first}{more}")


class Region(BaseModel):
    """A changed area in normalised 0-1 coordinates (x, y = top-left), as the daemon logs them."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    x: float = Field(ge=0, le=1)
    y: float = Field(ge=0, le=1)
    w: float = Field(ge=0, le=1)
    h: float = Field(ge=0, le=1)
    change: str
    label: str | None = None
    track: int | None = None
    heading: str | None = None  # change "passed": "left to right", ...
    stood_s: float | None = None  # a left-behind thing taken: how long it had stood there, s


class PairRecord(BaseModel):
    """One before/after pair and what changed between them."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)
    id: str = Field(min_length=1)
    camera: str = "camera"
    before: str = Field(min_length=1)
    after: str = Field(min_length=1)
    t_before: float | None = None
    t_after: float | None = None
    captions: list[str] = Field(min_length=1)
    regions: list[Region] | None = None
    transient: bool | None = None  # the scene went back as it was (the event's `transient`); None = false
    settled: bool | None = None  # false: reported while still changing (the event's `settled`); None = true

    @field_validator("t_before", "t_after", mode="before")
    @classmethod
    def _iso_time(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value).timestamp()
            except ValueError:
                raise ValueError(f"not a number of seconds or an ISO-8601 time: {value!r}") from None
        return value

    @field_validator("captions")
    @classmethod
    def _sentences(cls, value: list[str]) -> list[str]:
        cleaned = [" ".join(s.split()) for s in value]
        for i, s in enumerate(cleaned):
            if not s:
                raise ValueError(f"sentence {i} is empty")
        return cleaned

    @model_validator(mode="after")
    def _no_change_alone(self) -> PairRecord:
        if len(self.captions) > 1 and any(is_no_change(s) for s in self.captions):
            raise ValueError(f"{NO_CHANGE!r} must be the only caption of a pair")
        return self

    @property
    def no_change(self) -> bool:
        return len(self.captions) == 1 and is_no_change(self.captions[0])

    def json_line(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), ensure_ascii=False)


@dataclass(frozen=True)
class Dataset:
    path: Path  # the JSONL file; relative image paths are relative to its folder
    records: tuple[PairRecord, ...]
    skipped: int = 0  # bad lines dropped with skip_bad
    problems: tuple[str, ...] = ()  # why they were dropped

    @property
    def root(self) -> Path:
        return self.path.parent

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[PairRecord]:
        return iter(self.records)

    def resolve(self, image: str) -> Path:
        return resolve_image(self.root, image)

    def images(self, record: PairRecord) -> tuple[Any, Any]:
        """(before, after) as RGB uint8 arrays (H, W, 3)."""
        return read_rgb(self.resolve(record.before)), read_rgb(self.resolve(record.after))


def resolve_image(root: Path, image: str) -> Path:
    path = Path(image).expanduser()
    return path if path.is_absolute() else root / path


def read_rgb(path: Path) -> Any:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(path, [f"unreadable image: {path}"])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_problem(path: Path) -> str | None:
    """None when `path` is an image OpenCV can decode, else what is wrong with it."""
    import cv2

    if not path.is_file():
        return f"image not found: {path}"
    try:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        return f"unreadable image (not a decodable image file): {path}"
    return None


def check_images(paths: Iterable[Path], workers: int = 8) -> dict[Path, str]:
    """{path: problem} for every path that is missing or undecodable (decoded in threads:
    OpenCV releases the GIL)."""
    unique = list(dict.fromkeys(paths))
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(unique)))) as pool:
        found = pool.map(image_problem, unique)
    return {p: problem for p, problem in zip(unique, found) if problem is not None}


def validation_problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = "missing" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
        if err["type"] == "too_short" and loc == "captions":
            msg = f'empty (give at least one sentence, or ["{NO_CHANGE}"])'
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        out.append(f"{loc}: {msg}" if loc else msg)
    return out


def parse_lines(lines: Iterable[str]) -> tuple[list[tuple[int, PairRecord]], dict[int, list[str]]]:
    """Validate JSONL text: ([(line number, record)], {line number: [problems]}); duplicate ids
    are problems of the later line."""
    records: list[tuple[int, PairRecord]] = []
    problems: dict[int, list[str]] = {}
    first_line: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            problems[n] = [f"not JSON ({exc.msg} at column {exc.colno})"]
            continue
        if not isinstance(data, dict):
            problems[n] = ["not a JSON object"]
            continue
        try:
            rec = PairRecord.model_validate(data)
        except ValidationError as exc:
            problems[n] = validation_problems(exc)
            continue
        if rec.id in first_line:
            problems[n] = [f"id {rec.id!r} duplicates line {first_line[rec.id]}"]
            continue
        first_line[rec.id] = n
        records.append((n, rec))
    return records, problems


def validate_records(
    numbered: Sequence[tuple[Any, PairRecord]], root: Path, problems: dict[Any, list[str]], *, images: bool = True
) -> list[tuple[Any, PairRecord]]:
    """Add image problems to `problems` (keyed like `numbered`); return the records without any."""
    if images:
        wanted = [resolve_image(root, p) for _, rec in numbered for p in (rec.before, rec.after)]
        bad = check_images(wanted)
        for key, rec in numbered:
            for field in ("before", "after"):
                problem = bad.get(resolve_image(root, getattr(rec, field)))
                if problem:
                    problems.setdefault(key, []).append(f"{field}: {problem}")
    return [(key, rec) for key, rec in numbered if key not in problems]


def dataset_file(path: str | Path) -> Path:
    """A dataset path: the JSONL itself or a folder holding pairs.jsonl."""
    path = Path(path)
    return path / PAIRS_FILE if path.is_dir() else path


def load_dataset(path: str | Path, *, skip_bad: bool = False, check_images: bool = True) -> Dataset:
    """Read and check a dataset; DatasetError lists every problem (`file:line: field: what`),
    or with `skip_bad` the bad lines are dropped and counted."""
    path = dataset_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(path, [f"dataset not found: {path}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(path, [f"dataset unreadable: {path}: {exc}"]) from None
    numbered, problems = parse_lines(text.splitlines())
    good = validate_records(numbered, path.parent, problems, images=check_images)
    lines = [f"{path}:{n}: {p}" for n in sorted(problems) for p in problems[n]]
    if problems and not skip_bad:
        raise DatasetError(path, lines)
    if not good:
        skipped = f" ({len(problems)} bad lines skipped)" if problems else ""
        raise DatasetError(path, [f"{path}: no usable pairs{skipped}"])
    return Dataset(path, tuple(rec for _, rec in good), skipped=len(problems), problems=tuple(lines))


def write_jsonl(path: Path, records: Iterable[PairRecord]) -> int:
    """Write records, one per line (atomically: a reader never sees half a dataset)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(rec.json_line() + "\n")
            n += 1
    os.replace(tmp, path)
    return n


# -- LLaVA conversation export ------------------------------------------------------------------
def join_sentences(sentences: Sequence[str]) -> str:
    """ "A", "A and B", "A, B and C": one answer from several change sentences (the daemon's style)."""
    if len(sentences) <= 1:
        return "".join(sentences)
    return ", ".join(sentences[:-1]) + " and " + sentences[-1]


def conversation(captions: Sequence[str], *, multi_turn: bool = True) -> list[dict[str, str]]:
    """LLaVA turns: the two images and QUESTION, then one change sentence per answer (multi-turn,
    NEXT_TURN between them) or all of them joined in one answer."""
    answers = list(captions) if multi_turn else [join_sentences(captions)]
    turns = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{IMAGE_TOKEN}\n{QUESTION}"}]
    for i, answer in enumerate(answers):
        if i:
            turns.append({"from": "human", "value": NEXT_TURN})
        turns.append({"from": "gpt", "value": answer})
    return turns


def to_llava(dataset: Dataset, out: Path, *, multi_turn: bool = True) -> int:
    """Write the dataset as LLaVA conversation JSON (multi-image: "image" lists before, after).
    Image paths are relative to `out`'s folder where they lie under it, else absolute."""
    base = out.parent.resolve()

    def rel(image: str) -> str:
        path = dataset.resolve(image).resolve()
        return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)

    items = [
        {
            "id": rec.id,
            "image": [rel(rec.before), rel(rec.after)],
            "conversations": conversation(rec.captions, multi_turn=multi_turn),
        }
        for rec in dataset
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(items)
