"""`monitor describe-worker`: one member of the consumer group `describers` on
`<prefix>:candidates`. Start as many as there are GPUs (or cores), on as many machines, and stop
them at will: Redis' consumer group hands each candidate to one of them.

Per batch: XREADGROUP (across every gate node and camera), describe (the VLM on the GPU, or the
embedded describer), then for each candidate, in one MULTI/EXEC: XADD the finished event to the
gate node's results stream and XACK the candidate, so a worker killed mid-batch leaves its
candidates pending, never half-done. Every `claim_every_s` it XAUTOCLAIMs candidates another
worker read but has not acknowledged for `cluster.claim_idle_ms` (set it above the p99 describe
time) and describes them. A gate may get the same result twice (a slow worker whose batch was
claimed meanwhile): it writes each camera's seq once. A malformed or foreign entry is
acknowledged, deleted and logged, once, and never stops the worker."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import redis
import structlog

from monitor.backoff import backoff_delay, backoff_policy
from monitor.cluster.affinity import CameraAffinity
from monitor.cluster.wire import WireError, decode_candidate, header, result_fields
from monitor.config import MonitorSettings, RedisConfig
from monitor.describe.base import Describer
from monitor.errors import ConfigError, mask_secrets, mask_url
from monitor.order.events import change_event
from monitor.records import ChangeCandidate
from monitor.sinks.redis_streams import read_password
from monitor.stream_group import BLOCK_MS, GroupConsumer, stream_entries

log = structlog.get_logger(__name__)

GROUP = "describers"
RESULTS_MAXLEN = 100_000
_ERRORS = (redis.RedisError, OSError)


def candidates_key(prefix: str) -> str:
    return f"{prefix}:candidates"


def results_key(prefix: str, node: str) -> str:
    return f"{prefix}:described:{node}"


def stream_client(cfg: RedisConfig) -> redis.Redis:
    """A client for the candidates and results streams (gate and worker): bytes, not text (the
    frames), and a socket timeout longer than a blocking read."""
    assert cfg.url
    return redis.Redis.from_url(
        cfg.url, password=read_password(cfg), decode_responses=False, socket_connect_timeout=cfg.connect_timeout_s,
        socket_timeout=cfg.connect_timeout_s + BLOCK_MS / 1000,
    )  # fmt: skip


class DescribeWorker(GroupConsumer):
    def __init__(
        self,
        client: redis.Redis,  # decode_responses=False: the frames are bytes
        describer: Describer,
        prefix: str = "monitor",
        name: str | None = None,
        claim_idle_ms: int = 60_000,
        batch_size: int = 8,
        url: str = "",
        affinity: bool = True,
    ):
        name = name or socket.gethostname() or "worker"
        super().__init__(client, candidates_key(prefix), GROUP, name, claim_idle_ms, batch_size)
        self.describer = describer
        self.affinity = (
            CameraAffinity(client, prefix, self.key, GROUP, name, claim_idle_ms, batch_size) if affinity else None
        )
        self.name = name
        self.url = mask_url(url)
        self.malformed = 0
        self.claimed = 0
        self._ready = False
        self.alive: Callable[[], None] = lambda: None  # at every read and batch (systemd's watchdog)

    @property
    def described(self) -> int:
        return self.handled

    def ensure_group(self) -> None:
        super().ensure_group()
        if not self._ready:
            self._ready = True
            log.info("describe_worker_ready", worker=self.name, url=self.url, describer=self.describer.name)

    def claim_idle(self, limit: int | None = None) -> int:
        taken = super().claim_idle(limit)
        if taken:
            self.claimed += taken
            log.info("candidates_claimed", worker=self.name, count=taken, note="from a worker that went quiet")
        return taken

    def read_new(self, limit: int | None = None, block_ms: int = BLOCK_MS) -> None:
        """With affinity: what other workers handed over first, then new entries, those of other
        workers' cameras handed to them when the read was a full one (the stream holds more)."""
        self.alive()
        room = self._room(limit)
        if self.affinity is None or room <= 0:
            return super().read_new(limit, block_ms)
        self.affinity.beat()
        batch = stream_entries(self.client.xreadgroup(GROUP, self.consumer, {self.key: "0"}, count=room))
        for _ in range(3):  # top the batch up
            want = room - len(batch)
            if want <= 0:
                break
            reply = self.client.xreadgroup(GROUP, self.consumer, {self.key: ">"}, count=want,
                                           block=None if batch else block_ms)  # fmt: skip
            new = stream_entries(reply)
            batch += self.affinity.keep(new) if len(new) == want else new
            if len(new) < want:
                break
        self._handle(batch)

    def handle(self, entries: list[tuple[bytes, dict]]) -> int:
        """Describe the change candidates among `entries`, write their results, ack them all."""
        todo: list[tuple[str, str, int, ChangeCandidate]] = []
        skip: list[bytes] = []
        bad: list[bytes] = []
        for entry_id, fields in entries:
            if not fields:  # deleted by its gate meanwhile (it wrote it already): nothing to do
                skip.append(entry_id)
                continue
            try:
                _node, reply, _camera, seq, kind = header(fields)
                if kind != "change":  # a health event: the gate writes it itself
                    skip.append(entry_id)
                    continue
                todo.append((entry_id.decode(), reply, seq, decode_candidate(fields)))
            except WireError as exc:
                self.malformed += 1
                log.warning("candidate_malformed", worker=self.name, entry=entry_id.decode(), problem=str(exc))
                bad.append(entry_id)
        if skip or bad:
            self.client.xack(self.key, GROUP, *skip, *bad)
        if bad:  # nobody's candidate: it would count against every gate's bound
            self.client.xdel(self.key, *bad)
        if not todo:
            return 0
        descriptions = self.describer.describe([cand for *_, cand in todo])
        self.alive()
        pipe = self.client.pipeline(transaction=True)
        for (entry_id, reply, seq, cand), desc in zip(todo, descriptions, strict=True):
            event = change_event(cand, seq, desc, self.describer.name)
            pipe.xadd(reply, result_fields(event, entry_id, self.name), maxlen=RESULTS_MAXLEN)
            pipe.xack(self.key, GROUP, entry_id)
        pipe.execute()
        return len(todo)

    def serve(self, should_stop: Callable[[], bool] = lambda: False, count: int | None = None) -> int:
        """`run` until `should_stop()` or `count` described, waiting Redis outages out with
        backoff (one line when it goes, one when it is back); after one, the group is ensured
        and the worker's own pending entries re-read, as at a start."""
        backoff, attempt, down_since = backoff_policy(cap=30.0, base=0.1), 0, None
        while not should_stop() and (count is None or self.described < count):
            try:
                if down_since is not None:
                    self.client.ping()
                    log.info("redis_recovered", worker=self.name, down_s=round(time.monotonic() - down_since, 1))
                    down_since, attempt = None, 0
                self.run(count, should_stop)
            except _ERRORS as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("redis_unavailable", worker=self.name, url=self.url,
                                error=mask_secrets(f"{type(exc).__name__}: {exc}"))  # fmt: skip
                attempt += 1
                end = time.monotonic() + backoff_delay(backoff, attempt)
                while time.monotonic() < end and not should_stop():
                    self.alive()  # waiting Redis out is not hanging
                    time.sleep(0.1)
        if self.affinity is not None:
            try:
                self.affinity.leave()
            except _ERRORS:
                pass  # its key expires by itself
        return self.described


