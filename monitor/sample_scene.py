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
from functools import cache
from pathlib import Path
from statistics import NormalDist

import av
import cv2
import numpy as np

__all__ = [
    "SHIFT",
    "draw_background",
    "draw_person",
    "draw_vehicle",
    "fixed_point",
    "gaussian_noise",
    "render_sample_scene",
    "rounded_rect",
]

_Vec = tuple[float, float]
_BGR = tuple[int, int, int]

_GAP_S = (5.15, 5.6)  # quiet time between changes; > 5 s so frame rounding can't break the 5 s rule
_STILL_S = 4.0  # empty start / still end
_NOISE_SIGMA = 2.5
_DRIFT_AMPLITUDE = 0.08
SHIFT = 4  # cv2 fixed-point bits: 1/16 px drawing precision for smooth motion

# Layout as fractions of the frame (x of width, y of height).
_BUILDING_Y, _KERB_Y, _BAY_Y0, _BAY_Y1 = 0.17, 0.235, 0.255, 0.42
_LANE_Y, _PLAZA_Y = 0.53, 0.65
_BAY_X0, _BAY_W, _N_BAYS = 0.0375, 0.185, 5
_SPOT_X0, _SPOT_STEP, _N_SPOTS, _SPOT_Y = 0.12, 0.19, 5, 0.78
_VEH_L, _VEH_W = 0.125, 0.10  # vehicle length (of width), breadth (of height)
_PER_W, _PER_H = 0.035, 0.135

# Palettes picked for >= ~40 grey levels of luminance contrast against asphalt / paving.
_CAR_COLORS: list[_BGR] = [
    (235, 235, 235),
    (190, 190, 185),
    (30, 30, 32),
    (40, 205, 235),
    (220, 165, 95),
    (110, 40, 20),
    (25, 25, 125),
    (30, 90, 30),
]
_SHIRTS: list[_BGR] = [
    (30, 30, 190),
    (170, 80, 30),
    (40, 200, 230),
    (240, 240, 240),
    (150, 50, 120),
    (20, 20, 20),
    (40, 110, 40),
]
_TROUSERS: list[_BGR] = [(50, 40, 30), (120, 70, 40), (35, 35, 35), (60, 60, 90)]
_SKIN: list[_BGR] = [(90, 130, 190), (60, 95, 140), (140, 170, 220), (45, 70, 110)]


@dataclass
class _Move:
    """A scripted motion from frame f0 (path start) to f1 (path end)."""

    f0: int
    f1: int
    path: list[_Vec]
    ease: str  # "out" decelerates into rest, "in" accelerates away, "linear" walks

    def at(self, f: int) -> _Vec:
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
    rest: _Vec  # centre when parked / standing
    size: _Vec  # drawn width, height in px
    colors: tuple[_BGR, ...]
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


@cache
def _gauss_lut() -> np.ndarray:
    """Standard-normal quantiles for 16-bit uniforms: 2x faster than Generator.standard_normal."""
    inv = NormalDist().inv_cdf
    return np.array([inv((i + 0.5) / 65536) for i in range(65536)], np.float32)


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal float32 noise of `shape` (through the 16-bit quantile table)."""
    return _gauss_lut()[rng.integers(0, 65536, shape, dtype=np.uint16)]


def fixed_point(pts: list[_Vec]) -> np.ndarray:
    """Sub-pixel points -> cv2's fixed-point int32 coordinates (use with `shift=SHIFT`)."""
    return np.round(np.asarray(pts) * (1 << SHIFT)).astype(np.int32)


def rounded_rect(img: np.ndarray, cx: float, cy: float, w: float, h: float, r: float, color: _BGR) -> None:
    """Anti-aliased filled rounded rectangle at sub-pixel position."""
    pts: list[_Vec] = []
    for sx, sy, a0 in ((1, 1, 0), (-1, 1, 90), (-1, -1, 180), (1, -1, 270)):
        ox, oy = cx + sx * (w / 2 - r), cy + sy * (h / 2 - r)
        pts += [
            (ox + r * math.cos(math.radians(a0 + 15 * k)), oy + r * math.sin(math.radians(a0 + 15 * k)))
            for k in range(7)
        ]
    cv2.fillPoly(img, [fixed_point(pts)], color, cv2.LINE_AA, SHIFT)


