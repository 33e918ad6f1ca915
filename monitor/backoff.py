"""The one retry policy of everything that reconnects (a network camera, the Redis sink):
redis-py's `EqualJitterBackoff`. Failure n waits `min(cap, base * 2**n)` seconds times a random
factor in [0.5, 1], so cameras behind one switch, or daemons behind one Redis, do not retry in
lock-step. The sleeping (and, for cameras, the probing) is each caller's own."""

from __future__ import annotations

from redis.backoff import EqualJitterBackoff

MAX_DOUBLINGS = 30  # 2**n past this only overflows a float: every cap is reached long before


def backoff_policy(cap: float, base: float) -> EqualJitterBackoff:
    return EqualJitterBackoff(cap=cap, base=base)


def backoff_delay(policy: EqualJitterBackoff, failures: int) -> float:
    """Seconds to wait after `failures` failed attempts in a row (0: the first retry)."""
    return policy.compute(min(failures, MAX_DOUBLINGS))
