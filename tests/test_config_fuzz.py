"""Fuzzed configs: a few hundred generated malformed configs (wrong types, missing fields, unknown
keys, bad URLs, bad polygons, duplicate ids) -> each a clear error naming the field, no traceback,
no password in the output."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support import EXAMPLE_CONFIG, assert_no_traceback, error_lines, run_monitor

from monitor.config import MonitorSettings, load_settings
from monitor.errors import ConfigError

SECRET = "S3cretPw"
SECTIONS = set(MonitorSettings.model_fields)  # the top-level sections
LINE = re.compile(r"^[A-Za-z_][\w.]*(\.-?\d+)?[\w.-]*: .+")  # `-1`: a YAML key may be an int

EXAMPLE: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))

BAD_URLS = [
    "rtsp://",
    "redis://:pw@host:notaport",
    f"redis://:{SECRET}@host:notaport",
    "ftp://x",
    f"ftp://user:{SECRET}@x/stream",
    f"redis://user:{SECRET}@[::1",
    f"rtsp://user:{SECRET}@[::1",
    "rtsp://cam era/stream",
    " ",
    "",
    "redis ://host",
    f"gopher://{SECRET}@host",
    f"rtsp://user:{SECRET}@host:99999999/x",
    "://",
    "http://[",
]

WRONG_VALUES = st.one_of(
    st.sampled_from(["", "fast", "yes please", "🚀", "ünïcödé", "null", "-1", "1e999", "NaN"]),
    st.sampled_from([f"rtsp://admin:{SECRET}@10.0.0.1/s", f"redis://:{SECRET}@h:6379/0"]),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**64)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=3),
    st.dictionaries(st.from_regex(r"[A-Za-z_]\w{0,5}", fullmatch=True), st.integers(), max_size=2),
    st.text(max_size=12),
)

UNKNOWN_KEYS = st.one_of(
    st.sampled_from(
        ["sette_s", "passwd", "pasword", "redis_password", "token", "sourc", "ID", "extra", "gate_", "cooldown", "x"]
    ),
    st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True),
    st.integers(-3, 10**6),  # YAML keys need not be strings
)

BAD_POLYGONS = st.one_of(
    st.sampled_from(
        [
            [],
            [[0.1, 0.1], [0.2, 0.2]],
            [[0.1, 0.1], [0.5, 0.1], [1.5, 0.5]],
            [[-0.1, 0.0], [0.5, 0.0], [0.5, 0.5]],
            [[0.1], [0.2, 0.2], [0.3, 0.3]],
            [[0.1, 0.1, 0.1], [0.2, 0.2], [0.3, 0.3]],
            [["a", 0.1], [0.2, 0.2], [0.3, 0.3]],
            [[float("nan"), 0.1], [0.2, 0.2], [0.3, 0.3]],
            [[float("inf"), 0.1], [0.2, 0.2], [0.3, 0.3]],
            "square",
            [0.1, 0.2, 0.3],
            {"x": 1},
            None,
        ]
    ),
    st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=3), min_size=0, max_size=5),
)


# -- walking the document ------------------------------------------------------------------------
def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path below the root (leaves and subtrees)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        out.append((*prefix, key))
        out.extend(paths(value, (*prefix, key)))
    return out


def containers(node: Any, prefix: tuple = (), kind: type = dict) -> list[tuple]:
    out = [prefix] if isinstance(node, kind) else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        out.extend(containers(value, (*prefix, key), kind))
    return out


def get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def lookup(doc: Any, parts: list[str]) -> bool:
    """Does the dotted path (as printed) resolve in the document?"""
    for part in parts:
        if isinstance(doc, dict):
            match = [k for k in doc if str(k) == part]
            if not match:
                return False
            doc = doc[match[0]]
        elif isinstance(doc, list):
            if not part.isdigit() or int(part) >= len(doc):
                return False
            doc = doc[int(part)]
        else:
            return False
    return True


# -- mutations -------------------------------------------------------------------------------------
@st.composite
def wrong_type(draw: st.DrawFn, doc: dict) -> str:
    path = draw(st.sampled_from(paths(doc)))
    get(doc, path[:-1])[path[-1]] = copy.deepcopy(draw(WRONG_VALUES))
    return f"wrong_type {path}"


@st.composite
def delete_required(draw: st.DrawFn, doc: dict) -> str:
    options: list[tuple] = []
    for i, cam in enumerate(doc.get("cameras") if isinstance(doc.get("cameras"), list) else []):
        if isinstance(cam, dict):
            options += [("cameras", i, k) for k in ("id", "source") if k in cam]
            for j, zone in enumerate(cam.get("zones") if isinstance(cam.get("zones"), list) else []):
                if isinstance(zone, dict):
                    options += [("cameras", i, "zones", j, k) for k in ("name", "polygon") if k in zone]
    for i, rule in enumerate(doc.get("alerts") if isinstance(doc.get("alerts"), list) else []):
        if isinstance(rule, dict) and "name" in rule:
            options.append(("alerts", i, "name"))
    if not options:
        return "delete_required (nothing left)"
    path = draw(st.sampled_from(options))
    del get(doc, path[:-1])[path[-1]]
    return f"delete {path}"


@st.composite
def unknown_key(draw: st.DrawFn, doc: dict) -> str:
    path = draw(st.sampled_from(containers(doc)))
    node = get(doc, path)
    key = draw(UNKNOWN_KEYS.filter(lambda k: k not in node))
    # a bare password only under a key that names one (a misspelt `password:`): other values
    # are echoed on purpose, URLs with their password masked
    secret = st.just(SECRET) if re.search(r"pass|pwd|secret|token", str(key)) else st.nothing()
    node[key] = copy.deepcopy(draw(st.one_of(WRONG_VALUES, secret, st.sampled_from(BAD_URLS))))
    return f"unknown key {(*path, key)}"


@st.composite
def bad_url(draw: st.DrawFn, doc: dict) -> str:
    options: list[tuple] = [("redis", "url")] if isinstance(doc.get("redis"), dict) else []
    cams = doc.get("cameras") if isinstance(doc.get("cameras"), list) else []
    options += [("cameras", i, "source") for i, cam in enumerate(cams) if isinstance(cam, dict)]
    if not options:
        return "bad_url (nowhere)"
    path = draw(st.sampled_from(options))
    get(doc, path[:-1])[path[-1]] = draw(st.sampled_from(BAD_URLS))
    return f"bad url {path}"


@st.composite
def bad_polygon(draw: st.DrawFn, doc: dict) -> str:
    options: list[tuple] = []
    cams = doc.get("cameras") if isinstance(doc.get("cameras"), list) else []
    for i, cam in enumerate(cams):
        if not isinstance(cam, dict):
            continue
        masks = cam.get("masks") if isinstance(cam.get("masks"), list) else []
        options += [("cameras", i, "masks", j) for j in range(len(masks))]
        zones = cam.get("zones") if isinstance(cam.get("zones"), list) else []
        options += [("cameras", i, "zones", j, "polygon") for j, z in enumerate(zones) if isinstance(z, dict)]
    if not options:
        return "bad_polygon (nowhere)"
    path = draw(st.sampled_from(options))
    get(doc, path[:-1])[path[-1]] = copy.deepcopy(draw(BAD_POLYGONS))  # drawn lists are shared: never mutate them
    return f"bad polygon {path}"


@st.composite
def duplicate_id(draw: st.DrawFn, doc: dict) -> str:
    cams = doc.get("cameras") if isinstance(doc.get("cameras"), list) else []
    rules = doc.get("alerts") if isinstance(doc.get("alerts"), list) else []
    if draw(st.booleans()) and cams and isinstance(cams[0], dict):
        cams.append(copy.deepcopy(cams[0]))
        return "duplicate camera"
    if rules:
        rules.append(copy.deepcopy(rules[0]))
        return "duplicate rule"
    return "duplicate (nothing)"


MUTATIONS = [wrong_type, delete_required, unknown_key, bad_url, bad_polygon, duplicate_id]


@st.composite
def mutated_configs(draw: st.DrawFn) -> tuple[dict, list[str]]:
    doc = copy.deepcopy(EXAMPLE)
    done = []
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw(st.sampled_from(MUTATIONS))
        done.append(draw(mutation(doc)))
    return doc, done


# -- checks ----------------------------------------------------------------------------------------
def dump(doc: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def check_error_lines(lines: list[str], doc: dict) -> None:
    assert lines, "a ConfigError with no line"
    for line in lines:
        assert SECRET not in line, line
        field = line.split(": ", 1)[0]
        parts = field.split(".")
        if len(parts) == 1 and parts[0] not in SECTIONS:  # an unknown top-level key, e.g. `5:`
            assert field in map(str, doc), line
            continue
        assert LINE.match(line), f"not `field.path: message`: {line!r}"
        assert parts[0] in SECTIONS or (len(parts) == 1 and parts[0] in doc), line
        # the field exists, or (a missing one) its parent does
        assert lookup(doc, parts) or lookup(doc, parts[:-1]), f"{field} is not in the document: {line!r}"


def load_or_config_error(doc: dict, path: Path) -> list[str] | None:
    try:
        load_settings(dump(doc, path))
    except ConfigError as exc:
        return str(exc).splitlines()
    return None


@settings(
    max_examples=int(os.environ.get("CONFIG_FUZZ_EXAMPLES", 300)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=mutated_configs())
def test_fuzzed_config_loads_or_names_the_field(case: tuple[dict, list[str]], tmp_path: Path) -> None:
    doc, _done = case
    lines = load_or_config_error(doc, tmp_path / "fuzz.yaml")  # any other exception fails the test
    if lines is not None:
        check_error_lines(lines, doc)


# -- each kind of mutation names its field --------------------------------------------------------
def _set(path: tuple, value: Any):
    def apply(doc: dict) -> None:
        get(doc, path[:-1])[path[-1]] = value

    return apply


def _delete(path: tuple):
    def apply(doc: dict) -> None:
        del get(doc, path[:-1])[path[-1]]

    return apply


def _duplicate_camera(doc: dict) -> None:
    doc["cameras"][1]["id"] = doc["cameras"][0]["id"]


def _duplicate_rule(doc: dict) -> None:
    doc["alerts"].append(copy.deepcopy(doc["alerts"][0]))


EXPLICIT = [
    ("wrong type: str for float", _set(("cameras", 1, "sample_fps"), "fast"), "cameras.1.sample_fps"),
    ("wrong type: bool list", _set(("cameras", 0, "realtime"), [1, 2]), "cameras.0.realtime"),
    ("wrong type: huge int", _set(("gate", "working_width"), 10**30), "gate.working_width"),
    ("wrong type: NaN", _set(("gate", "settle_s"), float("nan")), "gate.settle_s"),
    ("wrong type: subtree", _set(("log",), "somewhere"), "log"),
    ("wrong type: unicode literal", _set(("describer", "kind"), "ünïcödé"), "describer.kind"),
    ("wrong type: empty source", _set(("cameras", 0, "source"), ""), "cameras.0.source"),
    ("wrong type: camera override", _set(("cameras", 1, "gate", "settle_s"), "slow"), "cameras.1.gate.settle_s"),
    ("missing camera id", _delete(("cameras", 0, "id")), "cameras.0.id"),
    ("missing camera source", _delete(("cameras", 1, "source")), "cameras.1.source"),
    ("missing alert name", _delete(("alerts", 0, "name")), "alerts.0.name"),
    ("missing zone name", _delete(("cameras", 1, "zones", 0, "name")), "cameras.1.zones.0.name"),
    ("missing zone polygon", _delete(("cameras", 1, "zones", 0, "polygon")), "cameras.1.zones.0.polygon"),
    ("unknown key top", _set(("cameraz",), []), "cameraz"),
    ("unknown key gate", _set(("gate", "sette_s"), 1.0), "gate.sette_s"),
    ("unknown key camera", _set(("cameras", 0, "fps"), 2), "cameras.0.fps"),
    ("unknown key camera gate", _set(("cameras", 1, "gate", "sette_s"), 2), "cameras.1.gate.sette_s"),
    ("unknown key redis secret", _set(("redis", "passwd"), SECRET), "redis.passwd"),
    ("bad url ftp", _set(("cameras", 1, "source"), "ftp://x"), "cameras.1.source"),
    ("bad url secret", _set(("cameras", 1, "source"), f"ftp://u:{SECRET}@x"), "cameras.1.source"),
    (
        "bad polygon 2 points",
        _set(("cameras", 1, "zones", 0, "polygon"), [[0, 0], [1, 1]]),
        "cameras.1.zones.0.polygon",
    ),
    ("bad polygon outside", _set(("cameras", 1, "masks", 0), [[0, 0], [2, 0], [0, 1]]), "cameras.1.masks.0"),
    ("bad polygon point", _set(("cameras", 1, "masks", 1, 2), ["a", 0.5]), "cameras.1.masks.1.2"),
    ("duplicate camera id", _duplicate_camera, "cameras.1.id"),
    ("duplicate rule name", _duplicate_rule, "alerts.1.name"),
    ("redis password not a string", _set(("redis", "password"), 31415926), "redis.password"),
]


@pytest.mark.parametrize(("mutate", "field"), [pytest.param(m, f, id=n) for n, m, f in EXPLICIT])
def test_mutation_names_its_field(mutate: Any, field: str, tmp_path: Path) -> None:
    doc = copy.deepcopy(EXAMPLE)
    mutate(doc)
    lines = load_or_config_error(doc, tmp_path / "bad.yaml")
    assert lines is not None, f"{field}: the bad config loaded"
    check_error_lines(lines, doc)
    assert any(line.startswith(f"{field}: ") or line.startswith(f"{field}.") for line in lines), lines
    assert "31415926" not in "\n".join(lines)


def test_unparsable_redis_url_is_named_by_check_config_and_run(tmp_path: Path) -> None:
    """One validation for both: whatever `run` refuses, `check-config` reports, with the same line."""
    doc = copy.deepcopy(EXAMPLE)
    doc["redis"]["url"] = f"redis://:{SECRET}@host:notaport"
    path = tmp_path / "r.yaml"
    loaded = load_or_config_error(doc, path)
    assert loaded is not None and len(loaded) == 1 and loaded[0].startswith("redis.url: "), loaded
    assert SECRET not in loaded[0]
    # the same config file, run: refused before any camera opens, as a config error (exit 2,
    # README "Errors"), in one line that names redis.url and masks the password
    proc = run_monitor("run", "--config", path, timeout=30, cwd=tmp_path)
    assert_no_traceback(proc)
    assert SECRET not in proc.stdout + proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = error_lines(proc, "config error")
    assert len(lines) == 1 and lines[0].startswith("redis.url: "), proc.stderr
    assert proc.stderr.strip().splitlines() == [f"monitor: config error: {lines[0]}"], proc.stderr
    assert lines == loaded  # the same line as check-config's


# -- the real process --------------------------------------------------------------------------------
def _assert_process_refuses(proc: Any, doc: dict) -> None:
    assert_no_traceback(proc)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert SECRET not in proc.stdout + proc.stderr
    lines = error_lines(proc, "config error")
    assert lines and len(lines) == len(proc.stderr.strip().splitlines()), proc.stderr
    check_error_lines(lines, doc)


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(case=mutated_configs())
def test_fuzzed_config_check_config_process(case: tuple[dict, list[str]], tmp_path_factory: Any) -> None:
    doc, _ = case
    path = tmp_path_factory.mktemp("cc") / "bad.yaml"
    assume(load_or_config_error(doc, path) is not None)
    _assert_process_refuses(run_monitor("check-config", path), doc)


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(case=mutated_configs())
def test_fuzzed_config_run_process(case: tuple[dict, list[str]], tmp_path_factory: Any) -> None:
    doc, _ = case
    work = tmp_path_factory.mktemp("run")
    path = work / "bad.yaml"
    assume(load_or_config_error(doc, path) is not None)  # never start a real run
    _assert_process_refuses(run_monitor("run", "--config", path, timeout=30, cwd=work), doc)


@pytest.mark.parametrize(
    "url", [f"redis://:{SECRET}@host:notaport", f"redis://user:{SECRET}@[::1", "ftp://x", "redis ://host"]
)
def test_bad_redis_url_run_process(url: str, tmp_path: Path) -> None:
    doc = copy.deepcopy(EXAMPLE)
    doc["redis"]["url"] = url
    doc["cameras"] = [{"id": "gone", "source": str(tmp_path / "missing.mp4")}]
    doc["alerts"] = []
    doc["log"]["dir"] = str(tmp_path / "logs")
    path = dump(doc, tmp_path / "redis.yaml")
    proc = run_monitor("run", "--config", path, timeout=30, cwd=tmp_path)
    assert_no_traceback(proc)
    assert SECRET not in proc.stdout + proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = error_lines(proc, "config error")
    assert lines and all(line.startswith("redis.url: ") for line in lines), proc.stderr


# -- what the fuzzing found (each was a traceback, a broken line or a leak) ----------------------------
def _top_level_int_key(doc: dict) -> None:
    doc[5] = "x"  # was: TypeError "keywords must be strings" -> internal error, exit 1


def _cross_field_and_path_error(doc: dict) -> None:
    del doc["cameras"][1]["id"]  # the alert rule's camera is now unknown (a cross-field error) ...
    doc["redis"]["password_file"] = 0  # ... with a `path_type` error: was KeyError rebuilding the errors


def _unhashable_zone_name(doc: dict) -> None:
    doc["cameras"][1]["zones"][0]["name"] = ["driveway"]  # was: TypeError unhashable type: 'list'


def _line_break_in_id(doc: dict) -> None:
    doc["cameras"][1]["id"] = "gate\x1ecam\nfake.field: x"  # was: one error printed as several lines


def _int_key_in_override(doc: dict) -> None:
    doc["cameras"][1]["gate"][5] = 1  # was: `cameras.1.gate.5.[key]: ...`


FOUND = [
    ("top-level int key", _top_level_int_key, "5"),
    ("path_type with a cross-field error", _cross_field_and_path_error, "redis.password_file"),
    ("unhashable zone name", _unhashable_zone_name, "cameras.1.zones.0.name"),
    ("line break in a camera id", _line_break_in_id, "cameras.1.id"),
    ("int key in a gate override", _int_key_in_override, "cameras.1.gate.5"),
]


@pytest.mark.parametrize(("mutate", "field"), [pytest.param(m, f, id=n) for n, m, f in FOUND])
def test_found_by_fuzzing(mutate: Any, field: str, tmp_path: Path) -> None:
    doc = copy.deepcopy(EXAMPLE)
    mutate(doc)
    lines = load_or_config_error(doc, tmp_path / "bad.yaml")
    assert lines is not None
    check_error_lines(lines, doc)
    assert any(line.startswith(f"{field}: ") for line in lines), lines
    proc = run_monitor("check-config", tmp_path / "bad.yaml")
    assert_no_traceback(proc)
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc, "config error") == lines
    assert len(proc.stderr.splitlines()) == len(lines), proc.stderr
