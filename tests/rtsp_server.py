"""The tests' RTSP server: GStreamer's rtsp-server serving the shared footage, started and stopped
by the tests. It lives in `monitor/bench/rtsp_server.py` because `monitor bench service` uses it
too (production code never imports from tests/); see there for how it serves and loops."""

from __future__ import annotations

from monitor.bench.rtsp_server import SCRIPT, SYSTEM_PYTHON, RtspServer

__all__ = ["SCRIPT", "SYSTEM_PYTHON", "RtspServer"]
