"""`monitor` command line: run, check-config, tail, alerts, sample, bench."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import signal
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import structlog

from monitor.argtypes import positive_int
from monitor.bench_output import add_json_option
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
        # sys.stderr looked up per message, not bound once: whoever swaps it later (pytest's
        # capture, a test harness) keeps receiving the diagnostics instead of a closed file.
        logger_factory=lambda *_args: structlog.PrintLogger(sys.stderr),
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


def _narrow_config(data: dict[str, Any], cam: dict[str, Any]) -> tuple[dict[str, Any], list]:
    """`run --source` with `--config`: the one camera replaces the config's cameras. A config
    camera of the same id lends it its masks, zones and gate overrides; the alert rules that
    can still apply are kept."""
    for known in data.get("cameras") or []:
        if isinstance(known, dict) and known.get("id") == cam["id"]:
            cam = {**known, **cam}
    zones = {z.get("name") for z in cam.get("zones") or [] if isinstance(z, dict)}
    keep = []
    for rule in data.get("alerts") or []:
        if not isinstance(rule, dict):
            keep.append(rule)  # let validation name the problem
        elif (not rule.get("cameras") or cam["id"] in rule["cameras"]) and set(rule.get("zones") or []) <= zones:
            keep.append({**rule, "cameras": [cam["id"]]} if rule.get("cameras") else rule)
    return cam, keep


# -- subcommands ---------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from monitor.config import load_settings, read_yaml
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
        if args.config is not None:
            cam, overrides["alerts"] = _narrow_config(read_yaml(args.config), cam)
        overrides["cameras"] = [cam]
    if args.redis:
        overrides["redis"] = {"url": args.redis}
    describer = {"kind": args.describer, "model": args.model, "mode": args.mode, "adapter": args.adapter}
    if any(v is not None for v in describer.values()):
        describer["kind"] = describer["kind"] or ("vlm" if args.model else None)  # --model alone means vlm
        overrides["describer"] = {k: v for k, v in describer.items() if v is not None}
    settings = load_settings(args.config, **overrides)
    if args.log_dir is not None:
        settings = settings.model_copy(update={"log": settings.log.model_copy(update={"dir": args.log_dir})})
    settings = _with_credentials(settings)
    reload = None
    if args.config is not None and not source:

        def reload() -> Any:  # SIGHUP: the same config file, the same command-line overrides
            fresh = load_settings(args.config, **overrides)
            if args.log_dir is not None:
                fresh = fresh.model_copy(update={"log": fresh.log.model_copy(update={"dir": args.log_dir})})
            return _with_credentials(fresh)

    # Building the monitor loads the describer (a VLM takes seconds): a SIGTERM or SIGHUP that
    # arrives meanwhile is kept and acted on once the monitor exists, instead of killing it.
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    monitor = Monitor(settings, echo=None if args.quiet else sys.stdout, realtime=args.realtime or None, reload=reload)
    # SIGTERM (systemctl stop): stop reading, describe and write what is queued, flush, exit 0.
    # SIGHUP (systemctl reload): reopen the log files; with --config, re-read it and apply its
    # cameras (added, removed, changed) without touching the others; an invalid one is refused.
    signal.signal(signal.SIGTERM, lambda *_: monitor.stop())
    signal.signal(signal.SIGHUP, lambda *_: monitor.request_reload())
    if signal.SIGHUP in early:
        monitor.request_reload()
    if signal.SIGTERM in early:
        monitor.stop()
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
            coalesced=result.coalesced.get(cam_id, 0),
            dropped=result.dropped.get(cam_id, 0),
        )
    log.info("run_finished", events=result.events, log_dir=str(settings.log.dir))
    if result.errors:
        for message in result.errors.values():
            print(f"monitor: error: {message}", file=sys.stderr)
        return 1
    return 0


def _with_credentials(settings: Any) -> Any:
    """Under systemd, `LoadCredential=redis-password:...` puts the Redis password in
    `$CREDENTIALS_DIRECTORY/redis-password`: use it when no password is configured."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    redis = settings.redis
    if not cred_dir or redis.password is not None or redis.password_file is not None:
        return settings
    path = Path(cred_dir) / "redis-password"
    if not path.is_file():
        return settings
    return settings.model_copy(update={"redis": redis.model_copy(update={"password_file": path})})


def cmd_check_config(args: argparse.Namespace) -> int:
    from monitor.config import load_settings

    settings = load_settings(args.file)
    print(f"{args.file}: OK ({len(settings.cameras)} camera(s))")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    if args.redis:
        from monitor.consumers import tail_redis

        args.redis = _redis_url(args.redis)
        return tail_redis(
            args.redis, args.prefix, follow=args.follow, camera=args.camera, as_json=args.json, lines=args.lines
        )
    from monitor.tail import tail

    return tail(args.log_dir, follow=args.follow, camera=args.camera, as_json=args.json, lines=args.lines)


