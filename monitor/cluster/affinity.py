"""Camera affinity for describe workers: a camera's changes go to one worker while it lives, so
that worker's frame cache holds the camera's frames (one change's "after" frame is the next
one's "before": a worker that saw the previous change encodes one frame, not two).

A consumer group hands each entry to whichever worker asks, so affinity is added on top of it,
with nothing but the group's own commands, one key per worker and one hash of cameras:

- **Who is alive**: each worker keeps `<prefix>:describer:<name>` set with a time to live of
  `cluster.claim_idle_ms` (renewed at every read) and its name in the set `<prefix>:describers`.
  Redis expires the key of a worker that died, by its own clock.
- **Whose camera**: every gate node lists its cameras in the hash `<prefix>:cameras` (field: the
  node); the cameras of all nodes, sorted, are dealt to the live workers, sorted, in turn, so
  each worker has as many cameras as the next, give or take one, and every worker computes the
  same owners without asking anyone. (When a worker comes or goes most cameras move: that costs
  each camera one frame encoded twice, and an even share is worth more.) A camera no gate
  listed goes by rendezvous hashing (the highest crc32 of worker and camera).
- **Handing over**: only under load (the read filled a whole batch: the stream holds more), a
  worker XCLAIMs an entry of another worker's camera to that worker. The entry stays pending in
  the group throughout, so nothing is lost: the owner reads its own pending entries first at its
  next read, and if it died meanwhile, XAUTOCLAIM takes them after claim_idle_ms like any other.
  An owner that already holds two batches gets no more (the reader describes them itself), so an
  uneven split of cameras never idles a worker. With little load nothing is handed over: a
  change waits for nobody's batch.
"""

from __future__ import annotations

import json
import time
import zlib

import redis

from monitor.cluster.wire import WireError, header

HOLD_BATCHES = 2  # an owner holding this many batches already gets no more


def describers_key(prefix: str) -> str:
    return f"{prefix}:describers"


def cameras_key(prefix: str) -> str:
    return f"{prefix}:cameras"


def camera_key(node: str, camera: str) -> str:
    return f"{node}\0{camera}"


def worker_key(prefix: str, name: str) -> str:
    """A live worker's key (its time to live: cluster.claim_idle_ms)."""
    return f"{prefix}:describer:{name}"


def listed_cameras(raw: dict) -> dict[str, list[str]]:
    """node -> camera ids, from HGETALL <prefix>:cameras (a field that is no gate's list is skipped)."""
    out = {}
    for node, ids in raw.items():
        try:
            out[as_text(node)] = [str(c) for c in json.loads(ids)]
        except (ValueError, TypeError):
            continue
    return out


def dealt(cameras: list[str], workers: list[str]) -> dict[str, str]:
    """Each camera key's worker: the cameras, sorted, dealt to the workers, sorted, in turn."""
    workers = sorted(workers)
    return {cam: workers[i % len(workers)] for i, cam in enumerate(sorted(set(cameras)))} if workers else {}


def owner_of(key: str, workers: list[str]) -> str:
    """Rendezvous hashing: the live worker with the highest crc32 of (worker, camera key)."""
    return max(workers, key=lambda w: (zlib.crc32(f"{w}\0{key}".encode()), w))


class CameraAffinity:
    def __init__(self, client: redis.Redis, prefix: str, key: str, group: str, name: str, ttl_ms: int, page: int):
        self.client, self.key, self.group, self.name = client, key, group, name
        self.prefix = prefix
        self.k_set, self.k_cameras = describers_key(prefix), cameras_key(prefix)
        self.k_self = worker_key(prefix, name)
        self.ttl_ms, self.page = max(int(ttl_ms), 1000), page
        self.every_s = min(self.ttl_ms / 4000, 5.0)  # how long a view of the live workers is kept
        self._live: list[str] = [name]
        self._owners: dict[str, str] = {}  # camera key -> worker, dealt
        self._live_at = 0.0
        self.handed_over = 0

    def beat(self, look: bool = False) -> None:
        """This worker is alive for another ttl_ms; every every_s (or now: `look`), who else is
        (the set pruned of the workers whose key expired)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.k_self, b"1", px=self.ttl_ms)
        pipe.sadd(self.k_set, self.name)
        now = time.monotonic()
        if not look and now - self._live_at < self.every_s:
            pipe.execute()
            return
        pipe.smembers(self.k_set)
        pipe.hgetall(self.k_cameras)
        *_, members, listed = pipe.execute()
        members = sorted(as_text(m) for m in members)
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            pipe.exists(worker_key(self.prefix, member))
        found = dict(zip(members, pipe.execute(), strict=True))
        gone = [m for m, alive in found.items() if not alive]
        if gone:  # died: its key expired
            self.client.srem(self.k_set, *gone)
        self._live = sorted({self.name, *(m for m, alive in found.items() if alive)})
        cameras = [camera_key(node, c) for node, ids in listed_cameras(listed).items() for c in ids]
        self._owners = dealt(cameras, self._live)
        self._live_at = now

    @property
    def live(self) -> list[str]:
        return list(self._live)

    def owner(self, node: str, camera: str) -> str:
        key = camera_key(node, camera)
        return self._owners.get(key) or owner_of(key, self._live)

    def keep(self, entries: list) -> list:
        """The entries this worker describes; the others are XCLAIMed to their camera's worker."""
        if len(self._live) < 2:
            return entries
        owners: dict[bytes, str] = {}
        for entry_id, fields in entries:
            try:
                node, _reply, camera, _seq, kind = header(fields) if fields else ("", "", "", 0, "")
            except WireError:
                continue  # this worker acknowledges it and says so
            if kind == "change":
                owner = self.owner(node, camera)
                if owner != self.name:
                    owners[entry_id] = owner
        if not owners:
            return entries
        held = self._pending_by_consumer()
        given: dict[str, list[bytes]] = {}
        for entry_id, owner in owners.items():
            if held.get(owner, 0) + len(given.get(owner, ())) < HOLD_BATCHES * self.page:
                given.setdefault(owner, []).append(entry_id)
        if not given:
            return entries
        pipe = self.client.pipeline(transaction=False)
        for owner, ids in given.items():
            pipe.xclaim(self.key, self.group, owner, 0, ids, justid=True)
        pipe.execute()
        moved = {i for ids in given.values() for i in ids}
        self.handed_over += len(moved)
        return [(i, f) for i, f in entries if i not in moved]

    def _pending_by_consumer(self) -> dict[str, int]:
        summary = self.client.xpending(self.key, self.group)
        out = {}
        for c in summary.get("consumers") or []:
            out[as_text(c["name"])] = int(c["pending"])
        return out

    def leave(self) -> None:
        """A clean stop: this worker's cameras move at once, not after its key expires."""
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.k_self)
        pipe.srem(self.k_set, self.name)
        pipe.execute()


def as_text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
