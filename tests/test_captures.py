"""Capture folders (the contract in monitor/sinks/captures.py) from a real run on real footage, their
atomic writing, and capture retention by age and by size."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import yaml
from support import EXAMPLE_CONFIG, assert_no_traceback, error_lines, make_event, need_video, read_events, run_monitor

from monitor.config import CapturesConfig, JobsConfig, load_settings
from monitor.daemon.service import Monitor
from monitor.records import ChangeCandidate, Frame, GateScores
from monitor.sinks.captures import STALE_TMP_S, CaptureSink, capture_path, event_json, prune_captures

CLIP = "one-by-one-person-detection.mp4"  # 768x432, six people arrive and leave: 12 changes


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    root = tmp_path_factory.mktemp("run")
    logs, caps = root / "logs", root / "captures"
    settings = load_settings(
        None,
        cameras=[{"id": "room", "source": str(need_video(CLIP)), "sample_fps": 2}],
        log={"dir": str(logs), "reorder_window_s": 0},
        captures={"enabled": True, "dir": str(caps)},
        http={"bind": None},
    )
    result = Monitor(settings).run()
    assert not result.errors, result.errors
    return logs, caps, read_events(logs)


def test_every_change_event_has_a_complete_capture_folder(captured) -> None:
    logs, caps, events = captured
    assert len(events) >= 10 and all(e["kind"] == "change" for e in events)
    lines = (logs / "changes.jsonl").read_text(encoding="utf-8").splitlines()
    folders = sorted(p for p in caps.glob("*/*/*") if p.is_dir())
    assert len(folders) == len(events)  # one per event, nothing else
    assert not list(caps.rglob("*.tmp")), "a temporary folder was left behind"
    for event, line in zip(events, lines, strict=True):
        folder = caps / "room" / event["t_after"][:10] / event["event_id"]
        assert folder.is_dir(), folder
        assert sorted(p.name for p in folder.iterdir()) == ["after.jpg", "before.jpg", "event.json"]
        # event.json is exactly the changes.jsonl line of the event
        assert (folder / "event.json").read_text(encoding="utf-8") == line + "\n"
        for name in ("before.jpg", "after.jpg"):
            img = cv2.imread(str(folder / name))
            assert img is not None and img.shape == (432, 768, 3), (folder / name, None if img is None else img.shape)


def test_training_prompts_carry_the_facts_the_daemon_logged(captured, tmp_path) -> None:
    """Fine-tuning on these captures shows the model the words the daemon shows it at run time:
    each pair's prompt facts are "seen: " + the embedded describer's logged sentence, rebuilt
    from the event's regions (label, verdict, place) by the same code."""
    from finetune.convert import from_captures
    from finetune.dataset import load_dataset
    from finetune.pairs import PairSource

    _, caps, events = captured
    path, _ = from_captures(caps, tmp_path / "ds", include_uncorrected=True)
    source = PairSource(load_dataset(path))
    by_id = {e["event_id"]: e for e in events}
    prompts = {rec.id: source[i][0].regions_text for i, rec in enumerate(source.records)}
    assert len(prompts) == len(events)
    for event_id, text in prompts.items():
        assert text == f"seen: {by_id[event_id]['text']}", (text, by_id[event_id])
    assert any("a person" in t for t in prompts.values())
    assert {t for t in (PairSource(load_dataset(path), facts=False)[i][0].regions_text for i in range(3))} == {""}


def test_capture_jpegs_are_the_events_frames(captured) -> None:
    """before.jpg / after.jpg are the video's frames at the event's media times (full
    resolution, quality 90), not some other frame: compared with the clip decoded here."""
    _, caps, events = captured
    wanted = {round(t, 1) for e in events for t in (e["media_t_before"], e["media_t_after"])}
    frames: dict[float, np.ndarray] = {}
    with av.open(str(need_video(CLIP))) as container:
        for vf in container.decode(video=0):
            t = round(float(vf.time), 1)
            if t in wanted:
                frames[t] = vf.to_ndarray(format="bgr24")
    assert set(frames) == wanted
    for e in events:
        folder = caps / "room" / e["t_after"][:10] / e["event_id"]
        before = cv2.imread(str(folder / "before.jpg"))
        after = cv2.imread(str(folder / "after.jpg"))
        assert psnr(after, frames[round(e["media_t_after"], 1)]) > 33.0, e
        assert psnr(before, frames[round(e["media_t_before"], 1)]) > 33.0, e
        # ... and the two differ where the change is (a person came or went)
        assert psnr(before, after) < psnr(after, frames[round(e["media_t_after"], 1)]) - 6.0, e


