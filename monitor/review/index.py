"""The review page's event index: one SQLite file (stdlib `sqlite3`) built from `changes.jsonl`
and its rotated copies, kept up to date by following the log (`refresh()` reads only the bytes
added since the last call, and starts over on a file that was rotated away), with an FTS5
full-text index over the sentences and the operators' corrections. Deleted or corrupt: it is
rebuilt from the log, with one log line."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from monitor.records import unix_time
from monitor.sinks.logfiles import JSONL_NAME

log = structlog.get_logger(__name__)

INDEX_NAME = "review-index.sqlite3"
SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, inode INTEGER NOT NULL, offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    n INTEGER PRIMARY KEY,            -- arrival order in the index: what "newer than" means live
    event_id TEXT UNIQUE NOT NULL, camera TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    t_after REAL NOT NULL, text TEXT NOT NULL, corrected TEXT, json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_camera_time ON events (camera, t_after);
CREATE INDEX IF NOT EXISTS events_time ON events (t_after);
CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5(text, corrected, content='events', content_rowid='n');
"""


@dataclass(frozen=True, slots=True)
class IndexedEvent:
    n: int
    event_id: str
    camera: str
    seq: int
    kind: str
    t_after: float
    text: str
    corrected: str | None
    record: dict  # the event as changes.jsonl has it

    @property
    def shown_text(self) -> str:
        return self.corrected or self.text


@dataclass(frozen=True, slots=True)
class Query:
    camera: str | None = None
    kind: str | None = None
    text: str | None = None  # full-text words ("white van")
    since: float | None = None
    until: float | None = None
    page: int = 1
    per_page: int = 50

    @property
    def filtered(self) -> bool:
        return bool(self.camera or self.kind or self.text or self.since is not None or self.until is not None)


def fts_query(words: str) -> str:
    """The operator's words as an FTS5 query: every word must occur (prefixes match), quoted so
    that FTS5 syntax in the input is only ever text."""
    terms = [w.replace('"', '""') for w in words.split()]
    return " ".join(f'"{t}"*' for t in terms if t)


