"""Mistakes a new user makes (issue 14): each is one line naming the problem with the documented
exit code, never "internal error"; the global flags work after the subcommand too."""

from __future__ import annotations

import re
import subprocess
import sys
import time

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
    # The whole of stderr: one line (argparse's usage block is left to --help).
    assert proc.stderr.splitlines() == [
        "monitor tail: error: argument -n/--lines: must be >= 0 (got -5) (see monitor tail --help)"
    ]
    for args in (("frobnicate",), ("finetune", "train"), ("check-config",)):
        proc = run_monitor(*args)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("monitor") and " error: " in proc.stderr, proc.stderr


def test_a_missing_extra_names_the_one_to_install(tmp_path) -> None:
    refs, preds = tmp_path / "refs.json", tmp_path / "preds.json"
    refs.write_text('{"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1, "caption": "a car arrived"}]}')
    preds.write_text('[{"image_id": 1, "caption": "a car arrived"}]')
    code = (
        "import sys; sys.modules['pycocoevalcap'] = None; from monitor.cli import main; "
        f"sys.exit(main(['finetune', 'score', {str(refs)!r}, {str(preds)!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=monitor_env(), capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert one_line(proc) == "monitor: error: finetune needs pycocoevalcap: pip install '.[finetune]'"


def test_defaults_are_in_the_help() -> None:
    assert "default ./monitor-logs" in run_monitor("tail", "--help").stdout
    shown = run_monitor("sample", "--help").stdout
    assert "(default 60)" in shown and "(default 7)" in shown
    assert "default: log.dir, ./monitor-logs" in " ".join(run_monitor("run", "--help").stdout.split())


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
    assert proc.stderr.splitlines() == [
        "monitor run: error: argument --source: not allowed with argument --demo (see monitor run --help)"
    ]


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


# -- time order across runs ----------------------------------------------------------------------
def _log_lines(log_dir) -> list[str]:
    return (log_dir / "changes.jsonl").read_text(encoding="utf-8").splitlines()


def test_a_recorded_file_carries_the_time_it_was_recorded(tmp_path) -> None:
    """The room clip's MP4 says it was recorded at 2017-09-26T16:57:49Z (creation_time): its
    events carry that time plus their media time, not the run's start; `clock: run` keeps the
    run's start. A file without creation_time (the AVI) ends at its modification time."""
    import av
    from support import VIDEOS

    from monitor.records import iso_utc

    room = VIDEOS / "one-by-one-person-detection.mp4"
    events = read_events_of(
        run_monitor("run", "--source", room, "--log-dir", tmp_path / "a", "--quiet"), tmp_path / "a"
    )
    first = events[0]
    recorded = 1506445069.0  # 2017-09-26T16:57:49Z
    assert first["t_after"] == iso_utc(recorded + first["media_t_after"]), first
    config = tmp_path / "run-clock.yaml"
    config.write_text(f"cameras: [{{id: room, source: {room}, clock: run}}]\n")
    events = read_events_of(run_monitor("run", "--config", config, "--log-dir", tmp_path / "b"), tmp_path / "b")
    assert events[0]["t_after"][:4] == iso_utc(time.time())[:4] != "2017"
    avi = VIDEOS / "motorway-cctv.avi"
    with av.open(str(avi)) as container:
        assert "creation_time" not in container.metadata
        length = container.duration / 1e6
    events = read_events_of(run_monitor("run", "--source", avi, "--log-dir", tmp_path / "c", "--quiet"), tmp_path / "c")
    start = avi.stat().st_mtime - length
    assert events and all(e["t_after"] == iso_utc(start + e["media_t_after"]) for e in events), events[0]


def read_events_of(proc, log_dir) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return read_events(log_dir)


def test_the_same_file_twice_into_one_log_dir_is_refused(tmp_path) -> None:
    """Per camera, t_after never decreases in a log dir: a second run of the same recording
    would go back in time, so it is refused before it starts, one line, nothing written."""
    from support import VIDEOS

    room, logs = VIDEOS / "one-by-one-person-detection.mp4", tmp_path / "logs"
    assert run_monitor("run", "--source", room, "--log-dir", logs, "--quiet").returncode == 0
    before = _log_lines(logs)
    again = run_monitor("run", "--source", room, "--log-dir", logs, "--quiet")
    assert again.returncode == 1
    line = one_line(again)
    assert line.startswith("monitor: error: camera one-by-one-person-detection: the file starts at 2017-09-26T16:57:49")
    assert "going back in time in this log dir are refused" in line and "--camera-id" in line, line
    assert _log_lines(logs) == before
    # under another camera id it is a camera of its own
    other = run_monitor("run", "--source", room, "--log-dir", logs, "--quiet", "--camera-id", "room-2")
    assert other.returncode == 0 and len(_log_lines(logs)) == 2 * len(before)


def test_events_that_would_go_back_in_time_are_refused_and_said_once(tmp_path) -> None:
    """A config run (no pre-flight per file) into a log whose camera already has later events:
    every event of it is refused, one diagnostic line for the camera and one error line at the
    end, exit 1; the log keeps only what it had."""
    from support import VIDEOS

    logs = tmp_path / "logs"
    logs.mkdir()
    future = make_event(camera="room", seq=3, t=10 * 365 * 86400.0)  # ten years after T0
    (logs / "changes.jsonl").write_text(future.model_dump_json() + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"cameras: [{{id: room, source: {VIDEOS / 'one-by-one-person-detection.mp4'}}}]\n")
    proc = run_monitor("run", "--config", config, "--log-dir", logs, "--quiet")
    assert proc.returncode == 1
    refused = [line for line in proc.stderr.splitlines() if "event_refused" in line]
    assert len(refused) == 1 and "camera=room" in refused[0], proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("monitor: error:")]
    assert len(errors) == 1 and errors[0].startswith("monitor: error: camera room: 12 events not written"), errors
    assert _log_lines(logs) == [future.model_dump_json()]


