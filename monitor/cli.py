"""`monitor` command line: run, check-config, tail, sample, bench."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import structlog

from monitor.errors import ConfigError, MonitorError, mask_secrets

DEMO_SEED = 7
DEMO_SECONDS = 60.0


def _mask_processor(_logger: Any, _name: str, event_dict: dict) -> dict:
    # Secrets (RTSP/Redis passwords) never reach a log line, whatever put them there.
    return {k: mask_secrets(v) if isinstance(v, str) else v for k, v in event_dict.items()}


def configure_logging(level: str = "info") -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            _mask_processor,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def _camera_id_from(source: str) -> str:
    stem = Path(source.split("?")[0].rstrip("/")).stem or "camera"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)[:64].strip("-") or "camera"


def demo_video() -> Path:
    """The embedded default: the synthetic sample scene, rendered once into the user cache."""
    from monitor.sample_scene import render_sample_scene

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "surveillance-monitor"
    path = cache / f"sample-seed{DEMO_SEED}-{int(DEMO_SECONDS)}s.mp4"
    if not path.exists() or not path.with_suffix(".truth.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        render_sample_scene(path, seconds=DEMO_SECONDS, seed=DEMO_SEED)
    return path


# -- subcommands ---------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from monitor.config import load_settings
    from monitor.daemon import Monitor

    overrides: dict[str, Any] = {}
    source = args.source
    if args.demo:
        source = str(demo_video())
        args.camera_id = args.camera_id or "lot-demo"
    if source:
        cam: dict[str, Any] = {"id": args.camera_id or _camera_id_from(source), "source": source}
        if args.sample_fps is not None:
            cam["sample_fps"] = args.sample_fps
        if args.image_fps is not None:
            cam["image_fps"] = args.image_fps
        overrides["cameras"] = [cam]
    settings = load_settings(args.config, **overrides)
    if args.log_dir is not None:
        settings = settings.model_copy(update={"log": settings.log.model_copy(update={"dir": args.log_dir})})
    monitor = Monitor(settings, echo=None if args.quiet else sys.stdout, realtime=args.realtime or None)
    signal.signal(signal.SIGTERM, lambda *_: monitor.stop())
    try:
        result = monitor.run()
    except KeyboardInterrupt:
        monitor.stop()
        return 130
    log = structlog.get_logger("monitor")
    for cam_id, stats in result.cameras.items():
        log.info(
            "camera_summary",
            camera=cam_id,
            mode=stats.mode,
            sampled=stats.sampled,
            decoded=stats.decoded,
            corrupt=stats.corrupt,
        )
    log.info("run_finished", events=result.events, log_dir=str(settings.log.dir))
    if result.errors:
        for message in result.errors.values():
            print(f"monitor: error: {message}", file=sys.stderr)
        return 1
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from monitor.config import load_settings

    settings = load_settings(args.file)
    print(f"{args.file}: OK ({len(settings.cameras)} camera(s))")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from monitor.tail import tail

    return tail(args.log_dir, follow=args.follow, camera=args.camera, as_json=args.json, lines=args.lines)


def cmd_sample(args: argparse.Namespace) -> int:
    from monitor.sample_scene import render_sample_scene

    truth = render_sample_scene(args.out, seconds=args.seconds, seed=args.seed)
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.truth.json')} ({len(truth['events'])} scripted events)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from monitor.bench import bench_gate

    return bench_gate(args)


# -- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="monitor", description="Video-surveillance change monitor.")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="diagnostic log level (stderr)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser(
        "run",
        help="watch cameras and write the change log",
        description="Run the monitor: one --source, the cameras of --config, or --demo.",
    )
    r.add_argument("--source", help="video file, image-sequence folder/pattern, or rtsp:// URL")
    r.add_argument("--camera-id", help="camera id for --source (default: from the file name)")
    r.add_argument("--config", type=Path, help="YAML config file")
    r.add_argument("--log-dir", type=Path, help="where changes.jsonl / changes.log go")
    r.add_argument("--sample-fps", type=float, help="frames per second to examine (--source only)")
    r.add_argument("--image-fps", type=float, help="frame rate of an image-sequence --source")
    r.add_argument("--realtime", action="store_true", help="pace file sources at their real speed")
    r.add_argument("--demo", action="store_true", help="run on the built-in synthetic sample scene")
    r.add_argument("--quiet", action="store_true", help="do not echo the change log to stdout")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", help="validate a config file and list every error")
    c.add_argument("file", type=Path)
    c.set_defaults(func=cmd_check_config)

    t = sub.add_parser("tail", help="print the change log, optionally following it")
    t.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    t.add_argument("--camera", help="only this camera")
    t.add_argument("--json", action="store_true", help="print the JSON lines")
    t.add_argument("-n", "--lines", type=int, default=20, help="how many past events (0 = all)")
    t.add_argument("--log-dir", type=Path, default=Path("./monitor-logs"))
    t.set_defaults(func=cmd_tail)

    s = sub.add_parser("sample", help="render the synthetic sample scene (+ truth JSON)")
    s.add_argument("out", type=Path, help="output .mp4")
    s.add_argument("--seconds", type=float, default=DEMO_SECONDS)
    s.add_argument("--seed", type=int, default=DEMO_SEED)
    s.set_defaults(func=cmd_sample)

    b = sub.add_parser("bench", help="benchmarks that print a table and JSON")
    b.add_argument("what", choices=["gate"], help="what to measure")
    b.add_argument("--video", type=Path, action="append", help="footage (repeatable; default: shared footage)")
    b.add_argument("--sample-fps", type=float, default=1.0)
    b.add_argument("--json", type=Path, help="also write the results here")
    b.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best counts (default 3)")
    b.add_argument("--seconds", type=float, help="stop each video after this much media time (default: all)")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        return args.func(args)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"monitor: config error: {line}", file=sys.stderr)
        return exc.exit_code
    except MonitorError as exc:
        print(f"monitor: error: {mask_secrets(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        if args.debug:
            raise
        print(f"monitor: internal error: {type(exc).__name__}: {mask_secrets(str(exc))} (use --debug)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
