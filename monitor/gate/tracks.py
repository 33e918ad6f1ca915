"""Tracks through a change: while a change is under way the gate sees every sampled frame, and
the changed areas of those frames are linked into tracks. A track that entered, moved and was
gone before the change ended passed through, and its way is known ("from left to right"): two
frames, before and after, cannot tell that.

The linking is constant-velocity prediction plus an optimal assignment (scipy's Hungarian
`linear_sum_assignment`) on the distance between predicted and seen centres, gated by the
thing's size. ByteTrack (supervision) was tried first and does not fit these inputs: its Kalman
filter assumes a box that changes size smoothly, but a changed area grows from a sliver to a
whole car within two samples as the car enters the view, and at 1-2 fps a car moves about its
own length between frames, so its IoU matching lost most of them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from monitor.records import Frame, Region, Sighting, Track, overlap

REACH = 1.25  # a thing's next centre lies within this many of its sizes of where it was heading
MAX_LOST_S = 1.0  # a track unseen for longer than this (plus one frame) has ended
MIN_TRAVEL = 0.1  # of the frame: the least a pass travels
MIN_SIGHTINGS = 3  # a pass is seen at least this often (two sightings make any pair a "track")
# Passes are believed only where most sightings belong to such tracks: real traffic is followed
# (over 80 % on the shared clips), a time-lapse's unrelated images are not (under 45 %).
MIN_FOLLOWED = 0.6
STRAIGHTNESS = 1.5  # a pass's path is at most this much longer than its net travel
MAX_PACE_RATIO = 4.0  # its longest step between frames is at most this many times its shortest
MAX_GROWTH = 2.5  # area ratio of two sightings of one thing in full view, at most
LOOK_TOLERANCE = 32.0  # grey levels: a sighting that looks this different is something else
KEEP_FRAMES = 8  # frames of one change kept for naming what passed (evenly thinned)

Box = tuple[int, int, int, int]  # x, y, w, h in working-image pixels


@dataclass
class _Live:
    seen: list[Sighting] = field(default_factory=list)

    def ahead(self) -> tuple[float, float]:
        """Where its centre should be next (one more step of its last motion)."""
        (x1, y1) = self.seen[-1].centre
        if len(self.seen) < 2:
            return (x1, y1)
        (x0, y0) = self.seen[-2].centre
        return (2 * x1 - x0, 2 * y1 - y0)


class ChangeTracker:
    """One change's tracks. `update(frame, boxes)` per sampled frame of the change; `tracks()`
    at its end; `reset()` before the next change."""

    def __init__(self, sample_fps: float, image_size: tuple[int, int]):
        self.sample_fps = sample_fps
        self.width, self.height = image_size
        self.reset()

    def reset(self) -> None:
        self._live: dict[int, _Live] = {}
        self._ended: dict[int, _Live] = {}
        self._next_id = 1
        self._frames: list[Frame] = []
        self._stride = 1  # keep every `_stride`-th frame
        self._count = 0
        self._last_seq: int | None = None

    def update(self, frame: Frame, boxes: list[Box], looks: list[float] | None = None) -> None:
        """`boxes` of this frame's changed areas (working-image pixels), `looks` their mean grey."""
        self._count += 1
        self._last_seq = frame.seq
        if (self._count - 1) % self._stride == 0:
            self._frames.append(frame)
            if len(self._frames) > KEEP_FRAMES:
                self._frames = self._frames[::2]
                self._stride *= 2
        t = frame.media_time
        for track_id in [
            k for k, v in self._live.items() if t - v.seen[-1].media_time > MAX_LOST_S + 1 / self.sample_fps
        ]:
            self._ended[track_id] = self._live.pop(track_id)
        looks = looks or [0.0] * len(boxes)
        W, H = self.width, self.height
        seen = [
            Sighting(frame.seq, t, round(x / W, 4), round(y / H, 4), round(w / W, 4), round(h / H, 4), round(look, 1))
            for (x, y, w, h), look in zip(boxes, looks)
        ]
        ids = list(self._live)
        matched: set[int] = set()
        if ids and seen:
            cost = np.array([[_distance(self._live[k], s) for s in seen] for k in ids])
            rows, cols = linear_sum_assignment(np.minimum(cost, 1e6))
            for r, c in zip(rows, cols):
                if cost[r, c] <= 1.0:
                    self._live[ids[r]].seen.append(seen[c])
                    matched.add(c)
        for c, s in enumerate(seen):
            if c not in matched:
                self._live[self._next_id] = _Live([s])
                self._next_id += 1

    def tracks(self) -> tuple[Track, ...]:
        """Every track of the change so far; `alive_at_end`: seen in the change's last frame."""
        kept = {f.seq: f for f in self._frames}
        out = []
        for track_id, live in sorted({**self._ended, **self._live}.items()):
            seen = live.seen
            views = sorted(((s, kept[s.seq]) for s in seen if s.seq in kept), key=lambda v: -_visible_area(v[0]))
            out.append(Track(track_id, tuple(seen), seen[-1].seq == self._last_seq, tuple(views)))
        return tuple(out)


