"""Scripted cases of what the change log must get right, each a clip (JPEGs at `FPS`, read back
through PyAV as an image-sequence camera) and its truth in `monitor eval-log`'s events shape:
a person who puts a bag down and walks away (and someone who later takes it), bursts of
through-traffic both ways with a car that parks, and a car parked when the camera starts that
drives off. `monitor bench changelog`
scores them; the tests hold them to the goals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from monitor.scene.drawing import CAR_COLORS, draw_background, draw_person, draw_vehicle, gaussian_noise, rounded_rect

FPS = 2
W, H = 640, 360
BAG = (400, 290, 30, 20)  # centre x, y and size (px) of the bag put down between the feet
PERSON_COLOURS = ((90, 130, 190), (170, 80, 30), (50, 40, 30))
TAKER_COLOURS = ((80, 110, 160), (40, 150, 60), (90, 60, 40))


def _person_x(t: float) -> float | None:
    """Walks in from the right (6-9 s), stands (9-20 s), walks out to the left (20-24 s)."""
    if 6 <= t < 9:
        return W + 15 - (W + 15 - 400) * (t - 6) / 3
    if 9 <= t < 20:
        return 400.0
    if 20 <= t < 24:
        return 400 - 420 * (t - 20) / 4
    return None


def _taker_x(t: float) -> float | None:
    """Walks in from the left (34-38 s), stands at the bag (38-44 s), picks it up (41 s) and
    walks out to the right with it (44-48 s)."""
    if 34 <= t < 38:
        return -15 + 415 * (t - 34) / 4
    if 38 <= t < 44:
        return 400.0
    if 44 <= t < 48:
        return 400 + (W + 15 - 400) * (t - 44) / 4
    return None


TAKEN_AT = 41.0


def write_bag_left_behind(folder: Path, seconds: float = 36.0, taken: bool = False) -> dict:
    """A person walks in, stands, puts a bag down half hidden by their legs, and walks out;
    with `taken`, someone else comes for it at 34 s and carries it off."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    scene = draw_background(rng, W, H)
    cx, cy, bw, bh = BAG
    for i in range(int(seconds * FPS)):
        t = i / FPS
        img = scene.copy()
        if t >= 16 and not (taken and t >= TAKEN_AT):  # put down while standing, half hidden by the legs
            rounded_rect(img, cx, cy, bw, bh, 4, (30, 30, 140))
        x = _person_x(t)
        if x is not None:
            walking = t < 9 or t >= 20
            draw_person(img, x, 250, 30, 100, PERSON_COLOURS, step=float(np.sin(6 * t)) if walking else 0.0)
        x = _taker_x(t) if taken else None
        if x is not None:
            draw_person(img, x, 250, 30, 100, TAKER_COLOURS, step=float(np.sin(6 * t)) if t < 38 or t >= 44 else 0.0)
            if t >= TAKEN_AT:  # carried at the hand
                rounded_rect(img, x + 20, 262, bw * 0.8, bh * 0.8, 4, (30, 30, 140))
        noisy = np.clip(img.astype(np.int16) + gaussian_noise(rng, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"in{i:06d}.jpg"), noisy, [cv2.IMWRITE_JPEG_QUALITY, 92])
    bag_box = [(cx - bw / 2) / W, (cy - bh / 2) / H, bw / W, bh / H]
    events = [
        {"id": "person-1", "what": "person", "kind": "arrived", "t_start": 6.0, "t": 9.0},
        {"id": "person-1", "what": "person", "kind": "left", "t_start": 20.0, "t": 24.0},
        # seen once its owner has gone; it must stay in the log's world until it is taken
        {"id": "bag-1", "kind": "arrived", "t_start": 20.0, "t": 24.0, "box": bag_box, "static": True},
    ]
    if not taken:
        return {"events": events, "quiet_s": [[0.0, 6.0], [26.0, seconds]], "seconds": seconds}
    events[-1]["until"] = TAKEN_AT
    events += [
        {"id": "person-2", "what": "person", "kind": "arrived", "t_start": 34.0, "t": 38.0},
        {"id": "bag-1", "kind": "left", "t_start": TAKEN_AT, "t": 48.0, "box": bag_box},
        {"id": "person-2", "what": "person", "kind": "left", "t_start": 44.0, "t": 48.0},
    ]
    return {"events": events, "quiet_s": [[0.0, 6.0], [26.0, 34.0], [50.0, seconds]], "seconds": seconds}


def write_bag_taken(folder: Path, seconds: float = 58.0) -> dict:
    return write_bag_left_behind(folder, seconds, taken=True)


