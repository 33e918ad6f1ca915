"""Plain-language pieces: where a region is ("at the lower left") and what happened to it
("a vehicle arrived on the right"). The embedded describer's sentences and the VLM's prompt
facts are built here, at run time and in fine-tuning alike (`facts_text`), so a model is
trained on the very words it is shown in the daemon."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Region(Protocol):
    """A changed area as the daemon logs it (normalised 0-1, x, y = top-left), with its verdict."""

    x: float
    y: float
    w: float
    h: float
    change: str  # appeared, disappeared, moved, left_behind, passed, changed
    heading: str | None  # passed: "left to right", ...
    stood_s: float | None  # disappeared: a thing left behind that was taken, after this long


def place_name(region: Region) -> str:
    """'at the lower left', 'in the centre', ... from the region's centre on a 3x3 grid."""
    cx, cy = region.x + region.w / 2, region.y + region.h / 2
    col = 0 if cx < 1 / 3 else (1 if cx < 2 / 3 else 2)
    row = 0 if cy < 1 / 3 else (1 if cy < 2 / 3 else 2)
    names = [
        ["at the top left", "at the top", "at the top right"],
        ["on the left", "in the centre", "on the right"],
        ["at the lower left", "at the bottom", "at the lower right"],
    ]
    return names[row][col]


# Things that come and go by themselves: they "arrive" and "leave"; anything else "was left"
# (a known object, put down) or "appeared and stayed" (unknown), "was taken" or "was removed".
MOVES_BY_ITSELF = frozenset(
    {"person", "vehicle", "car", "bus", "truck", "motorcycle", "bicycle", "dog", "cat", "bird", "horse"}
)
_PLURALS = {"person": "people", "bus": "buses"}
MAX_CLAUSES = 3  # a busy scene is summarised, never listed

# (change, kind) -> (singular, plural) verb phrase; kind: "self" moves by itself, "object" is
# a known thing that is carried, "unknown" is not known.
_VERBS: dict[tuple[str, str], tuple[str, str]] = {
    ("appeared", "self"): ("arrived {place}", "arrived {place}"),
    ("appeared", "object"): ("was left {place}", "were left {place}"),
    ("appeared", "unknown"): ("appeared {place} and stayed", "appeared {place} and stayed"),
    ("disappeared", "self"): ("left {where}", "left {where}"),
    ("disappeared", "object"): ("was taken from {where}", "were taken from {where}"),
    ("disappeared", "unknown"): ("was removed from {where}", "were removed from {where}"),
    ("moved", "self"): ("moved {place}", "moved {place}"),
    ("moved", "object"): ("was moved {place}", "were moved {place}"),
    ("moved", "unknown"): ("was moved {place}", "were moved {place}"),
    ("left_behind", "self"): ("was left behind {place}", "were left behind {place}"),
    ("left_behind", "object"): ("was left behind {place}", "were left behind {place}"),
    ("left_behind", "unknown"): ("was left behind {place}", "were left behind {place}"),
    ("changed", "self"): ("changed {place}", "changed {place}"),
    ("changed", "object"): ("changed {place}", "changed {place}"),
    ("changed", "unknown"): ("changed {place}", "changed {place}"),
}


def _where(place: str) -> str:
    # "at the lower left" -> "the lower left"; "on the left" -> "the left side" (never "left the left")
    where = place.split(" ", 1)[1]
    return f"{where} side" if where in ("the left", "the right") else where


def noun(label: str | None, count: int = 1) -> str:
    """'a person', 'an umbrella', '3 people', 'something', '2 things'."""
    if label is None:
        return "something" if count == 1 else f"{count} things"
    if count == 1:
        return f"{'an' if label[0] in 'aeiou' else 'a'} {label}"
    return f"{count} {_PLURALS.get(label, label + 's')}"


def _kind(label: str | None) -> str:
    return "unknown" if label is None else ("self" if label in MOVES_BY_ITSELF else "object")


