"""Capture folders: the before/after frames and the event of every change, for review and as
fine-tuning data (`monitor finetune prepare --from-captures`). The format is a contract:

    <captures.dir>/<camera>/<YYYY-MM-DD of t_after, UTC>/<event_id>/
        before.jpg   after.jpg   event.json   [captions.txt: operator corrections, never written here]

`CaptureSink.save()` is called on the daemon's write path and only queues the work: a thread of
its own converts the frames to BGR, encodes the JPEGs and writes the folder atomically (into
`<event_id>.tmp/`, files fsynced, then renamed), so a reader never sees half a capture and the
describer never waits for a JPEG encoder. When that thread falls behind by `QUEUE_MAX` captures,
new ones are skipped and counted (the change log always has the event).

`prune_captures()` is the retention (run by `monitor.daemon.jobs`): whole event folders, oldest first
(by the folder's modification time, which is when it was written, or when an operator last
added `captions.txt`), by age and then by total size; emptied day and camera folders go too.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import structlog

from monitor.config import CapturesConfig
from monitor.errors import MonitorError
from monitor.records import ChangeCandidate, ChangeEvent
from monitor.sinks.spool import fsync_dir

log = structlog.get_logger(__name__)

QUEUE_MAX = 32  # captures waiting for the writer thread (each holds two decoded frames)
CLOSE_TIMEOUT_S = 10.0  # how long a shutdown waits for queued captures to be written
TMP_SUFFIX = ".tmp"
STALE_TMP_S = 3600.0  # a `.tmp` folder this old is a crash leftover: retention removes it

_RENDER_JSON = structlog.processors.JSONRenderer(sort_keys=False)  # as the log sink renders


def event_json(event: ChangeEvent) -> str:
    """The event exactly as `changes.jsonl` has it."""
    return _RENDER_JSON(None, "", event.model_dump(mode="json"))


def capture_path(root: Path, event: ChangeEvent) -> Path:
    return root / event.camera / event.t_after[:10] / event.event_id


class CaptureSink:
    """`save(candidate, event)` queues one capture; `start()` / `close()` run the writer thread."""

    def __init__(self, cfg: CapturesConfig):
        self.cfg = cfg
        self.root = cfg.dir
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MonitorError(f"captures.dir: cannot create {self.root}: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise MonitorError(f"captures.dir: {self.root} is not writable")
        # Held while a folder is created in a day folder and while retention removes emptied
        # ones, so retention never deletes a day folder a capture is about to land in.
        self.lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(QUEUE_MAX)
        self._thread: threading.Thread | None = None
        self.saved = 0
        self.skipped = 0  # the writer thread was QUEUE_MAX behind
        self.failed = 0
        self._failing = 0  # captures failed since the last one written

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="capture-writer", daemon=True)
            self._thread.start()

    def save(self, cand: ChangeCandidate, event: ChangeEvent) -> None:
        try:
            self._queue.put_nowait((cand, event))
        except queue.Full:
            self.skipped += 1
            log.warning("capture_skipped", event=event.event_id, reason="capture writer behind", total=self.skipped)

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Write what is queued (up to `timeout`), then stop the thread."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("captures_unwritten", queued=self._queue.qsize())
        self._thread = None

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            cand, event = item
            try:
                self.write(cand, event)
            except Exception as exc:  # noqa: BLE001 - a failed capture never stops the daemon
                if not self._failing:  # said once per outage (a full disk fails every one)
                    log.error("capture_failed", event=event.event_id, error=f"{type(exc).__name__}: {exc}")
                self.failed += 1
                self._failing += 1
                final = capture_path(self.root, event)
                shutil.rmtree(final.with_name(final.name + TMP_SUFFIX), ignore_errors=True)  # what it left
                continue
            if self._failing:
                log.warning("captures_resumed", missed=self._failing)
                self._failing = 0

    def write(self, cand: ChangeCandidate, event: ChangeEvent) -> Path | None:
        """Encode and write one capture folder now (the writer thread's work); returns its path,
        or None when a folder of that event already exists (an event re-sent after a restart)."""
        final = capture_path(self.root, event)
        if final.exists():
            return None
        q = [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality]
        files = {}
        for name, frame in (("before.jpg", cand.before), ("after.jpg", cand.after)):
            ok, data = cv2.imencode(".jpg", frame.image, q)
            if not ok:
                raise MonitorError(f"JPEG encoding failed for {name}")
            files[name] = data.tobytes()
        files["event.json"] = (event_json(event) + "\n").encode()
        tmp = final.with_name(final.name + TMP_SUFFIX)
        with self.lock:
            if tmp.exists():  # a crash leftover of this very event
                shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        for name, data in files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        os.rename(tmp, final)
        fsync_dir(final.parent)
        self.saved += 1
        return final


@dataclass(frozen=True)
class PruneReport:
    deleted_by_age: int
    deleted_by_size: int
    freed_bytes: int
    kept: int
    kept_bytes: int
    stale_tmp_removed: int


@dataclass(frozen=True)
class _Capture:
    path: Path
    mtime: float
    size: int


def _folder_size(path: Path) -> int:
    total = 0
    for entry in os.scandir(path):
        try:
            total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            pass
    return total


def _scan(root: Path, now: float) -> tuple[list[_Capture], list[Path]]:
    """Every event folder (`<camera>/<day>/<event_id>`) and the stale `.tmp` ones."""
    captures: list[_Capture] = []
    stale: list[Path] = []
    for cam in _subdirs(root):
        for day in _subdirs(cam):
            for ev in _subdirs(day):
                try:
                    mtime = ev.stat().st_mtime
                except OSError:
                    continue  # deleted meanwhile
                if ev.name.endswith(TMP_SUFFIX):
                    if now - mtime > STALE_TMP_S:
                        stale.append(ev)
                    continue
                captures.append(_Capture(ev, mtime, _folder_size(ev)))
    return captures, stale


def _subdirs(path: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def prune_captures(
    root: Path, max_age_days: float, max_bytes: int, now: float | None = None, lock: threading.Lock | None = None
) -> PruneReport:
    """Delete event folders older than `max_age_days`, then the oldest until the rest fit in
    `max_bytes`; then the day and camera folders left empty. `lock`: the sink's (see there)."""
    now = time.time() if now is None else now
    captures, stale = _scan(root, now)
    captures.sort(key=lambda c: (c.mtime, str(c.path)))  # oldest first
    cutoff = now - max_age_days * 86400.0
    by_age = [c for c in captures if c.mtime < cutoff]
    rest = [c for c in captures if c.mtime >= cutoff]
    total = sum(c.size for c in rest)
    by_size = []
    while rest and total > max_bytes:
        oldest = rest.pop(0)
        by_size.append(oldest)
        total -= oldest.size
    for c in [*by_age, *by_size]:
        shutil.rmtree(c.path, ignore_errors=True)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    _remove_empty(root, lock)
    report = PruneReport(
        deleted_by_age=len(by_age),
        deleted_by_size=len(by_size),
        freed_bytes=sum(c.size for c in [*by_age, *by_size]),
        kept=len(rest),
        kept_bytes=total,
        stale_tmp_removed=len(stale),
    )
    return report


def _remove_empty(root: Path, lock: threading.Lock | None) -> None:
    for cam in _subdirs(root):
        for day in _subdirs(cam):
            _rmdir_if_empty(day, lock)
        _rmdir_if_empty(cam, lock)


def _rmdir_if_empty(path: Path, lock: threading.Lock | None) -> None:
    if lock is not None:
        lock.acquire()
    try:
        path.rmdir()  # fails unless empty
    except OSError:
        pass
    finally:
        if lock is not None:
            lock.release()
