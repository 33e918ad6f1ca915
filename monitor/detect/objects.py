"""The detector as the describers use it: each frame is detected at most once (one change's
after frame is the next change's before frame), and a changed region is named by the object
that covers it."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import replace
from typing import Protocol

from monitor.config import DetectorConfig
from monitor.records import Detection, Frame, Region, overlap

MIN_COVER = 0.5  # of the smaller of region and box that must overlap for the box to name the region


class Detector(Protocol):
    def detect(self, image) -> tuple[Detection, ...]: ...


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
    if was is not None and now is None:
        return replace(region, change="disappeared", label=was)
    if now is not None and was is None:
        return replace(region, change="appeared", label=now)
    return replace(region, label=was if region.change == "disappeared" else now)


class ObjectDetector:
    """`objects(frame)` (cached by camera, frame seq and read time) and `judge(...)`;
    counts the frames it ran on and their time (`monitor bench gate` reports ms per change)."""

    def __init__(self, detector: Detector, cache_frames: int = 32):
        self.detector = detector
        self.cache_frames = cache_frames
        self._cache: OrderedDict[tuple[str, int, float], tuple[Detection, ...]] = OrderedDict()
        self.frames = 0
        self.seconds = 0.0

    def objects(self, frame: Frame) -> tuple[Detection, ...]:
        key = (frame.camera_id, frame.seq, frame.wall_time)  # the read time: a restarted stream's seq repeats
        found = self._cache.get(key)
        if found is None:
            t0 = time.perf_counter()
            found = self.detector.detect(frame.image)
            self.seconds += time.perf_counter() - t0
            self.frames += 1
            self._cache[key] = found
            while len(self._cache) > self.cache_frames:
                self._cache.popitem(last=False)
        return found

    def covering(self, frame: Frame, region: Region) -> Detection | None:
        """The object that best covers `region` in `frame`, None when none does."""
        best: tuple[float, float, Detection] | None = None
        for det in self.objects(frame):
            cover, iou = overlap(region, det)
            if cover >= MIN_COVER and (best is None or (iou, det.score) > best[:2]):
                best = (iou, det.score, det)
        return best[2] if best else None

    def judge(self, before: Frame, after: Frame, region: Region, transient: bool) -> Region:
        """`region` settled (`settle`) by the objects that cover it before and after."""
        now = self.covering(after, region)
        was = None if transient or region.change == "left_behind" else self.covering(before, region)
        return settle(region, was.label if was else None, now.label if now else None, transient)
