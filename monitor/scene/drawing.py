"""Drawing the synthetic parking area: the empty scene (`draw_background`), vehicles and people,
sensor noise, and the layout and palettes they use. `scripted` animates them into a clip with
ground truth; `finetune.synthetic` draws its training pairs with the same primitives."""

from __future__ import annotations

import math
from functools import cache
from statistics import NormalDist

import cv2
import numpy as np

Vec = tuple[float, float]
BGR = tuple[int, int, int]

SHIFT = 4  # cv2 fixed-point bits: 1/16 px drawing precision for smooth motion

# Layout as fractions of the frame (x of width, y of height).
_BUILDING_Y, _KERB_Y, BAY_Y0, BAY_Y1 = 0.17, 0.235, 0.255, 0.42
LANE_Y, _PLAZA_Y = 0.53, 0.65
BAY_X0, BAY_W, N_BAYS = 0.0375, 0.185, 5
SPOT_X0, SPOT_STEP, N_SPOTS, SPOT_Y = 0.12, 0.19, 5, 0.78
VEH_L, VEH_W = 0.125, 0.10  # vehicle length (of width), breadth (of height)
PER_W, PER_H = 0.035, 0.135

# Palettes picked for >= ~40 grey levels of luminance contrast against asphalt / paving.
CAR_COLORS: list[BGR] = [
    (235, 235, 235),
    (190, 190, 185),
    (30, 30, 32),
    (40, 205, 235),
    (220, 165, 95),
    (110, 40, 20),
    (25, 25, 125),
    (30, 90, 30),
]
SHIRTS: list[BGR] = [
    (30, 30, 190),
    (170, 80, 30),
    (40, 200, 230),
    (240, 240, 240),
    (150, 50, 120),
    (20, 20, 20),
    (40, 110, 40),
]
TROUSERS: list[BGR] = [(50, 40, 30), (120, 70, 40), (35, 35, 35), (60, 60, 90)]
SKIN: list[BGR] = [(90, 130, 190), (60, 95, 140), (140, 170, 220), (45, 70, 110)]


@cache
def _gauss_lut() -> np.ndarray:
    """Standard-normal quantiles for 16-bit uniforms: 2x faster than Generator.standard_normal."""
    inv = NormalDist().inv_cdf
    return np.array([inv((i + 0.5) / 65536) for i in range(65536)], np.float32)


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal float32 noise of `shape` (through the 16-bit quantile table)."""
    return _gauss_lut()[rng.integers(0, 65536, shape, dtype=np.uint16)]


def fixed_point(pts: list[Vec]) -> np.ndarray:
    """Sub-pixel points -> cv2's fixed-point int32 coordinates (use with `shift=SHIFT`)."""
    return np.round(np.asarray(pts) * (1 << SHIFT)).astype(np.int32)


def rounded_rect(img: np.ndarray, cx: float, cy: float, w: float, h: float, r: float, color: BGR) -> None:
    """Anti-aliased filled rounded rectangle at sub-pixel position."""
    pts: list[Vec] = []
    for sx, sy, a0 in ((1, 1, 0), (-1, 1, 90), (-1, -1, 180), (1, -1, 270)):
        ox, oy = cx + sx * (w / 2 - r), cy + sy * (h / 2 - r)
        pts += [
            (ox + r * math.cos(math.radians(a0 + 15 * k)), oy + r * math.sin(math.radians(a0 + 15 * k)))
            for k in range(7)
        ]
    cv2.fillPoly(img, [fixed_point(pts)], color, cv2.LINE_AA, SHIFT)


def draw_vehicle(
    img: np.ndarray, x: float, y: float, length: float, breadth: float, body: BGR, facing: int = 1
) -> None:
    """A car seen from above, centred at (x, y), `facing` +1 = right, -1 = left."""
    f = facing
    dark: BGR = (55, 45, 40)
    roof: BGR = (int(body[0] * 0.78), int(body[1] * 0.78), int(body[2] * 0.78))
    rounded_rect(img, x, y, length, breadth, 0.25 * breadth, body)
    rounded_rect(img, x + f * 0.16 * length, y, 0.16 * length, 0.80 * breadth, 0.12 * breadth, dark)  # windshield
    rounded_rect(img, x - f * 0.05 * length, y, 0.26 * length, 0.74 * breadth, 0.10 * breadth, roof)
    rounded_rect(img, x - f * 0.27 * length, y, 0.10 * length, 0.74 * breadth, 0.10 * breadth, dark)  # rear window


def draw_person(
    img: np.ndarray, x: float, y: float, pw: float, ph: float, colors: tuple[BGR, BGR, BGR], step: float = 0.0
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
    img[yp(_KERB_Y) : yp(BAY_Y0) - 1] = (185, 187, 185)  # kerb
    img[yp(_PLAZA_Y) - yp(0.015) : yp(_PLAZA_Y)] = (185, 187, 185)
    img[yp(_PLAZA_Y) :] = (132, 136, 140)  # paved plaza
    step = xp(0.06)
    for gx in range(0, w, step):
        cv2.line(img, (gx, yp(_PLAZA_Y)), (gx, h), (112, 116, 120), 1, cv2.LINE_AA)
    for gy in range(yp(_PLAZA_Y), h, step // 2):
        cv2.line(img, (0, gy), (w, gy), (112, 116, 120), 1, cv2.LINE_AA)
    for i in rng.choice(N_BAYS, size=2, replace=False):  # oil stains
        c = (xp(BAY_X0 + (i + 0.5) * BAY_W) + int(rng.integers(-15, 15)), yp((BAY_Y0 + BAY_Y1) / 2))
        cv2.ellipse(img, c, (xp(0.03), yp(0.03)), float(rng.uniform(0, 180)), 0, 360, (70, 72, 74), -1, cv2.LINE_AA)
    paint = (205, 210, 210)
    for i in range(N_BAYS + 1):
        bx = xp(BAY_X0 + i * BAY_W)
        cv2.line(img, (bx, yp(BAY_Y0)), (bx, yp(BAY_Y1)), paint, 2, cv2.LINE_AA)
    cv2.line(img, (xp(BAY_X0), yp(BAY_Y1)), (xp(BAY_X0 + N_BAYS * BAY_W), yp(BAY_Y1)), paint, 2, cv2.LINE_AA)
    for dx in range(xp(0.02), w, xp(0.08)):  # dashed lane centre line
        cv2.line(img, (dx, yp(0.59)), (dx + xp(0.04), yp(0.59)), (60, 170, 200), 2, cv2.LINE_AA)
    # Grain + blotches so the "static" background is textured like real asphalt/concrete.
    fine = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.8)
    coarse = cv2.resize(
        rng.standard_normal((h // 24 + 2, w // 24 + 2)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
    )
    tex = fine / fine.std() * 6.0 + coarse / coarse.std() * 5.0
    return np.clip(img.astype(np.float32) + tex[..., None], 0, 255).astype(np.uint8)
