"""Synthetic before/after pairs with captions that are right by construction.

A pair is the sample scene's parking-area background (monitor.scene.drawing) with a few objects
on a 3x3 grid of places; between `before` and `after` one or two of them appear, disappear or
move ("a red car appeared in the lower left", "a person in blue moved from the left to the
top right"), or nothing does ("no visible change") and only the nuisances differ: sensor
noise, exposure (gain), colour cast and a lighting gradient, which every pair gets, so
lighting alone never tells change from no change. Static distractor objects sit in both
frames. Objects are >= 12 % of the frame side in strong colours and drawn at >= 192 px, then
downsampled, so 64-128 px frames stay legible.

Deterministic: pair `i` of seed `s` depends only on (s, i), whatever N is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from finetune.dataset import PAIRS_FILE, QUESTION, PairRecord, Region, write_jsonl
from monitor.scene.drawing import (
    SHIFT,
    draw_background,
    draw_person,
    draw_vehicle,
    fixed_point,
    gaussian_noise,
    rounded_rect,
)
from pipelines.prompt import NEXT_TURN, NO_CHANGE

KINDS = ("car", "van", "person", "bicycle", "bag", "box")
COLOURS: dict[str, tuple[int, int, int]] = {  # BGR, far apart in hue or luminance
    "red": (40, 30, 215),
    "yellow": (30, 215, 235),
    "green": (40, 165, 30),
    "blue": (210, 80, 20),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
# 3x3 grid of places: (name, with the preposition "appeared" takes)
PLACES = (
    ("top left", "in"), ("top", "at"), ("top right", "in"),
    ("left", "on"), ("centre", "in"), ("right", "on"),
    ("lower left", "in"), ("bottom", "at"), ("lower right", "in"),
)  # fmt: skip
# (width, height) as fractions of the frame side
_SIZES = {
    "car": (0.27, 0.15),
    "van": (0.31, 0.19),
    "person": (0.12, 0.28),
    "bicycle": (0.27, 0.17),
    "bag": (0.15, 0.14),
    "box": (0.17, 0.17),
}
_SKIN = [(90, 130, 190), (60, 95, 140), (140, 170, 220), (45, 70, 110)]
_DARK = (45, 40, 38)
_MIN_RENDER = 192  # draw at least this big, then downsample: small frames stay crisp
_CHANGES = ("appeared", "disappeared", "moved")


def noun_phrase(kind: str, colour: str) -> str:
    return f"a person in {colour}" if kind == "person" else f"a {colour} {kind}"


def sentence(change: str, kind: str, colour: str, cell: int, to_cell: int | None = None) -> str:
    """The caption of one change, e.g. "a red car appeared in the lower left"."""
    name, prep = PLACES[cell]
    np_ = noun_phrase(kind, colour)
    if change == "appeared":
        return f"{np_} appeared {prep} the {name}"
    if change == "disappeared":
        return f"{np_} disappeared from the {name}"
    assert to_cell is not None
    return f"{np_} moved from the {name} to the {PLACES[to_cell][0]}"


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


def _all_phrases() -> list[str]:
    out = [NO_CHANGE, QUESTION, NEXT_TURN, "a, b and c"]  # join_sentences adds "," / "and"
    for kind in KINDS:
        for colour in COLOURS:
            for cell in range(len(PLACES)):
                out += [sentence(c, kind, colour, cell, (cell + 1) % len(PLACES)) for c in _CHANGES]
    return out


# Every token (re.findall(r"\w+|[^\w\s]"), case kept) that a synthetic caption, the joined
# single answer or the conversation prompts can contain: the tiny tokenizer's vocabulary.
SYNTHETIC_WORDS: tuple[str, ...] = tuple(sorted({t for p in _all_phrases() for t in _tokens(p)} - {"b", "c"}))


@dataclass(frozen=True)
class _Object:
    kind: str
    colour: str
    cell: int
    dx: float  # jitter of the centre within the cell, fraction of the side
    dy: float
    scale: float
    facing: int
    skin: tuple[int, int, int]

    def box(self) -> tuple[float, float, float, float]:
        """(x, y, w, h) in 0-1 frame coordinates."""
        cx, cy = self.centre()
        w, h = (v * self.scale for v in _SIZES[self.kind])
        return cx - w / 2, cy - h / 2, w, h

    def centre(self) -> tuple[float, float]:
        row, col = divmod(self.cell, 3)
        return (col + 0.5) / 3 + self.dx, (row + 0.5) / 3 + self.dy


@dataclass(frozen=True)
class SyntheticPair:
    id: str
    before: np.ndarray  # RGB uint8 (S, S, 3)
    after: np.ndarray
    captions: tuple[str, ...]
    regions: tuple[Region, ...]
    t_before: float
    t_after: float


def _draw(img: np.ndarray, obj: _Object) -> None:
    side = img.shape[0]
    (fx, fy), (fw, fh) = obj.centre(), _SIZES[obj.kind]
    x, y, w, h = fx * side, fy * side, fw * obj.scale * side, fh * obj.scale * side
    colour = COLOURS[obj.colour]
    if obj.kind == "car":
        draw_vehicle(img, x, y, w, h, colour, obj.facing)
    elif obj.kind == "van":  # boxy, one windscreen, long roof: unlike the car's two windows
        _rect(img, x, y, w, h, 0.08 * h, colour)
        _rect(img, x + obj.facing * 0.36 * w, y, 0.12 * w, 0.82 * h, 0.08 * h, _DARK)
        shade = tuple(int(c * 0.8) for c in colour)
        _rect(img, x - obj.facing * 0.1 * w, y, 0.62 * w, 0.7 * h, 0.05 * h, shade)
    elif obj.kind == "person":
        draw_person(img, x, y, w, h, (obj.skin, colour, _DARK))
    elif obj.kind == "bicycle":  # side view: two wheels, a thick coloured frame
        r, thick = 0.3 * h, max(2, round(0.09 * h))
        wheels = [(x - w / 2 + r, y + h / 2 - r), (x + w / 2 - r, y + h / 2 - r)]
        for wx, wy in wheels:
            _circle(img, wx, wy, r, _DARK, max(2, round(0.07 * h)))
        seat, bar = (x - 0.12 * w, y - 0.35 * h), (x + 0.28 * w, y - 0.42 * h)
        crank = (x, wheels[0][1])
        for a, b in ((wheels[0], seat), (seat, crank), (crank, wheels[0]), (seat, bar), (bar, wheels[1]), (crank, bar)):
            _line(img, a, b, colour, thick)
    elif obj.kind == "bag":  # rounded body and a dark handle loop
        _circle(img, x, y - 0.22 * h, 0.3 * w, _DARK, max(2, round(0.12 * h)))
        _rect(img, x, y + 0.12 * h, w, 0.76 * h, 0.2 * h, colour)
    else:  # box: square, dark outline, a tape band across the lid
        _rect(img, x, y, w, h, 0.03 * h, _DARK)
        _rect(img, x, y, 0.86 * w, 0.86 * h, 0.02 * h, colour)
        _rect(img, x, y, 0.86 * w, 0.16 * h, 0.0, tuple(int(0.55 * c) for c in colour))


def _rect(img: np.ndarray, cx: float, cy: float, w: float, h: float, r: float, colour: tuple) -> None:
    rounded_rect(img, cx, cy, w, h, max(r, 0.5), colour)


def _circle(img: np.ndarray, x: float, y: float, r: float, colour: tuple, thick: int) -> None:
    one = 1 << SHIFT
    cv2.circle(img, (round(x * one), round(y * one)), round(r * one), colour, thick, cv2.LINE_AA, SHIFT)


def _line(img: np.ndarray, a: tuple[float, float], b: tuple[float, float], colour: tuple, thick: int) -> None:
    (ax, ay), (bx, by) = fixed_point([a, b])
    cv2.line(img, (int(ax), int(ay)), (int(bx), int(by)), colour, thick, cv2.LINE_AA, SHIFT)


def _render(
    background: np.ndarray, objects: list[_Object], size: int, rng: np.random.Generator, gain: float
) -> np.ndarray:
    """Objects on the background, downsampled to `size`, then exposure, colour cast, lighting
    gradient and sensor noise at the final resolution. BGR uint8."""
    img = background.copy()
    for obj in objects:
        _draw(img, obj)
    small = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    cast = rng.uniform(0.94, 1.06, 3).astype(np.float32)
    light = np.ones((size, size), np.float32)
    if rng.random() < 0.3:  # a soft light/shadow gradient in a random direction
        angle, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0.05, 0.2)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1) - 0.5
        light += strength * 2 * (math.cos(angle) * xx + math.sin(angle) * yy)
    out = small * (gain * light)[..., None] * cast + gaussian_noise(rng, small.shape) * rng.uniform(1.5, 4.0)
    return np.clip(out, 0, 255).astype(np.uint8)


def _new_object(rng: np.random.Generator, cell: int) -> _Object:
    kind = KINDS[int(rng.integers(len(KINDS)))]
    return _Object(
        kind=kind,
        colour=list(COLOURS)[int(rng.integers(len(COLOURS)))],
        cell=cell,
        dx=float(rng.uniform(-0.035, 0.035)),
        dy=float(rng.uniform(-0.035, 0.035)),
        scale=float(rng.uniform(0.92, 1.08)),
        facing=1 if rng.random() < 0.5 else -1,
        skin=_SKIN[int(rng.integers(len(_SKIN)))],
    )


def synthetic_pair(
    index: int, *, seed: int = 0, size: int = 96, no_change_fraction: float = 0.2, two_change_fraction: float = 0.3
) -> SyntheticPair:
    """Pair `index` of the synthetic set `seed`: frames `size` x `size` RGB and exact captions.
    `two_change_fraction`: the share of change pairs with two changes (the others have one)."""
    if size < 32:
        raise ValueError(f"image size {size} is too small for legible objects (at least 32 px)")
    rng = np.random.default_rng([seed, index])
    render = max(size, _MIN_RENDER)
    background = draw_background(rng, render, render)
    cells = [int(c) for c in rng.permutation(len(PLACES))]
    static = [_new_object(rng, cells.pop()) for _ in range(int(rng.integers(0, 4)))]
    before, after = list(static), list(static)
    changes: list[tuple[int, str, Region]] = []  # (place it is said at, sentence, region)
    if rng.random() >= no_change_fraction:
        seen: set[tuple[str, str, str]] = set()  # (change, kind, colour) said so far
        for _ in range(1 if rng.random() < 1 - two_change_fraction else 2):
            change = _CHANGES[int(rng.choice(3, p=[0.4, 0.4, 0.2]))]
            obj = _new_object(rng, cells.pop())
            opposite = {"appeared": "disappeared", "disappeared": "appeared"}.get(change)
            while (opposite, obj.kind, obj.colour) in seen:  # that would be one object moving
                obj = replace(obj, colour=list(COLOURS)[int(rng.integers(len(COLOURS)))])
            seen.add((change, obj.kind, obj.colour))
            x, y, w, h = obj.box()
            if change == "appeared":
                after.append(obj)
            elif change == "disappeared":
                before.append(obj)
            else:
                moved = replace(obj, cell=cells.pop())
                before.append(obj)
                after.append(moved)
                x2, y2, w2, h2 = moved.box()
                x, y, w, h = min(x, x2), min(y, y2), max(x + w, x2 + w2) - min(x, x2), max(y + h, y2 + h2) - min(y, y2)
            to_cell = after[-1].cell if change == "moved" else None
            text = sentence(change, obj.kind, obj.colour, obj.cell, to_cell)
            box = [min(max(v, 0.0), 1.0) for v in (x, y)]
            region = Region(
                x=round(box[0], 4),
                y=round(box[1], 4),
                w=round(min(w, 1 - box[0]), 4),
                h=round(min(h, 1 - box[1]), 4),
                change=change,
                label=obj.kind,
            )
            changes.append((obj.cell, text, region))
    changes.sort(key=lambda c: c[0])  # said in reading order of where they happened
    img_before = _render(background, before, size, rng, float(rng.uniform(0.9, 1.1)))
    img_after = _render(background, after, size, rng, float(rng.uniform(0.8, 1.2)))
    t_before = round(float(rng.uniform(0, 86_400)), 1)
    return SyntheticPair(
        id=f"syn{seed}-{index:06d}",
        before=cv2.cvtColor(img_before, cv2.COLOR_BGR2RGB),
        after=cv2.cvtColor(img_after, cv2.COLOR_BGR2RGB),
        captions=tuple(c[1] for c in changes) or (NO_CHANGE,),
        regions=tuple(c[2] for c in changes),
        t_before=t_before,
        t_after=round(t_before + float(rng.uniform(2, 60)), 1),
    )


def synthetic_pairs(
    n: int, *, seed: int = 0, size: int = 96, no_change_fraction: float = 0.2, two_change_fraction: float = 0.3
) -> Iterator[SyntheticPair]:
    for i in range(n):
        yield synthetic_pair(
            i, seed=seed, size=size, no_change_fraction=no_change_fraction, two_change_fraction=two_change_fraction
        )


def write_synthetic(
    out_dir: Path,
    n: int,
    *,
    seed: int = 0,
    size: int = 96,
    no_change_fraction: float = 0.2,
    two_change_fraction: float = 0.3,
) -> Path:
    """Write `n` pairs as PNGs under out_dir/images and their records to out_dir/pairs.jsonl."""
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)

    def records() -> Iterator[PairRecord]:
        for pair in synthetic_pairs(
            n, seed=seed, size=size, no_change_fraction=no_change_fraction, two_change_fraction=two_change_fraction
        ):
            paths = []
            for which, rgb in (("before", pair.before), ("after", pair.after)):
                name = f"images/{pair.id}_{which}.png"
                if not cv2.imwrite(str(out_dir / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                    raise OSError(f"could not write {out_dir / name}")
                paths.append(name)
            yield PairRecord(
                id=pair.id,
                camera="synthetic",
                before=paths[0],
                after=paths[1],
                t_before=pair.t_before,
                t_after=pair.t_after,
                captions=list(pair.captions),
                regions=list(pair.regions) or None,
            )

    path = out_dir / PAIRS_FILE
    write_jsonl(path, records())
    return path
