"""`monitor bench service` through the real CLI: --help, and bad arguments as one error line.
(The measurement itself runs in tests/test_soak.py, 8 cameras.)"""

from __future__ import annotations

import json

from support import assert_no_traceback, error_lines, run_monitor


def test_bench_service_help() -> None:
    proc = run_monitor("bench", "service", "--help")
    assert proc.returncode == 0 and "usage: monitor bench service" in proc.stdout
    for option in ("--cameras", "--minutes", "--warmup", "--reorder-window", "--json"):
        assert option in proc.stdout


def test_bench_service_bad_arguments_are_one_line() -> None:
    short = run_monitor("bench", "service", "--seconds", "10", "--warmup", "30")
    assert short.returncode == 1
    assert_no_traceback(short)
    assert error_lines(short) == ["bench service: --seconds (10) must be longer than --warmup (30)"]
    missing = run_monitor("bench", "service", "--video", "/nonexistent/clip.mp4")
    assert missing.returncode == 1
    assert_no_traceback(missing)
    assert error_lines(missing) == ["bench service: no such video: /nonexistent/clip.mp4"]
    zero = run_monitor("bench", "service", "--cameras", "0")
    assert zero.returncode == 2 and "must be at least 1" in zero.stderr


def test_bench_alerts_measures_onset_and_settled_latency() -> None:
    """A short real run: 2 RTSP cameras, a redis-server, mosquitto; the JSON holds both outputs'
    onset latencies for the same changes, each settled event after its own onset alert."""
    proc = run_monitor("bench", "alerts", "--cameras", "2", "--seconds", "22", "--warmup", "4", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    lat = res["latency_s"]
    assert res["changes"] >= 2 and lat["onset_to_alert_redis"]["n"] == lat["onset_to_alert_mqtt"]["n"] == res["changes"]
    assert 0 < lat["onset_to_alert_redis"]["p95"] < lat["onset_to_settled_event_redis"]["p50"]
    assert res["events"] + res["ended_unlogged"] >= res["changes"] - 2  # the last ones may end after the run
    assert set(res["goals"]) == {"p95_onset_to_alert_redis_s", "p95_onset_to_alert_mqtt_s"}


def test_bench_alerts_bad_arguments_are_one_line() -> None:
    short = run_monitor("bench", "alerts", "--seconds", "10", "--warmup", "30")
    assert short.returncode == 1 and error_lines(short) == [
        "bench alerts: --seconds (10) must be longer than --warmup (30)"
    ]
    assert_no_traceback(short)