class EventIndex:
    def __init__(self, log_dir: Path, path: Path | None = None, corrections=None):
        self.log_dir = log_dir
        self.path = path or log_dir / INDEX_NAME
        # event record -> the operator's correction (captions.txt of its capture), or None
        self._corrections = corrections or (lambda record: None)
        self._lock = threading.Lock()  # one connection, shared by the server's threads
        self._db = self._open()

    # -- opening -------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        try:
            db = self._connect()
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None or row[0] != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {row[0] if row else None}, not {SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM events_fts").fetchone()
            return db
        except sqlite3.DatabaseError as exc:
            log.warning("review_index_rebuilt", path=str(self.path), reason=str(exc)[:120])
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.executescript(_SCHEMA)
        db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        db.commit()
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- following the log ---------------------------------------------------------------
    def _log_files(self) -> list[Path]:
        """changes.jsonl.N (oldest first), then changes.jsonl."""
        rotated = [p for p in self.log_dir.glob(JSONL_NAME + ".*") if p.name.rsplit(".", 1)[-1].isdigit()]
        rotated.sort(key=lambda p: -int(p.name.rsplit(".", 1)[-1]))
        return [*rotated, self.log_dir / JSONL_NAME]

    def refresh(self) -> int:
        """Index what was added to the log since the last call; returns how many events."""
        added = 0
        with self._lock:
            for path in self._log_files():
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                row = self._db.execute("SELECT inode, offset FROM files WHERE path = ?", (str(path),)).fetchone()
                offset = row["offset"] if row is not None and row["inode"] == st.st_ino else 0
                if offset > st.st_size:  # truncated in place
                    offset = 0
                if offset == st.st_size and row is not None and row["inode"] == st.st_ino:
                    continue
                added += self._read(path, offset, st.st_ino)
            self._db.commit()
        return added

    def _read(self, path: Path, offset: int, inode: int) -> int:
        added = 0
        with path.open("rb") as fh:
            fh.seek(offset)
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # a line still being written: read it next time
                offset += len(raw)
                try:
                    rec = json.loads(raw)
                    values = (rec["event_id"], rec["camera"], int(rec["seq"]), rec["kind"], unix_time(rec["t_after"]))
                    values += (rec["text"], json.dumps(rec))
                except (ValueError, KeyError, TypeError):
                    continue  # not an event line
                corrected = self._corrections(rec)
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO events (event_id, camera, seq, kind, t_after, text, json, corrected) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, corrected),
                )
                if cur.rowcount:
                    self._db.execute(
                        "INSERT INTO events_fts (rowid, text, corrected) VALUES (?, ?, ?)",
                        (cur.lastrowid, rec["text"], corrected or ""),
                    )
                    added += 1
        self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", (str(path), inode, offset))
        return added

    # -- reading -------------------------------------------------------------------------
    def search(self, q: Query) -> tuple[list[IndexedEvent], int]:
        """Newest first, one page, and how many match in all."""
        where, args = ["1"], []
        if q.camera:
            where.append("e.camera = ?")
            args.append(q.camera)
        if q.kind:
            where.append("e.kind = ?")
            args.append(q.kind)
        if q.since is not None:
            where.append("e.t_after >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("e.t_after < ?")
            args.append(q.until)
        if q.text and fts_query(q.text):
            where.append("e.n IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?)")
            args.append(fts_query(q.text))
        sql = " AND ".join(where)
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM events e WHERE {sql}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT * FROM events e WHERE {sql} ORDER BY e.t_after DESC, e.n DESC LIMIT ? OFFSET ?",
                [*args, q.per_page, (max(1, q.page) - 1) * q.per_page],
            ).fetchall()
        return [self._event(r) for r in rows], total

    def get(self, event_id: str) -> IndexedEvent | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return self._event(row) if row is not None else None

    def neighbours(self, event: IndexedEvent) -> tuple[str | None, str | None]:
        """The previous and the next event of the same camera (by seq)."""
        with self._lock:
            before = self._db.execute(
                "SELECT event_id FROM events WHERE camera = ? AND seq < ? ORDER BY seq DESC LIMIT 1",
                (event.camera, event.seq),
            ).fetchone()
            after = self._db.execute(
                "SELECT event_id FROM events WHERE camera = ? AND seq > ? ORDER BY seq LIMIT 1",
                (event.camera, event.seq),
            ).fetchone()
        return (before[0] if before else None, after[0] if after else None)

    def newer_than(self, n: int, limit: int = 100) -> list[IndexedEvent]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM events WHERE n > ? ORDER BY n LIMIT ?", (n, limit)).fetchall()
        return [self._event(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT camera, count(*) FROM events GROUP BY camera ORDER BY camera").fetchall()
        return {r[0]: r[1] for r in rows}

    def per_hour(self, camera: str | None = None) -> list[tuple[float, int]]:
        """(hour start, events) of the last 24 hours that have events, newest first."""
        sql = "SELECT CAST(t_after / 3600 AS INTEGER) * 3600 AS h, count(*) FROM events"
        args: list = []
        if camera:
            sql += " WHERE camera = ?"
            args.append(camera)
        with self._lock:
            rows = self._db.execute(sql + " GROUP BY h ORDER BY h DESC LIMIT 24", args).fetchall()
        return [(float(r[0]), r[1]) for r in rows]

    def set_correction(self, event_id: str, text: str | None) -> None:
        with self._lock:
            row = self._db.execute("SELECT n, text, corrected FROM events WHERE event_id = ?", (event_id,)).fetchone()
            if row is None:
                return
            self._db.execute(
                "INSERT INTO events_fts (events_fts, rowid, text, corrected) VALUES ('delete', ?, ?, ?)",
                (row["n"], row["text"], row["corrected"] or ""),
            )
            self._db.execute("UPDATE events SET corrected = ? WHERE n = ?", (text, row["n"]))
            self._db.execute(
                "INSERT INTO events_fts (rowid, text, corrected) VALUES (?, ?, ?)", (row["n"], row["text"], text or "")
            )
            self._db.commit()

    @staticmethod
    def _event(row: sqlite3.Row) -> IndexedEvent:
        return IndexedEvent(
            row["n"], row["event_id"], row["camera"], row["seq"], row["kind"], row["t_after"], row["text"],
            row["corrected"], json.loads(row["json"]),
        )  # fmt: skip


def index_path(log_dir: Path) -> Path:
    """In the log dir; where the page may not write there (a service's log dir), in the user's
    state dir, one file per log dir."""
    if os.access(log_dir, os.W_OK):
        return log_dir / INDEX_NAME
    state = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "surveillance-monitor"
    state.mkdir(parents=True, exist_ok=True)
    return state / f"review-{hashlib.sha1(str(log_dir.resolve()).encode()).hexdigest()[:12]}.sqlite3"
