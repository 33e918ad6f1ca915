"""The describe stage of the daemon's loop, between the camera queues and the orderer:
`LocalDescribing` describes here (the single-process `monitor run`); the gate role's
`monitor.cluster.gate_node.RemoteDescribing` hands the changes to describe workers over Redis.

Each gives its events, every camera's in seq order, to the orderer (and their frames to the
writer, for captures); the loop calls `take`, `handle`, `poll`, then writes what the orderer
releases and tells the stage (`written`)."""

from __future__ import annotations

import time
from typing import Protocol

from monitor.daemon.camera_health import HealthNotice
from monitor.daemon.queues import CameraQueues
from monitor.describe.base import Describer
from monitor.order.events import change_event, health_event
from monitor.order.orderer import EventOrderer
from monitor.order.time_order import TimeOrder
from monitor.records import ChangeEvent
from monitor.sinks.onset import NOT_LOGGED_BACK_IN_TIME
from monitor.sinks.writer import EventWriter


class DescribeStage(Protocol):
    time_order: TimeOrder  # set by the daemon at the start of the run
    undescribed: int  # pending(), as of the loop's last pass: what observers read from other threads
    fallbacks: int  # changes given the embedded sentence because no worker described them in time

    def start(self, last: dict[str, int]) -> dict[str, int]:
        """At the run's start, with each camera's last seq already written; returns the seqs to
        continue after (the gate role adds what is still in the candidates stream)."""
        ...

    def take(self, queues: CameraQueues) -> list:
        """The next items from the camera queues (candidates, health notices, end markers)."""
        ...

    def handle(self, items: list) -> None:
        """Candidates and health notices, in arrival order: each camera's seq follows them."""
        ...

    def poll(self) -> None:
        """Results that came back, and what waited too long for one (the gate role)."""
        ...

    def pending(self) -> int:
        """Changes handed over and not yet given to the orderer."""
        ...

    def written(self, events: list[ChangeEvent]) -> None: ...

    def set_cameras(self, cameras: list[str]) -> None:
        """A reload changed the cameras (the loop's thread)."""
        ...


class LocalDescribing:
    undescribed = 0
    fallbacks = 0

    def __init__(self, describer: Describer, orderer: EventOrderer, writer: EventWriter, metrics, batch_size: int):
        self.describer = describer
        self.orderer = orderer
        self.writer = writer
        self.metrics = metrics
        self.batch_size = batch_size
        self.time_order = TimeOrder({})

    def start(self, last: dict[str, int]) -> dict[str, int]:
        return last

    def take(self, queues: CameraQueues) -> list:
        """Up to batch_size items, taken round-robin across the cameras' queues. A model describer
        waits up to its max_wait_s for more changes (from any camera) to fill the batch."""
        size = self.batch_size
        batch = queues.take(size, timeout=0.2)
        deadline = time.monotonic() + getattr(self.describer, "max_wait_s", 0.0)
        while batch and len(batch) < size and (left := deadline - time.monotonic()) > 0:
            batch += queues.take(size - len(batch), timeout=left)
        return batch

    def handle(self, items: list) -> None:
        real = [c for c in items if not isinstance(c, HealthNotice)]
        with self.metrics.describe_seconds.time():
            descriptions = iter(self.describer.describe(real) if real else [])
        for item in items:  # in arrival order: a camera's seq follows what happened to it
            health = isinstance(item, HealthNotice)
            desc = None if health else next(descriptions)
            if not self.time_order.admit(item.camera_id, item.at if health else item.after.wall_time):
                if not health:
                    self.writer.unlogged(item, NOT_LOGGED_BACK_IN_TIME)
                continue
            if health:
                self.orderer.push(health_event(item, self.orderer.next_seq(item.camera_id)))
            else:
                event = change_event(item, self.orderer.next_seq(item.camera_id), desc, self.describer.name)
                self.writer.hold(event, item)
                self.orderer.push(event)

    def poll(self) -> None:
        return None

    def pending(self) -> int:
        return 0

    def written(self, events: list[ChangeEvent]) -> None:
        return None

    def set_cameras(self, cameras: list[str]) -> None:
        return None
