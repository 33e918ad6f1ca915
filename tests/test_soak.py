"""Soak (bounded for CI): the real daemon on 8 RTSP cameras looping real footage, Redis and the
jobs on, for 110 s. After a warm-up, memory must not grow by 5 % or more, no thread may
leak, and events must keep coming. The same measurement, longer, is `monitor bench service
--cameras 8 --minutes 30` (docs/benchmarks.md, Service benchmark)."""

from __future__ import annotations

from monitor.bench.rtsp_server import RtspServer
from monitor.bench.service import run_service_bench

CAMERAS = 8


def test_soak_eight_rtsp_cameras() -> None:
    missing = RtspServer.available()
    assert missing is None, missing  # not a skip: .ci/run installs GStreamer's RTSP server
    # A 30 s loop of the clip: a person arrives at 6 s and leaves at 20 s, another arrives at
    # 23 s and is gone when the loop starts over: four changes per camera per loop.
    res = run_service_bench(cameras=CAMERAS, seconds=110, warmup=40, loop_seconds=30)
    d = res["daemon"]
    assert res["cameras_up"] == CAMERAS, res
    assert res["non_change_events"] == 0, res  # no camera dropped long enough to go offline
    # events keep flowing: ~4 per camera per 30 s loop, in the first and the last third alike
    per_third = res["measured_s"] / 3 / 30 * 4 * CAMERAS
    assert res["events_first_third"] >= 0.5 * per_third and res["events_last_third"] >= 0.5 * per_third, res
    assert res["latency_s"]["after_frame_to_redis"]["n"] == res["latency_s"]["after_frame_to_log"]["n"] == res["events"]
    # memory: < 5 % growth from the end of the warm-up to the end
    assert d["rss_growth_percent"] < 5.0, d
    # threads: the daemon's Python threads never change after the warm-up; native threads (the
    # decoders' and swscale's, which come and go with the frames being converted) end where
    # they were, give or take what the cameras' current frames hold (2 per camera at most)
    assert len(d["python_threads"]) >= 4 and len(set(d["python_threads"])) == 1, d["python_threads"]
    assert abs(d["threads_end"] - d["threads_warm"]) <= 2 * CAMERAS, d
    assert d["threads_max"] <= d["threads_warm"] + 2 * CAMERAS + 2, d