# Bursts of traffic on a two-lane road, seen from above: (entry time s, lane, colour), the upper
# lane driving left to right, the lower right to left; each car takes 4 s to cross. Between the
# bursts the road is empty. In the last burst a car drives in and parks on the verge.
LANES = {"upper": (175, 1), "lower": (245, -1)}  # centre y (px), facing
BURSTS = [
    [(4.0, "upper", 0), (5.0, "lower", 2)],
    [(16.0, "upper", 4), (16.5, "lower", 1), (17.5, "upper", 5)],
    [(30.0, "lower", 0), (31.0, "lower", 5), (31.5, "upper", 2)],
]
PARK = (44.0, 300.0, 320.0)  # enters at 44 s from the left, parks at x=300, y=320 at 46.5 s
CROSS_S, CAR_L, CAR_B = 4.0, 80, 36


def _car_x(t: float, t0: float, facing: int) -> float | None:
    u = (t - t0) / CROSS_S
    if not 0 <= u <= 1:
        return None
    x = -CAR_L + u * (W + 2 * CAR_L)
    return x if facing > 0 else W - x


def write_busy_road(folder: Path, seconds: float = 56.0) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(9)
    scene = draw_background(rng, W, H)
    cars = [car for burst in BURSTS for car in burst]
    for i in range(int(seconds * FPS)):
        t = i / FPS
        img = scene.copy()
        for t0, lane, colour in cars:
            y, facing = LANES[lane]
            x = _car_x(t, t0, facing)
            if x is not None:
                draw_vehicle(img, x, y, CAR_L, CAR_B, CAR_COLORS[colour], facing)
        t0, px, py = PARK
        if t >= t0:
            x = min(px, -CAR_L + (t - t0) * (px + CAR_L) / 2.5)
            draw_vehicle(img, x, py, CAR_L, CAR_B, CAR_COLORS[3])
        noisy = np.clip(img.astype(np.int16) + gaussian_noise(rng, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"in{i:06d}.jpg"), noisy, [cv2.IMWRITE_JPEG_QUALITY, 92])
    heading = {1: "left to right", -1: "right to left"}
    events = [
        {
            "id": f"car-{n}",
            "what": "vehicle",
            "kind": "passed",
            "heading": heading[LANES[lane][1]],
            "t_start": t0,
            "t": t0 + CROSS_S,
        }
        for n, (t0, lane, _) in enumerate(cars)
    ]
    box = [(PARK[1] - CAR_L / 2) / W, (PARK[2] - CAR_B / 2) / H, CAR_L / W, CAR_B / H]
    events.append(
        {"id": "parked", "what": "vehicle", "kind": "arrived", "t_start": PARK[0], "t": PARK[0] + 2.5, "box": box}
    )
    ends = sorted(max(t0 for t0, _, _ in b) + CROSS_S for b in BURSTS)
    starts = [min(t0 for t0, _, _ in b) for b in BURSTS] + [PARK[0]]
    quiet = [[0.0, starts[0]], *([e, s] for e, s in zip(ends, starts[1:])), [PARK[0] + 4.0, seconds]]
    return {"events": events, "quiet_s": quiet, "seconds": seconds}


def write_parked_at_start(folder: Path, seconds: float = 36.0) -> dict:
    """A dark car is parked in view when the camera starts; it drives off to the right at 10 s.
    At 20 s a white car drives in from the left and parks in the same bay."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    scene = draw_background(rng, W, H)
    bay_x, bay_y = 300.0, 250.0
    for i in range(int(seconds * FPS)):
        t = i / FPS
        img = scene.copy()
        x = bay_x + max(0.0, t - 10) * 160  # the first car
        if x < W + CAR_L:
            draw_vehicle(img, x, bay_y, CAR_L, CAR_B, CAR_COLORS[2])
        if t >= 20:
            draw_vehicle(img, min(bay_x, -CAR_L + (t - 20) * 160), bay_y, CAR_L, CAR_B, CAR_COLORS[0])
        noisy = np.clip(img.astype(np.int16) + gaussian_noise(rng, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"in{i:06d}.jpg"), noisy, [cv2.IMWRITE_JPEG_QUALITY, 92])
    box = [(bay_x - CAR_L / 2) / W, (bay_y - CAR_B / 2) / H, CAR_L / W, CAR_B / H]
    return {
        "events": [
            {"id": "dark", "what": "vehicle", "kind": "left", "t_start": 10.0, "t": 12.5, "box": box},
            {"id": "white", "what": "vehicle", "kind": "arrived", "t_start": 20.0, "t": 22.4, "box": box},
        ],
        "quiet_s": [[0.0, 10.0], [15.0, 20.0], [25.0, seconds]],
        "seconds": seconds,
    }


# name -> writer(folder) -> truth; every case is written at FPS images per second
CASES: dict[str, Callable[[Path], dict]] = {
    "bag-left-behind": write_bag_left_behind,
    "bag-taken": write_bag_taken,
    "busy-road": write_busy_road,
    "parked-at-start": write_parked_at_start,
}
