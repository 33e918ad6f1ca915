"""A private `mosquitto` (the Debian package's binary) on a free loopback port, with
persistence (a restart keeps what it queued for persistent sessions), optionally a password and
a TLS listener: for the benchmarks and the tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from monitor.bench.local_redis import free_port
from monitor.errors import MonitorError


class Mosquitto:
    """`workdir` holds its config, persistence and log; `password` = (user, password); `tls` = a
    folder with ca.crt, server.crt and server.key (then it speaks TLS only)."""

    def __init__(self, workdir: Path, password: tuple[str, str] | None = None, tls: Path | None = None):
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise MonitorError("mosquitto is not installed (Debian package mosquitto)")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {workdir}/",
                 "autosave_interval 1", f"log_dest file {workdir}/mosquitto.log"]  # fmt: skip
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to user mosquitto, who cannot write the test's folder
        if tls is not None:  # a folder with ca.crt, server.crt, server.key
            lines += [f"cafile {tls}/ca.crt", f"certfile {tls}/server.crt", f"keyfile {tls}/server.key"]
        if password:
            pw = workdir / "passwords"
            subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), *password], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines += ["allow_anonymous true"]
        (workdir / "mosquitto.conf").write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None
        self.tls = tls

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.workdir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            if self.tls is not None:
                probe.tls_set(ca_certs=str(self.tls / "ca.crt"))
            try:
                probe.connect("127.0.0.1", self.port)
                probe.disconnect()
                return self
            except OSError:
                time.sleep(0.05)
        log = self.workdir / "mosquitto.log"
        raise MonitorError(f"mosquitto did not start: {log.read_text()[-800:] if log.exists() else ''}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None
