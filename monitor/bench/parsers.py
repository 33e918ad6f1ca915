"""The `monitor bench WHAT` subcommands' arguments (each benchmark's module runs it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monitor.argtypes import positive_int
from monitor.bench.output import add_json_option


def add_bench_parsers(bench: Any, cmd_bench: Any) -> None:
    bg = bench.add_parser("gate", help="the change gate against naive full decode + SSIM, per sampled frame")
    bg.add_argument("--video", type=Path, action="append", help="footage (repeatable; default: shared footage)")
    bg.add_argument("--sample-fps", type=float, default=1.0, help="default 1")
    bg.add_argument("--seconds", type=float, help="stop each video after this much media time (default: all)")
    bg.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best counts (default 3)")
    bg.add_argument(
        "--detector", type=Path, metavar="ONNX", help="also measure with this object detector naming each change"
    )
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
    ba = bench.add_parser(
        "alerts",
        help="early alerts: change onset to the alert in Redis and on MQTT, next to the settled event",
        description="Run the real daemon on N looped RTSP cameras at 2 fps with an early alert rule, a local "
        "redis-server and mosquitto; report the latency from each change's onset to its onset alert in Redis and "
        "on MQTT (goal p95 <= 0.5 s), and to its settled event.",
    )
    ba.add_argument("--cameras", type=positive_int, default=8, help="RTSP cameras (default 8)")
    ba.add_argument("--seconds", type=float, default=120.0, help="run length, warm-up included (default 120)")
    ba.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring (default 20)")
    ba.add_argument("--sample-fps", type=float, default=2.0, help="default 2")
    ba.add_argument("--video", type=Path, help="H.264 MP4 footage (default: the shared one-by-one clip)")
    add_json_option(ba)
    ba.set_defaults(func=cmd_bench)
    bk = bench.add_parser(
        "cluster",
        help="scale-out: described pairs/s with 1 and 2 describe workers, and with one killed",
        description="A gate process with a backlog of candidates from C file cameras, then N describe workers "
        "(tiny random LLaVA, one CPU thread each) through a local redis-server: pairs/s, candidate -> event latency, "
        "lost and duplicated events; goal 2 workers >= 1.7x the pairs/s of 1.",
    )
    bk.add_argument("--workers", type=positive_int, action="append", help="workers per run (repeatable; default 1, 2)")
    bk.add_argument("--cameras", type=positive_int, default=8, help="file cameras of the clip (default 8)")
    bk.add_argument("--video", type=Path, help="footage (default: the shared one-by-one clip)")
    bk.add_argument("--no-kill", action="store_true", help="skip the run with a worker SIGKILLed mid-run")
    bk.add_argument("--repeat", type=positive_int, default=1, help="the runs again, interleaved; ratios of medians")
    add_json_option(bk)
    bk.set_defaults(func=cmd_bench)
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
    bc = bench.add_parser(
        "changelog",
        help="how true the change log is: eval-log on the scripted cases and labelled footage",
        description="Run the daemon on the scripted cases (a bag left behind, busy through-traffic, a car parked at "
        "the start) and on footage with a .truth.json beside it, score each log with eval-log, and compare the "
        "totals with the goals (found >= 95 %%, direction 100 %%, named >= 90 %%, left-behind objects persisting, "
        "no quiet-stretch events, no text defects).",
    )
    bc.add_argument(
        "--video", type=Path, action="append", help="footage with VIDEO.truth.json beside it (default: shared clips)"
    )
    bc.add_argument("--detector", type=Path, metavar="ONNX", help="also score with this object detector")
    add_json_option(bc)
    bc.set_defaults(func=cmd_bench)