def _redis_url(value: str | None) -> str:
    url = os.environ.get("MONITOR_REDIS__URL") if value in (None, "env") else value
    if not url:
        raise MonitorError("no Redis URL: give --redis URL or set MONITOR_REDIS__URL")
    return url


def cmd_alerts(args: argparse.Namespace) -> int:
    from monitor.consumers import consume_alerts

    args.redis = _redis_url(args.redis)
    return consume_alerts(
        args.redis,
        args.prefix,
        group=args.group,
        consumer=args.consumer,
        claim_idle_ms=args.claim_idle_ms,
        as_json=args.json,
        count=args.count,
    )


def cmd_sample(args: argparse.Namespace) -> int:
    from monitor.sample_scene import render_sample_scene

    truth = render_sample_scene(args.out, seconds=args.seconds, seed=args.seed)
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.truth.json')} ({len(truth['events'])} scripted events)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """`models inspect DIR` / `models pull NAME`: checkpoints of the VLM describer."""
    try:
        from pipelines.checkpoint import CheckpointError, inspect_checkpoint
    except ImportError as exc:
        raise MonitorError(f"monitor models needs {exc.name}: pip install 'surveillance-change-monitor[vlm]'") from None
    try:
        if args.action == "pull":
            from huggingface_hub import snapshot_download

            try:  # weights as safetensors only, into the Hugging Face cache
                snapshot_download(args.name, revision=args.revision, allow_patterns=PULL_PATTERNS)
            except Exception as exc:  # noqa: BLE001 - network, auth, unknown repo: one line
                problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                raise MonitorError(f"models pull {args.name}: {problem}") from None
            info = inspect_checkpoint(args.name)
        else:
            info = inspect_checkpoint(args.dir)
    except CheckpointError as exc:
        raise MonitorError(str(exc)) from None
    if getattr(args, "json", False):
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    print(f"{info.path}\n  architecture: {info.architecture}\n  dtype: {info.dtype}")
    count = lambda n: f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n:,}"  # noqa: E731
    print("  parameters: " + ", ".join(f"{k} {count(v)}" for k, v in info.parameters.items()))
    print(f"  image: {info.image_size} px, {info.visual_tokens_per_image} visual tokens per image")
    print(f"  LM context: {info.context_length} tokens")
    print("  LM tokens per frame: " + ", ".join(f"{k} {v:g}" for k, v in info.lm_tokens_per_frame.items()))
    print(f"  delta tokens per pair: {info.delta_tokens_per_pair}")
    return 0


PULL_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.txt"]


# `monitor bench WHAT`: (module, function), imported only when run (torch, GStreamer helpers)
BENCHES = {
    "gate": ("monitor.bench", "bench_gate"),
    "redis": ("monitor.bench_redis", "bench_redis"),
    "service": ("monitor.bench_service", "bench_service"),
    "model": ("monitor.bench_model", "bench_model"),
}


def cmd_bench(args: argparse.Namespace) -> int:
    module, function = BENCHES[args.what]
    return getattr(importlib.import_module(module), function)(args)


