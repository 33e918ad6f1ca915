"""`monitor bench service` through the real CLI: --help, and bad arguments as one error line.
(The measurement itself runs in tests/test_soak.py, 8 cameras.)"""

from __future__ import annotations

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
