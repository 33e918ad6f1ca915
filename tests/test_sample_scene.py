"""Self-checks for monitor.scene.scripted: container layout, truth schema/timing, determinism, pixels."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from monitor.scene.scripted import render_sample_scene

SECONDS, SEED, FPS, W, H = 30.0, 3, 10, 640, 360


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("scene") / "clip.mp4"
    return out, render_sample_scene(out, seconds=SECONDS, seed=SEED, fps=FPS, width=W, height=H)


def _decode_gray(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [
            cv2.cvtColor(f.to_ndarray(format="bgr24"), cv2.COLOR_BGR2GRAY).astype(np.float32) for f in c.decode(video=0)
        ]


def _box_px(box: list[float]) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return int(x * W), int(y * H), int(np.ceil((x + w) * W)), int(np.ceil((y + h) * H))


def test_container(scene: tuple[Path, dict]) -> None:
    path, _ = scene
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (W, H)
        assert stream.codec_context.pix_fmt == "yuv420p"
        packets = [(p.pts * p.time_base, p.is_keyframe) for p in c.demux(stream) if p.pts is not None]
    assert abs(len(packets) - SECONDS * FPS) <= 1
    times = sorted(t for t, _ in packets)
    assert times == [Fraction(i, FPS) for i in range(len(times))]  # pts are exactly index / fps
    keys = sorted(t for t, k in packets if k)
    assert keys == [Fraction(s) for s in range(int(SECONDS))]  # one keyframe per second, no extras
    frames = _decode_gray(path)
    assert abs(len(frames) - SECONDS * FPS) <= 1 and frames[0].shape == (H, W)


def test_truth_schema_and_timing(scene: tuple[Path, dict]) -> None:
    path, truth = scene
    on_disk = json.loads(path.with_name("clip.truth.json").read_text())
    assert on_disk == truth
    assert set(truth) == {
        "video",
        "seed",
        "seconds",
        "fps",
        "width",
        "height",
        "events",
        "exposure_jumps",
        "drift",
        "present_intervals_s",
    }
    assert (truth["video"], truth["seed"], truth["seconds"], truth["fps"]) == ("clip.mp4", SEED, SECONDS, FPS)
    assert (truth["width"], truth["height"]) == (W, H)
    assert truth["drift"] == {"amplitude": pytest.approx(0.08)}
    (jump,) = truth["exposure_jumps"]
    assert set(jump) == {"t", "gain_from", "gain_to"} and jump["gain_from"] == 1.0
    assert 0.2 <= abs(jump["gain_to"] - 1.0) <= 0.3

    events = truth["events"]
    assert len(events) >= 2 and {e["what"] for e in events} <= {"vehicle", "person"}
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    for e in events:
        assert set(e) == {"id", "what", "kind", "t_start", "t", "box"}
        assert e["kind"] in ("arrived", "left") and e["id"].startswith(e["what"] + "-")
        assert 0 < e["t_start"] < e["t"] < SECONDS
        assert len(e["box"]) == 4 and all(0 <= v <= 1 for v in e["box"])
    # Every change (and the jump) is isolated by >= 5 s; still start and end of >= 4 s.
    spans = sorted([(e["t_start"], e["t"]) for e in events] + [(jump["t"], jump["t"])])
    for (_, a_end), (b_start, _) in zip(spans, spans[1:]):
        assert b_start - a_end >= 5.0 - 1e-9
    assert spans[0][0] >= 4.0 and spans[-1][1] <= SECONDS - 4.0
    # Each actor arrives once, maybe leaves once, and intervals agree with events.
    by_id: dict[str, dict[str, dict]] = {}
    for e in events:
        by_id.setdefault(e["id"], {})[e["kind"]] = e
    assert set(by_id) == set(truth["present_intervals_s"])
    for ident, kinds in by_id.items():
        arrived = kinds["arrived"]
        end = kinds["left"]["t"] if "left" in kinds else SECONDS
        assert truth["present_intervals_s"][ident] == [[arrived["t_start"], end]]
        if "left" in kinds:
            assert kinds["left"]["box"] == arrived["box"] and kinds["left"]["t_start"] > arrived["t"]
    # Parked/standing positions of different actors never overlap.
    boxes = [_box_px(k["arrived"]["box"]) for k in by_id.values()]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_deterministic(scene: tuple[Path, dict], tmp_path: Path) -> None:
    path, truth = scene
    again = tmp_path / "clip.mp4"
    assert render_sample_scene(again, seconds=SECONDS, seed=SEED, fps=FPS, width=W, height=H) == truth
    assert again.with_name("clip.truth.json").read_bytes() == path.with_name("clip.truth.json").read_bytes()
    a, b = _decode_gray(path), _decode_gray(again)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[-1], b[-1])
    other = render_sample_scene(tmp_path / "other.mp4", seconds=SECONDS, seed=SEED + 1, fps=FPS, width=W, height=H)
    assert other["events"] != truth["events"]


def test_changes_visible_nuisance_quiet(scene: tuple[Path, dict]) -> None:
    path, truth = scene
    frames = _decode_gray(path)
    outside = np.ones((H, W), bool)
    for e in truth["events"]:
        x0, y0, x1, y1 = _box_px(e["box"])
        outside[max(0, y0 - 3) : y1 + 3, max(0, x0 - 3) : x1 + 3] = False
    assert outside.mean() > 0.5
    for e in truth["events"]:
        before = frames[round(e["t_start"] * FPS) - 1]
        after = frames[min(round((e["t"] + 1.0) * FPS), len(frames) - 1)]
        diff = np.abs(after - before)
        x0, y0, x1, y1 = _box_px(e["box"])
        assert diff[y0:y1, x0:x1].mean() > 15, e
        assert diff[outside].mean() < 5, e
    # Sensor noise is really there: consecutive still frames differ a little, but not by much.
    still = np.abs(frames[1] - frames[0])[outside].mean()
    assert 0.3 < still < 5
    # The exposure jump really changes global brightness by roughly gain_to.
    (jump,) = truth["exposure_jumps"]
    j = round(jump["t"] * FPS)
    ratio = frames[j + 10][outside].mean() / frames[j - 2][outside].mean()
    assert ratio == pytest.approx(jump["gain_to"], rel=0.08)
