"""One consumer of a Redis consumer group, the loop `monitor alerts` and `monitor describe-worker`
share: `run()` creates the group on first use (MKSTREAM, at id 0, so entries already in the
stream are delivered too), re-reads this consumer's own pending entries (a restart under the same
name resumes), every `claim_every_s` XAUTOCLAIMs entries another consumer read and has not
acknowledged for `claim_idle_ms` (it died between reading and acknowledging), and reads new
ones. A subclass's `handle(entries)` does the work and acknowledges; delivery is at least once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

BLOCK_MS = 1000  # longest blocking read: how soon a stop request is noticed


def stream_entries(reply: Any) -> list[tuple[Any, Any]]:
    """Entries of an XREAD/XREADGROUP reply for one stream (RESP2 list or RESP3 dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        out: list = []
        for value in reply.values():
            out.extend(value[0] if value and isinstance(value[0], list) else value)
        return out
    return [entry for _key, entries in reply for entry in entries]


class GroupConsumer:
    def __init__(self, client: redis.Redis, key: str, group: str, consumer: str, claim_idle_ms: int, page: int):
        self.client = client
        self.key = key
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = max(int(claim_idle_ms), 1)
        self.claim_every_s = min(max(self.claim_idle_ms / 2000, 0.05), 5.0)
        self.page = page
        self.handled = 0

    def handle(self, entries: list) -> int:
        """Do the entries' work and acknowledge them; returns how many count towards `run`'s count."""
        raise NotImplementedError

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _room(self, limit: int | None) -> int:
        return self.page if limit is None else max(min(self.page, limit - self.handled), 0)

    def _handle(self, entries: list) -> None:
        self.handled += self.handle(entries)

    def own_pending(self, limit: int | None = None) -> None:
        """Entries this consumer name read earlier but never acknowledged."""
        while (room := self._room(limit)) > 0:
            entries = stream_entries(self.client.xreadgroup(self.group, self.consumer, {self.key: "0"}, count=room))
            if not entries:
                return
            self._handle(entries)

    def claim_idle(self, limit: int | None = None) -> int:
        """XAUTOCLAIM every entry pending longer than claim_idle_ms, and handle it; how many."""
        start, claimed = "0-0", 0
        while (room := self._room(limit)) > 0:
            reply = self.client.xautoclaim(
                self.key, self.group, self.consumer, self.claim_idle_ms, start_id=start, count=room
            )
            start, entries = reply[0], [(i, f) for i, f in reply[1] if i is not None]
            claimed += len(entries)
            self._handle(entries)
            if start in ("0-0", "0", b"0-0", b"0"):
                return claimed
        return claimed

    def read_new(self, limit: int | None = None, block_ms: int = BLOCK_MS) -> None:
        room = self._room(limit)
        if room > 0:
            reply = self.client.xreadgroup(self.group, self.consumer, {self.key: ">"}, count=room, block=block_ms)
            self._handle(stream_entries(reply))

    def run(self, count: int | None = None, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Handle entries until `count` are done or `should_stop()`; returns how many."""
        self.ensure_group()
        self.own_pending(count)
        next_claim = 0.0
        block_ms = int(min(BLOCK_MS, self.claim_every_s * 1000))
        while not should_stop() and (count is None or self.handled < count):
            now = time.monotonic()
            if now >= next_claim:
                self.claim_idle(count)
                next_claim = now + self.claim_every_s
                continue
            try:
                self.read_new(count, block_ms=max(block_ms, 1))
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.ensure_group()  # the stream or group was deleted (a Redis without persistence restarted)
        return self.handled
