"""Truth files for `monitor eval-log`: what really happened in a clip.

Two shapes are read, both JSON objects:

- intervals (the shared `*.truth.json` of real footage): `present_intervals_s: [[start, end],
  ...]` when something is in view; each interval is one arrival at `start` and one departure at
  `end`, and the time outside every interval is quiet. Optional, added for eval-log: `what`
  ("person", "vehicle": what the intervals are of) and `end_s` (the clip's length).
- events (the synthetic scene's `render_sample_scene` truth): `events: [{what, kind, t_start,
  t, box, ...}]` with `kind` "arrived", "left" or "passed" (came and went within one change;
  optional `heading`: "left to right", "right to left", "top to bottom" or "bottom to top"), the
  change under way from `t_start` to `t` (`box`: where, as x, y, w, h fractions). Optional,
  added for eval-log: `static: true` for an object put down that must persist (a bag left
  behind), `until` (when it is taken, or null),
  `quiet_s: [[start, end], ...]` (stretches in which nothing may be logged) and `seconds`.

Unknown keys are ignored, so a truth file may carry notes and more (backward compatible)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from monitor.errors import MonitorError

Span = tuple[float, float]


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TruthEvent(_Loose):
    id: str | None = None
    what: str | None = None
    kind: Literal["arrived", "left", "passed"]
    heading: Literal["left to right", "right to left", "top to bottom", "bottom to top"] | None = None
    t_start: float | None = None
    t: float
    box: tuple[float, float, float, float] | None = None
    static: bool = False
    until: float | None = None


class TruthFile(_Loose):
    what: str | None = None
    end_s: float | None = Field(None, gt=0)
    seconds: float | None = Field(None, gt=0)
    present_intervals_s: list[Span] | dict[str, list[Span]] | None = None
    events: list[TruthEvent] | None = None
    quiet_s: list[Span] | None = None


@dataclass(frozen=True, slots=True)
class ExpectedChange:
    kind: str  # "arrived" | "left"
    start: float  # when the change begins (media seconds)
    end: float  # when it is complete
    what: str | None = None
    box: tuple[float, float, float, float] | None = None
    static: bool = False  # an object left behind: it must persist
    until: float | None = None  # when a static object is taken (None: never)
    object_id: str | None = None  # the same thing's arrival and departure share it
    heading: str | None = None  # kind "passed": its way through the view ("left to right")


@dataclass(frozen=True, slots=True)
class Truth:
    changes: tuple[ExpectedChange, ...]
    quiet: tuple[Span, ...]  # nothing may be logged that lies wholly inside one of these


class TruthError(MonitorError):
    """A truth file that cannot be used: one line naming the file and the field (exit 1)."""


def load_truth(path: Path, what: str | None = None) -> Truth:
    """The truth in `path`; `what`: what a change the file leaves unnamed is (a clip of people)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TruthError(f"truth file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TruthError(f"cannot read truth file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except json.JSONDecodeError as exc:
        raise TruthError(f"{path}: not JSON: {exc.msg} (line {exc.lineno})") from None
    try:
        doc = TruthFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise TruthError(f"{path}: {loc}: {err['msg']}") from None
    if what is not None:
        doc = doc.model_copy(update={"what": doc.what or what})
    if doc.events is not None:
        return _from_events(doc)
    if isinstance(doc.present_intervals_s, list):
        return _from_intervals(doc)
    raise TruthError(f"{path}: needs `events` or a `present_intervals_s` list (see `monitor eval-log --help`)")


def _from_intervals(doc: TruthFile) -> Truth:
    intervals = sorted(doc.present_intervals_s or [])
    changes = []
    for i, (a, b) in enumerate(intervals):
        changes.append(ExpectedChange("arrived", a, a, doc.what, object_id=f"interval-{i}"))
        changes.append(ExpectedChange("left", b, b, doc.what, object_id=f"interval-{i}"))
    edges = [0.0, *[t for iv in intervals for t in iv], doc.end_s or float("inf")]
    quiet = [(edges[i], edges[i + 1]) for i in range(0, len(edges) - 1, 2)]
    return Truth(tuple(sorted(changes, key=lambda c: c.start)), tuple(q for q in quiet if q[1] > q[0]))


def _from_events(doc: TruthFile) -> Truth:
    changes = [
        ExpectedChange(
            e.kind,
            e.t if e.t_start is None else e.t_start,
            e.t,
            e.what or doc.what,
            e.box,
            e.static,
            e.until,
            e.id,
            e.heading,
        )
        for e in doc.events or []
    ]
    return Truth(tuple(sorted(changes, key=lambda c: c.start)), tuple(doc.quiet_s or []))