def draw_vehicle(
    img: np.ndarray, x: float, y: float, length: float, breadth: float, body: _BGR, facing: int = 1
) -> None:
    """A car seen from above, centred at (x, y), `facing` +1 = right, -1 = left."""
    f = facing
    dark: _BGR = (55, 45, 40)
    roof: _BGR = (int(body[0] * 0.78), int(body[1] * 0.78), int(body[2] * 0.78))
    rounded_rect(img, x, y, length, breadth, 0.25 * breadth, body)
    rounded_rect(img, x + f * 0.16 * length, y, 0.16 * length, 0.80 * breadth, 0.12 * breadth, dark)  # windshield
    rounded_rect(img, x - f * 0.05 * length, y, 0.26 * length, 0.74 * breadth, 0.10 * breadth, roof)
    rounded_rect(img, x - f * 0.27 * length, y, 0.10 * length, 0.74 * breadth, 0.10 * breadth, dark)  # rear window


def draw_person(
    img: np.ndarray, x: float, y: float, pw: float, ph: float, colors: tuple[_BGR, _BGR, _BGR], step: float = 0.0
) -> None:
    """A standing person centred at (x, y), `pw` x `ph` px; colors = (skin, shirt, trousers);
    `step` in [-1, 1] lifts one foot while walking."""
    skin, shirt, legs = colors
    top = y - ph / 2
    for side in (-1, 1):  # legs; while walking each foot lifts alternately
        hx = x + side * 0.17 * pw
        foot = top + ph - max(0.0, side * step) * 0.06 * ph
        quad = [
            (hx - 0.13 * pw, top + 0.58 * ph),
            (hx + 0.13 * pw, top + 0.58 * ph),
            (hx + 0.12 * pw, foot),
            (hx - 0.12 * pw, foot),
        ]
        cv2.fillPoly(img, [fixed_point(quad)], legs, cv2.LINE_AA, SHIFT)
    one = 1 << SHIFT
    cv2.ellipse(
        img,
        (round(x * one), round((top + 0.42 * ph) * one)),
        (round(0.5 * pw * one), round(0.2 * ph * one)),
        0,
        0,
        360,
        shirt,
        -1,
        cv2.LINE_AA,
        SHIFT,
    )
    cv2.circle(
        img, (round(x * one), round((top + 0.12 * ph) * one)), round(0.12 * ph * one), skin, -1, cv2.LINE_AA, SHIFT
    )


