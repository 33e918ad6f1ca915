"""A slow describer never blocks readers: a bounded queue per camera coalesces (or drops) the
oldest candidates and counts them.

In-process, with the real embedded describer made to block on a threading.Event: every camera
still reads its file to the end, each camera's queue stays within `describer.queue_per_camera`,
the coalesced candidates are counted (CameraRun, RunResult, the camera_summary line), and once
released every queued change is written in order with seq 1..n per camera. Health notices are
never merged or dropped, and the describer loop takes candidates fairly across cameras."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from support import read_events

from monitor.config import CameraConfig, load_settings
from monitor.daemon.camera_health import HealthNotice
from monitor.daemon.notify import Notifier
from monitor.daemon.queues import CameraQueues
from monitor.daemon.service import CameraRun, Monitor
from monitor.describe.embedded import EmbeddedDescriber
from monitor.records import ChangeCandidate, Frame, GateScores, Region
from monitor.scene.scripted import render_sample_scene
from monitor.sources.video import VideoSource

QUEUE = 2  # per camera: small, so the 60 s scene's six changes must be coalesced


class BlockingDescriber(EmbeddedDescriber):
    """The embedded describer, except that describe() blocks until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def describe(self, candidates):
        self.entered.set()
        assert self.release.wait(60), "never released"
        return super().describe(candidates)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "scene.mp4"
    render_sample_scene(path, seconds=60.0, seed=7)  # six scripted changes
    return path


def _total_sampled(scene: Path) -> int:
    src = VideoSource(CameraConfig(id="ref", source=str(scene)))
    src.open()
    return sum(1 for _ in src.frames())


def test_blocked_describer_never_blocks_readers(tmp_path: Path, scene: Path) -> None:
    total = _total_sampled(scene)
    settings = load_settings(
        None,
        cameras=[{"id": f"cam-{i}", "source": str(scene)} for i in range(3)],
        log={"dir": str(tmp_path / "logs"), "reorder_window_s": 0.0},
        describer={"queue_per_camera": QUEUE, "batch_size": 4},
    )
    describer = BlockingDescriber()
    monitor = Monitor(settings, describer=describer, notifier=Notifier(None))
    result: list = []
    thread = threading.Thread(target=lambda: result.append(monitor.run()), daemon=True)
    thread.start()
    try:
        assert describer.entered.wait(30), "no change reached the describer"
        biggest = 0
        deadline = time.monotonic() + 60
        while any(r.thread is None or r.thread.is_alive() for r in monitor.cameras):
            assert time.monotonic() < deadline, "a reader is stuck behind the blocked describer"
            biggest = max([biggest, *(c.queue for c in monitor.snapshot().cameras)])
            time.sleep(0.01)
        # Every reader reached the end of its file while describe() was still blocked.
        assert not describer.release.is_set()
        for run in monitor.cameras:
            assert run.error is None, run.error
            assert run.source.stats.sampled == total, (run.camera.id, run.source.stats, total)
        sizes = {c.id: c.queue for c in monitor.snapshot().cameras}
        assert biggest <= QUEUE and all(n <= QUEUE for n in sizes.values()), (biggest, sizes)
        counts = {r.camera.id: (r.candidates, r.coalesced, r.dropped) for r in monitor.cameras}
        assert all(c >= 4 and merged > 0 for c, merged, _ in counts.values()), counts
        monitor.stop()  # SIGTERM while blocked: what is queued is still described (drain)
        describer.release.set()
        thread.join(60)
    finally:
        describer.release.set()
        monitor.stop()
    assert not thread.is_alive() and result
    res = result[0]
    assert res.coalesced == {cid: m for cid, (_, m, _) in counts.items()}
    assert res.dropped == {cid: d for cid, (_, _, d) in counts.items()}
    events = read_events(tmp_path / "logs")
    for cid, (cands, merged, dropped) in counts.items():
        mine = [e for e in events if e["camera"] == cid]
        # One candidate was taken before the queue filled; the rest were merged down to QUEUE.
        assert [e["seq"] for e in mine] == list(range(1, cands - merged - dropped + 1)), (cid, counts, mine)
        afters = [e["media_t_after"] for e in mine]
        assert afters == sorted(afters), afters
        assert all(a["media_t_before"] <= a["media_t_onset"] <= a["media_t_after"] for a in mine)
        # A coalesced event spans the merged changes: it ends at the last change of the file.
        assert afters[-1] > 50.0, afters


# -- CameraQueues on its own ----------------------------------------------------------------------
def _run(cid: str) -> CameraRun:
    return CameraRun(CameraConfig(id=cid, source="x.mp4"), None, None)  # type: ignore[arg-type]


def _cand(cid: str, t: float) -> ChangeCandidate:
    frame = lambda s, mt: Frame(cid, s, mt, 1000.0 + mt, None)  # noqa: E731
    region = Region(0.1, 0.1, 0.1, 0.1, "appeared", 0.01)
    return ChangeCandidate(
        cid, frame(int(t * 10), t - 1), frame(int(t * 10) + 1, t), t - 0.5, (region,), GateScores(0.9, 0.01)
    )


def _notice(cid: str, kind: str) -> HealthNotice:
    return HealthNotice(cid, kind, 1000.0, 1001.0, 0.0)


def test_queue_coalesces_oldest_and_keeps_order() -> None:
    q, run = CameraQueues(2), _run("a")
    for t in (1.0, 2.0, 3.0, 4.0):
        q.put(run, _cand("a", t))
    assert run.coalesced == 2 and run.dropped == 0
    items = q.take(10, timeout=0)
    assert len(items) == 2
    merged, last = items
    # (1+2) then (1+2)+3: before/onset of the oldest, after of the newest merged.
    assert (merged.before.media_time, merged.onset_media_time, merged.after.media_time) == (0.0, 0.5, 3.0)
    assert last.after.media_time == 4.0


def test_health_notices_are_never_dropped_nor_merged() -> None:
    q, run = CameraQueues(1), _run("a")
    q.put(run, _cand("a", 1.0))
    q.put(run, _notice("a", "camera_offline"))
    q.put(run, _cand("a", 2.0))  # not adjacent to 1.0: the oldest candidate is dropped
    q.put(run, _notice("a", "camera_online"))
    q.put(run, _cand("a", 3.0))
    assert run.dropped == 2 and run.coalesced == 0
    items = q.take(10, timeout=0)
    assert [getattr(i, "kind", None) for i in items] == ["camera_offline", "camera_online", None]
    assert items[-1].after.media_time == 3.0


def test_take_is_round_robin_across_cameras() -> None:
    q = CameraQueues(100)
    a, b, c = _run("a"), _run("b"), _run("c")
    for t in range(10):
        q.put(a, _cand("a", float(t + 1)))
    q.put(b, _cand("b", 1.0))
    q.put(c, _cand("c", 1.0))
    first = q.take(3, timeout=0)
    assert sorted(i.camera_id for i in first) == ["a", "b", "c"]  # a's backlog does not starve b, c
    rest = q.take(100, timeout=0)
    assert [i.after.media_time for i in first + rest if i.camera_id == "a"] == [float(t + 1) for t in range(10)]
    assert q.take(1, timeout=0.05) == []
