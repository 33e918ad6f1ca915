"""Redis streams output: every event to `<prefix>:events` (and alerts to `<prefix>:alerts`),
durably, in order and exactly once.

* Durable: `write_many()` appends the events (with the alert rules they fired, decided once,
  here) to the on-disk spool (`monitor/sinks/spool.py`) before anything is sent; a delivery thread
  sends the spool to Redis in order and advances the spool's committed offset afterwards. A
  daemon that dies with a non-empty spool delivers it first at its next start.
* Exactly once: each event goes through one Lua script that, atomically, compares the event's
  `seq` with the camera's last delivered seq in the hash `<prefix>:delivered` and only when it is
  newer does the XADDs (events, per-camera stream, alerts) and updates the hash. A batch re-sent
  after a timeout, a reconnect or a crash is therefore a no-op ("duplicate"). This relies on a
  camera's seq rising across daemon restarts, which the daemon ensures (`Monitor.run`).
* Outages: the daemon never waits on Redis. The delivery thread reconnects with exponential
  backoff and jitter (capped at `backoff_max_s`), logs one line when Redis goes away and one
  when it is back (with how many spooled events it is replaying). Passwords never reach a log
  line: the URL is always masked.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import redis
import structlog
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

from monitor.backoff import backoff_delay, backoff_policy
from monitor.config import MonitorSettings, RedisConfig
from monitor.config.secrets import read_secret
from monitor.errors import ConfigError, mask_secrets, mask_url
from monitor.records import ChangeEvent
from monitor.sinks.alerts import alerts_for
from monitor.sinks.spool import Spool, SpoolRecord

log = structlog.get_logger(__name__)

# KEYS: 1 delivered hash, 2 events stream, 3 alerts stream, [4 per-camera events stream]
# ARGV: 1 camera, 2 seq, 3 maxlen, 4 n = number of event field/value items,
#       5 .. 4+n the event's field/value pairs, then for each alert rule it fired its name and
#       phase ("settled" for an early rule, whose onset alert went out before; "" for the others).
DELIVER_LUA = """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if seq <= last then
  return {'duplicate', tostring(last)}
