"""Synthetic fixed-camera parking-area scene with scripted ground truth.

``render_sample_scene`` writes an H.264 MP4 plus ``<stem>.truth.json`` that lists
every actor arrival/departure, the single exposure jump and the drift amplitude,
so a change detector can be scored against it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from monitor.scene.drawing import (
    BAY_W,
    BAY_X0,
    BAY_Y0,
    BAY_Y1,
    BGR,
    CAR_COLORS,
    LANE_Y,
    N_BAYS,
    N_SPOTS,
    PER_H,
    PER_W,
    SHIRTS,
    SKIN,
    SPOT_STEP,
    SPOT_X0,
    SPOT_Y,
    TROUSERS,
    VEH_L,
    VEH_W,
    Vec,
    draw_background,
    draw_person,
    draw_vehicle,
    gaussian_noise,
)

__all__ = ["MIN_SECONDS", "render_sample_scene"]

MIN_SECONDS = 10.0  # room for one change between the empty start (~4.4 s) and the still end (4 s)

_GAP_S = (5.15, 5.6)  # quiet time between changes; > 5 s so frame rounding can't break the 5 s rule
_STILL_S = 4.0  # empty start / still end
_NOISE_SIGMA = 2.5
_DRIFT_AMPLITUDE = 0.08


@dataclass
class _Move:
    """A scripted motion from frame f0 (path start) to f1 (path end)."""

    f0: int
    f1: int
    path: list[Vec]
    ease: str  # "out" decelerates into rest, "in" accelerates away, "linear" walks

    def at(self, f: int) -> Vec:
        p = min(max((f - self.f0) / max(1, self.f1 - self.f0), 0.0), 1.0)
        if self.ease == "out":
            p = math.sin(p * math.pi / 2)
        elif self.ease == "in":
            p = 1.0 - math.cos(p * math.pi / 2)
        lengths = [math.dist(a, b) for a, b in zip(self.path, self.path[1:])]
        d = p * sum(lengths)
        for (a, b), seg in zip(zip(self.path, self.path[1:]), lengths):
            if d <= seg and seg > 0:
                k = d / seg
                return a[0] + k * (b[0] - a[0]), a[1] + k * (b[1] - a[1])
            d -= seg
        return self.path[-1]


@dataclass
class _Actor:
    ident: str
    what: str  # "vehicle" | "person"
    rest: Vec  # centre when parked / standing
    size: Vec  # drawn width, height in px
    colors: tuple[BGR, ...]
    arrive: _Move
    leave: _Move | None = None
    facing: int = 1  # vehicles: +1 faces right
    sway_phase: float = 0.0

    def pose(self, f: int, fps: int) -> tuple[float, float, bool] | None:
        """Centre and moving flag at frame f, or None when not in the scene."""
        if f < self.arrive.f0 or (self.leave is not None and f > self.leave.f1):
            return None
        if f <= self.arrive.f1:
            return (*self.arrive.at(f), f < self.arrive.f1)
        if self.leave is not None and f >= self.leave.f0:
            return (*self.leave.at(f), f > self.leave.f0)
        x, y = self.rest
        if self.what == "person":  # idle sway, integer so it never exceeds 1 px
            x += round(0.5 + 0.5 * math.sin(2 * math.pi * f / (3.0 * fps) + self.sway_phase))
        return x, y, False

    def visible(self, f: int, fps: int, w: int, h: int) -> bool:
        pose = self.pose(f, fps)
        if pose is None:
            return False
        # 1 px margin: anti-aliasing can bleed one pixel past the geometric edge.
        (x, y, _), (sw, sh) = pose, self.size
        return x + sw / 2 > -1 and x - sw / 2 < w + 1 and y + sh / 2 > -1 and y - sh / 2 < h + 1

    def rest_box(self, w: int, h: int) -> list[float]:
        sw, sh = self.size
        sway = 1 if self.what == "person" else 0
        x0, y0 = math.floor(self.rest[0] - sw / 2), math.floor(self.rest[1] - sh / 2)
        x1, y1 = math.ceil(self.rest[0] + sw / 2) + sway, math.ceil(self.rest[1] + sh / 2)
        return [round(x0 / w, 4), round(y0 / h, 4), round((x1 - x0) / w, 4), round((y1 - y0) / h, 4)]


def _script(rng: np.random.Generator, n: int, fps: int, w: int, h: int) -> tuple[list[_Actor], int, int]:
    """Schedule actors and the exposure jump; returns actors, jump start/end frames."""

    def gap() -> int:
        return math.ceil(rng.uniform(*_GAP_S) * fps)

    limit = n - 2 - math.ceil(_STILL_S * fps)  # last frame any change may still be happening
    cursor = math.ceil(rng.uniform(4.1, 4.4) * fps)  # earliest start of the next change
    ramp = max(2, round(rng.uniform(0.3, 0.5) * fps))
    if cursor + ramp > limit:
        raise ValueError(f"clip too short for a scripted scene: {n} frames at {fps} fps")
    jump_target = rng.uniform(0.35, 0.6) * n
    jump: int | None = None
    fresh = {"vehicle": list(rng.permutation(N_BAYS)), "person": list(rng.permutation(N_SPOTS))}
    freed: dict[str, list[int]] = {"vehicle": [], "person": []}  # reused only once all fresh slots are gone
    slot_of: dict[str, int] = {}
    actors: list[_Actor] = []
    present: list[_Actor] = []
    while True:
        if jump is None and cursor >= jump_target:
            jump, cursor = cursor, cursor + ramp + gap()
            continue
        avail = [k for k in ("vehicle", "person") if fresh[k] or freed[k]]
        p_leave = min(0.8, 0.15 + 0.22 * len(present)) if present else 0.0
        leaving = bool(present) and (rng.random() < p_leave or not avail)
        if leaving:
            actor = present[int(rng.integers(len(present)))]
            what = actor.what
        else:
            # Random type, but keep the vehicle/person mix balanced to within one.
            counts = {k: sum(a.what == k for a in actors) for k in avail}
            what = avail[int(rng.integers(len(avail)))]
            if max(counts.values()) - min(counts.values()) > 1:
                what = min(avail, key=counts.__getitem__)
        dur = round((rng.uniform(1.5, 2.4) if what == "vehicle" else rng.uniform(3.0, 4.0)) * fps)
        g = gap()
        if cursor + dur + (0 if jump is not None else g + ramp) > limit:
            if jump is None:
                jump = cursor
            break
        if leaving:
            present.remove(actor)
            freed[what].append(slot_of[actor.ident])
            actor.leave = _leave_move(actor, rng, cursor, cursor + dur, w, h)
        else:
            slot = (fresh[what] or freed[what]).pop(0)
            actor = _new_actor(
                what, slot, len([a for a in actors if a.what == what]) + 1, rng, cursor, cursor + dur, w, h
            )
            slot_of[actor.ident] = slot
            actors.append(actor)
            present.append(actor)
        cursor += dur + g
    return actors, jump, jump + ramp


def _new_actor(what: str, slot: int, num: int, rng: np.random.Generator, f0: int, f1: int, w: int, h: int) -> _Actor:
    if what == "vehicle":
        length, breadth = VEH_L * w, VEH_W * h
        rest = (
            (BAY_X0 + (slot + 0.5) * BAY_W) * w + rng.uniform(-3, 3),
            (BAY_Y0 + BAY_Y1) / 2 * h + rng.uniform(-2, 2),
        )
        facing = 1 if rng.random() < 0.5 else -1
        x_in = -length / 2 - 2 if facing == 1 else w + length / 2 + 2
        # Drive along the lane, then angle into the bay; turn point keeps clear of neighbouring bays.
        turn = rest[0] - facing * 0.55 * length
        turn = max(turn, x_in) if facing == 1 else min(turn, x_in)
        path = [(x_in, LANE_Y * h), (turn, LANE_Y * h), rest]
        color = CAR_COLORS[int(rng.integers(len(CAR_COLORS)))]
        return _Actor(
            f"vehicle-{num}", what, rest, (length, breadth), (color,), _Move(f0, f1, path, "out"), facing=facing
        )
    pw, ph = PER_W * w, PER_H * h
    rest = ((SPOT_X0 + slot * SPOT_STEP) * w + rng.uniform(-4, 4), SPOT_Y * h + rng.uniform(-6, 6))
    # Walk in from the bottom edge; +-40 px lateral drift stays clear of neighbouring spots.
    entry = (rest[0] + rng.uniform(-40, 40) * w / 640, h + ph / 2 + 2)
    colors = tuple(p[int(rng.integers(len(p)))] for p in (SKIN, SHIRTS, TROUSERS))
    return _Actor(
        f"person-{num}",
        what,
        rest,
        (pw, ph),
        colors,
        _Move(f0, f1, [entry, rest], "linear"),
        sway_phase=float(rng.uniform(0, 2 * math.pi)),
    )


def _leave_move(a: _Actor, rng: np.random.Generator, f0: int, f1: int, w: int, h: int) -> _Move:
    if a.what == "vehicle":
        length = a.size[0]
        x_out = w + length / 2 + 2 if a.facing == 1 else -length / 2 - 2  # drive out forwards
        turn = a.rest[0] + a.facing * 0.55 * length
        turn = min(turn, x_out) if a.facing == 1 else max(turn, x_out)
        return _Move(f0, f1, [a.rest, (turn, LANE_Y * h), (x_out, LANE_Y * h)], "in")
    exit_pt = (a.rest[0] + rng.uniform(-40, 40) * w / 640, h + a.size[1] / 2 + 2)
    return _Move(f0, f1, [a.rest, exit_pt], "linear")


def render_sample_scene(
    out_path: str | Path, seconds: float = 60.0, seed: int = 0, fps: int = 10, width: int = 640, height: int = 360
) -> dict:
    """Render a deterministic synthetic surveillance clip plus ``<stem>.truth.json``; return the truth."""
    if seconds < MIN_SECONDS:
        raise ValueError(f"a scripted scene needs at least {MIN_SECONDS:g} s (got {seconds:g})")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    n = round(seconds * fps)
    # Independent streams so e.g. the noise draw never perturbs the script.
    layout_rng, script_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    background = draw_background(layout_rng, width, height)
    actors, j0, j1 = _script(script_rng, n, fps, width, height)

    # Global gain: slow drift (about half a sine cycle over >= 60 s, starting near an extreme so
    # the clip spans roughly +-amplitude) times one auto-exposure-like smoothstep.
    jump_to = round(float(1 + script_rng.choice([-1, 1]) * script_rng.uniform(0.2, 0.3)), 3)
    period = 2 * max(seconds, 60.0) * script_rng.uniform(0.85, 1.15)
    phase = float(script_rng.choice([-1, 1])) * math.pi / 2 + script_rng.uniform(-0.4, 0.4)
    t = np.arange(n) / fps
    ramp = np.clip((np.arange(n) - j0) / (j1 - j0), 0, 1)
    gain = (1 + _DRIFT_AMPLITUDE * np.sin(2 * np.pi * t / period + phase)) * (
        1 + (jump_to - 1) * ramp * ramp * (3 - 2 * ramp)
    )

    with av.open(str(out_path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.gop_size = fps
        # scenecut=0: the exposure jump must not add keyframes; keyframes land exactly every second.
        stream.codec_context.options = {
            "preset": "veryfast",
            "crf": "23",
            "x264-params": f"keyint={fps}:scenecut=0:bframes=0",
        }
        for f in range(n):
            img = background.copy()
            for a in actors:
                pose = a.pose(f, fps)
                if pose is None:
                    continue
                x, y, moving = pose
                if a.what == "vehicle":
                    draw_vehicle(img, x, y, *a.size, a.colors[0], a.facing)
                else:
                    step = math.sin(f * math.pi / (0.25 * fps)) if moving else 0.0
                    draw_person(img, x, y, *a.size, a.colors, step)
            noise = gaussian_noise(noise_rng, (height, width, 3))
            frame_bgr = cv2.addWeighted(
                img.astype(np.float32), float(gain[f]), noise, _NOISE_SIGMA, 0.0, dtype=cv2.CV_8U
            )
            frame = av.VideoFrame.from_ndarray(frame_bgr, format="bgr24")
            frame.pts, frame.time_base = f, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

    def secs(f: int) -> float:
        return round(f / fps, 2)

    events: list[dict] = []
    present: dict[str, list[list[float]]] = {}
    for a in actors:
        box = a.rest_box(width, height)
        first = next(f for f in range(a.arrive.f0, a.arrive.f1 + 1) if a.visible(f, fps, width, height))
        events.append(
            {
                "id": a.ident,
                "what": a.what,
                "kind": "arrived",
                "t_start": secs(first),
                "t": secs(a.arrive.f1),
                "box": box,
            }
        )
        end = secs(n)
        if a.leave is not None:
            gone = next(f for f in range(a.leave.f0, a.leave.f1 + 1) if not a.visible(f, fps, width, height))
            events.append(
                {
                    "id": a.ident,
                    "what": a.what,
                    "kind": "left",
                    "t_start": secs(a.leave.f0 + 1),
                    "t": secs(gone),
                    "box": box,
                }
            )
            end = secs(gone)
        present[a.ident] = [[secs(first), end]]
    events.sort(key=lambda e: (e["t"], e["id"]))
    truth = {
        "video": out_path.name,
        "seed": seed,
        "seconds": float(seconds),
        "fps": fps,
        "width": width,
        "height": height,
        "events": events,
        "exposure_jumps": [{"t": secs(j0), "gain_from": 1.0, "gain_to": jump_to}],
        "drift": {"amplitude": _DRIFT_AMPLITUDE},
        "present_intervals_s": present,
    }
    out_path.with_suffix(".truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return truth
