"""Immutable records passed between the stages: sources -> gate -> describe -> order -> sinks."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict

# Pixel formats whose first plane is 8-bit luma (what H.264/MPEG-4/MJPEG decoders produce).
_LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"}

# left_behind: still there where something that left stood (a bag put down by a person who walked away);
# passed: came into view and went again while the change was under way (a track, with its heading)
ChangeKind = Literal["appeared", "disappeared", "moved", "changed", "left_behind", "passed"]
Heading = Literal["left to right", "right to left", "top to bottom", "bottom to top"]


@dataclass(frozen=True, eq=False)
class Frame:
    """One sampled frame of one camera.

    `pixels` is a BGR uint8 array (H, W, 3) or the decoder's frame; the BGR array is made on
    first use of `image`, so frames that only pass through the gate never pay for colour."""

    camera_id: str
    seq: int  # per camera, +1 per sampled frame
    media_time: float  # seconds from the start of the stream
    wall_time: float  # UNIX time the frame was read (or its file-time equivalent)
    pixels: Any = field(repr=False)

    @property
    def image(self) -> np.ndarray:
        """BGR uint8 (H, W, 3), read-only."""
        cached = self.__dict__.get("_bgr")
        if cached is None:
            px = self.pixels
            # threads=1: PyAV's default scaler starts native threads that live as long as the frame.
            cached = px if isinstance(px, np.ndarray) else px.to_ndarray(format="bgr24", threads=1)
            cached.setflags(write=False)
            self.__dict__["_bgr"] = cached
        return cached

    def grey(self) -> np.ndarray:
        """Full-resolution grey; straight from the luma plane when the decoder's frame is kept."""
        px = self.pixels
        if isinstance(px, np.ndarray):
            if px.ndim != 2:
                return cv2.cvtColor(px, cv2.COLOR_BGR2GRAY)
            view = px.view()
        elif px.format.name in _LUMA_FIRST:
            # The Y plane is the grey image: view it in place instead of converting.
            plane = px.planes[0]
            rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            view = rows[:, : plane.width]
        else:
            return px.to_ndarray(format="gray", threads=1)
        view.setflags(write=False)  # a view of the frame's own pixels: the frame stays immutable
        return view


@dataclass(frozen=True, slots=True)
class Region:
    """A changed area in normalised 0-1 coordinates (x, y = top-left)."""

    x: float
    y: float
    w: float
    h: float
    change: ChangeKind
    area_fraction: float  # changed pixels of this region / pixels of the frame
    label: str | None = None  # filled by the describer: "person", "vehicle", ...
    track: int | None = None  # the change's track this region follows (`ChangeCandidate.tracks`)
    heading: Heading | None = None  # "passed": its way through the view
    # "disappeared" where something was left behind: how long it had stood there, seconds
    # ("the bag left behind 3 minutes earlier was taken")
    stood_s: float | None = None

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y + self.h / 2)


@dataclass(frozen=True, slots=True)
class Sighting:
    """Where a track was in one sampled frame (normalised 0-1, x, y = top-left)."""

    seq: int
    media_time: float
    x: float
    y: float
    w: float
    h: float
    look: float = 0.0  # mean grey level of its changed pixels: the same thing looks the same

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y + self.h / 2)


@dataclass(frozen=True, eq=False)
class Track:
    """One thing followed through the frames of a change (the gate's changed areas, linked)."""

    track_id: int
    sightings: tuple[Sighting, ...]  # in time order
    alive_at_end: bool  # seen in the change's last frame
    # Its sightings in frames the gate kept, largest first: what the describer names it from.
    views: tuple[tuple[Sighting, Frame], ...] = field(default=(), repr=False)

    @property
    def travel(self) -> tuple[float, float]:
        """Centre displacement, first sighting to last (normalised)."""
        (x0, y0), (x1, y1) = self.sightings[0].centre, self.sightings[-1].centre
        return (x1 - x0, y1 - y0)

    @property
    def heading(self) -> Heading:
        dx, dy = self.travel
        if abs(dx) >= abs(dy):
            return "left to right" if dx > 0 else "right to left"
        return "top to bottom" if dy > 0 else "bottom to top"


@dataclass(frozen=True, slots=True)
class Detection:
    """An object the detector found in one frame, in normalised 0-1 coordinates (x, y = top-left)."""

    label: str  # its name in the log ("person", "car", "bag"), from `describer.detector.classes`
    model_class: str  # the model's own class name ("handbag")
    score: float
    x: float
    y: float
    w: float
    h: float

    @property
    def area(self) -> float:
        return self.w * self.h


@dataclass(frozen=True, slots=True)
class GateScores:
    ssim: float  # structural similarity of the working images, 1 = identical
    changed_fraction: float  # changed pixels / unmasked pixels


