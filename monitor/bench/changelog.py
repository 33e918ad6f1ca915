"""`monitor bench changelog`: how true the change log is, scored by `monitor eval-log` on the
scripted cases (`monitor.scene.cases`) and on labelled footage (each `--video` with its
`.truth.json` beside it; default: the shared clips that have one), with and without the object
detector when `--detector` is given, measured in one run. Prints a table per clip, the totals
and the issue's goals (found >= 95 %, direction 100 %, named >= 90 %, every left-behind object
persisting, no events in quiet stretches, no text defects)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from monitor.bench.gate import footage_dir
from monitor.bench.output import report
from monitor.config import load_settings
from monitor.daemon.service import Monitor
from monitor.readers.eval_log import Score, read_log, score
from monitor.readers.truth import load_truth
from monitor.scene.cases import CASES, FPS

GOALS = {"found": 0.95, "direction": 1.0, "named": 0.90, "static_persisting": 1.0}
# What the shared clips' truth intervals are of (their README): scored as `eval-log --what`.
SHARED_WHAT = {"one-by-one-person-detection": "person", "car-detection": "vehicle"}
COUNTS = ("expected", "found", "direction_right", "named_expected", "named_right", "static_expected")
COUNTS += ("static_found", "static_persisting", "events", "quiet_events", "defects")


def _run(source: Path, camera: str, log_dir: Path, detector: Path | None, image_fps: float | None) -> None:
    camera_cfg = {"id": camera, "source": str(source), **({"image_fps": image_fps} if image_fps else {})}
    settings = load_settings(
        None,
        cameras=[camera_cfg],
        log={"dir": str(log_dir), "reorder_window_s": 0},
        describer={"detector": {"model": str(detector)}} if detector else {},
        http={"bind": None},
    )
    result = Monitor(settings).run()
    if result.errors:
        raise RuntimeError(f"{camera}: {result.errors[0]}")


def _clips(args: argparse.Namespace) -> list[tuple[str, Path, Path]]:
    """(name, video, truth) of the labelled footage."""
    videos = [Path(v) for v in args.video] if args.video else sorted(footage_dir().glob("*.mp4"))
    out = []
    for video in videos:
        truth = video.with_suffix(".truth.json")
        if truth.is_file():
            out.append((video.stem, video, truth))
        elif args.video:
            raise FileNotFoundError(f"no truth file beside {video} (expected {truth})")
    return out


def bench_changelog(args: argparse.Namespace) -> int:
    try:
        clips = _clips(args)
    except FileNotFoundError as exc:
        print(f"monitor: error: {exc}", file=sys.stderr)
        return 1
    describers = [("embedded", None)] + ([("embedded+detector", args.detector)] if args.detector else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-changelog-") as tmp:
        root = Path(tmp)
        inputs = []
        for name, write in CASES.items():
            truth = write(root / name / "frames")
            (root / name / "truth.json").write_text(json.dumps(truth))
            inputs.append((name, root / name / "frames", root / name / "truth.json", float(FPS)))
        inputs += [(name, video, truth, None) for name, video, truth in clips]
        for label, detector in describers:
            for name, source, truth_path, image_fps in inputs:
                logs = root / "logs" / label / name
                _run(source, name, logs, detector, image_fps)
                rows.append((label, name, score(read_log(logs), load_truth(truth_path, SHARED_WHAT.get(name)))))
    doc = _document(rows)
    report(args, doc, lambda: _print_table(doc))
    return 0


def _document(rows: list[tuple[str, str, Score]]) -> dict:
    clips = [{"describer": d, "clip": n, **{k: getattr(s, k) for k in COUNTS}, "rates": s.rates()} for d, n, s in rows]
    totals = {}
    for d in dict.fromkeys(d for d, _, _ in rows):
        total = Score()
        for dd, _, s in rows:
            if dd == d:
                for k in COUNTS:
                    setattr(total, k, getattr(total, k) + getattr(s, k))
        rates = total.rates()
        # Without a detector the describer says "something" unless sure: naming is no goal there.
        goals = {k: g for k, g in GOALS.items() if k != "named" or "detector" in d}
        met = {k: rates[k] is None or rates[k] >= goal for k, goal in goals.items()}
        met["quiet"] = total.quiet_events == 0
        met["defects"] = total.defects == 0
        totals[d] = {**{k: getattr(total, k) for k in COUNTS}, "rates": rates, "goals_met": met}
    return {"bench": "changelog", "goals": GOALS, "clips": clips, "totals": totals}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f} %"


def _print_table(doc: dict) -> None:
    names = ("found", "direction", "named", "static", "quiet", "defects")
    head = f"{'describer':<18} {'clip':<30} " + " ".join(f"{n:>{w}}" for n, w in zip(names, (9, 9, 9, 7, 5, 7)))
    print(head)
    print("-" * len(head))
    for c in doc["clips"]:
        print(
            f"{c['describer']:<18} {c['clip']:<30} {c['found']:>4}/{c['expected']:<4} "
            f"{_pct(c['rates']['direction']):>9} "
            f"{_pct(c['rates']['named']):>9} {c['static_persisting']:>3}/{c['static_expected']:<3} "
            f"{c['quiet_events']:>5} {c['defects']:>3}/{c['events']:<3}"
        )
    for d, t in doc["totals"].items():
        r = t["rates"]
        failed = [k for k, ok in t["goals_met"].items() if not ok]
        verdict = "all goals met" if not failed else "FAIL: " + ", ".join(failed)
        named_goal = "90 %" if "named" in t["goals_met"] else "no goal without a detector"
        print(
            f"{d}: found {_pct(r['found'])} (goal 95 %), direction {_pct(r['direction'])} (100 %), named "
            f"{_pct(r['named'])} ({named_goal}), "
            f"left-behind persisting {t['static_persisting']}/{t['static_expected']}, "
            f"quiet events {t['quiet_events']} (0), defects {t['defects']} (0): {verdict}"
        )