# -- parser --------------------------------------------------------------------------------
def _add_plugin_commands(sub: Any, bench: Any) -> None:
    """Subcommands of other installed packages (`finetune`), found through the `monitor.commands`
    entry points, so the daemon's package never imports the training code. Each entry point is a
    function `(subparsers, bench_subparsers) -> None`; it must import nothing heavy."""
    for entry in entry_points(group="monitor.commands"):
        entry.load()(sub, bench)


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
    r.add_argument("--redis", metavar="URL", help="also deliver events to Redis streams (sets redis.url)")
    r.add_argument("--describer", choices=["embedded", "vlm"], help="sets describer.kind (--model alone means vlm)")
    r.add_argument("--model", metavar="DIR", help="VLM checkpoint directory or cached repo id (describer.model)")
    r.add_argument("--mode", choices=["compressed", "pair"], help="VLM mode (describer.mode, default compressed)")
    r.add_argument("--adapter", metavar="DIR", help="VLM LoRA adapter directory (describer.adapter)")
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
    t.add_argument(
        "--redis", metavar="URL", help="read <prefix>:events instead of --log-dir; 'env' = $MONITOR_REDIS__URL"
    )
    t.add_argument("--prefix", default="monitor", help="Redis stream key prefix (default monitor)")
    t.set_defaults(func=cmd_tail)

    a = sub.add_parser(
        "alerts",
        help="print alerts from Redis as a consumer group member",
        description="Read <prefix>:alerts as consumer C of group G: print each alert, then XACK it; "
        "take over alerts left unacknowledged by dead consumers.",
    )
    a.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get("MONITOR_REDIS__URL"),
        help="redis:// or rediss:// URL (default: $MONITOR_REDIS__URL, which keeps the password out of ps)",
    )
    a.add_argument("--prefix", default="monitor", help="stream key prefix (default monitor)")
    a.add_argument("--group", default="monitor-alerts", help="consumer group (default monitor-alerts)")
    a.add_argument("--consumer", help="this consumer's name, unique per running consumer (default: host name)")
    a.add_argument("--json", action="store_true", help="print one JSON object per alert")
    a.add_argument(
        "--claim-idle-ms",
        type=positive_int,
        default=30_000,
        metavar="MS",
        help="take over alerts pending longer than this in other consumers (default 30000)",
    )
    a.add_argument("--count", type=positive_int, metavar="N", help="exit after N alerts")
    a.set_defaults(func=cmd_alerts)

    s = sub.add_parser("sample", help="render the synthetic sample scene (+ truth JSON)")
    s.add_argument("out", type=Path, help="output .mp4")
    s.add_argument("--seconds", type=float, default=DEMO_SECONDS)
    s.add_argument("--seed", type=int, default=DEMO_SEED)
    s.set_defaults(func=cmd_sample)

    m = sub.add_parser("models", help="VLM describer checkpoints: inspect, pull")
    models = m.add_subparsers(dest="action", required=True, metavar="ACTION")
    mi = models.add_parser("inspect", help="architecture, parameters, dtype, LM tokens per frame in each mode")
    mi.add_argument("dir", help="checkpoint directory or a repo id in the Hugging Face cache")
    mi.add_argument("--json", action="store_true", help="print JSON")
    mi.set_defaults(func=cmd_models)
    mp = models.add_parser(
        "pull",
        help="download a checkpoint (safetensors) into the Hugging Face cache",
        description="Download NAME (e.g. bczhou/tiny-llava-v1-hf) into the Hugging Face cache, safetensors "
        "weights only, then inspect it. `monitor run --model NAME` then finds it offline.",
    )
    mp.add_argument("name", help="Hugging Face repo id")
    mp.add_argument("--revision", help="branch, tag or commit (default: main)")
    mp.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="benchmarks that print a table and JSON")
    bench = b.add_subparsers(dest="what", required=True, metavar="WHAT")
    bg = bench.add_parser("gate", help="the change gate against naive full decode + SSIM, per sampled frame")
    bg.add_argument("--video", type=Path, action="append", help="footage (repeatable; default: shared footage)")
    bg.add_argument("--sample-fps", type=float, default=1.0)
    bg.add_argument("--seconds", type=float, help="stop each video after this much media time (default: all)")
    bg.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best counts (default 3)")
    add_json_option(bg)
    bg.set_defaults(func=cmd_bench)
    br = bench.add_parser("redis", help="Redis delivery throughput against a throwaway redis-server")
    br.add_argument("--events", type=int, default=5000, help="events per measurement (default 5000)")
    br.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best counts (default 3)")
    add_json_option(br)
    br.set_defaults(func=cmd_bench)
    bs = bench.add_parser(
        "service",
        help="the daemon on N looped RTSP cameras: CPU, RSS, latency (a soak with --minutes)",
        description="Run the real daemon on N RTSP cameras of looped real footage at 1 fps (embedded describer, "
        "Redis, jobs); report CPU and RSS per camera, RSS growth and threads after the warm-up, and the latency "
        "from a change to its log line and to its Redis entry (p50/p95).",
    )
    bs.add_argument("--cameras", type=positive_int, default=16, help="RTSP cameras (default 16)")
    bs.add_argument("--seconds", type=float, default=120.0, help="run length, warm-up included (default 120)")
    bs.add_argument("--minutes", type=float, help="run length in minutes, e.g. 30 for a soak (overrides --seconds)")
    bs.add_argument("--warmup", type=float, default=30.0, help="seconds before measuring (default 30)")
    bs.add_argument("--video", type=Path, help="H.264 MP4 footage (default: the shared one-by-one clip)")
    bs.add_argument("--loop-seconds", type=float, help="loop only the first S seconds of the footage")
    bs.add_argument("--reorder-window", type=float, default=0.5, help="the daemon's log.reorder_window_s (default 0.5)")
    add_json_option(bs)
    bs.set_defaults(func=cmd_bench)
    bm = bench.add_parser(
        "model",
        help="VLM cost per pair: two images, side by side, compressed, compressed + frame cache",
        description="Builds the model architecture from its config with random weights (no download) and "
        "measures LM input tokens, FLOPs, wall time and peak memory per pair at batch 1 and 8.",
    )
    bm.add_argument("--arch", choices=["tinyllava-1.5b", "tiny"], default="tinyllava-1.5b")
    bm.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bm.add_argument("--batch", type=positive_int, action="append", help="batch sizes (repeatable; default 1 and 8)")
    bm.add_argument("--new-tokens", type=positive_int, default=8, help="tokens generated per pair (default 8)")
    bm.add_argument("--repeat", type=positive_int, default=2, help="runs of each measurement; the best counts")
    add_json_option(bm)
    bm.set_defaults(func=cmd_bench)
    _add_plugin_commands(sub, bench)
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
