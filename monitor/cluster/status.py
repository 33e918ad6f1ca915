"""`monitor cluster-status`: what a scaled-out site looks like from Redis, for its operator: the
candidates waiting and in hand, each describe worker (alive, what it holds, how long it has been
quiet, how many cameras it has), each gate node (its cameras, the results it has not written).
Read-only: XINFO, XPENDING, XLEN, SMEMBERS, HGETALL, EXISTS."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import redis

from monitor.cluster.affinity import as_text, camera_key, cameras_key, dealt, describers_key, listed_cameras, worker_key
from monitor.cluster.worker import GROUP, candidates_key, cluster_settings, results_key, stream_client
from monitor.errors import MonitorError, mask_secrets, mask_url


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    name: str
    alive: bool  # its key has not expired (it read within cluster.claim_idle_ms)
    pending: int  # candidates it read (or was handed) and has not acknowledged
    idle_s: float | None  # since its last read (None: it never read)
    cameras: int  # dealt to it (camera affinity)


@dataclass(frozen=True, slots=True)
class GateStatus:
    node: str
    cameras: int
    results_waiting: int  # described, not yet written by the node (its results stream)


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    candidates: int  # entries in <prefix>:candidates (written ones are deleted)
    in_hand: int  # read by a worker, not acknowledged
    workers: tuple[WorkerStatus, ...]
    gates: tuple[GateStatus, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def cluster_status(client: redis.Redis, prefix: str) -> ClusterStatus:
    key = candidates_key(prefix)
    consumers: dict[str, dict] = {}
    try:
        consumers = {as_text(c["name"]): c for c in client.xinfo_consumers(key, GROUP)}
    except redis.ResponseError:  # no stream or no group yet: no worker ever started
        pass
    in_hand = sum(int(c["pending"]) for c in consumers.values())
    names = sorted({*consumers, *(as_text(m) for m in client.smembers(describers_key(prefix)))})
    alive = {n: bool(client.exists(worker_key(prefix, n))) for n in names}
    listed = listed_cameras(client.hgetall(cameras_key(prefix)))
    cameras = [camera_key(node, c) for node, ids in listed.items() for c in ids]
    owners = dealt(cameras, [n for n in names if alive[n]])
    workers = tuple(
        WorkerStatus(
            n,
            alive[n],
            int(consumers.get(n, {}).get("pending", 0)),
            round(int(consumers[n]["idle"]) / 1000, 1) if n in consumers else None,
            sum(1 for w in owners.values() if w == n),
        )  # fmt: skip
        for n in names
    )
    gates = tuple(
        GateStatus(node, len(ids), client.xlen(results_key(prefix, node))) for node, ids in sorted(listed.items())
    )
    return ClusterStatus(client.xlen(key), in_hand, workers, gates)


def print_status(status: ClusterStatus) -> None:
    print(f"candidates: {status.candidates} in the stream, {status.in_hand} in a worker's hand")
    print(f"{'worker':<24} {'alive':<5} {'pending':>7} {'idle s':>8} {'cameras':>7}")
    for w in status.workers:
        idle = "-" if w.idle_s is None else f"{w.idle_s:g}"
        print(f"{w.name:<24} {'yes' if w.alive else 'no':<5} {w.pending:>7} {idle:>8} {w.cameras:>7}")
    if not status.workers:
        print("(no describe worker has joined the group)")
    print(f"{'gate node':<24} {'cameras':>7} {'results waiting':>15}")
    for g in status.gates:
        print(f"{g.node:<24} {g.cameras:>7} {g.results_waiting:>15}")
    if not status.gates:
        print("(no gate node has listed its cameras)")


def run_status(args) -> int:
    """`monitor cluster-status [--redis URL] [--config FILE] [--json]`: exit 1 when Redis cannot be read."""
    settings = cluster_settings(args, "cluster-status")
    client = stream_client(settings.redis)
    try:
        status = cluster_status(client, settings.redis.prefix)
    except (redis.RedisError, OSError) as exc:
        why = mask_secrets(f"{type(exc).__name__}: {exc}")
        raise MonitorError(f"cluster-status: Redis at {mask_url(settings.redis.url)}: {why}") from None
    finally:
        client.close()
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        print_status(status)
    return 0