# A change reported before it settled (constant traffic, the end of a file): what moved is
# known, not whether it stayed or went: never "arrived", "stayed" or "left".
_UNSETTLED = {
    "self": ("was moving {place}", "were moving {place}"),
    "object": ("was moved {place}", "were moved {place}"),
    "unknown": ("was moving {place}", "were moving {place}"),
}
SEVERAL_PLACES = "in several places"


# How what passed through went: by kind of thing, else "passed through".
_THROUGH = {
    "person": "walked through",
    "bicycle": "rode through",
    "motorcycle": "rode through",
    "horse": "rode through",
}
_DRIVES = frozenset({"vehicle", "car", "bus", "truck", "van"})


def through(label: str | None) -> str:
    return "drove through" if label in _DRIVES else _THROUGH.get(label or "", "passed through")


def duration(seconds: float) -> str:
    """'40 seconds', '1 minute', '3 minutes', '2 hours', '3 days', rounded."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 1.5 * size:
            n = round(seconds / size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    n = max(1, round(seconds))
    return f"{n} second{'s' if n != 1 else ''}"


def phrase(
    region: Region, label: str | None, transient: bool, count: int = 1, settled: bool = True, place: str | None = None
) -> str:
    """One clause: 'a vehicle arrived on the right', '2 people passed through the centre',
    'a car drove through from left to right'."""
    subject = noun(label, count)
    if region.change == "passed" and region.heading:
        return f"{subject} {through(label)} from {region.heading}"
    place = place or place_name(region)
    if region.change == "disappeared" and region.stood_s is not None and count == 1 and settled and not transient:
        thing = f"the {label}" if label else "something"  # the one the log said was left behind
        return f"{thing} left behind {duration(region.stood_s)} earlier was taken from {_where(place)}"
    if transient:
        return f"{subject} passed through {_where(place)}" if label else f"{subject} moved briefly {place}"
    verbs = _VERBS[(region.change, _kind(label))] if settled else _UNSETTLED[_kind(label)]
    singular, plural = verbs
    verb = singular if count == 1 else plural
    return f"{subject} {verb.format(place=place, where=_where(place))}"


def sentence(regions: Sequence[Region], labels: Sequence[str | None], transient: bool, settled: bool = True) -> str:
    """The regions of one change as at most MAX_CLAUSES clauses: the same thing happening at the
    same place is one clause with a count ('2 people arrived on the left'), and what does not fit
    is counted ('and 4 more changes elsewhere')."""
    groups: dict[tuple, list[Region]] = {}
    ongoing = not settled and not transient  # what moved, by kind, wherever it was
    for region, label in zip(regions, labels):
        if region.change == "passed":  # one clause per kind of thing and way, wherever it was
            key = (label, region.change, region.heading)
        else:
            key = (label,) if ongoing else (label, region.change, place_name(region))
        groups.setdefault(key, []).append(region)
    # Most telling first: what passed through (a whole story), named things, the most of them.
    ranked = sorted(groups.items(), key=lambda g: (g[1][0].change != "passed", g[0][0] is None, -len(g[1])))
    clauses = []
    for key, rs in ranked:
        places = {place_name(r) for r in rs}
        place = places.pop() if len(places) == 1 else SEVERAL_PLACES
        clauses.append(phrase(rs[0], key[0], transient, len(rs), settled, place))
    if len(clauses) > MAX_CLAUSES:
        shown = clauses[: MAX_CLAUSES - 1]
        rest = sum(len(rs) for _, rs in ranked[MAX_CLAUSES - 1 :])
        clauses = [*shown, f"{rest} more changes elsewhere"]  # two groups or more: never "1 more"
    if not clauses:
        return "something changed"
    return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]


def facts_text(regions: Sequence, transient: bool = False, settled: bool = True) -> str:
    """The prompt's region text: what the embedded describer says of these regions (each with
    its `label`, verdict and place): 'seen: a person arrived on the left'; '' without any."""
    if not regions:
        return ""
    return f"seen: {sentence(regions, [r.label for r in regions], transient, settled)}"
