"""The gate and the whole data path on real footage from ../shared/data/videos."""

from __future__ import annotations

import json

import pytest
from support import VIDEOS, direction, match_events, run_source


@pytest.fixture(scope="module")
def room_events(tmp_path_factory):
    return run_source(VIDEOS / "one-by-one-person-detection.mp4", tmp_path_factory.mktemp("room"), "room")


def _truth(name: str) -> dict:
    return json.loads((VIDEOS / f"{name}.truth.json").read_text())


def test_room_every_arrival_and_departure_within_2s(room_events):
    intervals = _truth("one-by-one-person-detection")["present_intervals_s"]
    expected = [("arrived", start, None) for start, _ in intervals] + [("left", None, end) for _, end in intervals]
    matched, _ = match_events(expected, room_events)
    missing = [e for e, m in zip(expected, matched) if m is None]
    got = [(e["media_t_onset"], e["media_t_after"], e["text"]) for e in room_events]
    assert not missing, f"missing {missing}; got {got}"


def test_room_nothing_logged_while_empty(room_events):
    intervals = _truth("one-by-one-person-detection")["present_intervals_s"]
    gaps = [(a[1], b[0]) for a, b in zip(intervals, intervals[1:])]
    empty = [(0.0, intervals[0][0]), *gaps, (intervals[-1][1], 1e9)]
    for ev in room_events:
        for lo, hi in empty:
            # A change that starts and ends inside an empty spell (2 s tolerance at the edges).
            assert not (lo + 2 < ev["media_t_onset"] and ev["media_t_after"] < hi - 2), ev


def test_room_people_are_named(room_events):
    people = [e for e in room_events if direction(e) in ("arrived", "left")]
    # people come and go in this clip: with no arrival (or no departure) there is nothing to name
    assert any(direction(e) == "arrived" for e in people), room_events
    assert any(direction(e) == "left" for e in people), room_events
    assert sum("a person" in e["text"] for e in people) >= 0.8 * len(people)


def test_car_park_exposure_swings_alone_log_nothing(tmp_path):
    events = run_source(VIDEOS / "car-detection.mp4", tmp_path, "aisle")
    present = _truth("car-detection")["present_intervals_s"]
    assert events, "cars drove through and nothing was logged"
    for ev in events:
        assert any(lo - 2 <= ev["media_t_onset"] <= hi + 2 for lo, hi in present), ev


def test_motorway_cooldown_bounds_event_rate(tmp_path):
    cooldown = 6.0
    events = run_source(VIDEOS / "motorway-cctv.avi", tmp_path, "motorway", gate={"cooldown_s": cooldown})
    assert len(events) >= 2  # constant traffic is still reported
    times = [e["media_t_after"] for e in events]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= cooldown - 0.1 for g in gaps), gaps
    assert len(events) <= 30 / cooldown + 1
