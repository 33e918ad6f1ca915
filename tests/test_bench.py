"""`monitor bench gate` on a few seconds of real footage: three modes, consistent counts, JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from monitor.bench.gate import MODES, bench_gate, footage_dir
from monitor.cli import build_parser

VIDEO = footage_dir() / "one-by-one-person-detection.mp4"  # H.264, 10 fps, 1 s GOP


def _args(*extra: str):
    return build_parser().parse_args(["bench", "gate", *extra])


def test_bench_gate_three_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert VIDEO.is_file(), f"shared footage missing: {VIDEO}"
    out = tmp_path / "x.json"
    # 8 s: the source needs 3 keyframe gaps (3 s) before it trusts the GOP and skips frames.
    assert bench_gate(_args("--video", str(VIDEO), "--seconds", "8", "--json", str(out))) == 0

    doc = json.loads(out.read_text(encoding="utf-8"))
    runs = {r["mode"]: r for r in doc["results"]}
    assert set(runs) == set(MODES) and len(doc["results"]) == 3
    assert all(r["video"] == VIDEO.name for r in doc["results"])
    counts = [r["sampled"] for r in runs.values()]
    assert max(counts) - min(counts) <= 1 and min(counts) >= 6
    assert runs["ours-keyframes"]["decode"] == "keyframes-only"
    assert runs["ours-all-frames"]["decode"] == "all-frames"
    assert runs["ours-keyframes"]["decoded"] < runs["ours-all-frames"]["decoded"]
    assert runs["naive-ssim"]["decoded"] == runs["ours-all-frames"]["decoded"]
    for r in runs.values():
        for key in (
            "decoded",
            "cpu_s",
            "wall_s",
            "cpu_ms_per_frame",
            "frames_per_s_per_core",
            "cameras_per_core",
            "speedup",
        ):
            assert r[key] > 0, (r["mode"], key)
    assert runs["naive-ssim"]["speedup"] == 1.0
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["av"] and doc["machine"]["cv2"]
    assert doc["goal"]["evaluated"] is True

    stdout = capsys.readouterr().out
    assert "cpu ms/frame" in stdout and "cameras@1fps/core" in stdout
    assert "goal: ours ≥ 20× naive" in stdout


def test_bench_gate_without_skimage(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "skimage.metrics", None)  # import fails as if not installed
    assert bench_gate(_args("--video", "whatever.mp4")) == 1
    assert "pip install '.[bench]'" in capsys.readouterr().err


def test_bench_gate_missing_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_gate(_args("--video", str(tmp_path / "nope.mp4"))) == 1
    assert "no such video" in capsys.readouterr().err


def test_bench_gate_with_the_detector(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--detector`: the describer rows with the detector off and on, the detector's ms per
    change, and the side-by-side ratios."""
    from support import DETECTOR

    out = tmp_path / "d.json"
    args = ["--video", str(VIDEO), "--seconds", "20", "--repeat", "1", "--detector", str(DETECTOR)]
    assert bench_gate(_args(*args, "--json", str(out))) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    runs = {r["mode"]: r for r in doc["results"]}
    assert set(runs) == {*MODES, "ours-keyframes+embedded", "ours-keyframes+detector"}
    with_detector, off, plain = (runs[f"ours-keyframes{m}"] for m in ("+detector", "+embedded", ""))
    assert with_detector["events"] == off["events"] == plain["events"] >= 1  # a person arrives at 6 s
    assert with_detector["detector_ms_per_change"] > 0
    assert plain["detector_ms_per_change"] is None and off["detector_ms_per_change"] is None
    goal = doc["detector_goal"]
    kept = with_detector["cameras_per_core"] / off["cameras_per_core"]
    assert goal["kept_against_detector_off"][VIDEO.name] == pytest.approx(kept, rel=0.01)
    kept = with_detector["cameras_per_core"] / plain["cameras_per_core"]
    assert goal["kept_against_gate_alone"][VIDEO.name] == pytest.approx(kept, rel=0.01)
    assert goal["evaluated"] is (VIDEO.name == "one-by-one-person-detection.mp4")
    assert "det ms/change" in capsys.readouterr().out
    assert bench_gate(_args("--video", str(VIDEO), "--detector", str(tmp_path / "none.onnx"))) == 1


def test_bench_changelog_scores_the_cases_and_footage_against_the_goals(tmp_path: Path, capsys) -> None:
    """`monitor bench changelog`: every scripted case and each labelled clip is one row per
    describer; the totals meet the change log's goals, with and without the detector."""
    from support import DETECTOR

    from monitor.bench.changelog import bench_changelog
    from monitor.scene.cases import CASES

    out = tmp_path / "c.json"
    aisle = footage_dir() / "car-detection.mp4"
    args = ["bench", "changelog", "--video", str(aisle), "--detector", str(DETECTOR), "--json", str(out)]
    assert bench_changelog(build_parser().parse_args(args)) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    rows = {(c["describer"], c["clip"]) for c in doc["clips"]}
    assert rows == {(d, n) for d in ("embedded", "embedded+detector") for n in [*CASES, "car-detection"]}
    for describer, total in doc["totals"].items():
        assert all(total["goals_met"].values()), (describer, total)
        assert total["found"] == total["expected"] > 10, total
    table = capsys.readouterr().out
    assert "busy-road" in table and "all goals met" in table
    # footage without its truth file is refused, naming the file
    lonely = tmp_path / "clip.mp4"
    lonely.write_bytes(aisle.read_bytes())
    assert bench_changelog(build_parser().parse_args(["bench", "changelog", "--video", str(lonely)])) == 1
    assert "clip.truth.json" in capsys.readouterr().err
