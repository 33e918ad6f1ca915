"""Plain-language pieces: where a region is ("at the lower left") and what happened to it
("a vehicle arrived on the right")."""

from __future__ import annotations

from monitor.records import Region


def place_name(region: Region) -> str:
    """'at the lower left', 'in the centre', ... from the region's centre on a 3x3 grid."""
    cx, cy = region.centre
    col = 0 if cx < 1 / 3 else (1 if cx < 2 / 3 else 2)
    row = 0 if cy < 1 / 3 else (1 if cy < 2 / 3 else 2)
    names = [
        ["at the top left", "at the top", "at the top right"],
        ["on the left", "in the centre", "on the right"],
        ["at the lower left", "at the bottom", "at the lower right"],
    ]
    return names[row][col]


_VERBS = {
    # (change, is a thing that moves by itself) -> verb phrase
    ("appeared", True): "arrived {place}",
    ("appeared", False): "appeared {place} and stayed",
    ("disappeared", True): "left {where}",
    ("disappeared", False): "was removed from {where}",
    ("moved", True): "moved {place}",
    ("moved", False): "was moved {place}",
    ("changed", True): "changed {place}",
    ("changed", False): "changed {place}",
}


def _where(place: str) -> str:
    # "at the lower left" -> "the lower left"; "in the centre" -> "the centre"
    return place.split(" ", 1)[1]


def phrase(region: Region, label: str | None, transient: bool) -> str:
    noun = {"person": "a person", "vehicle": "a vehicle"}.get(label or "", "something")
    place = place_name(region)
    if transient:
        return f"{noun} passed through {_where(place)}" if label else f"something moved briefly {place}"
    verb = _VERBS[(region.change, label in ("person", "vehicle"))]
    return f"{noun} {verb.format(place=place, where=_where(place))}"
