"""Time order: per-camera sequence numbers and a bounded window that merges cameras by time.

Within a camera events are never reordered (the gate emits them in time order); across cameras
an event waits up to `window_s` so that a slightly later-described event of another camera with
an earlier `t_after` can be written first.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable

from monitor.records import ChangeEvent


class EventOrderer:
    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self.clock = clock
        self._next_seq: dict[str, int] = {}
        self._last_t: dict[str, str] = {}
        self._heap: list[tuple[str, int, float, ChangeEvent]] = []  # (t_after, tie, arrived, event)
        self._tie = itertools.count()

    def next_seq(self, camera: str) -> int:
        """Reserve the camera's next sequence number (+1 per event, from 1)."""
        seq = self._next_seq.get(camera, 0) + 1
        self._next_seq[camera] = seq
        return seq

    def set_start(self, camera: str, last_seq: int) -> None:
        """Continue numbering after `last_seq` (a restarted daemon)."""
        self._next_seq[camera] = max(self._next_seq.get(camera, 0), last_seq)

    def push(self, event: ChangeEvent) -> None:
        last = self._last_t.get(event.camera)
        if last is not None and event.t_after < last:
            # A camera's own events arrive in time order; keep it that way even if clocks step.
            event = event.model_copy(update={"t_after": last})
        self._last_t[event.camera] = event.t_after
        heapq.heappush(self._heap, (event.t_after, next(self._tie), self.clock(), event))

    def pop_ready(self) -> list[ChangeEvent]:
        """Events that have waited out the window, plus any earlier-timed ones, in time order."""
        if not self._heap:
            return []
        now = self.clock()
        due = max((t for t, _, arrived, _ in self._heap if now - arrived >= self.window_s), default=None)
        out = []
        while self._heap and due is not None and self._heap[0][0] <= due:
            out.append(heapq.heappop(self._heap)[3])
        return out

    def flush(self) -> list[ChangeEvent]:
        out = [heapq.heappop(self._heap)[3] for _ in range(len(self._heap))]
        return out

    def __len__(self) -> int:
        return len(self._heap)
