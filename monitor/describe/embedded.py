"""The embedded describer: no model weights, no GPU. Region geometry from the gate plus OpenCV's
built-in HOG people detector; it says "something" when it cannot tell what changed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np

from monitor.config import DescriberConfig
from monitor.describe.base import Description
from monitor.detect.objects import ObjectDetector, one_per_object, settle
from monitor.records import ChangeCandidate, Frame, Region, overlap
from pipelines.phrases import MOVES_BY_ITSELF, sentence

# Without a detector, "a person" must be sure: at least as tall for its width as HOG's own
# 64x128 window (a car seen from above is long too, but rarely twice as long as wide), and a
# confident HOG decision (its SVM margin, 0 at the decision boundary): otherwise "something".
PERSON_ASPECT = 2.0
HOG_MIN_SCORE = 1.0
MAX_PASS_FRAMES = 3  # frames of one change that name what passed through


def pass_views(cand: ChangeCandidate, max_frames: int = MAX_PASS_FRAMES) -> dict[int, tuple[Region, Frame] | None]:
    """For each region that passed through: a frame of its track and its box there, or None.
    At most `max_frames` distinct frames per change (the detector's cost), chosen greedily to
    show the most of those things; a thing seen in none of them stays unnamed."""
    passed = [r for r in cand.regions if r.change == "passed" and cand.track(r.track) is not None]
    views = {r.track: {f.seq: (s, f) for s, f in reversed(cand.track(r.track).views)} for r in passed}
    chosen: list[int] = []
    while len(chosen) < max_frames:
        counts: dict[int, float] = {}
        for seen in views.values():
            if not any(seq in seen for seq in chosen):
                for seq, (s, _) in seen.items():
                    counts[seq] = counts.get(seq, 0.0) + 1.0 + s.w * s.h  # most things, then the largest
        if not counts:
            break
        chosen.append(max(counts, key=counts.__getitem__))
    out: dict[int, tuple[Region, Frame] | None] = {}
    for region in passed:
        seen = [views[region.track][seq] for seq in chosen if seq in views[region.track]]
        if not seen:
            out[region.track] = None
            continue
        s, frame = max(seen, key=lambda v: v[0].w * v[0].h)
        out[region.track] = (replace(region, x=s.x, y=s.y, w=s.w, h=s.h), frame)
    return out


def _shown_in(cand: ChangeCandidate, region: Region) -> Frame | None:
    """The frame that shows what a region's verdict is about (None: a pass, or a thing left or taken)."""
    if region.change in ("appeared", "moved"):
        return cand.after
    if region.change == "disappeared" and region.stood_s is None:
        return cand.before
    return None


def without_fragments(regions: tuple[Region, ...]) -> tuple[Region, ...]:
    """What is not something left behind, although the empty scene differs there: a "left
    behind" region mostly inside a named thing this change brought into view is a piece of that
    thing (low contrast splits a person into pieces against the background), and one the
    detector names as a thing that moves by itself (a person, a car) was not put down by
    anyone (a person standing there is in their own region). Both are dropped."""
    came = [r for r in regions if r.change == "appeared" and r.label]
    return tuple(
        r
        for r in regions
        if r.change != "left_behind"
        or (r.label not in MOVES_BY_ITSELF and not any(overlap(r, c)[0] >= 0.5 for c in came))
    )


class EmbeddedDescriber:
    """No weights, no GPU. With a detector (`describer.detector.model`), what changed is named
    by the detector's objects where the region is; without one, by shape and OpenCV's HOG
    people detector (people and vehicles only, "something" otherwise)."""

    name = "embedded"
    max_wait_s = 0.0  # fast enough one by one

    def __init__(self, detector: ObjectDetector | None = None):
        self.detector = detector
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def describe(self, candidates: Sequence[ChangeCandidate]) -> list[Description]:
        return [self.describe_one(c) for c in candidates]

    def reload(self, running: DescriberConfig, new: DescriberConfig) -> DescriberConfig:
        return running  # nothing to change live

    def describe_one(self, cand: ChangeCandidate) -> Description:
        """The sentence, and the regions with their labels and settled verdicts. What passed
        through is named from a frame of its track (the one where it was largest)."""
        judge = self.judge_with_detector if self.detector is not None else self.judge
        views = pass_views(cand)
        regions = tuple(
            self._pass(judge, cand.before, r, views[r.track])
            if r.track in views and r.change == "passed"
            else judge(cand.before, cand.after, r, cand.transient)
            for r in cand.regions
        )
        if self.detector is not None and not cand.transient:
            regions = one_per_object(self.detector, regions, lambda r: _shown_in(cand, r))
        regions = without_fragments(regions)
        labels = tuple(r.label for r in regions)
        return Description(sentence(regions, labels, cand.transient, cand.settled), labels, regions)

    @staticmethod
    def _pass(judge, before: Frame, region: Region, view: tuple[Region, Frame] | None) -> Region:
        """A region that passed through, named from a frame of its track (unnamed without one)."""
        if view is None:
            return region
        named = judge(before, view[1], view[0], True)
        return replace(named, x=region.x, y=region.y, w=region.w, h=region.h)

    def judge(self, before: Frame, after: Frame, region: Region, transient: bool) -> Region:
        """Without a detector: people by shape and HOG, vehicles by shape. A person seen by HOG
        in only one of the two frames also settles the verdict (`settle`, as the detector's
        objects do): someone in view when the camera started who walks off left, whatever a
        background that began as that first frame says."""
        h, w = after.image.shape[:2]
        pw, ph = region.w * w, region.h * h
        if region.change == "left_behind" or region.stood_s is not None:  # an object: shape cannot tell which
            return replace(region, label=None)
        if ph >= PERSON_ASPECT * pw:  # people are taller than wide; HOG alone errs on tall textures
            now = "person" if self._has_person(after.image, region) else None
            was = None if transient else ("person" if self._has_person(before.image, region) else None)
            if now or was:
                return settle(region, was, now, transient)
        return replace(region, label=self._shape(after, region))

    def judge_with_detector(self, before: Frame, after: Frame, region: Region, transient: bool) -> Region:
        """The detector's objects; where it sees nothing, what shape and HOG see (as without a
        detector): a small detector misses cars seen from straight above and distant people."""
        judged = self.detector.judge(before, after, region, transient)
        if judged.label is None and region.change != "left_behind":
            return self.judge(before, after, region, transient)
        return judged

    @staticmethod
    def _shape(after: Frame, region: Region) -> str | None:
        """Large and wider than tall: a car from a fixed camera."""
        h, w = after.image.shape[:2]
        wide = region.w * w >= 1.2 * region.h * h
        return "vehicle" if region.w * region.h >= 0.01 and wide else None

    def _has_person(self, image: np.ndarray, region: Region) -> bool:
        h, w = image.shape[:2]
        x0 = max(0, int((region.x - 0.25 * region.w) * w))
        x1 = min(w, int((region.x + 1.25 * region.w) * w))
        y0 = max(0, int((region.y - 0.1 * region.h) * h))
        y1 = min(h, int((region.y + 1.1 * region.h) * h))
        if y1 - y0 < 12 or x1 - x0 < 6:
            return False
        # HOG's window is 64x128 with a person ~96 px tall: scale the region to ~110 px and
        # pad, so people cut by the frame edge still fit the window.
        scale = 110.0 / max(1.0, region.h * h)
        crop = cv2.resize(image[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        crop = cv2.copyMakeBorder(crop, 24, 24, 24, 24, cv2.BORDER_REPLICATE)
        rects, weights = self._hog.detectMultiScale(crop, winStride=(4, 4), padding=(8, 8), scale=1.05)
        return len(rects) > 0 and float(np.max(weights)) > HOG_MIN_SCORE
