"""`monitor tail`: print the change log and optionally follow it across rotations."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from pathlib import Path

from monitor.errors import MonitorError
from monitor.records import ChangeEvent
from monitor.sinks.logfiles import JSONL_NAME


def _format(line: str, camera: str | None, as_json: bool, seen: set[str] | None = None) -> str | None:
    """The line to print, or None (another camera's, or half written). `seen` collects cameras."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None  # a half-written last line; it will be complete on the next read
    if seen is not None and isinstance(data.get("camera"), str):
        seen.add(data["camera"])
    if camera is not None and data.get("camera") != camera:
        return None
    return line.rstrip("\n") if as_json else ChangeEvent.model_validate(data).line()


def tail(
    log_dir: Path,
    follow: bool = False,
    camera: str | None = None,
    as_json: bool = False,
    lines: int = 20,
    poll_s: float = 0.25,
) -> int:
    path = log_dir / JSONL_NAME
    if not path.exists() and not follow:
        raise MonitorError(f"no change log at {path} (is --log-dir right?)")
    if not path.exists():  # -f on a log that is not there yet: say so once, then wait for it
        print(f"monitor: waiting for {path} (no change log there yet; is --log-dir right?)", file=sys.stderr)
    while not path.exists():
        time.sleep(poll_s)
    fh = path.open("r", encoding="utf-8")
    recent: deque[str] = deque(maxlen=lines or None)
    cameras: set[str] = set()
    for line in fh:
        out = _format(line, camera, as_json, cameras)
        if out is not None:
            recent.append(out)
    for out in recent:
        print(out, flush=True)
    if camera is not None and camera not in cameras and cameras:
        known = ", ".join(sorted(cameras))
        if not follow:
            raise MonitorError(f"no events of camera {camera!r} in {path} (cameras: {known})")
        print(f"monitor: no events of camera {camera!r} yet (cameras: {known}); waiting", file=sys.stderr)
    if not follow:
        return 0
    inode = os.fstat(fh.fileno()).st_ino
    pending = ""
    try:
        while True:
            chunk = fh.readline()
            if chunk:
                pending += chunk
                if pending.endswith("\n"):
                    out = _format(pending, camera, as_json)
                    pending = ""
                    if out is not None:
                        print(out, flush=True)
                continue
            time.sleep(poll_s)
            try:
                rotated = os.stat(path).st_ino != inode
            except FileNotFoundError:
                continue
            if rotated:  # the sink rotated the file: read the new one from its start
                fh.close()
                fh = path.open("r", encoding="utf-8")
                inode = os.fstat(fh.fileno()).st_ino
    except KeyboardInterrupt:
        return 0
    finally:
        fh.close()
        sys.stdout.flush()
