"""The gate role's describe stage (`monitor run --role gate`): changes go to describe workers
through `<prefix>:candidates`, and come back, described, on this node's results stream
`<prefix>:described:<node>`; each camera's events reach the orderer in seq order, and from
there the log files, captures, Redis and MQTT exactly as in the single-process daemon.

- **seq** is given here, when a change goes into the stream, so changes the local queue
  coalesced never leave a gap; a restarted gate continues after the larger of what it wrote
  and what it had put in the stream (`start`).
- **Backpressure**: while the stream holds `cluster.max_undescribed` candidates or more, no
  more are taken from the camera queues, which coalesce their oldest changes (and count it).
- **Nothing stalls behind a dead GPU**: a change nobody described within
  `cluster.describe_timeout_s` gets the embedded describer's sentence here, with describer
  `embedded-fallback`; a late result for it is dropped. So is any second result of one seq.
- **Nothing lost**: a candidate leaves the stream (XDEL) only once its event is written, so
  a gate that dies meanwhile finds it again at its next start (`start`), and writes it then.
- **Its cameras** are listed in `<prefix>:cameras` (field: the node), at the start and at
  every reload: the workers deal them out among themselves (`cluster.affinity`).
- Health events take their seq here too; they go into the stream (as a record) and straight
  to the orderer behind the camera's earlier changes.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass

import redis
import structlog

from monitor.cluster.affinity import cameras_key
from monitor.cluster.wire import (
    WireError,
    decode_candidate,
    decode_health,
    decode_result,
    encode_candidate,
    encode_health,
    header,
)
from monitor.cluster.worker import candidates_key, results_key, stream_client
from monitor.config import MonitorSettings
from monitor.daemon.camera_health import HealthNotice
from monitor.daemon.queues import CameraQueues
from monitor.describe.base import Describer
from monitor.errors import ConfigError, mask_secrets
from monitor.order.events import change_event, health_event
from monitor.order.orderer import EventOrderer
from monitor.order.time_order import TimeOrder
from monitor.records import ChangeCandidate, ChangeEvent
from monitor.sinks.onset import NOT_LOGGED_BACK_IN_TIME
from monitor.sinks.writer import EventWriter

log = structlog.get_logger(__name__)

FALLBACK = "embedded-fallback"
_ERRORS = (redis.RedisError, OSError)
ROOM_EVERY_S = 0.5  # how often the stream's length is asked


@dataclass
class _Waiting:
    """A seq handed out and not yet given to the orderer."""

    seq: int
    entry_id: str | None  # in the candidates stream (None: not in it yet, Redis was down)
    cand: ChangeCandidate | None  # None after a restart: read back from the stream when needed
    fields: dict | None  # the entry still to add (Redis was down)
    deadline: float  # monotonic time of the fallback
    event: ChangeEvent | None = None
    result_id: str | None = None


class RemoteDescribing:
    def __init__(self, settings: MonitorSettings, fallback: Describer, orderer: EventOrderer, writer: EventWriter):
        if not settings.redis.url:
            raise ConfigError("run --role gate needs redis.url (or --redis): the candidates stream lives there")
        self.cfg = settings.cluster
        self.orderer, self.writer, self.fallback = orderer, writer, fallback
        self.node = self.cfg.node or socket.gethostname() or "gate"
        prefix = settings.redis.prefix
        self.k_candidates, self.k_results = candidates_key(prefix), results_key(prefix, self.node)
        self.maxlen = settings.redis.maxlen
        self.client = stream_client(settings.redis)
        self.time_order = TimeOrder({})
        self._waiting: dict[str, dict[int, _Waiting]] = {}  # camera -> seq -> waiting
        self._done: dict[str, tuple[str | None, str | None]] = {}  # event_id -> (candidate, result) to delete
        self._results_from = b"0-0"
        self._room, self._room_at = self.cfg.max_undescribed, 0.0
        self._down = False
        self.fallbacks = 0
        self.undescribed = 0  # pending() after the loop's last pass (observers read it)
        self.k_cameras = cameras_key(prefix)
        self._listed: set[str] = {cam.id for cam in settings.cameras}  # in <prefix>:cameras

    # -- start: what a previous run of this node left in the stream -------------------------
    def start(self, last: dict[str, int]) -> dict[str, int]:
        out = dict(last)
        try:
            self._list_cameras()
            stale = []
            for entry_id, fields in self._scan(self.k_candidates):
                try:
                    node, _reply, camera, seq, kind = header(fields)
                except WireError:
                    continue  # a worker acknowledges it and says so
                if node != self.node:
                    continue
                if seq <= last.get(camera, 0):
                    stale.append(entry_id)  # written before the restart, not yet deleted
                    continue
                event = decode_health(fields) if kind != "change" else None
                self._add(camera, _Waiting(seq, entry_id.decode(), None, None, self._deadline(), event))
                out[camera] = max(out.get(camera, 0), seq)
            if stale:
                self.client.xdel(self.k_candidates, *stale)
            if self._waiting:
                count = sum(map(len, self._waiting.values()))
                log.info("gate_resumed", node=self.node, undescribed=count, note="from before the restart")
        except _ERRORS as exc:
            self._went_down(exc)
        return out

    def _list_cameras(self) -> None:
        """This node's cameras in <prefix>:cameras: the workers deal them out (camera affinity)."""
        self.client.hset(self.k_cameras, self.node, json.dumps(sorted(self._listed)))

    def set_cameras(self, cameras: list[str]) -> None:
        """A reload changed the cameras: the list in <prefix>:cameras follows (a removed one no
        longer counts when the workers deal the cameras out)."""
        self._listed = set(cameras)
        try:
            self._list_cameras()
        except _ERRORS as exc:
            self._went_down(exc)

    def _scan(self, key: str):
        start = "-"
        while True:
            page = self.client.xrange(key, start, "+", count=200)
            yield from page
            if len(page) < 200:
                return
            start = "(" + page[-1][0].decode()

    def _deadline(self) -> float:
        return time.monotonic() + self.cfg.describe_timeout_s

    def _add(self, camera: str, waiting: _Waiting) -> None:
        self._waiting.setdefault(camera, {})[waiting.seq] = waiting

    # -- the loop's side -------------------------------------------------------------------
    def take(self, queues: CameraQueues) -> list:
        room = self._free()
        if room <= 0:  # backpressure: the camera queues coalesce meanwhile
            time.sleep(0.05)
            return []
        return queues.take(min(room, 64), timeout=0.05)

    def _free(self) -> int:
        now = time.monotonic()
        if now - self._room_at >= ROOM_EVERY_S:
            self._room_at = now
            try:
                self._room = self.cfg.max_undescribed - self.client.xlen(self.k_candidates)
            except _ERRORS as exc:
                self._went_down(exc)
                self._room = self.cfg.max_undescribed - self.pending()  # the local ones still count
        return self._room

    def handle(self, items: list) -> None:
        for item in items:
            health = isinstance(item, HealthNotice)
            if not self.time_order.admit(item.camera_id, item.at if health else item.after.wall_time):
                if not health:
                    self.writer.unlogged(item, NOT_LOGGED_BACK_IN_TIME)
                continue
            seq = self.orderer.next_seq(item.camera_id)
            if item.camera_id not in self._listed:  # a camera a reload added
                self._listed.add(item.camera_id)
                try:
                    self._list_cameras()
                except _ERRORS as exc:
                    self._went_down(exc)
            if health:
                event = health_event(item, seq)
                fields = encode_health(event, self.node, self.k_results)
                waiting = _Waiting(seq, None, None, fields, 0.0, event)
            else:
                fields = encode_candidate(item, seq, self.node, self.k_results, self.cfg.jpeg_quality)
                waiting = _Waiting(seq, None, item, fields, self._deadline())
            self._add(item.camera_id, waiting)
            self._room -= 1
            self._send(waiting)

    def _send(self, waiting: _Waiting) -> None:
        try:
            entry = self.client.xadd(self.k_candidates, waiting.fields, maxlen=self.maxlen)
        except _ERRORS as exc:
            self._went_down(exc)
            return
        waiting.entry_id, waiting.fields = entry.decode(), None
        self._back()

    def poll(self) -> None:
        self._read_results()
        now = time.monotonic()
        for by_seq in self._waiting.values():
            for waiting in by_seq.values():
                if waiting.fields is not None and not self._down:
                    self._send(waiting)
                if waiting.event is None and now >= waiting.deadline:
                    self._fall_back(waiting)
        self._release()
        self.undescribed = self.pending()

    def _read_results(self) -> None:
        if not self._waiting:
            return
        try:
            reply = self.client.xread({self.k_results: self._results_from}, count=500, block=50)
        except _ERRORS as exc:
            self._went_down(exc)
            return
        self._back()
        extra = []
        for _, entries in reply or []:
            for result_id, fields in entries:
                self._results_from = result_id
                try:
                    candidate, event = decode_result(fields)
                except WireError as exc:
                    log.warning("result_malformed", entry=result_id.decode(), problem=str(exc))
                    extra.append(result_id)
                    continue
                waiting = self._waiting.get(event.camera, {}).get(event.seq)
                if waiting is None or waiting.event is not None or waiting.entry_id != candidate:
                    extra.append(result_id)  # a second result, or one that came after the fallback
                    continue
                waiting.event, waiting.result_id = event, result_id.decode()
        if extra:
            self._delete(self.k_results, extra)

    def _fall_back(self, waiting: _Waiting) -> None:
        cand = waiting.cand or self._read_candidate(waiting.entry_id)
        if cand is None:
            return  # the stream has it, Redis is down: wait for Redis
        desc = self.fallback.describe([cand])[0]
        waiting.event = change_event(cand, waiting.seq, desc, FALLBACK)
        waiting.cand = cand
        self.fallbacks += 1
        if self.fallbacks == 1 or self.fallbacks % 100 == 0:
            log.warning(
                "describe_fallback", camera=cand.camera_id, seq=waiting.seq, total=self.fallbacks,
                note=f"no worker described it within {self.cfg.describe_timeout_s:g} s: the embedded sentence",
            )  # fmt: skip

    def _read_candidate(self, entry_id: str | None) -> ChangeCandidate | None:
        if entry_id is None:
            return None
        try:
            found = self.client.xrange(self.k_candidates, entry_id, entry_id)
        except _ERRORS as exc:
            self._went_down(exc)
            return None
        try:
            return decode_candidate(found[0][1]) if found else None
        except WireError as exc:
            log.error("candidate_unreadable", entry=entry_id, problem=str(exc))
            return None

    def _release(self) -> None:
        """Each camera's described prefix, in seq order, to the orderer (and its frames to the writer)."""
        for by_seq in self._waiting.values():
            for seq in sorted(by_seq):
                waiting = by_seq[seq]
                if waiting.event is None:
                    break
                del by_seq[seq]
                event = waiting.event
                if event.kind == "change":
                    cand = waiting.cand or (self._read_candidate(waiting.entry_id) if self.writer.captures else None)
                    if cand is not None:
                        self.writer.hold(event, cand)
                self._done[event.event_id] = (waiting.entry_id, waiting.result_id)
                self.orderer.push(event)
        self._waiting = {c: s for c, s in self._waiting.items() if s}

    def pending(self) -> int:
        return sum(map(len, self._waiting.values()))

    def written(self, events: list[ChangeEvent]) -> None:
        """Written: their candidates and results leave the streams."""
        done = [self._done.pop(e.event_id, (None, None)) for e in events]
        candidates = [c for c, _ in done if c]
        results = [r for _, r in done if r]
        if candidates:
            self._delete(self.k_candidates, candidates)
        if results:
            self._delete(self.k_results, results)

    def _delete(self, key: str, ids: list) -> None:
        try:
            self.client.xdel(key, *ids)
        except _ERRORS as exc:  # kept: the next start deletes what was written already
            self._went_down(exc)

    def _went_down(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            log.warning("gate_redis_unavailable", node=self.node, error=mask_secrets(f"{type(exc).__name__}: {exc}"),
                        note="changes wait here; the embedded describer after describe_timeout_s")  # fmt: skip

    def _back(self) -> None:
        if self._down:
            self._down = False
            log.info("gate_redis_recovered", node=self.node, undescribed=self.pending())