def draw_background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Static textured parking area: building, sidewalk, kerbs, bays, lane, plaza."""
    img: np.ndarray = np.empty((h, w, 3), np.uint8)

    def xp(fx: float) -> int:  # layout fraction -> pixel
        return round(fx * w)

    def yp(fy: float) -> int:
        return round(fy * h)

    img[:] = (92, 94, 96)  # asphalt
    img[: yp(_BUILDING_Y)] = (78, 80, 86)
    for row in range(2):  # windows along the building face
        wy = yp(0.025 + row * 0.07)
        for wx in range(xp(0.03), w - xp(0.05), xp(0.09)):
            cv2.rectangle(img, (wx, wy), (wx + xp(0.05), wy + yp(0.045)), (125, 125, 125), -1)
            cv2.rectangle(img, (wx + 2, wy + 2), (wx + xp(0.05) - 2, wy + yp(0.045) - 2), (70, 58, 48), -1)
    cv2.rectangle(img, (0, yp(_BUILDING_Y) - 3), (w, yp(_BUILDING_Y)), (45, 45, 48), -1)  # roof edge
    img[yp(_BUILDING_Y) : yp(_KERB_Y)] = (150, 152, 150)  # sidewalk
    for jx in range(0, w, xp(0.08)):
        cv2.line(img, (jx, yp(_BUILDING_Y)), (jx, yp(_KERB_Y)), (128, 130, 128), 1, cv2.LINE_AA)
    img[yp(_KERB_Y) : yp(_BAY_Y0) - 1] = (185, 187, 185)  # kerb
    img[yp(_PLAZA_Y) - yp(0.015) : yp(_PLAZA_Y)] = (185, 187, 185)
    img[yp(_PLAZA_Y) :] = (132, 136, 140)  # paved plaza
    step = xp(0.06)
    for gx in range(0, w, step):
        cv2.line(img, (gx, yp(_PLAZA_Y)), (gx, h), (112, 116, 120), 1, cv2.LINE_AA)
    for gy in range(yp(_PLAZA_Y), h, step // 2):
        cv2.line(img, (0, gy), (w, gy), (112, 116, 120), 1, cv2.LINE_AA)
    for i in rng.choice(_N_BAYS, size=2, replace=False):  # oil stains
        c = (xp(_BAY_X0 + (i + 0.5) * _BAY_W) + int(rng.integers(-15, 15)), yp((_BAY_Y0 + _BAY_Y1) / 2))
        cv2.ellipse(img, c, (xp(0.03), yp(0.03)), float(rng.uniform(0, 180)), 0, 360, (70, 72, 74), -1, cv2.LINE_AA)
    paint = (205, 210, 210)
    for i in range(_N_BAYS + 1):
        bx = xp(_BAY_X0 + i * _BAY_W)
        cv2.line(img, (bx, yp(_BAY_Y0)), (bx, yp(_BAY_Y1)), paint, 2, cv2.LINE_AA)
    cv2.line(img, (xp(_BAY_X0), yp(_BAY_Y1)), (xp(_BAY_X0 + _N_BAYS * _BAY_W), yp(_BAY_Y1)), paint, 2, cv2.LINE_AA)
    for dx in range(xp(0.02), w, xp(0.08)):  # dashed lane centre line
        cv2.line(img, (dx, yp(0.59)), (dx + xp(0.04), yp(0.59)), (60, 170, 200), 2, cv2.LINE_AA)
    # Grain + blotches so the "static" background is textured like real asphalt/concrete.
    fine = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.8)
    coarse = cv2.resize(
        rng.standard_normal((h // 24 + 2, w // 24 + 2)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
    )
    tex = fine / fine.std() * 6.0 + coarse / coarse.std() * 5.0
    return np.clip(img.astype(np.float32) + tex[..., None], 0, 255).astype(np.uint8)


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
    fresh = {"vehicle": list(rng.permutation(_N_BAYS)), "person": list(rng.permutation(_N_SPOTS))}
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
        length, breadth = _VEH_L * w, _VEH_W * h
        rest = (
            (_BAY_X0 + (slot + 0.5) * _BAY_W) * w + rng.uniform(-3, 3),
            (_BAY_Y0 + _BAY_Y1) / 2 * h + rng.uniform(-2, 2),
        )
        facing = 1 if rng.random() < 0.5 else -1
        x_in = -length / 2 - 2 if facing == 1 else w + length / 2 + 2
        # Drive along the lane, then angle into the bay; turn point keeps clear of neighbouring bays.
        turn = rest[0] - facing * 0.55 * length
        turn = max(turn, x_in) if facing == 1 else min(turn, x_in)
        path = [(x_in, _LANE_Y * h), (turn, _LANE_Y * h), rest]
        color = _CAR_COLORS[int(rng.integers(len(_CAR_COLORS)))]
        return _Actor(
            f"vehicle-{num}", what, rest, (length, breadth), (color,), _Move(f0, f1, path, "out"), facing=facing
        )
    pw, ph = _PER_W * w, _PER_H * h
    rest = ((_SPOT_X0 + slot * _SPOT_STEP) * w + rng.uniform(-4, 4), _SPOT_Y * h + rng.uniform(-6, 6))
    # Walk in from the bottom edge; +-40 px lateral drift stays clear of neighbouring spots.
    entry = (rest[0] + rng.uniform(-40, 40) * w / 640, h + ph / 2 + 2)
    colors = tuple(p[int(rng.integers(len(p)))] for p in (_SKIN, _SHIRTS, _TROUSERS))
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
        return _Move(f0, f1, [a.rest, (turn, _LANE_Y * h), (x_out, _LANE_Y * h)], "in")
    exit_pt = (a.rest[0] + rng.uniform(-40, 40) * w / 640, h + a.size[1] / 2 + 2)
    return _Move(f0, f1, [a.rest, exit_pt], "linear")


def render_sample_scene(
    out_path: str | Path, seconds: float = 60.0, seed: int = 0, fps: int = 10, width: int = 640, height: int = 360
) -> dict:
    """Render a deterministic synthetic surveillance clip plus ``<stem>.truth.json``; return the truth."""
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
