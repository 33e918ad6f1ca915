"""What each `monitor` subcommand does (`cli` parses the command line and calls these):
run, check-config, tail, alerts, sample, models, bench."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from monitor.errors import ConfigError, MonitorError

if TYPE_CHECKING:  # the settings load only when a command needs them (a fast --help)
    from monitor.config import MonitorSettings

DEMO_SEED = 7
DEMO_SECONDS = 60.0


def _camera_id_from(source: str) -> str:
    stem = Path(source.split("?")[0].rstrip("/")).stem or "camera"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)[:64].strip("-") or "camera"


def demo_video() -> Path:
    """The embedded default: the synthetic sample scene, rendered once into the user cache."""
    from monitor.scene.scripted import render_sample_scene

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "surveillance-monitor"
    path = cache / f"sample-seed{DEMO_SEED}-{int(DEMO_SECONDS)}s.mp4"
    if not path.exists() or not path.with_suffix(".truth.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"monitor: rendering the demo scene ({DEMO_SECONDS:g} s, once) into {path} ...", file=sys.stderr)
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
def _check_time_order(settings: MonitorSettings, camera: str, first: float) -> None:
    """A file whose events would go back in time in the log dir is refused before the run (the
    daemon refuses any such event too): per camera, t_after never decreases across runs."""
    from monitor.order.time_order import BACK_IN_TIME
    from monitor.records import iso_utc
    from monitor.sinks.logfiles import last_logged

    logged = last_logged(settings.log.dir).get(camera)
    if logged is not None and first < logged[1] - 0.001:
        when = f"the file starts at {iso_utc(first)}, before the log's last {camera} event at {iso_utc(logged[1])}"
        raise MonitorError(f"camera {camera}: {when}: {BACK_IN_TIME}")


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.config import load_settings, read_yaml
    from monitor.config.secrets import with_systemd_credentials
    from monitor.daemon.service import Monitor
    from monitor.sources.video import VideoSource, is_network

    overrides: dict[str, Any] = {}
    source = args.source
    if args.demo:
        source = str(demo_video())
        args.camera_id = args.camera_id or "lot-demo"
    if source:
        cam: dict[str, Any] = {"id": args.camera_id or _camera_id_from(source), "source": source}
        if args.demo:
            cam["clock"] = "run"  # a rendered scene was never recorded: it happens now, every time
        if args.clock is not None:
            cam["clock"] = args.clock
        if args.sample_fps is not None:
            cam["sample_fps"] = args.sample_fps
        if args.image_fps is not None:
            cam["image_fps"] = args.image_fps
        if args.config is not None:
            cam, overrides["alerts"] = _narrow_config(read_yaml(args.config), cam)
        overrides["cameras"] = [cam]
    if args.redis:
        overrides["redis"] = {"url": args.redis}
    if args.mqtt:
        overrides["mqtt"] = {"url": args.mqtt}
    describer = {"kind": args.describer, "model": args.model, "mode": args.mode, "adapter": args.adapter}
    if any(v is not None for v in describer.values()):
        describer["kind"] = describer["kind"] or ("vlm" if args.model else None)  # --model alone means vlm
        overrides["describer"] = {k: v for k, v in describer.items() if v is not None}
    settings = load_settings(args.config, **overrides)
    if args.log_dir is not None:
        settings = settings.model_copy(update={"log": settings.log.model_copy(update={"dir": args.log_dir})})
    settings = with_systemd_credentials(settings)
    if source and not is_network(source):
        # One file: one line if it cannot be read, before anything starts (a config of many
        # cameras keeps the others running when one fails).
        first = VideoSource(settings.cameras[0])
        first.check()
        if settings.cameras[0].clock == "recorded":  # "run" continues after the log's last event
            _check_time_order(settings, settings.cameras[0].id, first.first_time())
    reload = None
    if args.config is not None and not source:

        def reload() -> MonitorSettings:  # SIGHUP: the same config file, the same command-line overrides
            fresh = load_settings(args.config, **overrides)
            if args.log_dir is not None:
                fresh = fresh.model_copy(update={"log": fresh.log.model_copy(update={"dir": args.log_dir})})
            return with_systemd_credentials(fresh)

    # Building the monitor loads the describer (a VLM takes seconds): a SIGTERM or SIGHUP that
    # arrives meanwhile is kept and acted on once the monitor exists, instead of killing it.
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    from monitor.daemon.terminal import LineWriter, Progress

    # On a terminal, a run of files shows how far it got (a stream has no end to count towards).
    files_only = not any(is_network(c.source) for c in settings.cameras)
    progress = Progress() if files_only and sys.stderr.isatty() else None
    echo = None if args.quiet else LineWriter(lambda: sys.stdout)
    monitor = Monitor(
        settings, echo=echo, realtime=args.realtime or None, reload=reload, progress=progress, role=args.role
    )
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
    log = structlog.get_logger(__name__)
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
    if args.demo:
        print(f"monitor: the demo's change log: monitor tail --log-dir {settings.log.dir}", file=sys.stderr)
    if result.errors:
        for message in result.errors.values():
            print(f"monitor: error: {message}", file=sys.stderr)
        return 1
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """The settings `run` would start with, refused with the same lines: the same validation,
    the detector's model loaded, a VLM checkpoint checked; sources that cannot be read now are
    warnings (a camera may come later, a file may be written later)."""
    from monitor.config import load_settings
    from monitor.detect.objects import build_detector
    from monitor.errors import SourceError
    from monitor.sinks.alerts import early_advice
    from monitor.sources.video import VideoSource, is_network

    settings = load_settings(args.file)
    build_detector(settings.describer.detector)
    if settings.describer.kind == "vlm":
        from monitor.describe.vlm import VlmDescriber

        VlmDescriber.check(settings.describer)
    advice = early_advice(settings.alerts, settings.describer.detector.model)
    for line in advice:
        print(f"monitor: warning: {line}", file=sys.stderr)
    warnings = len(advice)
    for cam in settings.cameras:
        if is_network(cam.source):
            continue
        try:
            VideoSource(cam).check()
        except SourceError as exc:
            print(f"monitor: warning: {exc}", file=sys.stderr)
            warnings += 1
    note = f", {warnings} warning{'s' if warnings != 1 else ''}" if warnings else ""
    print(f"{args.file}: OK ({len(settings.cameras)} camera(s){note})")
    return 0


def cmd_describe_worker(args: argparse.Namespace) -> int:
    from monitor.cluster.worker import run_worker

    return run_worker(args)


def cmd_cluster_status(args: argparse.Namespace) -> int:
    from monitor.cluster.status import run_status

    return run_status(args)


def cmd_ask(args: argparse.Namespace) -> int:
    from monitor.config import load_settings
    from monitor.review.ask import Asker, find_event

    settings = load_settings(args.config)
    describer = settings.describer
    if args.model or args.adapter:
        update = {"kind": "vlm", **({"model": args.model} if args.model else {}), "adapter": args.adapter}
        describer = describer.model_copy(update=update)
    record = find_event(args.log_dir or settings.log.dir, args.event_id)
    print(Asker(describer, args.captures or settings.captures.dir).ask(record, args.question))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    """`monitor review`: the settings of --config (log dir, captures, zone, review.*), the flags
    over them, a token wherever the page is reachable beyond this machine."""
    import ipaddress

    import uvicorn

    from monitor.config import ReviewConfig, load_settings
    from monitor.review.app import ReviewApp, ReviewSite

    settings = load_settings(args.config)
    review = settings.review
    if args.bind is not None or args.token_file is not None:
        update = {k: v for k, v in (("bind", args.bind), ("token_file", args.token_file)) if v is not None}
        review = ReviewConfig.model_validate({**review.model_dump(exclude_none=True), **update})
    from monitor.config.secrets import read_secret

    token = read_secret(review.token, review.token_file, "review.token_file")
    host, port = review.bind.rsplit(":", 1)
    host = host.strip("[]") or "0.0.0.0"
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not token and not loopback:
        raise ConfigError(
            f"review.bind: {review.bind} is reachable beyond this machine: it needs a token "
            "(--token-file or MONITOR_REVIEW__TOKEN)"
        )
    log_dir = args.log_dir or settings.log.dir
    if not (log_dir / "changes.jsonl").is_file():
        raise MonitorError(f"no change log at {log_dir / 'changes.jsonl'} (is --log-dir right?)")
    captures = args.captures or (settings.captures.dir if settings.captures.dir.is_dir() else None)
    if captures is not None and not captures.is_dir():
        raise MonitorError(f"--captures: no such folder: {captures}")
    asker = None
    if settings.describer.kind == "vlm":  # refused at start as the daemon would refuse it
        from monitor.review.ask import Asker

        asker = Asker(settings.describer, captures)
    site = ReviewSite(log_dir, captures, settings.log.zone(), token or None, asker is not None)
    app = ReviewApp(site, asker=asker)
    print(f"monitor: review page at http://{review.bind}/ (Ctrl-C stops it)", file=sys.stderr)
    uvicorn.run(app.app, host=host, port=int(port), access_log=False, log_level="warning")  # no URLs, no tokens logged
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    if args.redis:
        from monitor.readers.consumers import tail_redis

        args.redis = _redis_url(args.redis)
        return tail_redis(
            args.redis, args.prefix, follow=args.follow, camera=args.camera, as_json=args.json, lines=args.lines
        )
    from monitor.readers.tail import tail

    return tail(args.log_dir, follow=args.follow, camera=args.camera, as_json=args.json, lines=args.lines)


def cmd_eval_log(args: argparse.Namespace) -> int:
    from monitor.readers.eval_log import eval_log

    return eval_log(args.log_dir, args.truth, args.camera, args.tolerance, args.json, args.what)


def _redis_url(value: str | None) -> str:
    url = os.environ.get("MONITOR_REDIS__URL") if value in (None, "env") else value
    if not url:
        raise MonitorError("no Redis URL: give --redis URL or set MONITOR_REDIS__URL")
    return url


def cmd_alerts(args: argparse.Namespace) -> int:
    from monitor.readers.consumers import consume_alerts

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
    from monitor.scene.scripted import MIN_SECONDS, render_sample_scene

    if Path(args.out).suffix.lower() != ".mp4":
        raise MonitorError(f"sample: OUT must be an .mp4 file (got {args.out})")
    if args.seconds < MIN_SECONDS:
        why = "room for one scripted change and a still end"
        raise MonitorError(f"sample --seconds: at least {MIN_SECONDS:g} ({why}), got {args.seconds:g}")
    truth = render_sample_scene(args.out, seconds=args.seconds, seed=args.seed)
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.truth.json')} ({len(truth['events'])} scripted events)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """`models inspect DIR` / `models pull NAME`: checkpoints of the VLM describer."""
    try:
        from pipelines.checkpoint import CheckpointError, inspect_checkpoint
    except ImportError as exc:
        raise MonitorError(f"monitor models needs {exc.name}: pip install '.[vlm]'") from None
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
    "gate": ("monitor.bench.gate", "bench_gate"),
    "redis": ("monitor.bench.redis_sink", "bench_redis"),
    "service": ("monitor.bench.service", "bench_service"),
    "alerts": ("monitor.bench.alerts", "bench_alerts"),
    "cluster": ("monitor.bench.cluster", "bench_cluster"),
    "model": ("monitor.bench.model", "bench_model"),
    "changelog": ("monitor.bench.changelog", "bench_changelog"),
}


def cmd_bench(args: argparse.Namespace) -> int:
    module, function = BENCHES[args.what]
    return getattr(importlib.import_module(module), function)(args)
