"""`monitor` command line: run, check-config, tail, alerts, eval-log, sample, models, bench."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import structlog

from monitor.argtypes import non_negative_int, positive_float, positive_int
from monitor.bench.parsers import add_bench_parsers
from monitor.commands import (
    DEMO_SECONDS,
    DEMO_SEED,
    cmd_alerts,
    cmd_ask,
    cmd_bench,
    cmd_check_config,
    cmd_cluster_status,
    cmd_describe_worker,
    cmd_eval_log,
    cmd_models,
    cmd_review,
    cmd_run,
    cmd_sample,
    cmd_tail,
)
from monitor.daemon.terminal import LineWriter
from monitor.errors import ConfigError, MonitorError, mask_secrets


def _mask_processor(_logger: Any, _name: str, event_dict: dict) -> dict:
    # Secrets (RTSP/Redis passwords) never reach a log line, whatever put them there.
    return {k: mask_secrets(v) if isinstance(v, str) else v for k, v in event_dict.items()}


# Diagnostics reach stderr a whole line at a time, around the terminal's progress line.
STDERR_LINES = LineWriter(lambda: sys.stderr)


def configure_logging(level: str = "info") -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            _mask_processor,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        # sys.stderr looked up per line, not bound once: whoever swaps it later (pytest's
        # capture, a test harness) keeps receiving the diagnostics instead of a closed file.
        logger_factory=lambda *_args: structlog.PrintLogger(STDERR_LINES),
        cache_logger_on_first_use=False,
    )


# -- parser --------------------------------------------------------------------------------
def _add_plugin_commands(sub: Any, bench: Any) -> None:
    """Subcommands of other installed packages (`finetune`), found through the `monitor.commands`
    entry points, so the daemon's package never imports the training code. Each entry point is a
    function `(subparsers, bench_subparsers) -> None`; it must import nothing heavy."""
    for entry in entry_points(group="monitor.commands"):
        entry.load()(sub, bench)


def _add_global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--log-level and --debug, on `monitor` itself (with the defaults) and on every subcommand
    (without: a value given after the subcommand wins, none keeps the one given before it)."""
    keep = {} if defaults else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="diagnostic log level (stderr; default info)",
        **({"default": "info"} if defaults else keep),
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks of internal errors", **({} if defaults else keep)
    )


