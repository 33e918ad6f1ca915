"""`monitor eval-log LOG_DIR TRUTH.json`: how true a change log is, scored against a truth file
(`monitor.readers.truth`). An operator tunes a camera's gate on a clip they labelled; the tests
score the shared footage and the synthetic scene with it.

Matching: each expected change (in time order) takes a change event of the log whose span, onset
to settle (`media_t_onset` .. `media_t_after`), overlaps the change's own span widened by
`tolerance_s`: first one with a region not matched yet whose verdict agrees (an event saying "a
person left and something was left behind" answers a departure and a left-behind object), else
an event not matched at all (direction wrong). A pass-through event ("a car passed through",
`transient`) that matches an arrival also stands for that thing's departure.
Scores:
- found: expected changes with a matching event; direction: of those, the event's verdict
  (appeared = arrived, disappeared = left, passed = an arrival and its departure, or a pass
  whose `heading` agrees) agrees; named: of those with a known `what`, the
  event names it (its region labels or its words);
- static: objects left behind that are found and then persist (no later event says they went
  before their `until`);
- quiet: events wholly inside a quiet stretch (nothing happened there);
- defects: sentences with a repeated clause, a nonsense place ("left the left"), a wrong count
  ("1 cars") or more than three clauses."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from monitor.errors import MonitorError
from monitor.readers.truth import ExpectedChange, Truth, load_truth
from monitor.records import ChangeEvent
from monitor.sinks.logfiles import JSONL_NAME

TOLERANCE_S = 2.0
MAX_CLAUSES = 3
# What a truth's `what` may be called in the log.
NAMES = {
    "person": {"person", "people", "someone", "man", "woman"},
    "vehicle": {"vehicle", "vehicles", "car", "cars", "van", "vans", "truck", "trucks", "bus", "buses", "motorcycle"},
    "bag": {"bag", "bags", "backpack", "suitcase", "handbag"},
}
_CLAUSE_SPLIT = re.compile(r", | and (?=(?:\d+|a|an|one|some|something|the)\b)")
_DEFECTS = [
    ("nonsense place", re.compile(r"\b(?:left|from|through) the (?:left|right)\b(?! side)|\bthe the\b")),
    ("wrong count", re.compile(r"\b1 (?:\w+ )?(?:changes|things|people|cars|vehicles|persons)\b")),
]


@dataclass
class Score:
    expected: int = 0
    found: int = 0
    direction_right: int = 0
    named_expected: int = 0
    named_right: int = 0
    static_expected: int = 0
    static_found: int = 0
    static_persisting: int = 0
    events: int = 0
    quiet_events: int = 0
    defects: int = 0
    missed: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    quiet: list[str] = field(default_factory=list)
    defective: list[str] = field(default_factory=list)

    def rates(self) -> dict[str, float | None]:
        def rate(n: int, d: int) -> float | None:
            return round(n / d, 4) if d else None

        return {
            "found": rate(self.found, self.expected),
            "direction": rate(self.direction_right, self.found),
            "named": rate(self.named_right, self.named_expected),
            "static_persisting": rate(self.static_persisting, self.static_expected),
        }


def direction(event: ChangeEvent) -> str:
    """'arrived', 'left', 'passed' or 'other': the event's main verdict."""
    kinds = {r.change for r in event.regions}
    for kind, verdict in (("appeared", "arrived"), ("disappeared", "left"), ("passed", "passed")):
        if kind in kinds:
            return verdict
    return "other"


def names_it(event: ChangeEvent, what: str) -> bool:
    accepted = NAMES.get(what, {what, what + "s"})
    labels = {r.label for r in event.regions if r.label}
    words = set(re.findall(r"[a-z]+", event.text.lower()))
    return bool((labels | words) & accepted)


def text_defects(text: str) -> list[str]:
    clauses = [c.strip() for c in _CLAUSE_SPLIT.split(text) if c.strip()]
    found = [name for name, rx in _DEFECTS if rx.search(text)]
    if len(set(clauses)) < len(clauses):
        found.append("repeated clause")
    if len(clauses) > MAX_CLAUSES:
        found.append("more than 3 clauses")
    return found


def _overlaps(event: ChangeEvent, change: ExpectedChange, tol: float) -> bool:
    return event.media_t_onset <= change.end + tol and event.media_t_after >= change.start - tol


def _overlap_box(r, box: tuple[float, float, float, float]) -> bool:
    x, y, w, h = box
    return r.x < x + w and x < r.x + r.w and r.y < y + h and y < r.y + r.h


def _covers(event: ChangeEvent, box: tuple[float, float, float, float]) -> bool:
    """The event says something went from `box`."""
    return any(r.change == "disappeared" and _overlap_box(r, box) for r in event.regions)


# The region verdicts that say a change of each kind happened.
# A region that passed through answers the thing's arrival (and its departure: see `passed`).
AGREEING = {"arrived": {"appeared", "left_behind", "passed"}, "left": {"disappeared"}, "passed": {"passed"}}