def watchdog_pings(notifier, worker: DescribeWorker) -> Callable[[], None]:
    """WATCHDOG=1 (and a STATUS line) at most every half WATCHDOG_USEC, from the worker's loop:
    a worker stuck in a batch (a hung GPU) stops pinging and systemd restarts it."""
    every = (notifier.watchdog_interval or 0) / 2
    last = [0.0]

    def ping() -> None:
        now = time.monotonic()
        if every and now - last[0] >= every:
            last[0] = now
            notifier.watchdog()
            notifier.status(f"described {worker.described}, claimed {worker.claimed}, malformed {worker.malformed}")

    return ping


def cluster_settings(args, command: str) -> MonitorSettings:
    """The settings of --config with --redis over redis.url (and systemd's credentials); a
    ConfigError when there is no Redis to talk to."""
    from monitor.config import load_settings
    from monitor.config.secrets import with_systemd_credentials

    overrides = {"redis": {"url": args.redis}} if args.redis else {}
    settings = with_systemd_credentials(load_settings(args.config, **overrides))
    if not settings.redis.url:
        raise ConfigError(f"{command}: no Redis: give --redis URL, redis.url in --config or $MONITOR_REDIS__URL")
    return settings


def run_worker(args) -> int:
    """`monitor describe-worker`: until SIGTERM / Ctrl-C (exit 0) or `--count` changes."""
    import signal

    from monitor.daemon.notify import Notifier
    from monitor.describe.factory import build_describer

    settings = cluster_settings(args, "describe-worker")
    url = settings.redis.url
    if args.threads:  # before the describer exists: torch's pools are sized on first use
        import cv2

        cv2.setNumThreads(args.threads)
        if settings.describer.kind == "vlm":
            import torch

            torch.set_num_threads(args.threads)
            torch.set_num_interop_threads(args.threads)
    stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.append(signum))
    describer = build_describer(settings.describer)
    client = stream_client(settings.redis)
    worker = DescribeWorker(
        client, describer, settings.redis.prefix, args.name, settings.cluster.claim_idle_ms,
        settings.describer.batch_size, url, settings.cluster.affinity,
    )  # fmt: skip
    notifier = Notifier.from_env()
    notifier.ready(f"describing as {worker.name}")
    worker.alive = watchdog_pings(notifier, worker)
    worker.serve(should_stop=lambda: bool(stop), count=args.count)
    notifier.stopping("stopping")
    log.info("describe_worker_stopped", worker=worker.name, described=worker.described, malformed=worker.malformed,
             claimed=worker.claimed, handed_over=worker.affinity.handed_over if worker.affinity else 0,
             frame_cache_hit_rate=getattr(describer, "frame_cache_hit_rate", None))  # fmt: skip
    return 0