end
local n = tonumber(ARGV[4])
local fields = {}
for i = 5, 4 + n do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
if #KEYS >= 4 then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
end
for i = 5 + n, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'rule', ARGV[i], unpack(fields))
  else
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'rule', ARGV[i], 'phase', ARGV[i + 1], unpack(fields))
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {'added', id}
"""

FLUSH_TIMEOUT_S = 10.0  # how long a shutdown waits for the spool to reach Redis
_ERRORS = (redis.RedisError, OSError)


def read_password(cfg: RedisConfig) -> str | None:
    """The password from `redis.password` (the environment) or `redis.password_file`; a password
    inside the URL wins over both."""
    return read_secret(cfg.password, cfg.password_file, "redis.password_file")


def event_fields(event: ChangeEvent) -> list[str]:
    change = ["change_id", event.change_id] if event.change_id else []
    return [
        "event_id", event.event_id,
        "camera", event.camera,
        "seq", str(event.seq),
        "kind", event.kind,
        *change,
        "t_after", event.t_after,
        "text", event.text,
        "json", event.model_dump_json(),
    ]  # fmt: skip


class RedisSink:
    """`write_many(events)` from the daemon's loop; `start()` before, `close()` after.

    With `spool=None` events are sent synchronously, one script call each, with no durability:
    that path exists only so `monitor bench redis` can show what the spool costs."""

    def __init__(self, cfg: RedisConfig, spool: Spool | None, alerts=None, batch_size: int = 256):
        if not cfg.url:  # an unusable URL is refused by the settings (RedisConfig.url)
            raise ConfigError("redis.url: not set")
        self.cfg = cfg
        self.url = mask_url(cfg.url)
        self.spool = spool
        self.alerts = alerts
        self.batch_size = batch_size
        password = read_password(cfg)
        extra = {"password": password} if password and not parse_url(cfg.url).get("password") else {}
        self.client = redis.Redis.from_url(
            cfg.url,
            decode_responses=True,
            socket_connect_timeout=cfg.connect_timeout_s,
            socket_timeout=cfg.connect_timeout_s,
            retry=Retry(NoBackoff(), 0),  # retrying is the delivery thread's job (with backoff)
            **extra,
        )
        self._script = self.client.register_script(DELIVER_LUA)
        self.k_delivered = f"{cfg.prefix}:delivered"
        self.k_events = f"{cfg.prefix}:events"
        self.k_alerts = f"{cfg.prefix}:alerts"
        self.delivered = 0  # events added to Redis by this process
        self.duplicates = 0  # re-sent events the script recognised
        self.alerted = 0
        self.early = alerts.early if alerts is not None else frozenset()  # early rules' alerts say "settled"
        self._down_since: float | None = None
        self._closing = threading.Event()
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> dict[str, int]:
        """Probe Redis (one log line either way), start delivering; returns the last delivered
        seq per camera from `<prefix>:delivered` ({} when Redis cannot be reached now)."""
        delivered: dict[str, int] = {}
        pending = len(self.spool) if self.spool is not None else 0
        try:
            delivered = {k: int(v) for k, v in self.client.hgetall(self.k_delivered).items()}
            log.info("redis_connected", url=self.url, spooled=pending)
        except _ERRORS as exc:
            self._went_down(exc)
        if self.spool is not None:
            self._thread = threading.Thread(target=self._deliver_loop, name="redis-delivery", daemon=True)
            self._thread.start()
        return delivered

    def close(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Deliver what is spooled (up to `timeout`; one last try if Redis is down); whatever
        is left stays in the spool for the next start."""
        if self.spool is not None:
            self._closing.set()
            self.spool.wake()
            if self._thread is not None:
                self._thread.join(timeout)
                if self._thread.is_alive():
                    self._abort.set()
                    self._thread.join(2 * self.cfg.connect_timeout_s + 1)
            left = len(self.spool)
            self.spool.close()
            if left:
                log.warning(
                    "redis_undelivered", url=self.url, spooled=left, note="kept in the spool for the next start"
                )
        log.info(
            "redis_closed", url=self.url, delivered=self.delivered, duplicates=self.duplicates, alerts=self.alerted,
            dropped=self.spool.dropped if self.spool is not None else 0,
        )  # fmt: skip
        self.client.close()

    # -- producer side -------------------------------------------------------------------
    def write_many(self, events: list[ChangeEvent]) -> None:
        if not events:
            return
        items = [(e, alerts_for(self.alerts, e)) for e in events]
        if self.spool is None:
            self._send(items)
            return
        self.spool.append(items)  # a disk that refuses keeps them in memory (Spool._write_durably)

    def write(self, event: ChangeEvent) -> None:
        self.write_many([event])

    # -- delivery ------------------------------------------------------------------------
    def _send(self, items: list[tuple[ChangeEvent, list[str] | tuple[str, ...]]]) -> None:
        """One pipeline of script calls, in order; raises on any error (the caller re-sends)."""
        calls = []
        for event, alerts in items:
            keys = [self.k_delivered, self.k_events, self.k_alerts]
            if self.cfg.per_camera_streams:
                keys.append(f"{self.k_events}:{event.camera}")
            fields = event_fields(event)
            phased = [x for rule in alerts for x in (rule, "settled" if rule in self.early else "")]
            calls.append((keys, [event.camera, event.seq, self.cfg.maxlen, len(fields), *fields, *phased]))
        if len(calls) == 1:  # one round trip (EVALSHA, reloading the script if Redis lost it)
            results = [self._script(keys=calls[0][0], args=calls[0][1])]
        else:  # in order on one connection; the pipeline (re)loads the script first
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                self._script(keys=keys, args=args, client=pipe)
            results = pipe.execute()
        dups = 0
        for (_event, alerts), res in zip(items, results, strict=True):
            if res[0] == "added":
                self.delivered += 1
                self.alerted += len(alerts)
            else:
                dups += 1
        if dups:
            self.duplicates += dups
            log.info("redis_duplicates_skipped", count=dups, note="already delivered (re-send after a restart)")

    def _deliver_loop(self) -> None:
        assert self.spool is not None
        backoff, attempt = backoff_policy(cap=self.cfg.backoff_max_s, base=0.1), 0
        while not self._abort.is_set():
            batch: list[SpoolRecord] = self.spool.peek(self.batch_size, timeout=0.2)
            if not batch:
                if self._closing.is_set():
                    return
                continue
            try:
                self._send([(r.event, r.alerts) for r in batch])
            except _ERRORS as exc:
                self._went_down(exc)
                if self._closing.is_set():
                    return  # shutting down: the last try failed, the spool keeps the rest
                attempt += 1
                self._closing.wait(backoff_delay(backoff, attempt))  # close() wakes it
                continue
            if self._down_since is not None:
                log.info(
                    "redis_recovered", url=self.url, down_s=round(time.monotonic() - self._down_since, 1),
                    replaying=len(self.spool),
                )  # fmt: skip
                self._down_since = None
            attempt = 0
            self.spool.commit(batch[-1].n)

    def add_live(self, fields: list[str]) -> bool:
        """One entry straight to the alerts stream, outside the spool (early alerts: worth
        sending only now). False, without waiting, while the delivery thread finds Redis down."""
        if self._down_since is not None:
            return False
        try:
            self.client.xadd(self.k_alerts, dict(zip(fields[::2], fields[1::2], strict=True)), maxlen=self.cfg.maxlen)
        except _ERRORS:
            return False
        return True

    def _went_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "redis_unavailable", url=self.url, error=mask_secrets(f"{type(exc).__name__}: {exc}"),
                spooled=len(self.spool) if self.spool is not None else 0,
                note="events wait in the spool; retrying with backoff",
            )  # fmt: skip


def default_spool_dir(settings: MonitorSettings) -> Path:
    return settings.redis.spool_dir or settings.log.dir / "spool"