def _subcommand_parsers(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share one parser
                yield sub
                yield from _subcommand_parsers(sub)


# Modules of the optional extras (pyproject.toml) -> the extra that installs them.
OPTIONAL_MODULES = {
    **dict.fromkeys(("torch", "transformers", "safetensors", "tokenizers", "peft"), "vlm"),
    **dict.fromkeys(("pycocoevalcap", "matplotlib", "tqdm"), "finetune"),
    **dict.fromkeys(("bitsandbytes", "accelerate"), "qlora"),
    "skimage": "bench",
}


def _add_site_options(parser: argparse.ArgumentParser) -> None:
    """Where a daemon's log and captures are (review, ask): its config, or each folder."""
    parser.add_argument("--log-dir", type=Path, help="the daemon's log dir (default: log.dir, ./monitor-logs)")
    parser.add_argument("--captures", type=Path, help="the capture folders (default: captures.dir)")
    parser.add_argument("--config", type=Path, help="the daemon's YAML config (log, captures, zone, describer, review)")


class OneLineParser(argparse.ArgumentParser):
    """A usage mistake is one stderr line naming it (argparse prints the whole usage first),
    exit 2; `--help` still shows the usage. Subcommand parsers are of this class too."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_cluster_options(parser: argparse.ArgumentParser, config_holds: str) -> None:
    """--redis and --config of the scale-out commands (describe-worker, cluster-status)."""
    parser.add_argument(
        "--redis", metavar="URL", default=os.environ.get("MONITOR_REDIS__URL"),
        help="redis:// or rediss:// URL (default: redis.url of --config, or $MONITOR_REDIS__URL)",
    )  # fmt: skip
    parser.add_argument("--config", type=Path, help=f"YAML config file ({config_holds})")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="monitor", description="Video-surveillance change monitor.")
    _add_global_options(p, defaults=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser(
        "run",
        help="watch cameras and write the change log",
        description="Run the monitor: one --source, the cameras of --config, or --demo.",
    )
    what = r.add_mutually_exclusive_group()  # the demo is its own source: never silently instead of one
    what.add_argument("--source", help="video file, image-sequence folder/pattern, or rtsp:// URL")
    r.add_argument("--camera-id", help="camera id for --source (default: from the file name)")
    r.add_argument("--config", type=Path, help="YAML config file")
    r.add_argument(
        "--log-dir", type=Path, help="where changes.jsonl / changes.log go (default: log.dir, ./monitor-logs)"
    )
    r.add_argument("--sample-fps", type=float, help="frames per second to examine (--source only; default 2)")
    r.add_argument("--image-fps", type=float, help="frame rate of an image-sequence --source (required for one)")
    r.add_argument("--realtime", action="store_true", help="pace file sources at their real speed")
    r.add_argument(
        "--clock", choices=["recorded", "run"], help="--source file: stamp from when it was recorded (default) or now"
    )
    what.add_argument("--demo", action="store_true", help="run on the built-in synthetic sample scene")
    r.add_argument("--quiet", action="store_true", help="do not echo the change log to stdout")
    r.add_argument("--redis", metavar="URL", help="also deliver events to Redis streams (sets redis.url)")
    r.add_argument("--mqtt", metavar="URL", help="also publish events to an MQTT broker (sets mqtt.url)")
    r.add_argument("--describer", choices=["embedded", "vlm"], help="sets describer.kind (--model alone means vlm)")
    r.add_argument("--model", metavar="DIR", help="VLM checkpoint directory or cached repo id (describer.model)")
    r.add_argument("--mode", choices=["compressed", "pair"], help="VLM mode (describer.mode, default compressed)")
    r.add_argument("--adapter", metavar="DIR", help="VLM LoRA adapter directory (describer.adapter)")
    r.add_argument(
        "--role", choices=["all", "gate"], default="all",
        help="all: one process does everything; gate: read, gate and write the log, describe workers describe",
    )  # fmt: skip
    r.set_defaults(func=cmd_run)

    w = sub.add_parser(
        "describe-worker",
        help="describe the gate nodes' changes from Redis (consumer group describers)",
        description="Read <prefix>:candidates as a member of consumer group 'describers', describe each change "
        "(the config's describer: a VLM on the GPU, or the embedded one) and send the event back to its gate node; "
        "take over changes another worker read but never acknowledged.",
    )
    _add_cluster_options(w, "describer, redis.prefix, cluster.claim_idle_ms")
    w.add_argument("--name", help="this worker's name in the group, unique per running worker (default: host name)")
    w.add_argument("--count", type=positive_int, metavar="N", help="exit after describing N changes")
    w.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads (torch, OpenCV; default: all cores)")
    w.set_defaults(func=cmd_describe_worker)

    cs = sub.add_parser(
        "cluster-status",
        help="the scale-out as Redis sees it: candidates waiting, each describe worker, each gate node",
        description="Read-only: candidates in <prefix>:candidates and in a worker's hand; per describe worker "
        "alive, pending, idle seconds and cameras dealt to it; per gate node its cameras and results not yet written.",
    )
    _add_cluster_options(cs, "redis.url, redis.prefix")
    cs.add_argument("--json", action="store_true", help="print JSON")
    cs.set_defaults(func=cmd_cluster_status)

    c = sub.add_parser("check-config", help="validate a config file and list every error")
    c.add_argument("file", type=Path)
    c.set_defaults(func=cmd_check_config)

    t = sub.add_parser("tail", help="print the change log, optionally following it")
    t.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    t.add_argument("--camera", help="only this camera")
    t.add_argument("--json", action="store_true", help="print the JSON lines")
    t.add_argument(
        "-n", "--lines", type=non_negative_int, default=20, help="how many past events (0 = all; default 20)"
    )
    t.add_argument("--log-dir", type=Path, default=Path("./monitor-logs"), help="default ./monitor-logs")
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

    v = sub.add_parser(
        "review",
        help="the review page: the change log and captures in a browser, corrections",
        description="A web page over LOG_DIR and the captures: the timeline (filters, full-text search), each "
        "event's before and after frames with its regions, corrections written to the capture's captions.txt. "
        "Loopback only unless a token is given (--token-file or MONITOR_REVIEW__TOKEN).",
    )
    _add_site_options(v)
    v.add_argument("--bind", help="host:port (default: review.bind, 127.0.0.1:8765)")
    v.add_argument("--token-file", type=Path, help="file holding the access token (review.token_file)")
    v.set_defaults(func=cmd_review)

    k = sub.add_parser(
        "ask",
        help="ask the VLM a question about one event, from its captured frames",
        description="Answer QUESTION about EVENT_ID (its before and after frames, from its capture folder) with "
        "the VLM describer of --config, or --model.",
    )
    k.add_argument("event_id", metavar="EVENT_ID")
    k.add_argument("question", metavar="QUESTION")
    _add_site_options(k)
    k.add_argument("--model", metavar="DIR", help="VLM checkpoint directory or cached repo id (describer.model)")
    k.add_argument("--adapter", metavar="DIR", help="LoRA adapter directory (describer.adapter)")
    k.set_defaults(func=cmd_ask)

    e = sub.add_parser(
        "eval-log",
        help="score a change log against a truth file",
        description="Score LOG_DIR/changes.jsonl against TRUTH.json: arrivals and departures found, direction, "
        "object named, left-behind objects persisting, events in quiet stretches, sentence defects. "
        "Truth: the shared *.truth.json (present_intervals_s) or the synthetic scene's (events): docs/change-log.md.",
    )
    e.add_argument("log_dir", type=Path, metavar="LOG_DIR")
    e.add_argument("truth", type=Path, metavar="TRUTH.json")
    e.add_argument("--camera", help="only this camera (needed when the log holds several)")
    e.add_argument(
        "--tolerance", type=positive_float, default=2.0, metavar="S", help="seconds of slack at each edge (default 2)"
    )
    e.add_argument(
        "--what", choices=("person", "vehicle", "bag"), help="what the truth's unnamed changes are (a clip of people)"
    )
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_eval_log)

    s = sub.add_parser("sample", help="render the synthetic sample scene (+ truth JSON)")
    s.add_argument("out", type=Path, help="output .mp4")
    s.add_argument("--seconds", type=float, default=DEMO_SECONDS, help=f"clip length, >= 10 (default {DEMO_SECONDS:g})")
    s.add_argument("--seed", type=int, default=DEMO_SEED, help=f"the scene's random seed (default {DEMO_SEED})")
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
    add_bench_parsers(bench, cmd_bench)
    _add_plugin_commands(sub, bench)
    for subcommand in _subcommand_parsers(p):
        _add_global_options(subcommand, defaults=False)
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
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        extra = OPTIONAL_MODULES.get(package)
        if extra is None or args.debug:
            raise
        print(f"monitor: error: {args.command} needs {package}: pip install '.[{extra}]'", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (`monitor tail | head`): what was asked for was read; no noise.
        # Point stdout at /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        if args.debug:
            raise
        print(f"monitor: internal error: {type(exc).__name__}: {mask_secrets(str(exc))} (use --debug)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