@dataclass(frozen=True, slots=True)
class ChangeCandidate:
    """One settled change: the scene before it (the last described frame) and after it."""

    camera_id: str
    before: Frame
    after: Frame
    onset_media_time: float  # first sampled frame where the change was seen
    regions: tuple[Region, ...]
    scores: GateScores
    transient: bool = False  # the scene went back to `before`; `after` is the busiest frame
    # False: reported before the scene was still for `settle_s`: at `max_wait_s` (constant
    # churn, a time-lapse) or because the source ended or stopped while the change was under way.
    settled: bool = True
    detected_at: float = field(default_factory=time.time, compare=False)  # when the gate decided
    tracks: tuple[Track, ...] = ()  # what the regions' `track` refer to (the things that passed through)
    # The gate's id of the change (`ChangeStart.change_id`), and those of changes merged into it
    # by a full queue: early alerts announced under any of them are settled by this one.
    change_id: str = ""
    merged: tuple[str, ...] = ()

    def track(self, track_id: int | None) -> Track | None:
        return next((t for t in self.tracks if t.track_id == track_id), None)


@dataclass(frozen=True, slots=True)
class ChangeStart:
    """A change under way, as the gate sees it on one frame before it settles: what early alert
    rules (`alerts[].early`) read. The first one of a change is of its onset frame."""

    camera_id: str
    change_id: str  # the same in the settled `ChangeCandidate` and `ChangeEvent`
    onset_media_time: float  # the first frame that fired
    onset_wall_time: float
    frame: Frame  # the frame this view is of
    regions: tuple[Region, ...]  # its changed areas on `frame` (change "changed", no labels yet)
    changed_fraction: float


class RegionOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    x: float
    y: float
    w: float
    h: float
    change: str
    label: str | None = None
    track: int | None = None  # regions of one event with the same track follow one thing
    heading: str | None = None  # change "passed": "left to right", "top to bottom", ...
    stood_s: float | None = None  # a left-behind thing that went: how long it had stood there, s


class ScoresOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    ssim: float
    changed_fraction: float


class ChangeEvent(BaseModel):
    """One line of the change log."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    camera: str
    seq: int
    kind: Literal["change", "camera_offline", "camera_online"] = "change"
    t_before: str
    t_after: str
    media_t_before: float
    media_t_after: float
    media_t_onset: float
    text: str
    regions: list[RegionOut] = []
    scores: ScoresOut | None = None
    describer: str
    latency_ms: float
    outage_s: float | None = None  # camera_online: how long the camera was down
    transient: bool = False  # the scene went back to how it was: something passed through
    settled: bool = True  # False: reported while still changing (at max_wait_s, or as the source ended)
    change_id: str | None = None  # change events: the id its early alerts carried (`phase: onset`)
    merged_changes: list[str] = []  # changes a full queue merged into this one (their early alerts end here)

    def line(self, tz: tzinfo | None = None) -> str:
        """The human-readable log line, in `tz` (default: the host's local zone, as journalctl):
        `2026-12-01 08:14:03+01:00 lot-east: a white van parked ...`."""
        at = datetime.fromisoformat(self.t_after.replace("Z", "+00:00")).astimezone(tz)
        return f"{at.isoformat(sep=' ', timespec='seconds')} {self.camera}: {self.text}"


def overlap(a: Region | Detection | Sighting, b: Region | Detection | Sighting) -> tuple[float, float]:
    """Two normalised boxes: (intersection over the smaller of the two, intersection over union)."""
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    area_a, area_b = a.w * a.h, b.w * b.h
    if inter <= 0 or area_a <= 0 or area_b <= 0:
        return 0.0, 0.0
    return inter / min(area_a, area_b), inter / (area_a + area_b - inter)


def unix_time(iso: str) -> float:
    """The inverse of `iso_utc`: UNIX seconds of an ISO-8601 time (`Z` or an offset). ValueError
    when it is none."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def iso_utc(unix_time: float) -> str:
    """ISO-8601 UTC with milliseconds: 2026-11-25T08:14:03.120Z."""
    dt = datetime.fromtimestamp(unix_time, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def make_change_id(camera: str, stream_start: float, onset_seq: int) -> str:
    """Stable id of a change, known from its onset frame (before it has an event or a seq)."""
    digest = hashlib.sha1(f"{camera}|{stream_start:.3f}|onset|{onset_seq}".encode()).hexdigest()[:12]
    return f"{camera}-c{digest}"


def make_event_id(camera: str, stream_start: float, after_seq: int) -> str:
    """Stable id: the same camera, stream and after-frame always give the same id,
    so a re-send after a crash is recognisable downstream."""
    digest = hashlib.sha1(f"{camera}|{stream_start:.3f}|{after_seq}".encode()).hexdigest()[:16]
    return f"{camera}-{digest}"
