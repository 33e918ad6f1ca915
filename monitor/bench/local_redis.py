"""A private `redis-server` (the Debian package's binary) on a free loopback port, without
persistence unless `aof=True` (an append-only file fsync'd on every write, as scale-out needs):
for the benchmarks and the tests. Start, stop (SIGTERM), kill (SIGKILL: an outage with no
goodbye) and restart it on the same port."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from monitor.errors import MonitorError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRedisServer:
    def __init__(self, workdir: Path, password: str | None = None, port: int | None = None, aof: bool = False):
        binary = shutil.which("redis-server")
        if not binary:
            raise MonitorError("redis-server is not installed (Debian package redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.password = password
        self.port = port or free_port()
        self.aof = aof
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, decode: bool = True) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, decode_responses=decode)

    def start(self) -> LocalRedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--save", "", "--protected-mode", "no", "--daemonize", "no"]  # fmt: skip
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        self.kill()
        raise MonitorError(f"redis-server did not start on port {self.port}")

    def flush(self) -> None:
        self.client().flushall()

    def kill(self) -> None:
        """SIGKILL: the data is lost (unless `aof`)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> LocalRedisServer:
        self.kill()
        return self.start()
