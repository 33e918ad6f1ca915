"""Scripted cases of what the change log must get right, each scored with `monitor eval-log`:
a person who puts a bag down and walks away (the bag is logged as left behind and then persists,
until someone takes it: "... left behind 24 seconds earlier was taken"),
a person in view when the camera starts who walks out (a departure, not an arrival), a car
parked at the start that drives off, a time-lapse that never settles, and bursts of
through-traffic. The frames are drawn by `monitor.scene.cases` (also scored by `monitor bench
changelog`) or cut from the shared room clip, written as an image sequence and read back
through PyAV like any camera."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import av
import cv2
import numpy as np
import pytest
from support import DETECTOR, VIDEOS, direction, monitor_env, read_events, run_monitor, run_source

from monitor.scene.cases import (
    BURSTS,
    FPS,
    TAKEN_AT,
    H,
    W,
    write_bag_left_behind,
    write_bag_taken,
    write_busy_road,
    write_parked_at_start,
)
from monitor.scene.drawing import CAR_COLORS, draw_background, draw_vehicle, gaussian_noise


def test_a_bag_put_down_by_someone_who_walks_away_is_left_behind_and_stays(tmp_path) -> None:
    truth = write_bag_left_behind(tmp_path / "frames")
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    events = run_source(tmp_path / "frames", tmp_path / "logs", "hall", image_fps=FPS)
    departure = [e for e in events if 19 <= e["media_t_after"] <= 28 and direction(e) == "left"]
    assert len(departure) == 1, [(e["media_t_after"], e["text"]) for e in events]
    kinds = [r["change"] for r in departure[0]["regions"]]
    assert "disappeared" in kinds and "left_behind" in kinds, departure[0]
    assert "left behind" in departure[0]["text"], departure[0]["text"]
    bag = next(r for r in departure[0]["regions"] if r["change"] == "left_behind")
    bx, by, bw, bh = truth["events"][2]["box"]
    assert bag["x"] < bx + bw and bx < bag["x"] + bag["w"] and bag["y"] < by + bh and by < bag["y"] + bag["h"], bag
    proc = run_monitor("eval-log", tmp_path / "logs", tmp_path / "truth.json", "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["found"], doc["direction_right"]) == (3, 3), doc
    assert (doc["static_found"], doc["static_persisting"]) == (1, 1), doc
    assert doc["quiet_events"] == 0 and doc["defects"] == 0, doc


@pytest.mark.parametrize("detector", [False, True], ids=["embedded", "detector"])
def test_the_bag_left_behind_is_taken_later_and_the_log_says_since_when(tmp_path, detector: bool) -> None:
    truth = write_bag_taken(tmp_path / "frames")
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    describer = {"detector": {"model": str(DETECTOR)}} if detector else None
    events = run_source(tmp_path / "frames", tmp_path / "logs", "hall", describer=describer, image_fps=FPS)
    left = next(e for e in events if any(r["change"] == "left_behind" for r in e["regions"]))
    taken = [e for e in events if any(r["stood_s"] is not None for r in e["regions"])]
    assert len(taken) == 1 and taken[0]["media_t_onset"] >= TAKEN_AT - 2, [
        (e["media_t_after"], e["text"]) for e in events
    ]
    (gone,) = [r for r in taken[0]["regions"] if r["stood_s"] is not None]
    # It stood from the event that said it was left behind to the one that says it was taken.
    assert gone["change"] == "disappeared" and gone["label"] != "person"
    assert gone["stood_s"] == pytest.approx(taken[0]["media_t_after"] - left["media_t_after"], abs=0.6)
    assert re.search(
        rf"left behind {round(gone['stood_s'])} seconds earlier was taken from the bottom", taken[0]["text"]
    )
    between = [e for e in events if left["media_t_after"] < e["media_t_onset"] < taken[0]["media_t_onset"]]
    assert not any("taken" in e["text"] or "removed" in e["text"] for e in between)  # it persisted until then
    proc = run_monitor("eval-log", tmp_path / "logs", tmp_path / "truth.json", "--json", timeout=60)
    doc = json.loads(proc.stdout)
    assert (doc["found"], doc["direction_right"], doc["expected"]) == (6, 6, 6), doc
    assert (doc["static_found"], doc["static_persisting"]) == (1, 1), doc
    assert doc["quiet_events"] == 0 and doc["defects"] == 0, doc


def test_a_person_in_view_at_start_who_walks_out_left(tmp_path) -> None:
    """The shared room clip from 30 s: someone is in view in the first frame; they leave at
    45.1 s (15.1 s into the cut). That is a departure, and nobody arrived at the start."""
    folder = tmp_path / "frames"
    folder.mkdir()
    with av.open(str(VIDEOS / "one-by-one-person-detection.mp4")) as container:
        n = 0
        for i, frame in enumerate(container.decode(video=0)):
            if i >= 620:
                break
            if i >= 300 and i % 5 == 0:  # 10 fps -> 2 fps from 30 s
                cv2.imwrite(str(folder / f"in{n:06d}.jpg"), frame.to_ndarray(format="bgr24"))
                n += 1
    events = run_source(folder, tmp_path / "logs", "room", image_fps=FPS)
    assert events, "the person's departure was not logged"
    first = events[0]
    assert direction(first) == "left" and abs(first["media_t_after"] - 15.1) < 3.5, first
    assert first["text"].startswith(("a person left", "something was removed")), first["text"]
    assert "stayed" not in first["text"], first["text"]


def test_a_time_lapse_that_never_settles_still_yields_events(tmp_path) -> None:
    """Every image of a time-lapse shows other cars in other places: the scene never settles.
    The log still gets an event every `max_wait_s` (10 s) or so, each saying what was moving,
    never that something arrived or stayed."""
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(1)
    scene = draw_background(rng, W, H)
    for i in range(60):  # 60 images at 1 image/s
        img = scene.copy()
        for _ in range(int(rng.integers(3, 7))):
            colour = CAR_COLORS[int(rng.integers(len(CAR_COLORS)))]
            draw_vehicle(img, float(rng.uniform(60, 580)), float(rng.uniform(100, 320)), 80, 36, colour)
        noisy = np.clip(img.astype(np.int16) + gaussian_noise(rng, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"in{i:06d}.jpg"), noisy)
    events = run_source(folder, tmp_path / "logs", "lapse", image_fps=1)
    assert len(events) >= 4, [(e["media_t_after"], e["text"]) for e in events]  # ~ one per 10-13 s of 60 s
    for e in events:
        assert not e["settled"] and not e["transient"], e
        assert not re.search(r"\b(arrived|stayed)\b|\bleft (the|from)\b", e["text"]), e["text"]
        # other cars in other places on every image: nothing was followed through
        assert "through" not in e["text"] and all(r["change"] != "passed" for r in e["regions"]), e["text"]


@pytest.mark.parametrize("detector", [False, True], ids=["shape", "detector"])
def test_busy_through_traffic_is_told_by_its_way(tmp_path, detector: bool) -> None:
    """Every car that drove through is one "drove through from ... to ..." clause with the right
    way, each burst one event of at most three clauses, the parked car an arrival, nothing
    logged while the road was empty (scored by eval-log)."""
    truth = write_busy_road(tmp_path / "frames")
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    describer = {"detector": {"model": str(DETECTOR)}} if detector else None
    events = run_source(tmp_path / "frames", tmp_path / "logs", "road", image_fps=FPS, describer=describer)
    said = [(e["media_t_after"], e["text"]) for e in events]
    passes = [r for e in events for r in e["regions"] if r["change"] == "passed"]
    assert len(passes) == sum(len(b) for b in BURSTS), said
    assert all(r["label"] == "vehicle" for r in passes), passes
    assert all("drove through from" in e["text"] for e in events[: len(BURSTS)]), said
    assert "passed" not in {r["change"] for r in events[-1]["regions"]} and direction(events[-1]) == "arrived", said
    proc = run_monitor("eval-log", tmp_path / "logs", tmp_path / "truth.json", "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["found"] == doc["expected"] == len(truth["events"]), doc
    assert doc["direction_right"] == doc["found"] and doc["named_right"] == doc["named_expected"], doc
    assert doc["quiet_events"] == 0 and doc["defects"] == 0, doc


def test_a_car_parked_when_the_camera_starts_leaves_and_its_bay_is_then_known_empty(tmp_path) -> None:
    """The empty-scene background begins as the first frame, car included; the car's track as
    it drives off says it left (not "something appeared"), and the bay it leaves is learned as
    empty, so the next car parking there arrived."""
    truth = write_parked_at_start(tmp_path / "frames")
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    events = run_source(tmp_path / "frames", tmp_path / "logs", "bay", image_fps=FPS)
    said = [(e["media_t_after"], e["text"]) for e in events]
    assert [direction(e) for e in events] == ["left", "arrived"], said
    assert all("through" not in e["text"] for e in events), said
    proc = run_monitor("eval-log", tmp_path / "logs", tmp_path / "truth.json", "--json", timeout=60)
    doc = json.loads(proc.stdout)
    assert (doc["found"], doc["direction_right"], doc["named_right"]) == (2, 2, 2), doc
    assert doc["quiet_events"] == 0 and doc["defects"] == 0, doc


def test_a_change_under_way_when_the_file_ends_reaches_the_log(tmp_path) -> None:
    """The busy road cut at 33 s, while the third burst's cars are on the road: that change is
    reported from the last frame, unsettled, saying what was moving (not that it arrived)."""
    write_busy_road(tmp_path / "frames", seconds=33.0)
    events = run_source(tmp_path / "frames", tmp_path / "logs", "road", image_fps=FPS)
    last = events[-1]
    assert last["media_t_after"] == pytest.approx(32.5) and last["media_t_onset"] >= 29.5, last
    assert not last["settled"] and "moving" in last["text"], last["text"]
    assert not re.search(r"\b(arrived|stayed|left)\b", last["text"]), last["text"]


def test_sigterm_while_a_car_drives_off_still_logs_that_change(tmp_path) -> None:
    """The real daemon, paced in real time, stopped by SIGTERM while the parked car drives off:
    the change under way is reported (unsettled), nothing is lost."""
    write_parked_at_start(tmp_path / "frames", seconds=20.0)
    logs = tmp_path / "logs"
    args = ["run", "--source", tmp_path / "frames", "--image-fps", FPS, "--realtime", "--log-dir", logs, "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", *map(str, args)],
        env=monitor_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stderr:  # the source is open: media time runs with the clock from here
            if "source_opened" in line:
                break
        time.sleep(11.8)  # the car moves from 10 s and is out of view by 12.6 s
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    events = read_events(logs)
    assert len(events) == 1, events
    (event,) = events
    assert not event["settled"] and 10.0 <= event["media_t_onset"] <= event["media_t_after"] <= 13.0, event
    assert "moving" in event["text"] and "arrived" not in event["text"], event["text"]
