"""The detector as the describers use it: a changed region is named by the object that covers
it, found in a crop around the region (where the model takes crops; else in the whole frame),
each crop or frame detected at most once."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import replace
from typing import Protocol

from monitor.config import DetectorConfig
from monitor.records import Detection, Frame, Region, overlap
from pipelines.phrases import MOVES_BY_ITSELF

MIN_COVER = 0.5  # of the smaller of region and box that must overlap for the box to name the region
# Context around a region in its crop: a quarter of its long side each way, and at least this
# many pixels, so a thing cut by the changed area (half a person) is still seen whole.
CROP_MARGIN = 0.25
CROP_MIN_MARGIN_PX = 16

Roi = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels


class Detector(Protocol):
    any_size: bool  # takes a crop at its own size (else `roi` is ignored: whole frames)

    def detect(self, image, roi: Roi | None = None) -> tuple[Detection, ...]: ...


def region_roi(frame: Frame, region: Region) -> Roi:
    """The crop around `region` in `frame` that the detector looks at."""
    h, w = frame.image.shape[:2]
    pad = max(CROP_MIN_MARGIN_PX, CROP_MARGIN * max(region.w * w, region.h * h))
    x0, y0 = max(0, int(region.x * w - pad)), max(0, int(region.y * h - pad))
    x1, y1 = min(w, int((region.x + region.w) * w + pad + 1)), min(h, int((region.y + region.h) * h + pad + 1))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def build_detector(cfg: DetectorConfig) -> ObjectDetector | None:
    """The detector of `describer.detector`, or None when no model is set."""
    if cfg.model is None:
        return None
    from monitor.detect.onnx_detector import OnnxDetector  # onnxruntime loads only when asked for

    return ObjectDetector(OnnxDetector(cfg))


def settle(region: Region, was: str | None, now: str | None, transient: bool) -> Region:
    """`region` labelled with what is at it before (`was`) and after (`now`), and its verdict from
    those when they are decisive: something there only before left ("disappeared"), only after
    came ("appeared"), whatever the pixels against a background suggested (a background that
    held the object, say, because it was in view when the camera started). For a pass-through
    (`after` is its busiest frame) and an object left behind, only `now` counts."""
    if transient or region.change == "left_behind":
        return replace(region, label=now)
    if region.stood_s is not None:  # a thing left behind, taken: never the person who took it
        return replace(region, label=was if was not in MOVES_BY_ITSELF else None)
    if was is not None and now is None:
        return replace(region, change="disappeared", label=was)
    if now is not None and was is None:
        return replace(region, change="appeared", label=now)
    return replace(region, label=was if region.change == "disappeared" else now)


class ObjectDetector:
    """`objects(frame, roi)` (cached by camera, frame seq, read time and crop) and `judge(...)`;
    counts its runs and their time (`monitor bench gate` reports ms per change)."""

    def __init__(self, detector: Detector, cache_size: int = 64):
        self.detector = detector
        self.cache_size = cache_size
        self.crops = detector.any_size
        self._cache: OrderedDict[tuple[str, int, float, Roi | None], tuple[Detection, ...]] = OrderedDict()
        self.runs = 0
        self.seconds = 0.0

    def objects(self, frame: Frame, roi: Roi | None = None) -> tuple[Detection, ...]:
        roi = roi if self.crops else None
        key = (frame.camera_id, frame.seq, frame.wall_time, roi)  # the read time: a restarted stream's seq repeats
        found = self._cache.get(key)
        if found is None:
            t0 = time.perf_counter()
            found = self.detector.detect(frame.image, roi)
            self.seconds += time.perf_counter() - t0
            self.runs += 1
            self._cache[key] = found
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return found

    def covering(self, frame: Frame, region: Region) -> Detection | None:
        """The object that best covers `region` in `frame`, None when none does."""
        best: tuple[float, float, Detection] | None = None
        for det in self.objects(frame, region_roi(frame, region)):
            cover, iou = overlap(region, det)
            if cover >= MIN_COVER and (best is None or (iou, det.score) > best[:2]):
                best = (iou, det.score, det)
        return best[2] if best else None

    def one_object(self, frame: Frame, a: Region, b: Region) -> bool:
        """One object of a's label, in a crop around both, covers both: two areas of one thing (a
        person who changed where they stood and where they are now, or whom low contrast split)."""
        both = region_roi(frame, union(a, b))
        return any(
            det.label == a.label and overlap(a, det)[0] >= MIN_COVER and overlap(b, det)[0] >= MIN_COVER
            for det in self.objects(frame, both)
        )

    def judge(self, before: Frame, after: Frame, region: Region, transient: bool) -> Region:
        """`region` settled (`settle`) by the objects that cover it before and after. The frame
        its pixels point to is looked at first, and the other only when it could change the
        verdict: something seen where a thing appeared has appeared, whatever was there before
        (and the same for a departure), so most regions cost one detector run, not two."""
        if transient or region.change == "left_behind":
            now = self.covering(after, region)
            return settle(region, None, now.label if now else None, transient)
        if region.change == "disappeared":
            was = self.covering(before, region)
            now = None if was else self.covering(after, region)
        else:
            now = self.covering(after, region)
            was = None if now and region.change == "appeared" else self.covering(before, region)
        return settle(region, was.label if was else None, now.label if now else None, transient)


def union(a: Region, b: Region) -> Region:
    """One region over both boxes (the first's label and verdict), their areas added."""
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    x1, y1 = max(a.x + a.w, b.x + b.w), max(a.y + a.h, b.y + b.h)
    return replace(a, x=x0, y=y0, w=x1 - x0, h=y1 - y0, area_fraction=a.area_fraction + b.area_fraction)


# verdicts two areas of one object may have, and the verdict of the one region they become
_TOGETHER = {("appeared", "moved"): "moved", ("moved", "appeared"): "moved"}


def one_per_object(detector: ObjectDetector, regions, frame_of) -> tuple[Region, ...]:
    """One thing can change two areas (where a person stood and where they are now, or a person
    whom low contrast split against the background), and each area's crop shows a part of it:
    two labelled areas are one region when one object of their label, in a crop around both,
    covers both. `frame_of(region)`: the frame that shows it (None: keep it as it is). Verdicts:
    the same, or appeared with moved (it moved)."""
    out: list[Region] = []
    for region in regions:
        frame = frame_of(region) if region.label else None
        same = None
        if frame is not None:
            same = next(
                (
                    i for i, o in enumerate(out)
                    if o.label == region.label and (o.change == region.change or (o.change, region.change) in _TOGETHER)
                    and frame_of(o) is frame and detector.one_object(frame, o, region)
                ),
                None,
            )  # fmt: skip
        if same is None:
            out.append(region)
        else:
            first = out[same]
            change = first.change if first.change == region.change else _TOGETHER[(first.change, region.change)]
            out[same] = replace(union(first, region), change=change)
    return tuple(out)
