"""Redis stream readers: `monitor tail --redis` (the events stream) and `monitor alerts`
(a consumer group on the alerts stream).

Stream layout (written by the Redis sink):

- `<prefix>:events`: one entry per event: `event_id`, `camera`, `seq`, `kind`, `t_after`,
  `text`, `json` (the whole event as in changes.jsonl);
- `<prefix>:alerts`: one entry per (event, fired rule): `rule` and the same fields; an early
  rule's entries also have `phase` (`onset`: sent when the change started, no seq, `t_onset`
  instead of `t_after`; then `settled`) and `change_id`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TextIO

import redis

from monitor.errors import MonitorError, mask_secrets, mask_url
from monitor.records import ChangeEvent
from monitor.stream_group import BLOCK_MS, GroupConsumer, stream_entries

PAGE = 500  # entries per XRANGE/XREVRANGE page
Entry = tuple[str, dict[str, str]]


# -- connection ------------------------------------------------------------------------------
def connect(url: str, timeout_s: float = 5.0) -> redis.Redis:
    """A checked connection (PING); any failure is one MonitorError line, password masked."""
    # Like the daemon, take the password from the environment when the URL has none.
    env_password = os.environ.get("MONITOR_REDIS__PASSWORD")
    extra = {"password": env_password} if env_password and "@" not in url.split("//", 1)[-1] else {}
    try:
        client = redis.Redis.from_url(
            url,
            **extra,
            decode_responses=True,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s + BLOCK_MS / 1000,  # longer than a blocking read
            health_check_interval=0,
        )
        client.ping()
    except ValueError as exc:  # a malformed URL
        raise MonitorError(f"bad Redis URL {mask_url(url)}: {mask_secrets(str(exc))}") from None
    except redis.RedisError as exc:
        raise redis_error(url, exc) from None
    return client


def redis_error(url: str, exc: BaseException) -> MonitorError:
    what = "authentication failed" if isinstance(exc, redis.AuthenticationError) else "cannot reach Redis"
    if isinstance(exc, redis.ResponseError) and not isinstance(exc, redis.AuthenticationError):
        what = "Redis error"
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc) or "HELLO must be called" in str(exc):
            what = "authentication failed"
    detail = mask_secrets(str(exc).strip()) or type(exc).__name__
    return MonitorError(f"{what} at {mask_url(url)}: {detail}")


class _Stop:
    """SIGINT/SIGTERM set a flag, checked between blocking reads (at most BLOCK_MS apart), so an
    entry is never left half-handled (printed but not acknowledged) by a normal stop."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, *_: Any) -> None:
        self.requested = True


