"""What the log says, and that every change reaches it: the sentences of the embedded describer
(counts, no repeated clause, no nonsense place, "stayed" only for what settled), a change under
way when the source ends, and the real detector naming what changed on the shared footage."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
from support import DETECTOR, VIDEOS, direction, run_monitor, run_source

from monitor.config import GateConfig
from monitor.gate.change_gate import ChangeGate
from monitor.records import Frame, Region
from pipelines.phrases import MAX_CLAUSES, duration, noun, sentence


def region(x: float, y: float, change: str = "appeared") -> Region:
    return Region(x, y, 0.1, 0.1, change, 0.01)


def clauses(text: str) -> list[str]:
    return [c for c in re.split(r", | and (?=\d|a |an |some|one )", text) if c]


# -- sentences ---------------------------------------------------------------------------------
def test_the_same_thing_at_the_same_place_is_one_clause_with_a_count() -> None:
    text = sentence([region(0.1, 0.4), region(0.12, 0.42)], [None, None], transient=False)
    assert text == "2 things appeared on the left and stayed"
    text = sentence([region(0.1, 0.4), region(0.15, 0.4)], ["person", "person"], transient=False)
    assert text == "2 people arrived on the left"


def test_pieces_of_a_person_who_came_are_not_things_left_behind() -> None:
    """Low contrast splits an arriving person against the background: the pieces inside them are
    theirs. A left-behind thing elsewhere, or inside an unnamed change, stays."""
    from monitor.describe.embedded import without_fragments

    person = Region(0.45, 0.0, 0.24, 0.92, "appeared", 0.2, label="person")
    piece = Region(0.50, 0.19, 0.16, 0.15, "left_behind", 0.02)
    bag = Region(0.10, 0.80, 0.05, 0.06, "left_behind", 0.003, label="bag")
    assert without_fragments((person, piece, bag)) == (person, bag)
    unnamed = Region(0.45, 0.0, 0.24, 0.92, "appeared", 0.2)
    assert without_fragments((unnamed, piece)) == (unnamed, piece)
    gone = Region(0.45, 0.0, 0.24, 0.92, "disappeared", 0.2, label="person")
    assert without_fragments((gone, piece)) == (gone, piece)  # what a person who left put down
    # nobody puts down a person or a car: not a thing left behind, whatever the pixels say
    assert without_fragments((gone, replace(piece, label="person"), replace(bag, label="car"))) == (gone,)


def test_a_busy_scene_is_summarised_in_at_most_three_clauses() -> None:
    regs = [region(x, y) for x in (0.05, 0.45, 0.85) for y in (0.05, 0.45, 0.85)]
    text = sentence(regs, ["car"] * 9, transient=False)
    parts = clauses(text)
    assert len(parts) <= MAX_CLAUSES, text
    assert text.endswith("and 7 more changes elsewhere"), text
    assert len(set(parts)) == len(parts), text
    one_more = sentence(
        [region(0.05, 0.05), region(0.45, 0.45), region(0.85, 0.85), region(0.85, 0.05)], ["car"] * 4, False
    )
    assert one_more.endswith("and 2 more changes elsewhere") and "1 more changes" not in one_more


def test_no_nonsense_places() -> None:
    assert sentence([region(0.05, 0.45, "disappeared")], ["car"], False) == "a car left the left side"
    assert sentence([region(0.85, 0.45, "disappeared")], ["person"], False) == "a person left the right side"


def test_objects_are_left_and_taken() -> None:
    assert sentence([region(0.85, 0.85)], ["bag"], False) == "a bag was left at the lower right"
    assert sentence([region(0.85, 0.85, "disappeared")], ["bag"], False) == "a bag was taken from the lower right"
    assert noun("umbrella") == "an umbrella" and noun("bus", 2) == "2 buses" and noun(None, 3) == "3 things"
    # A thing the log said was left behind, gone: since when, in words.
    taken = Region(0.8, 0.8, 0.1, 0.1, "disappeared", 0.01, stood_s=200.0)
    assert sentence([taken], ["bag"], False) == "the bag left behind 3 minutes earlier was taken from the lower right"
    assert sentence([taken], [None], False).startswith("something left behind 3 minutes earlier was taken")
    spans = (1, 40, 89, 95, 3600, 5400, 2 * 86400)
    words = ["1 second", "40 seconds", "89 seconds", "2 minutes", "60 minutes", "2 hours", "2 days"]
    assert [duration(s) for s in spans] == words


def test_stayed_and_arrived_only_for_what_settled() -> None:
    regs = [region(0.05, 0.45), region(0.45, 0.45), region(0.5, 0.5)]
    text = sentence(regs, ["car", "car", None], transient=False, settled=False)
    assert text == "2 cars were moving in several places and something was moving in the centre"
    assert "stayed" not in text and "arrived" not in text


# -- every change reaches the log ----------------------------------------------------------
def _frames(moving_from: float, seconds: float, fps: float = 2.0):
    """A still grey scene; from `moving_from` s a bright square keeps moving to the right."""
    rng = np.random.default_rng(0)
    base = rng.integers(90, 110, (120, 160, 3), dtype=np.uint8)
    for i in range(int(seconds * fps)):
        t = i / fps
        img = base.copy()
        if t >= moving_from:
            x = int(10 + 12 * (t - moving_from))
            img[40:80, x : x + 30] = 230
        yield Frame("cam", i, t, 1_795_000_000.0 + t, img)


def test_a_change_under_way_when_the_source_ends_is_reported() -> None:
    gate = ChangeGate("cam", GateConfig(), sample_fps=2.0)
    out = [c for f in _frames(moving_from=5.0, seconds=9.0) if (c := gate.detect(f)) is not None]
    assert out == []  # still moving at the end of the clip, and max_wait_s (10 s) not reached
    cand = gate.flush()
    assert cand is not None and not cand.settled and cand.regions, cand
    assert cand.after.media_time == pytest.approx(8.5) and cand.onset_media_time >= 5.0
    assert gate.flush() is None  # reported once


def test_a_still_scene_flushes_nothing() -> None:
    gate = ChangeGate("cam", GateConfig(), sample_fps=2.0)
    assert [gate.detect(f) for f in _frames(moving_from=99.0, seconds=6.0)] == [None] * 12
    assert gate.flush() is None


# -- the real detector on the shared footage, through the whole data path ------------------
DETECTOR_ON = {"detector": {"model": str(DETECTOR)}}


def test_room_every_person_is_a_person(tmp_path) -> None:
    events = run_source(VIDEOS / "one-by-one-person-detection.mp4", tmp_path, "room", describer=DETECTOR_ON)
    comings = [e for e in events if direction(e) == "arrived"]
    goings = [e for e in events if direction(e) == "left"]
    assert len(comings) == 6 and len(goings) == 6, [e["text"] for e in events]
    for e in comings + goings:
        assert e["text"].startswith("a person "), e["text"]
        assert [r["label"] for r in e["regions"]] == ["person"] * len(e["regions"]), e["regions"]


def test_cars_seen_from_above_are_never_people_and_pass_along_the_aisle(tmp_path) -> None:
    """The aisle runs up and down the picture: every car followed through it went one of those
    two ways; the first one drives up (from the bottom of the view to the top)."""
    events = run_source(VIDEOS / "car-detection.mp4", tmp_path, "aisle", describer=DETECTOR_ON)
    assert events, "cars drove through and nothing was logged"
    for e in events:
        assert "person" not in e["text"] and "people" not in e["text"], e["text"]
        assert all(r["label"] != "person" for r in e["regions"]), e["regions"]
        ways = {r["heading"] for r in e["regions"] if r["change"] == "passed"}
        assert ways and ways <= {"top to bottom", "bottom to top"}, e
        assert all(f"through from {way}" in e["text"] for way in ways), e["text"]
    assert {r["heading"] for r in events[0]["regions"]} == {"bottom to top"}, events[0]
    proc = run_monitor("eval-log", tmp_path, VIDEOS / "car-detection.truth.json", "--json", timeout=60)
    doc = json.loads(proc.stdout)
    assert doc["found"] == doc["expected"] == doc["direction_right"] == 4 and doc["quiet_events"] == 0, doc


def test_passing_traffic_never_stayed(tmp_path) -> None:
    events = run_source(VIDEOS / "motorway-cctv.avi", tmp_path, "motorway", describer=DETECTOR_ON)
    assert events
    for e in events:
        parts = clauses(e["text"])
        assert "stayed" not in e["text"], e["text"]
        assert len(parts) <= MAX_CLAUSES and len(set(parts)) == len(parts), e["text"]
    assert any(re.search(r"\b(car|cars|truck|trucks|bus|buses)\b", e["text"]) for e in events), events
    # traffic is followed through the view: named, with its way, first in the sentence
    assert all(re.match(r"(an? |\d+ )(car|truck|bus|vehicle)s? drove through from ", e["text"]) for e in events), events


def test_without_a_detector_cars_seen_from_above_are_not_people(tmp_path) -> None:
    """The embedded describer without a detector says less: "something" unless a person is sure."""
    events = run_source(VIDEOS / "car-detection.mp4", tmp_path, "aisle")
    assert events
    assert all("person" not in e["text"] for e in events), [e["text"] for e in events]
