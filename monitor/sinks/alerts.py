"""Alert rules: which change events also go to the alerts stream, and which rule fired.

A rule fires when every condition it gives holds (conditions left at their defaults are not
checked):

- `cameras`: the event's camera is one of them (empty = any camera);
- `zones`: some region's box intersects (or touches) one of the named zone polygons of the
  event's camera (boxes and polygons are fractions 0-1 of the frame);
- `labels`: some region carries one of these labels (case-insensitive); with `zones` too, the
  same region must be labelled *and* in the zone (`person-on-driveway`: a person in the
  driveway, not a car in the driveway and a person elsewhere);
- `keywords`: any of the words appears in the text as a whole word, case-insensitive;
- `regex`: `re.search` finds it in the text;
- `min_changed_fraction`: `scores.changed_fraction` is at least this (> 0 only);
- `cooldown_s`: at most one alert of this rule per camera per period, measured on the events'
  `t_after`, so a replay of the same events gives the same alerts.

Rules with `zones` or `labels` only consider `kind == "change"` events (health events such as
`camera_offline` have no regions).

`early: true` rules are also matched while a change is under way (`match_start`, on the gate's
`ChangeStart`: no text yet, so no keywords or regex), once per change, the cooldown measured on
the onset; their settled alert then comes with the change's event whether it still matches or
not (`match(event, early=...)`), so every onset alert is followed by its settled one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

import structlog

from monitor.config import AlertRule, CameraConfig
from monitor.records import ChangeEvent, ChangeStart, Region, RegionOut, unix_time

log = structlog.get_logger(__name__)

Point = tuple[float, float]
_EPS = 1e-9


# -- geometry (normalised coordinates, no dependencies) ------------------------------------
def _point_in_polygon(px: float, py: float, poly: Sequence[Point]) -> bool:
    """Even-odd rule; points on the boundary may go either way (edges are tested separately)."""
    inside = False
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        if (y1 > py) != (y2 > py):
            x_cross = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
            if px < x_cross:
                inside = not inside
    return inside


def _orient(a: Point, b: Point, c: Point) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _on_segment(a: Point, b: Point, p: Point) -> bool:
    return (
        min(a[0], b[0]) - _EPS <= p[0] <= max(a[0], b[0]) + _EPS
        and min(a[1], b[1]) - _EPS <= p[1] <= max(a[1], b[1]) + _EPS
    )


def _segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    d1, d2 = _orient(q1, q2, p1), _orient(q1, q2, p2)
    d3, d4 = _orient(p1, p2, q1), _orient(p1, p2, q2)
    if ((d1 > _EPS and d2 < -_EPS) or (d1 < -_EPS and d2 > _EPS)) and (
        (d3 > _EPS and d4 < -_EPS) or (d3 < -_EPS and d4 > _EPS)
    ):
        return True
    # Touching / collinear cases.
    return (
        (abs(d1) <= _EPS and _on_segment(q1, q2, p1))
        or (abs(d2) <= _EPS and _on_segment(q1, q2, p2))
        or (abs(d3) <= _EPS and _on_segment(p1, p2, q1))
        or (abs(d4) <= _EPS and _on_segment(p1, p2, q2))
    )


def box_intersects_polygon(x: float, y: float, w: float, h: float, poly: Sequence[Point]) -> bool:
    """Does the axis-aligned box (top-left x, y; size w, h) share any point with the polygon
    (convex or not, boundary included)?"""
    x0, y0, x1, y1 = x, y, x + max(w, 0.0), y + max(h, 0.0)
    if not poly:
        return False
    # Quick reject on the bounding boxes.
    xs = [p[0] for p in poly]
    ys = [p[1] for p in poly]
    if x1 < min(xs) - _EPS or x0 > max(xs) + _EPS or y1 < min(ys) - _EPS or y0 > max(ys) + _EPS:
        return False
    # A polygon vertex inside the box.
    for px, py in poly:
        if x0 - _EPS <= px <= x1 + _EPS and y0 - _EPS <= py <= y1 + _EPS:
            return True
    # A box corner inside the polygon (the box may lie wholly inside it).
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if any(_point_in_polygon(cx, cy, poly) for cx, cy in corners):
        return True
    # Crossing edges.
    box_edges = [(corners[i], corners[(i + 1) % 4]) for i in range(4)]
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        for c, d in box_edges:
            if _segments_intersect(a, b, c, d):
                return True
    return False


# -- rules ----------------------------------------------------------------------------------
def _parse_time(iso: str) -> float | None:
    try:
        return unix_time(iso)
    except (ValueError, AttributeError):
        return None


class _CompiledRule:
    def __init__(self, rule: AlertRule):
        self.rule = rule
        self.cameras = set(rule.cameras)
        self.zones = list(dict.fromkeys(rule.zones))
        self.labels = {label.casefold() for label in rule.labels}
        words = [w.strip() for w in rule.keywords if w.strip()]
        # Whole words: no word character right before or after (works for "white van", "x-ray").
        self.keywords = (
            re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)
            if words
            else None
        )
        self.regex = re.compile(rule.regex) if rule.regex is not None else None

    def conditions_hold(self, event: ChangeEvent, cameras: dict[str, CameraConfig]) -> bool:
        fraction = event.scores.changed_fraction if event.scores is not None else None
        return self.holds(event.camera, event.kind, event.regions, fraction, event.text, cameras)

    def holds(
        self,
        camera: str,
        kind: str,
        regions: Sequence[RegionOut | Region],
        fraction: float | None,
        text: str | None,  # None: a change under way (early rules have no text conditions)
        cameras: dict[str, CameraConfig],
    ) -> bool:
        if self.cameras and camera not in self.cameras:
            return False
        if self.zones or self.labels:
            if kind != "change" or not self._some_region(camera, regions, cameras):
                return False
        if self.rule.min_changed_fraction > 0:
            if fraction is None or fraction < self.rule.min_changed_fraction:
                return False
        if text is None:
            return True
        if self.keywords is not None and not self.keywords.search(text):
            return False
        return not (self.regex is not None and not self.regex.search(text))

    def _some_region(
        self, camera: str, regions: Sequence[RegionOut | Region], cameras: dict[str, CameraConfig]
    ) -> bool:
        polygons: list[list[Point]] = []
        if self.zones:
            cam = cameras.get(camera)
            if cam is None:
                return False
            wanted = set(self.zones)
            polygons = [list(z.polygon) for z in cam.zones if z.name in wanted]
            if not polygons:
                return False
        return any(self._region_ok(r, polygons) for r in regions)

    def _region_ok(self, region: RegionOut | Region, polygons: list[list[Point]]) -> bool:
        if self.labels and (region.label is None or region.label.casefold() not in self.labels):
            return False
        if self.zones:
            return any(box_intersects_polygon(region.x, region.y, region.w, region.h, p) for p in polygons)
        return True


class AlertRules:
    """Evaluates the configured rules in order; keeps the per-camera cooldown state."""

    def __init__(self, rules: list[AlertRule], cameras: list[CameraConfig]):
        self.rules = rules
        self.cameras = {c.id: c for c in cameras}
        self._compiled = [_CompiledRule(r) for r in rules]
        self._last_fired: dict[tuple[int, str], float] = {}  # (rule index, camera) -> t_after (UNIX s)
        self._lock = threading.Lock()
        self.early = frozenset(r.name for r in rules if r.early)  # names of the early rules

    def needs_labels_early(self) -> bool:
        return any(c.rule.early and c.labels for c in self._compiled)

    def match(self, event: ChangeEvent, early: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """Names of the rules this event fires (cooldowns applied and updated). `early`: the
        early rules that announced this event's change at its onset: they fire again here
        (their settled alert), whatever the event says and whatever their cooldown."""
        fired: list[str] = []
        t_event: float | None = None
        with self._lock:
            for index, compiled in enumerate(self._compiled):
                rule = compiled.rule
                if rule.name in early:
                    fired.append(rule.name)
                    continue
                if not compiled.conditions_hold(event, self.cameras):
                    continue
                if rule.cooldown_s > 0:
                    if t_event is None:
                        t_event = _parse_time(event.t_after)
                    if t_event is not None and not self._cooled(index, event.camera, t_event, rule.cooldown_s):
                        continue
                fired.append(rule.name)
        return fired

    def match_start(self, start: ChangeStart, regions: Sequence[Region], skip: set[str]) -> list[str]:
        """The early rules (not in `skip`) that a change under way fires now, with `regions`
        (`start.regions`, labelled as far as known); cooldowns measured on its onset."""
        fired: list[str] = []
        with self._lock:
            for index, compiled in enumerate(self._compiled):
                rule = compiled.rule
                if not rule.early or rule.name in skip:
                    continue
                if not compiled.holds(start.camera_id, "change", regions, start.changed_fraction, None, self.cameras):
                    continue
                if rule.cooldown_s > 0 and not self._cooled(
                    index, start.camera_id, start.onset_wall_time, rule.cooldown_s
                ):
                    continue
                fired.append(rule.name)
        return fired

    def _cooled(self, index: int, camera: str, at: float, cooldown_s: float) -> bool:
        """Past the rule's cooldown for this camera at `at` (UNIX s): then it starts again from `at`.
        An event not after the last alert (out of order) counts as inside the period."""
        key = (index, camera)
        last = self._last_fired.get(key)
        if last is not None and at - last < cooldown_s:
            return False
        self._last_fired[key] = at
        return True

    def reset(self) -> None:
        """Forget the cooldown state (e.g. before replaying a log)."""
        with self._lock:
            self._last_fired.clear()


def early_advice(rules: list[AlertRule], detector_model: object | None) -> list[str]:
    """Warnings (not errors) about early rules: labels at onset need the object detector."""
    if detector_model is not None:
        return []
    return [
        f"alerts.{i}.labels: an early rule knows labels at the onset only with describer.detector.model; "
        "without it, this rule alerts when the change settles"
        for i, rule in enumerate(rules)
        if rule.early and rule.labels
    ]


def alerts_for(
    rules: AlertRules | None, event: ChangeEvent, early: frozenset[str] | set[str] = frozenset()
) -> list[str]:
    """The rules `event` hits; a rule that fails is logged and hits nothing (the event goes on)."""
    if rules is None:
        return []
    try:
        return list(rules.match(event, early))
    except Exception:  # a rule bug must not stop the event itself
        log.exception("alert_rules_failed", event_id=event.event_id)
        return []
