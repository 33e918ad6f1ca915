"""The tests' real `redis-server`: monitor.bench.local_redis's (free loopback port, no persistence;
start, stop, kill and restart on the same port to simulate outages)."""

from monitor.bench.local_redis import LocalRedisServer as RedisServer

__all__ = ["RedisServer"]
