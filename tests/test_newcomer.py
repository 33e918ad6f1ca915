"""Mistakes a new user makes (issue 14): each is one line naming the problem with the documented
exit code, never "internal error"; the global flags work after the subcommand too."""

from __future__ import annotations

import subprocess
import sys

from support import EXAMPLE_CONFIG, REPO, assert_no_traceback, make_event, monitor_env, read_events, run_monitor


def one_line(proc) -> str:
    assert_no_traceback(proc)
    assert "internal error" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("monitor")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_sample_refuses_what_it_cannot_write(tmp_path) -> None:
    proc = run_monitor("sample", tmp_path / "x.txt")
    assert (
        proc.returncode == 1
        and one_line(proc) == f"monitor: error: sample: OUT must be an .mp4 file (got {tmp_path}/x.txt)"
    )
    proc = run_monitor("sample", "--seconds", "2", tmp_path / "o.mp4")
    assert proc.returncode == 1 and one_line(proc).startswith("monitor: error: sample --seconds: at least 10"), (
        proc.stderr
    )
    assert not (tmp_path / "o.mp4").exists()


def test_tail_with_a_negative_count_is_a_usage_error(tmp_path) -> None:
    proc = run_monitor("tail", "-n", "-5", "--log-dir", tmp_path)
    assert proc.returncode == 2
    assert one_line(proc) == "monitor tail: error: argument -n/--lines: must be >= 0 (got -5)"


def test_a_section_from_the_environment_that_is_not_json(tmp_path) -> None:
    env = {"MONITOR_CAMERAS": "[{bad"}
    expected = "monitor: config error: MONITOR_CAMERAS: not valid JSON"
    for args in (("check-config", EXAMPLE_CONFIG), ("run", "--log-dir", tmp_path / "logs")):
        proc = run_monitor(*args, env=env, timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert one_line(proc).startswith(expected), proc.stderr
        assert "[{bad" not in proc.stderr  # the value is never echoed (it may hold a password)


def test_global_flags_after_the_subcommand(tmp_path) -> None:
    missing = tmp_path / "missing.yaml"
    before = run_monitor("--log-level", "error", "check-config", missing)
    after = run_monitor("check-config", missing, "--log-level", "error", "--debug")
    assert before.returncode == after.returncode == 2, after.stderr
    assert one_line(after) == one_line(before) == f"monitor: config error: config file not found: {missing}"
    for command in (("run",), ("tail",), ("bench", "gate"), ("finetune", "prepare")):
        shown = run_monitor(*command, "--help").stdout
        assert "--log-level" in shown and "--debug" in shown, (command, shown)


# -- times in the human-readable lines ---------------------------------------------------------
def test_lines_carry_date_time_and_offset_in_the_chosen_zone(tmp_path) -> None:
    from zoneinfo import ZoneInfo

    from support import make_event

    from monitor.config import LogConfig
    from monitor.sinks.logfiles import LogFileSink

    event = make_event(camera="lot-east", t=0.0, text="a car arrived")  # 2026-11-18T...Z
    utc = event.t_after  # "2026-11-18T16:26:40.000Z" style
    assert event.line(ZoneInfo("UTC")) == f"{utc[:10]} {utc[11:19]}+00:00 lot-east: a car arrived"
    india = event.line(ZoneInfo("Asia/Kolkata"))
    assert india.endswith("+05:30 lot-east: a car arrived"), india
    sink = LogFileSink(LogConfig(dir=tmp_path / "logs", timezone="Asia/Kolkata"))
    sink.write(event)
    sink.close()
    assert (tmp_path / "logs" / "changes.log").read_text().splitlines() == [india]
    # `monitor tail` prints in the host's zone, as journalctl does: TZ decides
    proc = run_monitor("tail", "--log-dir", tmp_path / "logs", env={"TZ": "Europe/Paris"})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("+01:00 lot-east: a car arrived"), proc.stdout


def test_an_unknown_zone_is_named(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("log: {timezone: Mars/Olympus}\n")
    proc = run_monitor("check-config", config)
    assert proc.returncode == 2
    assert one_line(proc).startswith("monitor: config error: log.timezone: unknown time zone 'Mars/Olympus'")


# -- nothing silent ----------------------------------------------------------------------------
def test_demo_and_a_source_are_refused_together(tmp_path) -> None:
    proc = run_monitor("run", "--demo", "--source", tmp_path / "x.mp4", timeout=30)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1]
        == "monitor run: error: argument --source: not allowed with argument --demo"
    )


def test_tail_of_a_camera_the_log_does_not_have(tmp_path) -> None:
    from support import make_event

    from monitor.config import LogConfig
    from monitor.sinks.logfiles import LogFileSink

    sink = LogFileSink(LogConfig(dir=tmp_path))
    sink.write(make_event(camera="gate"))
    sink.close()
    proc = run_monitor("tail", "--camera", "nosuch", "--log-dir", tmp_path)
    assert proc.returncode == 1
    assert one_line(proc) == f"monitor: error: no events of camera 'nosuch' in {tmp_path}/changes.jsonl (cameras: gate)"


def test_tail_follow_of_a_missing_log_says_it_waits(tmp_path) -> None:
    import subprocess
    import sys

    from support import monitor_env

    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "tail", "-f", "--log-dir", str(tmp_path / "typo")],
        env=monitor_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
    finally:
        proc.kill()
        proc.wait(10)
    assert line.startswith(f"monitor: waiting for {tmp_path}/typo/changes.jsonl"), line


def test_a_file_that_cannot_be_read_is_exactly_one_stderr_line(tmp_path) -> None:
    missing = tmp_path / "missing.mp4"
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    for source, expected in (
        (missing, f"monitor: error: camera missing: no such file: {missing}"),
        (text, f"monitor: error: camera notes: cannot open {text}: "),
    ):
        proc = run_monitor("run", "--source", source, "--log-dir", tmp_path / "logs", timeout=60)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), proc.stderr
        assert not (tmp_path / "logs").exists()  # refused before anything was written


def test_the_quickstart_config_runs_as_the_readme_shows(tmp_path) -> None:
    """Usage's config line, word for word: `monitor sample sample.mp4 && monitor run --config
    config/quickstart.yaml`, in a fresh directory (the config's paths are relative to it)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "monitor sample sample.mp4 && monitor run --config config/quickstart.yaml" in readme
    assert run_monitor("sample", "sample.mp4", "--seconds", "20", cwd=tmp_path).returncode == 0
    proc = run_monitor("run", "--config", REPO / "config" / "quickstart.yaml", "--quiet", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    events = read_events(tmp_path / "monitor-logs")
    assert {e["camera"] for e in events} == {"lot-east", "lot-west"}, events


def test_a_closed_pipe_ends_quietly(tmp_path) -> None:
    """`monitor tail -n 0 --json | head -1` on a long log: the reader went away after one line
    (the rest no longer fits the pipe); no "internal error", exit 0."""
    (tmp_path / "logs").mkdir()
    lines = [make_event(seq=n, t=float(n)).model_dump_json() for n in range(1, 3001)]
    (tmp_path / "logs" / "changes.jsonl").write_text("\n".join(lines) + "\n")
    cmd = (
        f"{sys.executable} -m monitor tail -n 0 --json --log-dir {tmp_path / 'logs'} | head -1; exit ${{PIPESTATUS[0]}}"
    )
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60, env=monitor_env(), cwd=REPO)
    assert proc.stdout.count("\n") == 1 and '"seq":1' in proc.stdout.replace(" ", ""), proc.stdout[:200]
    assert proc.stderr == "" and proc.returncode == 0, proc.stderr
