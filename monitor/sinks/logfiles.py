"""Where events go: rotating `changes.jsonl` (one JSON object per line, rendered by structlog)
and a human-readable rotating `changes.log`; optionally echoed to stdout."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import re
from pathlib import Path
from typing import TextIO

import structlog

from monitor.config import LogConfig
from monitor.errors import MonitorError
from monitor.records import ChangeEvent, unix_time

log = structlog.get_logger(__name__)

JSONL_NAME = "changes.jsonl"
TEXT_NAME = "changes.log"


class _LineFileHandler(logging.handlers.RotatingFileHandler):
    """logging's rotating file, except when the disk refuses a line (full, gone): instead of a
    traceback on stderr per line (logging's `handleError`), the failure is kept in `refused`
    for the sink, and the half-written line is cut off again, so the file never holds a torn
    line when writing resumes."""

    refused: OSError | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.refused = None
        size = None
        try:
            if self.stream is None:
                self.stream = self._open()
            if self.shouldRollover(record):
                self.doRollover()
            size = os.fstat(self.stream.fileno()).st_size
            self.stream.write(self.format(record) + self.terminator)
            self.stream.flush()
        except OSError as exc:
            self.refused = exc
            stream, self.stream = self.stream, None  # reopened by the next line
            with contextlib.suppress(OSError, AttributeError):
                stream.close()
            if size is not None:
                with contextlib.suppress(OSError):
                    os.truncate(self.baseFilename, size)


def _rotating_logger(name: str, path: Path, cfg: LogConfig) -> logging.Logger:
    logger = logging.getLogger(f"monitor.sink.{name}.{path}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    handler = _LineFileHandler(path, maxBytes=cfg.max_bytes, backupCount=cfg.backup_count, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return logger


class LogFileSink:
    """Writes each event to both files as soon as it is released (flushed per line)."""

    def __init__(self, cfg: LogConfig, echo: TextIO | None = None):
        try:
            cfg.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MonitorError(f"log.dir: cannot create {cfg.dir}: {exc.strerror}") from None
        self.dir = cfg.dir
        self._json = _rotating_logger("jsonl", cfg.dir / JSONL_NAME, cfg)
        self._text = _rotating_logger("text", cfg.dir / TEXT_NAME, cfg)
        self._render = structlog.processors.JSONRenderer(sort_keys=False)
        self.echo = echo
        self.zone = cfg.zone()
        self.written = 0
        self.missed = 0  # events the disk refused since it last took one

    def write(self, event: ChangeEvent) -> None:
        line = event.line(self.zone)
        refused = self._line(self._json, self._render(None, "", event.model_dump(mode="json")))
        refused = refused or self._line(self._text, line)  # not in changes.jsonl: not in changes.log either
        if self.echo is not None:
            print(line, file=self.echo, flush=True)
        if refused is not None:
            if not self.missed:  # once per outage, not once per event
                log.error(
                    "log_files_refused", log_dir=str(self.dir), error=refused.strerror or str(refused),
                    note="events still reach Redis (from memory); the log files miss them until the disk takes them",
                )  # fmt: skip
            self.missed += 1
            return
        if self.missed:
            log.warning("log_files_resumed", log_dir=str(self.dir), missed=self.missed)
            self.missed = 0
        self.written += 1

    @staticmethod
    def _line(logger: logging.Logger, text: str) -> OSError | None:
        logger.info(text)
        return next((h.refused for h in logger.handlers if isinstance(h, _LineFileHandler) and h.refused), None)

    def close(self) -> None:
        for logger in (self._json, self._text):
            for h in list(logger.handlers):
                h.close()
                logger.removeHandler(h)


# The fields as ChangeEvent writes them, in its order: camera, seq, kind, t_before, t_after.
_LAST_RE = re.compile(
    rb'"camera":\s*"([^"]+)",\s*"seq":\s*(\d+),\s*"kind":\s*"[^"]*",\s*"t_before":\s*"[^"]*",\s*"t_after":\s*"([^"]+)"'
)


def last_logged(log_dir: Path) -> dict[str, tuple[int, float]]:
    """Per camera in `changes.jsonl` and its rotated copies `changes.jsonl.N`: the highest seq
    and the latest `t_after` (UNIX seconds)."""
    paths = [log_dir / JSONL_NAME, *log_dir.glob(JSONL_NAME + ".*")]
    out: dict[str, tuple[int, float]] = {}
    for path in paths:
        if path != log_dir / JSONL_NAME and not path.name.rsplit(".", 1)[-1].isdigit():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for m in _LAST_RE.finditer(data):
            cam, seq = m.group(1).decode(), int(m.group(2))
            try:
                at = unix_time(m.group(3).decode())
            except ValueError:
                continue
            old_seq, old_at = out.get(cam, (0, float("-inf")))
            out[cam] = (max(seq, old_seq), max(at, old_at))
    return out
