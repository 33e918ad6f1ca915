"""Where events go: rotating `changes.jsonl` (one JSON object per line, rendered by structlog)
and a human-readable rotating `changes.log`; optionally echoed to stdout."""

from __future__ import annotations

import logging
import logging.handlers
import re
from pathlib import Path
from typing import TextIO

import structlog

from monitor.config import LogConfig
from monitor.errors import MonitorError
from monitor.records import ChangeEvent

JSONL_NAME = "changes.jsonl"
TEXT_NAME = "changes.log"


def _rotating_logger(name: str, path: Path, cfg: LogConfig) -> logging.Logger:
    logger = logging.getLogger(f"monitor.sink.{name}.{path}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=cfg.max_bytes, backupCount=cfg.backup_count, encoding="utf-8"
    )
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

    def write(self, event: ChangeEvent) -> None:
        self._json.info(self._render(None, "", event.model_dump(mode="json")))
        line = event.line(self.zone)
        self._text.info(line)
        if self.echo is not None:
            print(line, file=self.echo, flush=True)
        self.written += 1

    def close(self) -> None:
        for logger in (self._json, self._text):
            for h in list(logger.handlers):
                h.close()
                logger.removeHandler(h)


_SEQ_RE = re.compile(rb'"camera":\s*"([^"]+)",\s*"seq":\s*(\d+)')


def last_logged_seqs(log_dir: Path) -> dict[str, int]:
    """Highest seq per camera in `changes.jsonl` and its rotated copies `changes.jsonl.N`."""
    paths = [log_dir / JSONL_NAME, *log_dir.glob(JSONL_NAME + ".*")]
    out: dict[str, int] = {}
    for path in paths:
        if path != log_dir / JSONL_NAME and not path.name.rsplit(".", 1)[-1].isdigit():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for m in _SEQ_RE.finditer(data):
            cam, seq = m.group(1).decode(), int(m.group(2))
            if seq > out.get(cam, 0):
                out[cam] = seq
    return out