def _candidate(shape=(48, 64, 3)) -> ChangeCandidate:
    rng = np.random.default_rng(3)
    before = Frame("gate", 0, 0.0, 1_795_000_000.0, rng.integers(0, 255, shape, dtype=np.uint8))
    after = Frame("gate", 10, 5.0, 1_795_000_005.0, rng.integers(0, 255, shape, dtype=np.uint8))
    return ChangeCandidate("gate", before, after, 2.0, (), GateScores(0.5, 0.1))


def test_writer_replaces_a_crash_leftover_and_never_overwrites(tmp_path: Path) -> None:
    sink = CaptureSink(CapturesConfig(enabled=True, dir=tmp_path, jpeg_quality=75))
    event = make_event(seq=1)
    final = capture_path(tmp_path, event)
    assert final == tmp_path / "gate" / event.t_after[:10] / event.event_id
    leftover = final.with_name(final.name + ".tmp")
    leftover.mkdir(parents=True)
    (leftover / "before.jpg").write_bytes(b"half a jpeg")
    assert sink.write(_candidate(), event) == final
    assert not leftover.exists()
    assert json.loads((final / "event.json").read_text()) == json.loads(event_json(event))
    assert cv2.imread(str(final / "after.jpg")).shape == (48, 64, 3)
    # The same event again (re-sent after a restart): the folder is kept as it is.
    stamp = (final / "after.jpg").stat().st_mtime_ns
    assert sink.write(_candidate((24, 32, 3)), event) is None
    assert (final / "after.jpg").stat().st_mtime_ns == stamp


def test_queued_captures_are_written_by_close(tmp_path: Path) -> None:
    sink = CaptureSink(CapturesConfig(enabled=True, dir=tmp_path))
    sink.start()
    events = [make_event(seq=n, t=n * 10.0) for n in range(1, 6)]
    for event in events:
        sink.save(_candidate(), event)
    sink.close()
    assert sink.saved == 5 and sink.skipped == 0 and sink.failed == 0
    assert all((capture_path(tmp_path, e) / "event.json").is_file() for e in events)
    assert not [t for t in threading.enumerate() if t.name == "capture-writer"]


def test_example_config_documents_the_defaults() -> None:
    s = load_settings(EXAMPLE_CONFIG)
    assert (s.captures, s.jobs) == (CapturesConfig(), JobsConfig())
    assert s.captures.enabled is False


def test_unwritable_capture_dir_is_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = tmp_path / "c.yaml"
    doc = {
        "cameras": [{"id": "room", "source": str(need_video(CLIP))}],
        "log": {"dir": str(tmp_path / "logs")},
        "captures": {"enabled": True, "dir": str(blocker / "captures")},
        "http": {"bind": None},
    }
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    proc = run_monitor("run", "--config", cfg, "--quiet")
    assert proc.returncode == 1
    assert_no_traceback(proc)
    assert error_lines(proc) == [f"captures.dir: cannot create {blocker / 'captures'}: Not a directory"]


# -- retention ----------------------------------------------------------------------------------
DAY = 86400.0
NOW = 1_795_000_000.0


def _capture(root: Path, cam: str, day: str, name: str, size: int, age_days: float) -> Path:
    folder = root / cam / day / name
    folder.mkdir(parents=True)
    (folder / "after.jpg").write_bytes(b"x" * (size - 100))
    (folder / "event.json").write_bytes(b"{" + b" " * 98 + b"}")
    t = NOW - age_days * DAY
    os.utime(folder, (t, t))
    return folder


def _left(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.glob("*/*/*")}


