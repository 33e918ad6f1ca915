"""Tracks through a change (`monitor.gate.tracks`): the changed areas of a change's frames,
linked, and which of them passed through and which way. Boxes are fed as the gate feeds them
(working-image pixels, one list per sampled frame)."""

from __future__ import annotations

import numpy as np

from monitor.gate.tracks import ChangeTracker, passes
from monitor.records import Frame, Region

W, H = 256, 144


def _feed(frames: list[list[tuple[tuple[int, int, int, int], float]]], fps: float = 2.0) -> ChangeTracker:
    tracker = ChangeTracker(fps, (W, H))
    pixels = np.zeros((H, W, 3), np.uint8)
    for i, boxes in enumerate(frames):
        frame = Frame("cam", i, i / fps, 1_800_000_000.0 + i / fps, pixels)
        tracker.update(frame, [b for b, _ in boxes], [look for _, look in boxes])
    return tracker


def _car(x: float, y: int, w: int = 32, h: int = 14) -> tuple[int, int, int, int]:
    """A car's box at x, cut where it is out of view."""
    x0, x1 = max(0, int(x)), min(W, int(x) + w)
    return (x0, y, x1 - x0, h)


def test_a_car_that_moves_its_own_length_per_frame_is_one_pass_left_to_right() -> None:
    # 32 px long, 32 px per frame: consecutive boxes do not even overlap
    frames = [[(_car(-24 + 32 * i, 60), 200.0)] for i in range(9)] + [[]]
    tracker = _feed(frames)
    tracks = tracker.tracks()
    assert len(tracks) == 1 and len(tracks[0].sightings) == 9
    (track, region), *more = passes(tracks, [])
    assert not more and region.change == "passed" and region.heading == "left to right"
    assert region.track == track.track_id and track.views
    assert 0 < region.x < 1 - region.w, region  # named from a view in full sight, not one cut by the edge


def test_two_cars_in_opposite_lanes_are_two_passes_with_their_own_ways() -> None:
    frames = [[(_car(-24 + 30 * i, 40), 220.0), (_car(W - 8 - 30 * i, 90), 60.0)] for i in range(10)] + [[]]
    got = sorted(r.heading for _, r in passes(_feed(frames).tracks(), []))
    assert got == ["left to right", "right to left"]


def test_what_stays_or_stands_still_did_not_pass() -> None:
    # a ghost where something stood (still), and a car that drives in and is still there at the end
    frames = [[((100, 100, 30, 20), 90.0), (_car(-24 + 20 * min(i, 6), 30), 200.0)] for i in range(10)]
    tracker = _feed(frames)
    assert len(tracker.tracks()) == 2
    assert passes(tracker.tracks(), []) == []


def test_a_thing_that_left_from_where_it_stood_is_a_departure_not_a_pass() -> None:
    frames = [[(_car(150 + 25 * i, 60), 200.0)] for i in range(5)] + [[]]
    left = Region(150 / W, 60 / H, 32 / W, 14 / H, "disappeared", 0.01)
    assert passes(_feed(frames).tracks(), [left]) == []
    assert len(passes(_feed(frames).tracks(), [])) == 1


def test_unrelated_changes_of_a_time_lapse_are_not_followed() -> None:
    """Other cars in other places on every image: chance alignments must not become passes."""
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(30):
        n = int(rng.integers(3, 7))
        frames.append(
            [
                ((int(rng.integers(0, W - 32)), int(rng.integers(0, H - 14)), 32, 14), float(rng.uniform(30, 230)))
                for _ in range(n)
            ]
        )
    assert passes(_feed(frames, fps=1.0).tracks(), []) == []


def test_something_that_looks_different_is_not_the_same_track() -> None:
    # a dark car leaves the spot as a white one takes its place one frame later, moving on
    frames = [[(_car(20 + 12 * i, 60), 40.0 if i < 3 else 230.0)] for i in range(6)]
    assert len(_feed(frames).tracks()) == 2


def test_kept_frames_are_bounded_and_spread_over_the_change() -> None:
    frames = [[(_car(-24 + 4 * i, 60), 200.0)] for i in range(80)] + [[]]
    tracker = _feed(frames)
    (track,) = tracker.tracks()
    seqs = sorted(f.seq for _, f in track.views)
    assert 4 <= len(seqs) <= 8 and seqs[-1] - seqs[0] >= 40, seqs
