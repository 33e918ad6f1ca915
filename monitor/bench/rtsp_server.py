"""A real RTSP server for the tests and `monitor bench service`: GStreamer's rtsp-server serving
an H.264 MP4 file, once or looped, on one or more mount points.

Run as a script with Debian's system Python (it needs `gi`, which the project's Python lacks):

    /usr/bin/python3 monitor/bench/rtsp_server.py VIDEO.mp4 --port 8554 --mount /cam [--mount /cam2]
        [--loop] [--seconds 30]

It prints `READY rtsp://127.0.0.1:PORT` once it listens, then serves until killed. Every client
gets its own pipeline, played at the file's own speed from its start:

* once (default): `filesrc ! qtdemux ! h264parse ! rtph264pay`; at the end of the file the
  client sees the stream end.
* `--loop`: the file's access units are read once into memory (`qtdemux ! h264parse ! appsink`,
  with their PTS/DTS; `--seconds S` keeps the whole GOPs that start before S) and pushed through
  `appsrc ! h264parse ! rtph264pay` over and over, each pass offset by the loop's duration, so
  timestamps keep rising (B-frame order intact) and the client sees one endless stream.

Imported (under any Python: standard library only), it gives `RtspServer`: start, kill (SIGKILL:
the stream drops mid-packet), stop and restart on the same port. This module must not import the
rest of `monitor`: the system Python that runs it has none of the project's dependencies.
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
def _read_access_units(Gst, video: Path, seconds: float | None) -> tuple[list, object, int]:  # noqa: N803 - a module
    """[(Gst.Buffer, pts, dts)] in decode order, DTS shifted to start at 0, and the loop length
    (ns). With `seconds`, only the GOPs that start before it (a loop must begin on a keyframe)."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{video}" ! qtdemux ! h264parse config-interval=-1 '
        "! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units = []
    caps = None
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:  # EOS
            break
        buf = sample.get_buffer()
        caps = caps or sample.get_caps()
        key = not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
        dts = buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else buf.pts
        if seconds is not None and key and units and dts - units[0][2] >= seconds * Gst.SECOND:
            break
        units.append((buf, buf.pts, dts))
    pipeline.set_state(Gst.State.NULL)
    if len(units) < 2:
        raise RuntimeError(f"{video}: no H.264 access units")
    # DTS may start below 0 (B-frames): shift so the first DTS is 0 and every PTS >= 0.
    shift = -min(min(p for _, p, _ in units), units[0][2])
    units = [(b, p + shift, d + shift) for b, p, d in units]
    step = units[-1][2] - units[-2][2]
    return units, caps, units[-1][2] + step


def serve(video: Path, port: int, mounts: list[str], loop: bool = False, seconds: float | None = None) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factories = []
    if loop:
        units, caps, period = _read_access_units(Gst, video, seconds)
        launch = "( appsrc name=src format=time ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )"

        def configure(_factory, media) -> None:
            src = media.get_element().get_by_name("src")
            src.set_property("caps", caps)
            state = {"i": 0}

            def need_data(appsrc, _length) -> None:
                i = state["i"]
                buf, pts, dts = units[i % len(units)]
                offset = (i // len(units)) * period
                out = buf.copy()  # shares the memory; only the timestamps are its own
                out.pts, out.dts = pts + offset, dts + offset
                state["i"] = i + 1
                appsrc.emit("push-buffer", out)

            src.connect("need-data", need_data)

    else:
        launch = f'( filesrc location="{video}" ! qtdemux ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )'
        configure = None
    for mount in mounts:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(False)
        factory.set_eos_shutdown(False)
        if configure is not None:
            factory.connect("media-configure", configure)
        server.get_mount_points().add_factory(mount, factory)
        factories.append(factory)
    if server.attach(None) == 0:
        print(f"FAILED cannot listen on 127.0.0.1:{port}", flush=True)
        sys.exit(1)
    print(f"READY rtsp://127.0.0.1:{port}", flush=True)
    main_loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, main_loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, main_loop.quit)
    main_loop.run()


# -- the helper (any Python) --------------------------------------------------------------------
class RtspServer:
    """Start/kill/restart `serve` as a subprocess on a fixed port. `mount` may be one mount point
    or several (`url` is the first one's; `urls` all of them)."""

    def __init__(
        self,
        video: Path | str,
        port: int,
        mount: str | list[str] = "/cam",
        loop: bool = False,
        seconds: float | None = None,
    ):
        self.video = Path(video)
        self.port = port
        mounts = [mount] if isinstance(mount, str) else list(mount)
        self.mounts = [m if m.startswith("/") else "/" + m for m in mounts]
        self.mount = self.mounts[0]
        self.loop = loop
        self.seconds = seconds
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.mount}"

    @property
    def urls(self) -> list[str]:
        return [f"rtsp://127.0.0.1:{self.port}{m}" for m in self.mounts]

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
                " ('qtdemux','h264parse','rtph264pay','appsrc','appsink')) else 3)",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            return "GStreamer RTSP server missing (python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-*)"
        return None

    def command(self) -> list[str]:
        cmd = [SYSTEM_PYTHON, str(SCRIPT), str(self.video), "--port", str(self.port)]
        for m in self.mounts:
            cmd += ["--mount", m]
        if self.loop:
            cmd.append("--loop")
        if self.seconds is not None:
            cmd += ["--seconds", f"{self.seconds:g}"]
        return cmd

    def start(self, timeout: float = 15.0) -> RtspServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        deadline = time.monotonic() + timeout
        while True:  # the port may still be in TIME_WAIT/closing right after a kill
            self.proc = subprocess.Popen(
                self.command(),
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
    p = argparse.ArgumentParser(description="Serve an H.264 MP4 over RTSP (GStreamer), once or looped.")
    p.add_argument("video", type=Path)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mount", action="append", help="mount point (repeatable; default /cam)")
    p.add_argument("--loop", action="store_true", help="play the clip over and over (one endless stream)")
    p.add_argument("--seconds", type=float, help="with --loop: loop only the GOPs that start in the first S seconds")
    a = p.parse_args()
    mounts = [m if m.startswith("/") else "/" + m for m in (a.mount or ["/cam"])]
    serve(a.video.resolve(), a.port, mounts, loop=a.loop, seconds=a.seconds)


if __name__ == "__main__":
    main()
