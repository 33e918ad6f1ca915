"""Changed regions of a settled change, and what happened in each: appeared, disappeared, moved,
changed. The verdict compares each region with the before frame, the after frame and a slow
"empty scene" background that is not updated where known objects stand (so a car parked for an
hour is still recognised as having *left* when it drives off)."""

from __future__ import annotations

import cv2
import numpy as np

from monitor.config import GateConfig
from monitor.gate.imaging import Exposure
from monitor.gate.tracks import left_from
from monitor.records import Region, Track

Box = tuple[int, int, int, int]  # x, y, w, h in working-image pixels
LEFT_BEHIND_MAX = 0.6  # of what left: an object left behind is smaller than who left it


def _iou(a: Box, b: Box) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter) if inter else 0.0


def _contained(inner: Box, outer: Box) -> float:
    """Fraction of `inner`'s area inside `outer`."""
    iw = max(0, min(inner[0] + inner[2], outer[0] + outer[2]) - max(inner[0], outer[0]))
    ih = max(0, min(inner[1] + inner[3], outer[1] + outer[3]) - max(inner[1], outer[1]))
    return iw * ih / float(max(1, inner[2] * inner[3]))


class RegionFinder:
    def __init__(self, first_img: np.ndarray, valid: np.ndarray, cfg: GateConfig, sample_fps: float):
        self.cfg = cfg
        self.valid = valid
        self.background = first_img.astype(np.float32)
        self._learn_every = max(1, round(sample_fps))
        self._learn_count = 0
        self.alpha = min(1.0, self._learn_every / (cfg.slow_background_s * sample_fps))
        # Things that appeared and are still there -> how much of their box differed from the
        # empty scene when they arrived.
        self.present: dict[Box, float] = {}
        self.left_at: dict[Box, float] = {}  # things left behind (in `present`) -> media time they were seen left
        h, w = first_img.shape
        self.frame_px = float(h * w)
        k = max(3, (w // 40) | 1)  # merge the parts of one object (head and body, car and roof)
        self._last_components: tuple[np.ndarray, list] | None = None
        self._merge = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))

    def learn(self, img: np.ndarray, changed: np.ndarray) -> None:
        # `img` is in model space, the exposure the background is kept in.
        """Blend a quiet frame into the empty-scene background, except where objects stand.
        Once a second is plenty for a time constant of minutes."""
        self._learn_count += 1
        if self._learn_count % self._learn_every:
            return
        keep = self.valid & ~changed
        for x, y, w, h in self.present:
            keep[y : y + h, x : x + w] = False
        cv2.accumulateWeighted(img, self.background, self.alpha, mask=keep.astype(np.uint8))

    def components(self, changed: np.ndarray) -> list[tuple[Box, np.ndarray, float]]:
        """(box, pixel mask, area fraction) of each large enough connected change."""
        if self._last_components is not None and self._last_components[0] is changed:
            return self._last_components[1]  # the gate asks twice about the same mask
        merged = cv2.dilate(changed.view(np.uint8), self._merge)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(merged, connectivity=8)
        min_px = self.cfg.min_region_fraction * self.frame_px
        out = []
        for i in np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_px) + 1:
            x, y, w, h, _ = (int(v) for v in stats[i])  # the merged area bounds the changed area
            pixels = (labels[y : y + h, x : x + w] == i) & changed[y : y + h, x : x + w]
            area = float(pixels.sum()) / self.frame_px
            if area >= self.cfg.min_region_fraction:
                out.append(((x, y, w, h), pixels, area))
        self._last_components = (changed, out)
        return out

    def has_region(self, changed: np.ndarray) -> bool:
        return bool(self.components(changed))

    def regions(
        self,
        before: np.ndarray,
        after: np.ndarray,
        changed: np.ndarray,
        transient: bool,
        model_to_before: Exposure,
        tracks: tuple[Track, ...] = (),
        now: float = 0.0,
    ) -> list[Region]:
        """The regions of a finished change with their verdicts; `tracks`: the change's tracks,
        which overrule the background where something followed away from a region; `now`: the
        media time of `after` (how long a thing left behind stood before it was taken)."""
        comps = sorted(self.components(changed), key=lambda c: -c[2])
        # Everything in the photometry of `before` (the caller matched `after` already).
        background = model_to_before.apply(self.background.astype(np.uint8))
        kinds: list[str] = []
        for (x, y, w, h), pix, _ in comps:
            b = before[y : y + h, x : x + w][pix].astype(np.float32)
            a = after[y : y + h, x : x + w][pix].astype(np.float32)
            bg = background[y : y + h, x : x + w][pix].astype(np.float32)
            tol = max(self.cfg.pixel_threshold, 0.45 * float(np.mean(np.abs(b - a))))
            before_bg = np.abs(b - bg) <= tol  # the empty scene showed here before
            after_bg = np.abs(a - bg) <= tol  # ... and here after
            uncovered = float(np.mean(after_bg & ~before_bg))
            covered = float(np.mean(before_bg & ~after_bg))
            known = any(_iou((x, y, w, h), p) > 0.3 for p in self.present)
            if covered >= 0.2 and uncovered >= 0.2:
                kinds.append("moved")  # part of the region newly covered, part uncovered
            elif covered >= 0.5 and covered > 2 * uncovered:
                kinds.append("appeared")
            elif uncovered >= 0.5 and uncovered > 2 * covered:
                kinds.append("disappeared")
            elif known and uncovered > covered:
                kinds.append("disappeared")  # a known object went; the background shows again
            else:
                kinds.append("changed")
        kinds = [
            "moved" if k == "disappeared" and self._still_there(box, after, background) else k
            for (box, _, _), k in zip(comps, kinds)
        ]
        followed = self._left_by_tracks(comps, kinds, before, after, tracks, model_to_before) if not transient else {}
        if self._fidget(comps, kinds, transient):
            return []
        left = [] if transient else self._left_behind(comps, kinds, after, background)
        stood, taken = ({}, []) if transient else self._taken(comps, kinds, after, background, now)
        if not transient:
            self._track_present(comps, kinds, after, background)
            for box, _, _ in left:
                self.present[box] = self._fg_fraction(after, box, background)
                self.left_at[box] = now
        self._pair_moves(comps, kinds, before, after)
        H, W = changed.shape
        # (component, verdict, seconds a taken thing stood); tracks index the components, which come first
        found = [(c, k, stood.get(i)) for i, (c, k) in enumerate(zip(comps, kinds))]
        found += [(c, "left_behind", None) for c in left] + [(c, "disappeared", s) for c, s in taken]
        return [
            Region(x / W, y / H, w / W, h / H, kind, round(area, 5), track=followed.get(i), stood_s=s)  # type: ignore[arg-type]
            for i, (((x, y, w, h), _, area), kind, s) in enumerate(found)
        ]

    def _taken(self, comps, kinds: list[str], after, background, now: float) -> tuple[dict[int, float], list]:
        """Things left behind that are gone: where a change covers one and the empty scene shows
        there again. ({component: seconds it had stood}, [(component, seconds)] for those inside
        a larger change, a person who picked it up and walked off, as regions of their own)."""
        stood: dict[int, float] = {}
        taken = []
        for box, since in list(self.left_at.items()):
            fg_then = self.present.get(box)
            if fg_then is None:  # forgotten (bounded memory) or gone another way
                del self.left_at[box]
                continue
            near = [
                i for i, ((b, _, _), k) in enumerate(zip(comps, kinds)) if k != "appeared" and _contained(box, b) >= 0.5
            ]
            if not near or self._fg_fraction(after, box, background) >= 0.3 * fg_then:
                continue
            del self.left_at[box]
            self.present.pop(box)
            own = next((i for i in near if _iou(comps[i][0], box) > 0.5), None)
            if own is not None:
                kinds[own], stood[own] = "disappeared", max(0.0, now - since)
            else:
                x, y, w, h = box
                taken.append(((box, np.ones((h, w), bool), round(w * h / self.frame_px, 5)), max(0.0, now - since)))
        return stood, taken

    def _left_by_tracks(self, comps, kinds: list[str], before, after, tracks, model_to_before: Exposure) -> dict:
        """{component: track} where a track shows the thing that stood there moving off. It left,
        even where the verdict was "appeared": the background had it (it was in view when the
        camera started), and the empty scene, now seen there, replaces the background there."""
        height, width = after.shape
        out = {}
        for i, ((x, y, w, h), pix, area) in enumerate(comps):
            if kinds[i] not in ("appeared", "disappeared"):
                continue
            region = Region(x / width, y / height, w / width, h / height, "appeared", area)
            track = left_from(tracks, region, float(before[y : y + h, x : x + w][pix].mean()))
            if track is None:
                continue
            out[i] = track.track_id
            if kinds[i] == "appeared":
                kinds[i] = "disappeared"
                model = model_to_before.inverse().apply(after[y : y + h, x : x + w]).astype(np.float32)
                self.background[y : y + h, x : x + w][pix] = model[pix]
        return out

    def _left_behind(self, comps, kinds: list[str], after: np.ndarray, background: np.ndarray) -> list:
        """What still differs from the empty scene where something left: an object it put down
        (a bag), which the before/after comparison cannot see (it was there, half hidden, in both).
        Only well above noise, large enough to be a region, and clearly smaller than what left."""
        out = []
        height, width = after.shape
        for ((x0, y0, w0, h0), _, area), kind in zip(comps, kinds):
            if kind != "disappeared":
                continue
            # around where it stood: what it put down may stick out of its box (at its feet)
            x, y = max(0, x0 - w0 // 4), max(0, y0 - h0 // 4)
            w, h = min(width, x0 + w0 + w0 // 4) - x, min(height, y0 + h0 + h0 // 4) - y
            diff = cv2.absdiff(after[y : y + h, x : x + w], background[y : y + h, x : x + w])
            residue = (diff > 2 * self.cfg.pixel_threshold) & self.valid[y : y + h, x : x + w]
            residue = cv2.morphologyEx(residue.view(np.uint8), cv2.MORPH_OPEN, self._open)
            n, labels, stats, _ = cv2.connectedComponentsWithStats(residue, connectivity=8)
            for i in range(1, n):
                bx, by, bw, bh, px = (int(v) for v in stats[i])
                frac = px / self.frame_px
                if frac >= self.cfg.min_region_fraction and frac <= LEFT_BEHIND_MAX * area and px >= 0.4 * bw * bh:
                    out.append(((x + bx, y + by, bw, bh), labels[by : by + bh, bx : bx + bw] == i, round(frac, 5)))
        return out

    def _fidget(self, comps, kinds: list[str], transient: bool) -> bool:
        """Every region lies inside a thing already there and only changed, shifted or now
        differs from the empty scene where it did not (a standing person shifting weight,
        turning, raising an arm): not a new event. (Something a standing person puts down
        inside their own outline is found when they leave: `_left_behind`.)"""
        for (box, _, _), kind in zip(comps, kinds):
            inside = any(_contained(box, p) >= 0.6 for p in self.present)
            if not inside or not (transient or kind in ("changed", "moved", "appeared")):
                return False
        return bool(comps)

    def _still_there(self, box: Box, after: np.ndarray, background: np.ndarray) -> bool:
        """A region "disappeared" inside a known object whose box still mostly differs from the
        empty scene: only part of it moved (a person stepping aside), it did not leave."""
        for p, fg_then in self.present.items():
            if _contained(box, p) >= 0.6 and self._fg_fraction(after, p, background) >= 0.5 * fg_then:
                return True
        return False

    def _fg_fraction(self, img: np.ndarray, box: Box, background: np.ndarray) -> float:
        x, y, w, h = box
        diff = cv2.absdiff(img[y : y + h, x : x + w], background[y : y + h, x : x + w])
        return float(np.mean(diff > self.cfg.pixel_threshold))

    def _pair_moves(self, comps, kinds: list[str], before: np.ndarray, after: np.ndarray) -> None:
        """One thing that disappeared and a similar one that appeared = it moved."""
        gone = [i for i, k in enumerate(kinds) if k == "disappeared"]
        new = [i for i, k in enumerate(kinds) if k == "appeared"]
        if len(gone) != 1 or len(new) != 1:
            return
        (gb, gpix, garea), (nb, npix, narea) = comps[gone[0]], comps[new[0]]
        look_gone = float(before[gb[1] : gb[1] + gb[3], gb[0] : gb[0] + gb[2]][gpix].mean())
        look_new = float(after[nb[1] : nb[1] + nb[3], nb[0] : nb[0] + nb[2]][npix].mean())
        if 0.5 <= garea / narea <= 2.0 and abs(look_gone - look_new) < 2 * self.cfg.pixel_threshold:
            kinds[gone[0]] = kinds[new[0]] = "moved"

    def _track_present(self, comps, kinds: list[str], after: np.ndarray, background: np.ndarray) -> None:
        for (box, _, _), kind in zip(comps, kinds):
            if kind == "disappeared":
                self.present = {p: f for p, f in self.present.items() if _iou(p, box) <= 0.3}
            if kind == "appeared":
                self.present[box] = self._fg_fraction(after, box, background)
        while len(self.present) > 32:  # bounded memory in busy scenes
            del self.present[next(iter(self.present))]
