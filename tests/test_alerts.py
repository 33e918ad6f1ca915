"""Alert rules (`AlertRules.match`) on real ChangeEvents, and their config validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support import EXAMPLE_CONFIG, assert_no_traceback, error_lines, make_event, run_monitor

from monitor.config import AlertRule, CameraConfig, load_settings
from monitor.errors import ConfigError
from monitor.records import ChangeEvent
from monitor.sinks.alerts import AlertRules, box_intersects_polygon


def event(
    text: str = "a person arrived in the centre",
    camera: str = "gate",
    t: float = 0.0,
    seq: int = 1,
    regions: list[dict] | None = None,
    fraction: float = 0.05,
    kind: str = "change",
) -> ChangeEvent:
    return make_event(camera, seq, text, t, regions, fraction, kind)


def box(x: float, y: float, w: float, h: float, label: str | None = "person") -> dict:
    return {"x": x, "y": y, "w": w, "h": h, "change": "appeared", "label": label}


DRIVEWAY = [(0.1, 0.4), (0.6, 0.4), (0.6, 0.95), (0.1, 0.95)]
# A non-convex "L": the notch x>0.5, y<0.5 is outside it.
ELL = [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]
CAMERAS = [
    CameraConfig(id="gate", source="rtsp://cam/gate", zones=[{"name": "driveway", "polygon": DRIVEWAY}]),
    CameraConfig(id="yard", source="yard.mp4", zones=[{"name": "ell", "polygon": ELL}]),
    CameraConfig(id="lobby", source="lobby.mp4"),
]


def rules(*specs: dict) -> AlertRules:
    return AlertRules([AlertRule(**s) for s in specs], CAMERAS)


# -- geometry --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("b", "poly", "hit"),
    [
        ((0.3, 0.5, 0.1, 0.1), DRIVEWAY, True),  # inside
        ((0.0, 0.0, 1.0, 1.0), DRIVEWAY, True),  # contains the zone
        ((0.55, 0.9, 0.2, 0.2), DRIVEWAY, True),  # overlaps a corner
        ((0.6, 0.5, 0.1, 0.1), DRIVEWAY, True),  # touches the edge
        ((0.0, 0.0, 0.09, 0.39), DRIVEWAY, False),  # outside, near
        ((0.7, 0.0, 0.3, 0.3), DRIVEWAY, False),
        ((0.6, 0.1, 0.3, 0.3), ELL, False),  # in the L's notch: bounding boxes overlap, shapes do not
        ((0.6, 0.1, 0.3, 0.45), ELL, True),  # reaches down into the L's foot
        ((0.2, -0.1, 0.1, 1.2), ELL, True),  # crosses it with no vertex inside either
    ],
)
def test_box_polygon_intersection(b: tuple, poly: list, hit: bool) -> None:
    assert box_intersects_polygon(*b, poly) is hit


# -- conditions ----------------------------------------------------------------------------------
def test_zone_hit_and_miss() -> None:
    r = rules({"name": "drive", "zones": ["driveway"]})
    assert r.match(event(regions=[box(0.3, 0.5, 0.1, 0.2)])) == ["drive"]
    assert r.match(event(regions=[box(0.7, 0.05, 0.2, 0.2)])) == []
    # Several regions: one in the zone is enough.
    assert r.match(event(regions=[box(0.7, 0.05, 0.2, 0.2), box(0.5, 0.9, 0.2, 0.1)])) == ["drive"]
    # A camera without that zone never fires it; nor does an event with no regions.
    assert r.match(event(camera="lobby", regions=[box(0.3, 0.5, 0.1, 0.2)])) == []
    assert r.match(event(regions=[])) == []


def test_zone_on_a_non_convex_polygon() -> None:
    r = rules({"name": "ell", "zones": ["ell"]})
    assert r.match(event(camera="yard", regions=[box(0.6, 0.1, 0.3, 0.3)])) == []
    assert r.match(event(camera="yard", regions=[box(0.6, 0.1, 0.3, 0.45)])) == ["ell"]


def test_zone_and_label_need_the_same_region() -> None:
    r = rules({"name": "person-on-driveway", "zones": ["driveway"], "labels": ["person"]})
    car_in_zone_person_outside = [box(0.3, 0.5, 0.1, 0.1, "vehicle"), box(0.8, 0.05, 0.1, 0.1, "person")]
    assert r.match(event(regions=car_in_zone_person_outside)) == []
    assert r.match(event(regions=[box(0.3, 0.5, 0.1, 0.1, "person")])) == ["person-on-driveway"]


def test_keywords_whole_word_any_case() -> None:
    r = rules({"name": "kw", "keywords": ["van", "left behind"]})
    assert r.match(event("A white VAN parked on the left")) == ["kw"]
    assert r.match(event("a bag was Left Behind near the door")) == ["kw"]
    assert r.match(event("a caravan parked")) == []  # not a whole word
    assert r.match(event("vans everywhere")) == []
    assert r.match(event("a person arrived")) == []


def test_regex_searches_the_text() -> None:
    r = rules({"name": "rx", "regex": r"\b(arrived|parked)\b.*\bright\b"})
    assert r.match(event("a vehicle arrived on the right")) == ["rx"]
    assert r.match(event("a vehicle arrived on the left")) == []
    # re.search, case-sensitive unless the pattern says otherwise
    assert rules({"name": "rx", "regex": "Person"}).match(event("a person arrived")) == []
    assert rules({"name": "rx", "regex": "(?i)Person"}).match(event("a person arrived")) == ["rx"]


def test_labels() -> None:
    r = rules({"name": "cars", "labels": ["vehicle", "truck"]})
    assert r.match(event(regions=[box(0.1, 0.1, 0.2, 0.2, "vehicle")])) == ["cars"]
    assert r.match(event(regions=[box(0.1, 0.1, 0.2, 0.2, "Truck")])) == ["cars"]
    assert r.match(event(regions=[box(0.1, 0.1, 0.2, 0.2, "person")])) == []
    assert r.match(event(regions=[box(0.1, 0.1, 0.2, 0.2, None)])) == []


def test_min_changed_fraction() -> None:
    r = rules({"name": "big", "min_changed_fraction": 0.1})
    assert r.match(event(fraction=0.1)) == ["big"]
    assert r.match(event(fraction=0.25)) == ["big"]
    assert r.match(event(fraction=0.099)) == []


def test_camera_filter() -> None:
    r = rules({"name": "gate-only", "cameras": ["gate", "yard"]}, {"name": "any"})
    assert r.match(event(camera="gate")) == ["gate-only", "any"]
    assert r.match(event(camera="yard")) == ["gate-only", "any"]
    assert r.match(event(camera="lobby")) == ["any"]


def test_all_given_conditions_must_hold() -> None:
    r = rules(
        {
            "name": "all",
            "cameras": ["gate"],
            "zones": ["driveway"],
            "labels": ["person"],
            "keywords": ["arrived"],
            "min_changed_fraction": 0.02,
        }
    )
    good = {"text": "a person arrived", "regions": [box(0.3, 0.5, 0.1, 0.1)], "fraction": 0.05}
    assert r.match(event(**good)) == ["all"]
    assert r.match(event(**{**good, "text": "a person left"})) == []
    assert r.match(event(**{**good, "fraction": 0.01})) == []
    assert r.match(event(**{**good, "regions": [box(0.8, 0.1, 0.1, 0.1)]})) == []
    assert r.match(event(**{**good, "camera": "yard"})) == []


def test_health_events_skip_zone_and_label_rules() -> None:
    r = rules(
        {"name": "zone", "zones": ["driveway"]},
        {"name": "lbl", "labels": ["person"]},
        {"name": "kw", "keywords": ["offline"]},
    )
    offline = event("camera offline: read timeout", kind="camera_offline", regions=[box(0.3, 0.5, 0.1, 0.1)])
    assert r.match(offline) == ["kw"]


def test_several_rules_fire_in_config_order() -> None:
    r = rules(
        {"name": "zz-last-alphabetically", "keywords": ["person"]},
        {"name": "none", "keywords": ["vehicle"]},
        {"name": "aa", "zones": ["driveway"]},
        {"name": "mm", "labels": ["person"]},
    )
    assert r.match(event("a person arrived", regions=[box(0.3, 0.5, 0.1, 0.1)])) == [
        "zz-last-alphabetically",
        "aa",
        "mm",
    ]


# -- cooldown ----------------------------------------------------------------------------------------
def test_cooldown_per_rule_per_camera_on_event_time() -> None:
    r = rules({"name": "cd", "cooldown_s": 60}, {"name": "free"})
    assert r.match(event(t=0)) == ["cd", "free"]
    assert r.match(event(t=30, seq=2)) == ["free"]  # within the cooldown
    assert r.match(event(t=59.9, seq=3)) == ["free"]
    assert r.match(event(camera="yard", t=31)) == ["cd", "free"]  # other camera: its own period
    assert r.match(event(t=60, seq=4)) == ["cd", "free"]  # 60 s after the last alert
    assert r.match(event(t=100, seq=5)) == ["free"]  # measured from the last *alert* (t=60)
    assert r.match(event(t=120.5, seq=6)) == ["cd", "free"]


def test_cooldown_is_deterministic_on_replay() -> None:
    events = [event(t=t, seq=i + 1) for i, t in enumerate([0, 10, 45, 61, 70, 130, 131])]
    r = rules({"name": "cd", "cooldown_s": 60})
    first = [r.match(e) for e in events]
    second_process = rules({"name": "cd", "cooldown_s": 60})
    second = [second_process.match(e) for e in events]
    assert first == second == [["cd"], [], [], ["cd"], [], ["cd"], []]
    r.reset()
    assert [r.match(e) for e in events] == first


def test_event_that_fails_a_condition_does_not_start_a_cooldown() -> None:
    r = rules({"name": "cd", "keywords": ["person"], "cooldown_s": 60})
    assert r.match(event("a vehicle arrived", t=0)) == []
    assert r.match(event("a person arrived", t=10, seq=2)) == ["cd"]


def test_example_config_rule() -> None:
    s = load_settings(EXAMPLE_CONFIG)
    r = AlertRules(s.alerts, s.cameras)
    e = event(camera="gate-cam", regions=[box(0.3, 0.5, 0.1, 0.3, "person")])
    assert r.match(e) == ["person-on-driveway"]
    assert r.match(event(camera="gate-cam", t=30, seq=2, regions=[box(0.3, 0.5, 0.1, 0.3, "person")])) == []
    assert r.match(event(camera="lobby", t=90, regions=[box(0.3, 0.5, 0.1, 0.3, "person")])) == []


# -- config validation ----------------------------------------------------------------------------
def write_config(tmp_path: Path, alerts: list[dict]) -> Path:
    cfg = {
        "cameras": [
            {"id": "gate", "source": "gate.mp4", "zones": [{"name": "driveway", "polygon": DRIVEWAY}]},
            {"id": "lobby", "source": "lobby.mp4"},
        ],
        "alerts": alerts,
    }
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_valid_rules_pass_check_config(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        [
            {"name": "a", "cameras": ["gate"], "zones": ["driveway"]},
            {"name": "b", "zones": ["driveway"]},  # no cameras: the zone exists on some camera
            {"name": "c", "cameras": ["gate", "lobby"], "zones": ["driveway"]},
            {"name": "d", "keywords": ["van"]},
        ],
    )
    proc = run_monitor("check-config", path)
    assert proc.returncode == 0, proc.stderr


def test_unknown_camera_in_a_rule(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, [{"name": "ok", "cameras": ["gate"]}, {"name": "bad", "cameras": ["lobby", "garage"]}]
    )
    proc = run_monitor("check-config", path)
    assert proc.returncode == 2
    assert_no_traceback(proc)
    errors = error_lines(proc, "config error")
    assert len(errors) == 1, errors
    assert errors[0].startswith("alerts.1.cameras.1: unknown camera 'garage'"), errors


def test_unknown_zone_in_a_rule(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        [
            {"name": "wrong-camera", "cameras": ["lobby"], "zones": ["driveway"]},
            {"name": "typo", "zones": ["drivway"]},
        ],
    )
    proc = run_monitor("check-config", path)
    assert proc.returncode == 2
    assert_no_traceback(proc)
    errors = error_lines(proc, "config error")
    assert len(errors) == 2, errors
    assert errors[0].startswith("alerts.0.zones.0: zone 'driveway' is not defined on camera 'lobby'"), errors
    assert errors[1].startswith("alerts.1.zones.0: zone 'drivway' is not defined on any camera"), errors


def test_rule_errors_are_listed_with_other_errors_and_in_process(tmp_path: Path) -> None:
    path = write_config(tmp_path, [{"name": "x", "cameras": ["nope"]}, {"name": "x", "min_changed_fraction": 2}])
    proc = run_monitor("check-config", path)
    assert proc.returncode == 2
    locs = sorted(line.split(":")[0] for line in error_lines(proc, "config error"))
    assert locs == ["alerts.0.cameras.0", "alerts.1.min_changed_fraction", "alerts.1.name"], proc.stderr
    with pytest.raises(ConfigError, match=r"alerts\.0\.cameras\.0: unknown camera 'nope'"):
        load_settings(path)
