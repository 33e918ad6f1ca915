"""A real RTSP server for the tests: GStreamer's rtsp-server serving an H.264 MP4 file.

Run as a script with Debian's system Python (it needs `gi`, which the project's Python lacks):

    /usr/bin/python3 tests/rtsp_server.py VIDEO.mp4 --port 8554 --mount /cam

It prints `READY rtsp://127.0.0.1:PORT/MOUNT` once it listens, then serves until killed. Every
client gets its own pipeline (`filesrc ! qtdemux ! h264parse ! rtph264pay`), played at the
file's own speed from its start (no loop: the shared clips are 1-2 minutes, longer than any
test needs; at the end of the file the client sees the stream end).

Imported (by the tests, under the project's Python), it gives `RtspServer`: start, kill (SIGKILL:
the stream drops mid-packet), stop and restart on the same port.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).resolve()


# -- the server (system Python, gi) -------------------------------------------------------------
def serve(video: Path, port: int, mount: str) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    launch = f'( filesrc location="{video}" ! qtdemux ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )'

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(False)
    factory.set_eos_shutdown(False)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        print(f"FAILED cannot listen on 127.0.0.1:{port}", flush=True)
        sys.exit(1)
    print(f"READY rtsp://127.0.0.1:{port}{mount}", flush=True)
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    loop.run()


# -- the helper (any Python) --------------------------------------------------------------------
class RtspServer:
    """Start/kill/restart `serve` as a subprocess on a fixed port."""

    def __init__(self, video: Path | str, port: int, mount: str = "/cam"):
        self.video = Path(video)
        self.port = port
        self.mount = mount if mount.startswith("/") else "/" + mount
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.mount}"

    @staticmethod
    def available() -> str | None:
        """None when the server can run here, else why not."""
        if not os.path.exists(SYSTEM_PYTHON):
            return f"{SYSTEM_PYTHON} missing"
        probe = subprocess.run(
            [
                SYSTEM_PYTHON,
                "-c",
                "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0');"
                "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
                "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in"
                " ('qtdemux','h264parse','rtph264pay')) else 3)",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            return "GStreamer RTSP server missing (python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-*)"
        return None

    def start(self, timeout: float = 15.0) -> RtspServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        deadline = time.monotonic() + timeout
        while True:  # the port may still be in TIME_WAIT/closing right after a kill
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(SCRIPT), str(self.video), "--port", str(self.port), "--mount", self.mount],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
            )
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                return self
            self.proc.wait(5)
            if time.monotonic() > deadline:
                raise RuntimeError(f"RTSP server did not start: {line.strip()!r}")
            time.sleep(0.2)

    def kill(self) -> None:
        """Gone at once (SIGKILL): clients see their connection reset mid-stream."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def restart(self) -> RtspServer:
        self.kill()
        return self.start()

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def main() -> None:
    p = argparse.ArgumentParser(description="Serve an H.264 MP4 over RTSP (GStreamer).")
    p.add_argument("video", type=Path)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mount", default="/cam")
    a = p.parse_args()
    serve(a.video.resolve(), a.port, a.mount if a.mount.startswith("/") else "/" + a.mount)


if __name__ == "__main__":
    main()
