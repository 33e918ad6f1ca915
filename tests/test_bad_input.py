"""`monitor run --source X` on inputs that are missing, wrong, truncated, corrupt or unreachable.

What happens (asserted below):
- missing file / non-video file / empty folder / image folder without --image-fps: exit 1, one
  `monitor: error:` line naming the source, no traceback.
- MP4 truncated to 40%: the shared clip keeps its `moov` index at the start, so the demuxer opens
  it and decodes what is there (about 40% of the frames); the last, cut packet counts as corrupt;
  exit 0. An MP4 whose `moov` is at the end (what `monitor sample` writes) cannot be opened once
  truncated: exit 1 with one line.
- AVI (MPEG-4 part 2) truncated to 50%: decodes the first half, exit 0.
- Garbage over an H.264 packet: the packet fails to decode (counted as corrupt), the run goes on,
  exit 0.
- RTSP with nobody listening: fails at once ("Connection refused"); with a server that accepts but
  never answers: fails after open_timeout_s. The password never appears.
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from support import assert_no_traceback, error_lines, free_port, need_video, run_monitor


def summary(proc) -> dict[str, str]:
    """Fields of the `camera_summary` log line on stderr."""
    line = next((ln for ln in proc.stderr.splitlines() if "camera_summary" in ln), None)
    assert line is not None, proc.stderr
    return dict(re.findall(r"(\w+)=(\S+)", line))


def events(log_dir: Path) -> list[str]:
    jsonl = log_dir / "changes.jsonl"
    assert jsonl.exists(), f"no {jsonl}"
    return jsonl.read_text(encoding="utf-8").splitlines()


def assert_one_error(proc, *needles: str) -> str:
    assert proc.returncode != 0, proc.stderr
    assert_no_traceback(proc)
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def truncated_copy(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s synthetic H.264 MP4 (10 fps, a keyframe every second, moov at the end)."""
    out = tmp_path_factory.mktemp("synthetic") / "s.mp4"
    proc = run_monitor("sample", out, "--seconds", "12", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    return out


# -- missing / wrong files ---------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    proc = run_monitor("run", "--source", missing, "--log-dir", tmp_path / "logs")
    assert_one_error(proc, str(missing), "no such file")


def test_text_file_named_mp4(tmp_path: Path) -> None:
    fake = tmp_path / "x.mp4"
    fake.write_bytes(b"this is not a video, just some text\n" * 20)
    proc = run_monitor("run", "--source", fake, "--log-dir", tmp_path / "logs")
    assert_one_error(proc, str(fake), "cannot open", "Invalid data")


def test_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    proc = run_monitor("run", "--source", folder, "--image-fps", "5", "--log-dir", tmp_path / "logs")
    assert_one_error(proc, str(folder), "no numbered images")


def test_image_folder_without_image_fps(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(1, 6):
        cv2.imwrite(str(folder / f"in{i:06d}.jpg"), np.full((48, 64, 3), 40 * i, np.uint8))
    proc = run_monitor("run", "--source", folder, "--log-dir", tmp_path / "logs")
    assert_one_error(proc, str(folder), "image_fps is required")
    # ...and with it, the same folder runs.
    ok = run_monitor("run", "--source", folder, "--image-fps", "5", "--log-dir", tmp_path / "logs")
    assert ok.returncode == 0, ok.stderr
    assert int(summary(ok)["sampled"]) >= 2


# -- truncated files ---------------------------------------------------------------------------
def test_truncated_mp4_with_moov_first_decodes_what_is_there(tmp_path: Path) -> None:
    src = need_video("one-by-one-person-detection.mp4")
    with av.open(str(src)) as c:
        total = c.streams.video[0].frames
    assert b"moov" in src.read_bytes()[:100_000]  # the index comes before the media data
    cut = truncated_copy(src, tmp_path / "cut.mp4", 0.40)
    proc = run_monitor("run", "--source", cut, "--log-dir", tmp_path / "logs", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    assert error_lines(proc) == []
    s = summary(proc)
    decoded = int(s["decoded"])
    assert 0.3 * total < decoded < 0.5 * total, s  # about the first 40%, not all of it
    assert int(s["sampled"]) > 0
    assert int(s["corrupt"]) >= 1  # the packet cut in half
    events(tmp_path / "logs")


def test_truncated_mp4_with_moov_last_fails_to_open(tmp_path: Path, synthetic: Path) -> None:
    data = synthetic.read_bytes()
    assert data.rfind(b"moov") > len(data) // 2  # the index is at the end
    cut = truncated_copy(synthetic, tmp_path / "cut.mp4", 0.40)
    proc = run_monitor("run", "--source", cut, "--log-dir", tmp_path / "logs")
    assert_one_error(proc, str(cut), "cannot open")


def test_truncated_avi_decodes_first_half(tmp_path: Path) -> None:
    src = need_video("motorway-cctv.avi")
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.name == "mpeg4"
        total = c.streams.video[0].frames
    cut = truncated_copy(src, tmp_path / "cut.avi", 0.50)
    log_dir = tmp_path / "logs"
    proc = run_monitor("run", "--source", cut, "--log-dir", log_dir, "--quiet", "--sample-fps", "2")
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    s = summary(proc)
    assert 0.35 * total < int(s["decoded"]) < 0.65 * total, s
    # ~15 s of 25 fps video sampled at 2 fps
    assert 20 <= int(s["sampled"]) <= 40, s
    events(log_dir)


# -- corrupt packets ---------------------------------------------------------------------------
def test_corrupt_packet_is_counted_and_skipped(tmp_path: Path, synthetic: Path) -> None:
    data = bytearray(synthetic.read_bytes())
    with av.open(str(synthetic)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    # Garbage at the start of the packet nearest the middle of the file: its NAL length
    # prefixes become nonsense, so the decoder rejects it (garbage *inside* an H.264 slice is
    # usually concealed silently and would not be counted).
    pos = min((p for p, _ in packets), key=lambda p: abs(p - len(data) // 2))
    rnd = random.Random(3)
    data[pos : pos + 2048] = bytes(rnd.randrange(256) for _ in range(2048))
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))

    log_dir = tmp_path / "logs"
    proc = run_monitor("run", "--source", bad, "--log-dir", log_dir, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    assert error_lines(proc) == []
    s = summary(proc)
    assert int(s["corrupt"]) >= 1, s
    assert 60 < int(s["decoded"]) < len(packets), s  # lost a few frames, not the stream
    events(log_dir)

    clean = run_monitor("run", "--source", synthetic, "--log-dir", tmp_path / "clean", "--quiet")
    assert clean.returncode == 0, clean.stderr
    assert summary(clean)["corrupt"] == "0" and int(summary(clean)["decoded"]) == len(packets)


# -- network -----------------------------------------------------------------------------------
def test_unreachable_rtsp_masks_password(tmp_path: Path) -> None:
    port = free_port()
    url = f"rtsp://admin:s3cret@127.0.0.1:{port}/live"
    t0 = time.monotonic()
    proc = run_monitor("run", "--source", url, "--log-dir", tmp_path / "logs", timeout=30)
    assert time.monotonic() - t0 < 15
    line = assert_one_error(proc, f"127.0.0.1:{port}", "admin:***@")
    assert "s3cret" not in proc.stdout + proc.stderr, line


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts RTSP connections and never says a word."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    conns: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join(2)
    for c in conns:
        c.close()
    srv.close()


def test_silent_rtsp_server_times_out(tmp_path: Path, silent_server: int) -> None:
    cfg = tmp_path / "silent.yaml"
    cfg.write_text(
        f"""
cameras:
  - id: silent
    source: rtsp://admin:s3cret@127.0.0.1:{silent_server}/live
    open_timeout_s: 2
    read_timeout_s: 2
""",
        encoding="utf-8",
    )
    t0 = time.monotonic()
    proc = run_monitor("run", "--config", cfg, "--log-dir", tmp_path / "logs", timeout=30)
    elapsed = time.monotonic() - t0
    assert 1.5 < elapsed < 10, elapsed  # waited for open_timeout_s, not forever
    assert_one_error(proc, "camera silent", f"127.0.0.1:{silent_server}")
    assert "s3cret" not in proc.stdout + proc.stderr
