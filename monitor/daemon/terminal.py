"""The terminal a run was started from: change lines (stdout), diagnostics (stderr) and, on a
terminal, a progress line kept at the bottom of stderr. Every write is a whole line under one
lock, and the progress line is cleared before it and drawn again after, so nothing ever
interleaves mid-line (a diagnostic from a reader thread in the middle of a change line)."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from monitor.daemon.snapshot import MonitorSnapshot

_CLEAR = "\r\x1b[K"  # carriage return, erase to the end of the line


class Terminal:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._progress = ""  # shown at the bottom of stderr; "" = none

    def write_line(self, stream: TextIO, text: str) -> None:
        with self._lock:
            err = sys.stderr
            if self._progress:
                err.write(_CLEAR)
                err.flush()
            stream.write(text + "\n")
            stream.flush()
            if self._progress:
                err.write(self._progress)
                err.flush()

    def show(self, text: str) -> None:
        """Replace the progress line (cut to the terminal's width: a wrapped line cannot be erased)."""
        width = shutil.get_terminal_size((100, 24)).columns - 1
        with self._lock:
            self._progress = text[:width]
            sys.stderr.write(_CLEAR + self._progress)
            sys.stderr.flush()

    def clear(self) -> None:
        with self._lock:
            if self._progress:
                sys.stderr.write(_CLEAR)
                sys.stderr.flush()
            self._progress = ""


TERMINAL = Terminal()


class LineWriter:
    """A file-like view of stdout or stderr for `print` and structlog that hands the terminal
    whole lines only. `stream` is looked up per line: whoever swaps sys.stderr later (pytest's
    capture) keeps receiving them."""

    def __init__(self, stream: Callable[[], TextIO], terminal: Terminal = TERMINAL):
        self._stream = stream
        self._terminal = terminal
        self._buffer = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._terminal.write_line(self._stream(), line)
        return len(text)

    def flush(self) -> None:
        pass  # whole lines are flushed as they are written; a partial line waits for its end

    def isatty(self) -> bool:
        return self._stream().isatty()


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """`progress(monitor.snapshot)` from the daemon's loop: how far the files are read, how fast, how
    many events, on the terminal's progress line (at most twice a second)."""

    def __init__(self, terminal: Terminal = TERMINAL, every_s: float = 0.5):
        self.terminal = terminal
        self.every_s = every_s
        self._last = float("-inf")

    def __call__(self, snapshot: Callable[[], MonitorSnapshot]) -> None:
        """`snapshot` is taken only when the line is due (the loop calls this every pass)."""
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        snap = snapshot()
        files = [c for c in snap.cameras if c.length_s]
        read = sum(min(c.media_s, c.length_s or 0.0) for c in files)
        total = sum(c.length_s or 0.0 for c in files)
        frames = sum(c.frames_sampled for c in snap.cameras)
        speed = read / snap.uptime_s if snap.uptime_s > 0 else 0.0
        if len(files) == 1:
            where = f"{files[0].id}: {_clock(read)} of {_clock(total)}"
        else:
            where = f"{len(files)} files: {_clock(read)} of {_clock(total)} of media"
        pct = f" ({100 * read / total:.0f} %)" if total else ""
        n = snap.events_written
        self.terminal.show(f"{where}{pct}, {frames} frames, {speed:.0f}x real time, {n} event{'s' if n != 1 else ''}")

    def done(self) -> None:
        self.terminal.clear()
