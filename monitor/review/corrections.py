"""Capture folders as the review page reads and corrects them: the folder of an event (never a
path outside the captures dir, whatever the request or a symlink says), its frames, and the
operator's correction in `captions.txt`, written atomically (the format `monitor finetune
prepare --from-captures` reads: one sentence per change per line). The original sentence stays
in `event.json` and the log."""

from __future__ import annotations

import os
import re
from pathlib import Path

from monitor.sinks.captures import fsync_dir

CAPTIONS_NAME = "captions.txt"
FRAME_NAMES = ("before.jpg", "after.jpg")
EVENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}-[0-9a-f]{16}$")  # records.make_event_id
_DAY = re.compile(r"^\d{4}-\d\d-\d\d$")


def capture_folder(root: Path | None, record: dict) -> Path | None:
    """`<root>/<camera>/<day of t_after>/<event_id>` when it is there and really inside `root`."""
    if root is None:
        return None
    camera, day, event_id = str(record.get("camera", "")), str(record.get("t_after", ""))[:10], record.get("event_id")
    if not (EVENT_ID.match(str(event_id)) and _DAY.match(day) and re.match(r"^[A-Za-z0-9_.-]{1,64}$", camera)):
        return None
    base = root.resolve()
    folder = (base / camera / day / str(event_id)).resolve()  # resolves symlinks: one out is refused
    if base not in folder.parents or not folder.is_dir():
        return None
    return folder


def frame_file(folder: Path, name: str) -> Path | None:
    if name not in FRAME_NAMES:
        return None
    path = (folder / name).resolve()
    return path if path.parent == folder and path.is_file() else None


def read_correction(folder: Path | None) -> str | None:
    if folder is None:
        return None
    try:
        lines = (folder / CAPTIONS_NAME).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    text = "\n".join(" ".join(line.split()) for line in lines if line.strip())
    return text or None


def write_correction(folder: Path, text: str) -> None:
    """One sentence per change per line, atomically: a reader sees the old file or the new."""
    sentences = [" ".join(s.split()) for s in re.split(r"[\n;]+", text) if s.strip()]
    tmp = folder / (CAPTIONS_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("".join(s + "\n" for s in sentences))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / CAPTIONS_NAME)
    fsync_dir(folder)
