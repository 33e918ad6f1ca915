"""Write-ahead spool for the networked outputs (Redis, MQTT): events wait on disk until each
output has them. Every output reads it through its own cursor, with its own committed position.

How it works (kept deliberately simple):

* Every record is one JSON line `{"n": 17, "alerts": ["door"], "event": {...ChangeEvent...}}`.
  `n` is the spool's own record number, +1 per record, never reused (it survives restarts).
* Lines are appended, in order, to segment files `seg-<first n>.jsonl` in the spool directory;
  `append()` writes a whole batch and fsyncs once, *before* the batch is handed to delivery.
  A segment is closed once it passes `segment_bytes` and a new one is started (every start of
  the daemon also starts a new segment, so a line torn by a crash is never appended to).
* `committed` (a small file, replaced atomically: write tmp, fsync, rename) holds the number of
  the last record that is *done* for Redis: delivered, or dropped because the spool was full;
  `committed-<cursor>` the same for each other output (`mqtt`). Each delivery thread advances
  its own after its output acknowledged a batch. A crash between the two re-sends that batch on
  the next start; Redis' idempotency script drops the copies, MQTT consumers dedupe by event_id.
  A cursor new to a spool starts where the others are (it does not replay their past).
* Segments whose records are done for every cursor are deleted (that is the compaction), so
  the spool holds roughly the undelivered records plus at most one partly-done segment.
* Bound: when the undelivered records exceed `max_bytes`, the OLDEST are dropped (marked done
  without being delivered), counted in `dropped` and reported by one log line per drop.
* Undelivered records are also kept in memory (at most `max_bytes` of them), so delivery never
  re-reads the files; the files are only read back when the spool is opened.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from monitor.errors import MonitorError
from monitor.records import ChangeEvent

log = structlog.get_logger(__name__)

COMMITTED_NAME = "committed"
REDIS = "redis"  # the first cursor: its position is `committed` (the spool's format before cursors)
_SEG_PREFIX = "seg-"
_SEG_SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    n: int  # spool record number
    event: ChangeEvent
    alerts: tuple[str, ...]  # alert rule names, decided once when the event was produced
    size: int  # bytes of its line


def _seg_name(first_n: int) -> str:
    return f"{_SEG_PREFIX}{first_n:015d}{_SEG_SUFFIX}"


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Spool:
    def __init__(
        self, directory: Path, max_bytes: int, segment_bytes: int | None = None, cursors: Sequence[str] = (REDIS,)
    ):
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        # Small enough that deleting done segments keeps the disk near the bound.
        self.segment_bytes = segment_bytes or max(4096, min(max_bytes // 8, 8_000_000))
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MonitorError(f"redis.spool_dir: cannot create {self.dir}: {exc.strerror}") from None
        # One process per spool: a second monitor on the same directory would interleave records.
        self._lockfile = (self.dir / "lock").open("a")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lockfile.close()
            raise MonitorError(f"redis.spool_dir: {self.dir} is in use by another running monitor") from None
        self._lock = threading.Condition()
        self._pending: deque[SpoolRecord] = deque()
        self._pending_bytes = 0
        found = {c: self._read_committed(c) for c in cursors}  # last done record number, per cursor
        known = [n for n in found.values() if n is not None]
        self._done = {c: (n if n is not None else max(known, default=0)) for c, n in found.items()}
        self._segments: list[tuple[int, Path]] = []  # (first n, path), oldest first
        self._file = None
        self._file_bytes = 0
        self.dropped = 0
        self.appended = 0
        self.memory_only = 0  # records the disk refused since it last took one: in memory only
        self._commit_refused = False
        self._load()
        self._next_n = max(max(self._done.values()), self._last_n_on_disk) + 1
        self._drop_over_bound()

    # -- opening -------------------------------------------------------------------------
    def _committed_path(self, cursor: str) -> Path:
        return self.dir / (COMMITTED_NAME if cursor == REDIS else f"{COMMITTED_NAME}-{cursor}")

    def _read_committed(self, cursor: str) -> int | None:
        """The cursor's position; None when it never had one here."""
        path = self._committed_path(cursor)
        try:
            return int(path.read_text().strip() or 0)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("spool_committed_unreadable", path=str(path), error=str(exc))
            return 0

    @property
    def _floor(self) -> int:
        """The last record done for every cursor."""
        return min(self._done.values())

    def _load(self) -> None:
        self._last_n_on_disk = 0
        segs = []
        for path in self.dir.glob(f"{_SEG_PREFIX}*{_SEG_SUFFIX}"):
            try:
                segs.append((int(path.name[len(_SEG_PREFIX) : -len(_SEG_SUFFIX)]), path))
            except ValueError:
                continue
        segs.sort()
        for first, path in segs:
            last_in_seg = first - 1
            with path.open("rb") as fh:
                for raw in fh:
                    try:
                        obj = json.loads(raw)
                        n = int(obj["n"])
                        event = ChangeEvent.model_validate(obj["event"])
                        alerts = tuple(obj.get("alerts") or ())
                    except (ValueError, KeyError, TypeError):
                        # A line torn by a crash mid-write (only ever the last one of a segment).
                        log.warning("spool_torn_line", segment=path.name)
                        continue
                    last_in_seg = max(last_in_seg, n)
                    self._last_n_on_disk = max(self._last_n_on_disk, n)
                    if n > self._floor:
                        self._pending.append(SpoolRecord(n, event, alerts, len(raw)))
                        self._pending_bytes += len(raw)
            if last_in_seg <= self._floor:
                self._unlink(path)
            else:
                self._segments.append((first, path))

    # -- producer side -------------------------------------------------------------------
    def append(self, items: list[tuple[ChangeEvent, list[str] | tuple[str, ...]]]) -> list[SpoolRecord]:
        """Append a batch durably (one fsync); returns the records, in order."""
        if not items:
            return []
        with self._lock:
            records = []
            lines = []
            for event, alerts in items:
                n = self._next_n
                self._next_n += 1
                line = (
                    json.dumps({"n": n, "alerts": list(alerts)}, separators=(",", ":"))[:-1]
                    + ',"event":'
                    + event.model_dump_json()
                    + "}\n"
                ).encode()
                lines.append(line)
                records.append(SpoolRecord(n, event, tuple(alerts), len(line)))
            self._write_durably(b"".join(lines), records)
            for rec in records:
                self._pending.append(rec)
                self._pending_bytes += rec.size
            self.appended += len(records)
            self._drop_over_bound()
            self._lock.notify_all()
            return records

    def _write_durably(self, data: bytes, records: list[SpoolRecord]) -> None:
        """Append to the current segment and fsync. A disk that refuses (full, gone) costs the
        durability of these records, not the records: they stay in memory for delivery, and
        the refusal is said once; the half-written bytes are cut off and the next append starts
        a new segment, so no segment ever holds a torn line in its middle."""
        try:
            if self._file is None or self._file_bytes >= self.segment_bytes:
                self._open_segment(records[0].n)
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            self._refused(exc, len(records))
            return
        self._file_bytes += len(data)
        if self.memory_only:
            log.warning("spool_disk_back", spool=str(self.dir), kept_in_memory_only=self.memory_only)
            self.memory_only = 0

    def _refused(self, exc: OSError, count: int) -> None:
        if not self.memory_only:
            log.error(
                "spool_disk_refused", spool=str(self.dir), error=exc.strerror or str(exc),
                note="events go to Redis from memory until the disk takes them again (a crash would lose those)",
            )  # fmt: skip
        self.memory_only += count
        if self._file is not None:
            path = self._segments[-1][1]
            with contextlib.suppress(OSError):
                self._file.close()
            with contextlib.suppress(OSError):
                os.truncate(path, self._file_bytes)  # cutting back needs no space
            self._file = None

    def _open_segment(self, first_n: int) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        path = self.dir / _seg_name(first_n)
        self._file = path.open("ab")
        self._file_bytes = 0
        self._segments.append((first_n, path))
        fsync_dir(self.dir)

    def _drop_over_bound(self) -> None:
        dropped = 0
        first_dropped = last_dropped = None
        while self._pending and self._pending_bytes > self.max_bytes:
            rec = self._pending.popleft()
            self._pending_bytes -= rec.size
            dropped += 1
            first_dropped = first_dropped or rec
            last_dropped = rec
        if dropped:
            self.dropped += dropped
            log.warning(
                "spool_full_dropped_oldest",
                dropped=dropped,
                dropped_total=self.dropped,
                first_event=first_dropped.event.event_id,
                last_event=last_dropped.event.event_id,
                max_bytes=self.max_bytes,
            )
            for cursor in self._done:
                if self._done[cursor] < last_dropped.n:
                    self._commit_locked(cursor, last_dropped.n)

    # -- delivery side -------------------------------------------------------------------
    def _first_for(self, cursor: str) -> int:
        """Index in `_pending` of the cursor's first undelivered record (n runs without gaps)."""
        return max(0, self._done[cursor] + 1 - self._pending[0].n) if self._pending else 0

    def peek(self, limit: int, timeout: float | None = None, cursor: str = REDIS) -> list[SpoolRecord]:
        """The cursor's oldest undelivered records (up to `limit`), waiting up to `timeout` for one."""
        with self._lock:
            if self._first_for(cursor) >= len(self._pending) and timeout:
                self._lock.wait(timeout)
            first = self._first_for(cursor)
            return [self._pending[i] for i in range(first, min(first + limit, len(self._pending)))]

    def commit(self, through_n: int, cursor: str = REDIS) -> None:
        """The cursor's records up to `through_n` were delivered: persist its position; what
        every cursor is done with is forgotten."""
        with self._lock:
            if through_n > self._done[cursor]:
                self._commit_locked(cursor, through_n)
            self._lock.notify_all()

    def pending_for(self, cursor: str) -> int:
        with self._lock:
            return len(self._pending) - self._first_for(cursor)

    def _commit_locked(self, cursor: str, through_n: int) -> None:
        self._done[cursor] = max(self._done[cursor], through_n)
        while self._pending and self._pending[0].n <= self._floor:
            rec = self._pending.popleft()
            self._pending_bytes -= rec.size
        path = self._committed_path(cursor)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with tmp.open("w") as fh:
                fh.write(f"{self._done[cursor]}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            self._commit_refused = False
        except OSError as exc:  # a full disk: delivery goes on; a restart re-sends, Redis dedupes
            if not self._commit_refused:
                log.warning("spool_offset_not_saved", spool=str(self.dir), error=exc.strerror or str(exc))
            self._commit_refused = True
            return
        # Compaction: a closed segment whose records are all done is deleted. A segment ends
        # where the next begins, so "all done" means the next segment starts at or below done+1.
        while len(self._segments) > 1 and self._segments[1][0] <= self._floor + 1:
            self._unlink(self._segments.pop(0)[1])
        if len(self._segments) == 1 and not self._pending and self._file is None:
            self._unlink(self._segments.pop(0)[1])

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    def wait_empty(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: not self._pending, timeout)

    def wake(self) -> None:
        with self._lock:
            self._lock.notify_all()

    # -- state ---------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def last_seqs(self) -> dict[str, int]:
        """Highest event seq per camera among the spooled (undelivered) records."""
        with self._lock:
            out: dict[str, int] = {}
            for rec in self._pending:
                out[rec.event.camera] = max(out.get(rec.event.camera, 0), rec.event.seq)
            return out

    def close(self) -> None:
        """Idempotent: the writer closes the spool its outputs share after them."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if not self._pending:
                for _, path in self._segments:
                    self._unlink(path)
                self._segments.clear()
            if not self._lockfile.closed:
                self._lockfile.close()  # releases the flock