def test_retention_by_age_deletes_exactly_the_old_folders(tmp_path: Path) -> None:
    _capture(tmp_path, "a", "2026-10-01", "a-old1", 1000, 40)
    _capture(tmp_path, "a", "2026-10-01", "a-old2", 1000, 31)
    _capture(tmp_path, "a", "2026-11-17", "a-new", 1000, 1)
    _capture(tmp_path, "b", "2026-10-20", "b-29d", 1000, 29.9)
    _capture(tmp_path, "c", "2026-09-01", "c-old", 1000, 80)
    (tmp_path / "a" / "2026-11-17" / "a-new" / "captions.txt").write_text("a person arrived\n")
    report = prune_captures(tmp_path, max_age_days=30, max_bytes=10**9, now=NOW)
    assert _left(tmp_path) == {"a/2026-11-17/a-new", "b/2026-10-20/b-29d"}
    assert (report.deleted_by_age, report.deleted_by_size, report.kept) == (3, 0, 2)
    assert report.freed_bytes == 3000
    # emptied day and camera folders went too; the others stay
    assert not (tmp_path / "a" / "2026-10-01").exists() and not (tmp_path / "c").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_retention_by_size_deletes_oldest_first(tmp_path: Path) -> None:
    ages = {"e1": 9, "e2": 8, "e3": 7, "e4": 3, "e5": 2, "e6": 1}  # days
    for i, (name, age) in enumerate(ages.items()):
        _capture(tmp_path, "cam" + str(i % 2), "2026-11-1" + str(i), name, 2000, age)
    report = prune_captures(tmp_path, max_age_days=30, max_bytes=7000, now=NOW)
    # 12000 bytes: the three oldest go (6000 left <= 7000); two would leave 8000
    assert {p.name for p in tmp_path.glob("*/*/*")} == {"e4", "e5", "e6"}
    assert (report.deleted_by_age, report.deleted_by_size, report.kept_bytes) == (0, 3, 6000)
    # exactly at the bound: nothing more to delete
    assert prune_captures(tmp_path, max_age_days=30, max_bytes=6000, now=NOW).deleted_by_size == 0


def test_retention_age_then_size_and_temporary_folders(tmp_path: Path) -> None:
    _capture(tmp_path, "a", "d1", "old", 5000, 45)
    _capture(tmp_path, "a", "d2", "mid", 3000, 5)
    _capture(tmp_path, "a", "d3", "new", 3000, 0.5)
    fresh_tmp = _capture(tmp_path, "a", "d3", "writing.tmp", 500, 0)  # being written right now
    stale_tmp = _capture(tmp_path, "a", "d1", "crashed.tmp", 500, 0)
    t = NOW - STALE_TMP_S - 60
    os.utime(stale_tmp, (t, t))
    report = prune_captures(tmp_path, max_age_days=30, max_bytes=4000, now=NOW)
    assert _left(tmp_path) == {"a/d3/new", "a/d3/writing.tmp"}
    assert (report.deleted_by_age, report.deleted_by_size, report.stale_tmp_removed) == (1, 1, 1)
    assert fresh_tmp.is_dir() and not (tmp_path / "a" / "d1").exists()


def test_retention_waits_for_the_sinks_lock_before_removing_folders(tmp_path: Path) -> None:
    """The sink holds its lock while it creates a capture's `.tmp` folder inside a day folder;
    retention removes emptied folders only under that lock, so it can never remove a day folder
    between the sink creating it and the capture's folder appearing in it."""
    sink = CaptureSink(CapturesConfig(enabled=True, dir=tmp_path))
    empty_day = tmp_path / "cam" / "2026-11-18"
    empty_day.mkdir(parents=True)
    with sink.lock:  # as if the sink were just creating a folder in there
        t = threading.Thread(target=prune_captures, args=(tmp_path, 30, 10**9), kwargs={"lock": sink.lock})
        t.start()
        t.join(0.5)
        assert t.is_alive() and empty_day.is_dir()
    t.join(5)
    assert not t.is_alive() and not (tmp_path / "cam").exists()