def passes(tracks: tuple[Track, ...], regions: list[Region]) -> list[tuple[Track, Region]]:
    """The tracks that passed through, each with its region (its largest view, change "passed"):
    seen at least MIN_SIGHTINGS times, gone before the change ended, and travelled steadily,
    clearly more than its own size (a ghost where something stood does not move), in a change
    whose changed areas mostly can be followed. A track that began on a region that `regions`
    says disappeared or moved is that thing leaving, not a pass."""
    total = sum(len(t.sightings) for t in tracks)
    followed = sum(len(t.sightings) for t in tracks if len(t.sightings) >= MIN_SIGHTINGS)
    if followed < MIN_FOLLOWED * total:
        return []  # most changed areas cannot be followed from frame to frame (a time-lapse)
    out = []
    for track in tracks:
        seen = track.sightings
        if len(seen) < MIN_SIGHTINGS or track.alive_at_end or not track.views or not _steady(track):
            continue
        if any(r.track == track.track_id for r in regions):
            continue  # a region's own track: the thing that left from there
        if any(r.change in ("disappeared", "moved") and overlap(seen[0], r)[0] >= 0.3 for r in regions):
            continue  # began on the place something left
        best = track.views[0][0]
        region = Region(best.x, best.y, best.w, best.h, "passed", round(best.w * best.h, 5), None, track.track_id)
        out.append((track, replace(region, heading=track.heading)))
    return out


def _distance(track: _Live, s: Sighting) -> float:
    """How far `s` is from where `track` was heading, in units of REACH times their size (above
    1: too far to be the same thing)."""
    last = track.seen[-1]
    if abs(last.look - s.look) > LOOK_TOLERANCE:
        return float("inf")
    if not (_cut(last) or _cut(s)) and max(s.w * s.h, last.w * last.h) > MAX_GROWTH * min(s.w * s.h, last.w * last.h):
        return float("inf")  # in full view, a thing keeps its size from one frame to the next
    ax, ay = track.ahead()
    cx, cy = s.centre
    reach = REACH * max(last.w, last.h)
    return max(abs(cx - ax), abs(cy - ay)) / max(reach, 1e-6)


def _steady(track: Track) -> bool:
    """Travelled clearly more than its own size, on a nearly straight path: chance matches of
    unrelated changes (a time-lapse shows other cars in other places on every image) zigzag."""
    dx, dy = track.travel
    net = (dx * dx + dy * dy) ** 0.5
    size = max(max(s.w, s.h) for s in track.sightings)
    if net < max(MIN_TRAVEL, 0.75 * size):
        return False
    centres = [s.centre for s in track.sightings]
    steps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(centres, centres[1:])]
    lengths = [(sx * sx + sy * sy) ** 0.5 for sx, sy in steps]
    backwards = any(sx * dx + sy * dy < -0.25 * n * net for (sx, sy), n in zip(steps, lengths))
    # a thing moves at a fairly even pace (slower only while it is partly out of view)
    even = max(lengths) <= MAX_PACE_RATIO * max(min(lengths), 1e-3)
    return sum(lengths) <= STRAIGHTNESS * net and not backwards and even


def starts_at(track: Track, r: Region) -> bool:
    """The track began at `r` or next to it (within its own size): a thing that stood there and
    moved off first shows as one changed area with the place it left, then beside it."""
    s = track.sightings[0]
    return s.x < r.x + r.w + s.w and r.x - s.w < s.x + s.w and s.y < r.y + r.h + s.h and r.y - s.h < s.y + s.h


def left_from(tracks: tuple[Track, ...], r: Region, look_before: float) -> Track | None:
    """Something that stood at `r` when the change began went away: the track that began there,
    looking as `r` looked before (grey level `look_before`), travelled and ended elsewhere. This
    holds whatever the empty-scene background says, which may have begun with the thing in it."""
    for track in tracks:
        seen = track.sightings
        if len(seen) < 2 or not starts_at(track, r) or overlap(seen[-1], r)[0] >= 0.2:
            continue
        dx, dy = track.travel
        looks = sorted(s.look for s in seen)
        if (dx * dx + dy * dy) ** 0.5 >= MIN_TRAVEL and abs(looks[len(looks) // 2] - look_before) <= LOOK_TOLERANCE:
            return track
    return None


def _cut(s: Sighting) -> bool:
    """The box touches the frame's edge: the thing is partly out of view."""
    return s.x <= 0.01 or s.y <= 0.01 or s.x + s.w >= 0.99 or s.y + s.h >= 0.99


def _visible_area(s: Sighting) -> float:
    """Area, halved for a box cut by the frame's edge."""
    return s.w * s.h * (0.5 if _cut(s) else 1.0)
