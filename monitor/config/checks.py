"""Checks across fields, run on the raw input so their errors are listed with every other one:
duplicate camera ids and rule names, per-camera gate overrides, alert rules' cameras and zones."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from monitor.config.sections import GateConfig


def rebuildable(errors: list[Any]) -> list[Any]:
    """`ValidationError.from_exception_data` knows only some error types (not e.g. `path_type`,
    a KeyError otherwise): pass the others on as custom errors with the same type and message."""
    out = []
    for err in errors:
        if isinstance(err.get("type"), str):
            try:
                ValidationError.from_exception_data("check", [err])
            except (KeyError, TypeError, ValueError):
                custom = PydanticCustomError(err["type"], err["msg"])  # no context: not formatted
                err = {"type": custom, "loc": err["loc"], "input": err.get("input")}
        out.append(err)
    return out


def cross_field_errors(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Duplicate camera ids and invalid per-camera gate overrides, each with its field path."""

    def plain(value: Any) -> Any:  # models given in code are checked like their dicts
        return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value

    cameras = data.get("cameras")
    rules = data.get("alerts")
    rules = list(map(plain, rules)) if isinstance(rules, list | tuple) else []
    alert_errors = _alert_rule_errors(rules, cameras, plain)
    if not isinstance(cameras, list | tuple):
        return alert_errors
    base = plain(data.get("gate"))
    base = base if isinstance(base, dict) else {}
    cams = list(map(plain, cameras))
    errors = _duplicate_errors(cams, "cameras", "id", "camera id", "duplicate_id")
    for i, cam in enumerate(cams):
        if not isinstance(cam, dict):
            continue
        override = cam.get("gate")
        if not isinstance(override, dict) or not override:
            continue
        try:
            GateConfig.model_validate({**base, **override})
        except ValidationError as exc:
            for err in exc.errors():
                loc = err["loc"]
                if loc and loc[0] not in override:
                    continue  # a bad global gate value: reported under gate.*
                errors.append({**err, "loc": ("cameras", i, "gate", *loc)})
    return errors + alert_errors


def _duplicate_errors(items: list[Any], section: str, key: str, what: str, kind: str) -> list[dict[str, Any]]:
    """An error at `section.i.key` for each item whose string `key` an earlier item already has."""
    errors: list[dict[str, Any]] = []
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        value = item.get(key) if isinstance(item, dict) else None
        if not isinstance(value, str):
            continue
        if value in first:
            msg = f"{what} {value!r} is used twice (also {section}.{first[value]}.{key})"
            errors.append(_custom_error((section, i, key), kind, msg, value))
        else:
            first[value] = i
    return errors


def _custom_error(loc: tuple, kind: str, msg: str, value: Any) -> dict[str, Any]:
    """A validation error of our own, in pydantic's error-list form."""
    return {"type": PydanticCustomError(kind, msg), "loc": loc, "input": value}


def _alert_rule_errors(rules: list[Any], cameras: Any, plain: Any) -> list[dict[str, Any]]:
    """Each rule's cameras must exist, and each of its zones on at least one of its cameras
    (on some camera when the rule names none); rule names must be unique."""
    zones_of: dict[str, set[str]] = {}
    for cam in map(plain, cameras if isinstance(cameras, list | tuple) else []):
        if isinstance(cam, dict) and isinstance(cam.get("id"), str):
            zones = cam.get("zones") if isinstance(cam.get("zones"), list | tuple) else []
            names = [z.get("name") for z in map(plain, zones) if isinstance(z, dict)]  # may be unhashable
            zones_of.setdefault(cam["id"], set()).update(n for n in names if isinstance(n, str))

    errors = _duplicate_errors(rules, "alerts", "name", "alert rule name", "duplicate_rule")
    known = ", ".join(zones_of) or "none"
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        rule_cams = rule.get("cameras") if isinstance(rule.get("cameras"), list | tuple) else []
        scope: list[str] = []
        for j, cam_id in enumerate(rule_cams):
            if not isinstance(cam_id, str):
                continue
            if cam_id in zones_of:
                scope.append(cam_id)
            else:
                msg = f"unknown camera {cam_id!r} (cameras: {known})"
                errors.append(_custom_error(("alerts", i, "cameras", j), "unknown_camera", msg, cam_id))
        if rule_cams and not scope:
            continue  # every named camera is unknown: already reported
        scope = scope or list(zones_of)
        rule_zones = rule.get("zones") if isinstance(rule.get("zones"), list | tuple) else []
        for j, zone in enumerate(rule_zones):
            if not isinstance(zone, str) or any(zone in zones_of[c] for c in scope):
                continue
            if len(scope) == 1:
                where = f"camera {scope[0]!r}"
            elif rule_cams:
                where = f"any of the cameras {', '.join(scope)}"
            else:
                where = "any camera"
            defined = sorted(set().union(*(zones_of[c] for c in scope))) if scope else []
            msg = f"zone {zone!r} is not defined on {where} (zones: {', '.join(defined) or 'none'})"
            errors.append(_custom_error(("alerts", i, "zones", j), "unknown_zone", msg, zone))
    return errors