def test_a_truncated_file_says_where_it_ended(tmp_path) -> None:
    """A copy cut short: what is there is processed (exit 0) and one warning says how far of its
    declared length it got; the events up to there are in the log."""
    from support import VIDEOS

    cut = tmp_path / "cut.mp4"
    cut.write_bytes((VIDEOS / "one-by-one-person-detection.mp4").read_bytes()[:2_000_000])
    proc = run_monitor("run", "--source", cut, "--log-dir", tmp_path / "logs", "--quiet", "--log-level", "warning")
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "source_ended_early" in line]
    assert len(warned) == 1 and "length_s=139.4" in warned[0], proc.stderr
    read = float(warned[0].split("read_s=")[1].split()[0])
    assert 60 < read < 120, warned
    events = read_events(tmp_path / "logs")
    assert events and max(e["media_t_after"] for e in events) <= read + 1


# -- what a run says while it runs ------------------------------------------------------------------
def _on_a_terminal(args: list[str], cwd, env: dict | None = None, timeout: float = 90) -> str:
    """Run `monitor ARGS` with stdout and stderr on one pseudo-terminal; everything it printed."""
    import os
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", *map(str, args)],
        stdout=slave,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env=monitor_env(env or {}),
    )
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        try:
            chunk = os.read(master, 65536) if ready else b""
        except OSError:  # the child closed the terminal
            break
        if ready and not chunk:
            break
        out += chunk
        if not ready and proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=10) == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def test_a_file_run_on_a_terminal_shows_progress_and_never_splits_a_line(tmp_path) -> None:
    from support import VIDEOS

    room = VIDEOS / "one-by-one-person-detection.mp4"
    shown = _on_a_terminal(["run", "--source", room, "--log-dir", tmp_path / "logs", "--camera-id", "room"], tmp_path)
    screen = shown.replace("\r\n", "\n")
    progress = re.findall(r"room: \d+:\d\d of 2:19 \(\d+ %\), \d+ frames, \d+x real time, \d+ events?", screen)
    assert progress, screen
    # Each change line and each diagnostic starts a line of its own, whole: the progress line
    # is erased ("\r\x1b[K") before it, never left in front of it or inside it.
    lines = [line.split("\r\x1b[K")[-1] for line in screen.split("\n") if line]
    changes = [line for line in lines if " room: a person " in line]
    assert len(changes) == 12, lines
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d room: a person (arrived|left) .*", c)
        for c in changes
    )
    assert not [line for line in lines if "a person" in line and "real time" in line]  # never mixed


def test_the_demo_says_it_renders_and_where_its_log_is(tmp_path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = run_monitor("run", "--demo", "--quiet", "--log-dir", tmp_path / "logs", env=env, timeout=180)
    assert first.returncode == 0, first.stderr
    assert "monitor: rendering the demo scene (60 s, once) into " in first.stderr
    assert (
        first.stderr.strip().splitlines()[-1]
        == f"monitor: the demo's change log: monitor tail --log-dir {tmp_path / 'logs'}"
    )
    again = run_monitor("run", "--demo", "--quiet", "--log-dir", tmp_path / "logs", env=env, timeout=180)
    assert again.returncode == 0 and "rendering" not in again.stderr, again.stderr  # rendered once
    events = read_events(tmp_path / "logs")  # the demo happens now, each time: appended in order
    assert len(events) >= 2 and [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(a["t_after"] <= b["t_after"] for a, b in zip(events, events[1:]))


def test_the_final_stats_count_every_capture_written(tmp_path) -> None:
    from support import VIDEOS

    config = tmp_path / "c.yaml"
    config.write_text(
        f"cameras: [{{id: room, source: {VIDEOS / 'one-by-one-person-detection.mp4'}}}]\n"
        f"captures: {{enabled: true, dir: {tmp_path / 'caps'}}}\n"
    )
    proc = run_monitor("run", "--config", config, "--log-dir", tmp_path / "logs", "--quiet")
    assert proc.returncode == 0, proc.stderr
    folders = [p for p in (tmp_path / "caps").glob("room/*/*") if p.is_dir()]
    stats = [line for line in proc.stderr.splitlines() if " stats " in line]
    assert len(folders) == 12 and f"captures={len(folders)}" in stats[-1], (len(folders), stats[-1])


def test_check_config_refuses_what_run_refuses_and_warns_of_missing_sources(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("cameras: [{id: a, source: /nope/missing.mp4}]\nhttp: {bind: '127.0.0.1:99999'}\n")
    expected = "monitor: config error: http.bind: port out of range 1-65535 (got '127.0.0.1:99999')"
    for args in (("check-config", config), ("run", "--config", config, "--log-dir", tmp_path / "logs")):
        proc = run_monitor(*args, timeout=30)
        assert proc.returncode == 2 and one_line(proc) == expected, proc.stderr
    config.write_text("cameras: [{id: a, source: /nope/missing.mp4}, {id: b, source: 'rtsp://10.9.9.9/x'}]\n")
    proc = run_monitor("check-config", config, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == ["monitor: warning: camera a: no such file: /nope/missing.mp4"]
    assert proc.stdout.strip() == f"{config}: OK (2 camera(s), 1 warning)"