@contextmanager
def _stop_on_signals() -> Iterator[_Stop]:
    stop = _Stop()
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread: the caller stops us some other way
            pass
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _closed_stdout() -> int:
    """The reader of our output went away (`| head`): exit quietly, without a flush error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0


def _emit(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


# -- tail ----------------------------------------------------------------------------------------
def format_event(fields: dict[str, str], as_json: bool) -> str:
    """The change-log line (or the event's JSON) of an events-stream entry."""
    raw = fields.get("json")
    if as_json:
        return raw if raw else json.dumps(fields, separators=(",", ":"))
    if raw:
        try:
            return ChangeEvent.model_validate_json(raw).line()
        except ValueError:
            pass
    return f"{fields.get('t_after', '')[11:19]} {fields.get('camera', '?')}: {fields.get('text', '')}"


def _last_entries(client: redis.Redis, key: str, n: int, keep: Callable[[dict[str, str]], bool]) -> list[Entry]:
    """The last n entries that `keep` accepts (n = 0: all), oldest first, paging backwards."""
    found: deque[Entry] = deque()
    upper = "+"
    while True:
        page = client.xrevrange(key, max=upper, min="-", count=PAGE)
        for entry_id, fields in page:
            if keep(fields):
                found.appendleft((entry_id, fields))
                if n and len(found) >= n:
                    return list(found)
        if len(page) < PAGE:
            return list(found)
        upper = "(" + page[-1][0]


def tail_redis(
    url: str,
    prefix: str = "monitor",
    follow: bool = False,
    camera: str | None = None,
    as_json: bool = False,
    lines: int = 20,
    out: TextIO | None = None,
) -> int:
    """Print the last `lines` events of `<prefix>:events` (0 = all); with `follow`, then every
    new one as it arrives (XREAD BLOCK after the newest entry seen at start: nothing added in
    between is missed)."""
    out = out or sys.stdout
    key = f"{prefix}:events"
    client = connect(url)

    def keep(fields: dict[str, str]) -> bool:
        return camera is None or fields.get("camera") == camera

    try:
        if not follow and not client.exists(key):
            raise MonitorError(f"no stream {key} at {mask_url(url)} (is --prefix right?)")
        # Following: a stop (Ctrl-C) is a normal end from the first line on, not only once the
        # past entries are printed, as consume_alerts has it.
        with _stop_on_signals() if follow else nullcontext(_Stop()) as stop:
            newest = client.xrevrange(key, count=1)
            last_id = newest[0][0] if newest else "0-0"
            for _entry_id, fields in _last_entries(client, key, lines, keep) if newest else []:
                _emit(out, format_event(fields, as_json))
            if not follow:
                return 0
            while not stop.requested:
                reply = client.xread({key: last_id}, count=PAGE, block=BLOCK_MS)
                for entry_id, fields in stream_entries(reply):
                    last_id = entry_id
                    if keep(fields):
                        _emit(out, format_event(fields, as_json))
        return 0
    except redis.RedisError as exc:
        raise redis_error(url, exc) from None
    except BrokenPipeError:  # `| head`
        return _closed_stdout()
    finally:
        client.close()


# -- alerts consumer group -----------------------------------------------------------------------
def format_alert(entry_id: str, fields: dict[str, str], as_json: bool) -> str:
    """`HH:MM:SS camera [rule]: text` (`[rule onset]` for an early alert), or one JSON object
    {id, rule, event} (with `phase` for an early rule's entries)."""
    event: Any = None
    raw = fields.get("json")
    if raw:
        try:
            event = json.loads(raw)
        except ValueError:
            event = None
    if as_json:
        if not isinstance(event, dict):
            event = {k: v for k, v in fields.items() if k not in {"rule", "json"}}
        phase = {"phase": fields["phase"]} if "phase" in fields else {}
        return json.dumps({"id": entry_id, "rule": fields.get("rule"), **phase, "event": event}, separators=(",", ":"))
    src = event if isinstance(event, dict) else fields
    clock = str(src.get("t_after") or fields.get("t_after") or fields.get("t_onset") or "")[11:19]
    camera = src.get("camera") or fields.get("camera") or "?"
    text = src.get("text") if src.get("text") is not None else fields.get("text", "")
    phase = f" {fields['phase']}" if "phase" in fields else ""
    return f"{clock} {camera} [{fields.get('rule', '?')}{phase}]: {text}"


def default_consumer() -> str:
    return socket.gethostname() or "monitor"


class AlertConsumer(GroupConsumer):
    """One consumer of a group on `<prefix>:alerts` (`monitor.stream_group`): prints each alert,
    then XACKs it; an alert printed just before a crash is printed again."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "monitor",
        group: str = "monitor-alerts",
        consumer: str | None = None,
        claim_idle_ms: int = 30_000,
        as_json: bool = False,
        out: TextIO | None = None,
    ):
        super().__init__(client, f"{prefix}:alerts", group, consumer or default_consumer(), claim_idle_ms, PAGE)
        self.as_json = as_json
        self.out = out or sys.stdout

    def handle(self, entries: list[Entry]) -> int:
        printed = 0
        for entry_id, fields in entries:
            if fields:  # an entry trimmed from the stream while pending has no fields: just ack
                _emit(self.out, format_alert(entry_id, fields, self.as_json))
                printed += 1
            self.client.xack(self.key, self.group, entry_id)
        return printed


def consume_alerts(
    url: str,
    prefix: str = "monitor",
    group: str = "monitor-alerts",
    consumer: str | None = None,
    claim_idle_ms: int = 30_000,
    as_json: bool = False,
    count: int | None = None,
    out: TextIO | None = None,
) -> int:
    client = connect(url)
    try:
        with _stop_on_signals() as stop:
            AlertConsumer(client, prefix, group, consumer, claim_idle_ms, as_json, out).run(
                count, should_stop=lambda: stop.requested
            )
        return 0
    except redis.RedisError as exc:
        raise redis_error(url, exc) from None
    except BrokenPipeError:
        return _closed_stdout()
    finally:
        client.close()