def score(events: list[ChangeEvent], truth: Truth, tolerance_s: float = TOLERANCE_S) -> Score:
    changes = [e for e in events if e.kind == "change"]
    out = Score(expected=len(truth.changes), events=len(changes))
    taken: dict[int, set[int]] = {}  # event -> its regions already matched (-1: the whole event)
    passed: dict[str, int] = {}  # object id -> the pass-through event that matched its arrival

    def free(i: int, kind: str, box, heading) -> list[int]:
        used = taken.get(i, set())
        if -1 in used:
            return []
        regions = changes[i].regions
        idx = [j for j, r in enumerate(regions) if r.change in AGREEING[kind] and j not in used]
        # where the truth says and the way it says first
        idx.sort(
            key=lambda j: (
                box is not None and not _overlap_box(regions[j], box),
                heading not in (None, regions[j].heading),
            )
        )
        return idx

    for exp in truth.changes:
        label = f"{exp.what or 'something'} {exp.kind} at {exp.start:.1f}-{exp.end:.1f} s"
        if exp.static:
            out.static_expected += 1
        pick, region = (passed.pop(exp.object_id, None), None) if exp.kind == "left" and exp.object_id else (None, None)
        if pick is None:
            near = [i for i, e in enumerate(changes) if _overlaps(e, exp, tolerance_s)]
            agreeing = [(i, f[0]) for i in near if (f := free(i, exp.kind, exp.box, exp.heading))]
            unused = [i for i in near if i not in taken]
            pick, region = agreeing[0] if agreeing else ((unused[0], None) if unused else (None, None))
        if pick is None:
            out.missed.append(label)
            continue
        ev = changes[pick]
        taken.setdefault(pick, set()).add(-1 if region is None else region)
        through = region is not None and ev.regions[region].change == "passed"
        if (ev.transient or through) and exp.kind == "arrived" and exp.object_id:
            passed[exp.object_id] = pick
        out.found += 1
        if region is not None:
            right = exp.heading is None or ev.regions[region].heading == exp.heading
        else:
            right = ev.transient and direction(ev) != "other"
        out.direction_right += right
        named = exp.what is None or names_it(ev, exp.what)
        if exp.what:
            out.named_expected += 1
            out.named_right += named
        if not (right and named):
            out.wrong.append(f"{label}: logged {ev.media_t_after:.1f} s {ev.text!r}")
        if exp.static and right:
            out.static_found += 1
            until = exp.until if exp.until is not None else float("inf")
            later = [e for e in changes if ev.media_t_after < e.media_t_onset < until]
            if exp.box is None or not any(_covers(e, exp.box) for e in later):
                out.static_persisting += 1
    for e in changes:
        if any(lo + tolerance_s < e.media_t_onset and e.media_t_after < hi - tolerance_s for lo, hi in truth.quiet):
            out.quiet_events += 1
            out.quiet.append(f"{e.media_t_onset:.1f}-{e.media_t_after:.1f} s {e.text!r}")
        bad = text_defects(e.text)
        if bad:
            out.defects += 1
            out.defective.append(f"{e.media_t_after:.1f} s {e.text!r}: {', '.join(bad)}")
    return out


def read_log(log_dir: Path, camera: str | None = None) -> list[ChangeEvent]:
    path = log_dir / JSONL_NAME
    if not path.is_file():
        raise MonitorError(f"no change log at {path} (is LOG_DIR right?)")
    events = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                event = ChangeEvent.model_validate_json(line)
            except ValueError:
                raise MonitorError(f"{path} line {n}: not a change event") from None
            if camera is None or event.camera == camera:
                events.append(event)
    cameras = {e.camera for e in events}
    if len(cameras) > 1:
        raise MonitorError(f"{path} holds {len(cameras)} cameras ({', '.join(sorted(cameras))}): give --camera")
    return events


def report(result: Score, as_json: bool) -> str:
    rates = result.rates()
    doc = {**asdict(result), "rates": rates}
    if as_json:
        return json.dumps(doc)

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.0f} %"

    rows = [
        ("arrivals and departures found", f"{result.found}/{result.expected}", pct(rates["found"])),
        ("direction right", f"{result.direction_right}/{result.found}", pct(rates["direction"])),
        ("object named right", f"{result.named_right}/{result.named_expected}", pct(rates["named"])),
        ("left-behind objects found", f"{result.static_found}/{result.static_expected}", ""),
        ("... and persisting", f"{result.static_persisting}/{result.static_expected}", pct(rates["static_persisting"])),
        ("events in quiet stretches", str(result.quiet_events), ""),
        ("sentences with defects", f"{result.defects}/{result.events}", ""),
    ]
    lines = [f"{name:<32} {count:>8} {rate:>6}" for name, count, rate in rows]
    for title, items in (("missed", result.missed), ("wrong", result.wrong), ("quiet", result.quiet)):
        lines += [f"{title}: {item}" for item in items]
    lines += [f"defect: {item}" for item in result.defective]
    return "\n".join(lines)


def eval_log(
    log_dir: Path, truth_path: Path, camera: str | None, tolerance_s: float, as_json: bool, what: str | None = None
) -> int:
    truth = load_truth(truth_path, what)
    print(report(score(read_log(log_dir, camera), truth, tolerance_s), as_json))
    return 0
