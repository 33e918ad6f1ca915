"""A full disk under the log dir (and the Redis spool, which is on it by default): a real, small
tmpfs that the test mounts, fills before the daemon's first event and frees while it runs.
The daemon keeps running and says so once; every event still reaches Redis (from memory); the
log files resume when space returns, with one line counting what they missed, and never hold
a torn line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from redis_server import RedisServer
from support import assert_no_traceback, monitor_env

from monitor.scene.cases import write_busy_road

IMAGE_FPS = 6  # the busy road's 2 fps frames, 3x faster: 4 changes in under 20 s of real time


@pytest.fixture
def small_disk(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk refuses: nothing is left."""
    filler = disk / "filler"
    block = b"\0" * 65536
    with filler.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(block)
        except OSError:
            pass
        try:
            while True:
                fh.write(b"\0")
        except OSError:
            pass
    return filler


def test_a_full_disk_loses_no_event_and_says_so_once(tmp_path: Path, small_disk: Path) -> None:
    frames = tmp_path / "road"
    write_busy_road(frames)
    server = RedisServer(tmp_path / "redis").start()
    try:
        logs = small_disk / "logs"
        config = tmp_path / "monitor.yaml"
        camera = {"id": "road", "source": str(frames), "image_fps": IMAGE_FPS, "realtime": True}
        config.write_text(
            yaml.safe_dump({"cameras": [camera], "log": {"dir": str(logs)}, "redis": {"url": server.url}})
        )
        logs.mkdir()
        filler = fill(small_disk)
        err = (tmp_path / "stderr.txt").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(config), "--quiet"],
            env=monitor_env(),
            stderr=err,
            stdout=subprocess.DEVNULL,
        )
        client = server.client()
        deadline = time.monotonic() + 60
        while client.xlen("monitor:events") < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert client.xlen("monitor:events") >= 2, "events did not reach Redis while the disk was full"
        assert (logs / "changes.jsonl").stat().st_size == 0  # the disk took nothing
        missed = client.xlen("monitor:events")
        filler.unlink()  # space returns
        assert proc.wait(timeout=90) == 0
        err.close()
        stderr = (tmp_path / "stderr.txt").read_text()
        delivered = [json.loads(f["json"]) for _, f in client.xrange("monitor:events")]
    finally:
        server.kill()

    assert_no_traceback(subprocess.CompletedProcess([], 0, "", stderr))
    assert "Logging error" not in stderr
    said = {name: [line for line in stderr.splitlines() if f" {name} " in line] for name in (
        "log_files_refused", "log_files_resumed", "spool_disk_refused", "spool_disk_back")}  # fmt: skip
    assert all(len(lines) == 1 for lines in said.values()), said  # once each, not once per event
    assert f"missed={missed}" in said["log_files_resumed"][0], (missed, said)
    # Every event reached Redis, in order, none twice.
    seqs = [e["seq"] for e in delivered]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= missed + 2, seqs
    # The log files have the events after space returned, whole lines only.
    lines = (logs / "changes.jsonl").read_text().splitlines()
    logged = [json.loads(line)["seq"] for line in lines]
    assert logged == seqs[missed:], (logged, seqs, missed)
    assert len((logs / "changes.log").read_text().splitlines()) == len(logged)
