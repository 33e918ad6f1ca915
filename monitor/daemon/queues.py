"""Between the camera readers and the describer: one bounded queue per camera, so a slow
describer never blocks a reader; when a camera's queue is full its oldest changes are merged."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

import structlog

from monitor.records import ChangeCandidate

log = structlog.get_logger(__name__)


def coalesce(older: ChangeCandidate, newer: ChangeCandidate) -> ChangeCandidate:
    """Two consecutive candidates of one camera as one: from the older's before frame to the
    newer's after frame, onset and detection time of the older, regions and scores of the newer
    (the state the scene settled in last), transient only when both were; the older's change id,
    with the newer's among those merged."""
    return ChangeCandidate(
        camera_id=older.camera_id,
        before=older.before,
        after=newer.after,
        onset_media_time=older.onset_media_time,
        regions=newer.regions,
        scores=newer.scores,
        transient=older.transient and newer.transient,
        settled=newer.settled,
        detected_at=older.detected_at,
        change_id=older.change_id,
        merged=(*older.merged, newer.change_id, *newer.merged),
    )


class CameraQueues:
    """One bounded queue per camera between the reader threads and the describer loop.

    `put` never blocks: when a camera already has `maxsize` change candidates waiting, its two
    oldest adjacent ones are coalesced into one (`coalesce`), or, when health notices separate
    every pair, the oldest is dropped; both are counted on the camera's run record
    (`daemon.CameraRun`: `camera.id`, `coalesced`, `dropped`). Health notices and end
    markers are never dropped or merged and do not count against the bound. `take` hands out up
    to `n` items round-robin across the cameras (one per camera per turn, the starting camera
    rotating), each camera's items in the order they were put."""

    def __init__(self, maxsize: int, on_drop: Callable[[ChangeCandidate], None] | None = None):
        self.maxsize = maxsize
        self.on_drop = on_drop  # a dropped candidate, outside the lock (its early alerts' settled record)
        self._cond = threading.Condition()
        self._queues: dict[str, deque] = {}
        self._turn = 0

    def put(self, run, item) -> None:
        dropped: list[ChangeCandidate] = []
        with self._cond:
            q = self._queues.setdefault(run.camera.id, deque())
            q.append(item)
            if isinstance(item, ChangeCandidate):
                while sum(1 for x in q if isinstance(x, ChangeCandidate)) > self.maxsize:
                    if (gone := self._make_room(run, q)) is not None:
                        dropped.append(gone)
            self._cond.notify_all()
        if self.on_drop is not None:
            for cand in dropped:
                self.on_drop(cand)

    @staticmethod
    def _make_room(run, q: deque) -> ChangeCandidate | None:
        """Coalesces two candidates, or drops one (returned)."""
        # The oldest two candidates next to each other (a health notice between two candidates
        # must keep its place in the camera's seq, so those two are never merged).
        for i in range(len(q) - 1):
            if isinstance(q[i], ChangeCandidate) and isinstance(q[i + 1], ChangeCandidate):
                q[i] = coalesce(q[i], q[i + 1])
                del q[i + 1]
                run.coalesced += 1
                log.debug("candidates_coalesced", camera=run.camera.id, total=run.coalesced)
                return None
        for i, x in enumerate(q):  # no two adjacent: drop the oldest candidate
            if isinstance(x, ChangeCandidate):
                del q[i]
                run.dropped += 1
                log.warning("candidate_dropped", camera=run.camera.id, total=run.dropped)
                return x
        return None

    def take(self, n: int, timeout: float) -> list:
        with self._cond:
            if not any(self._queues.values()):
                self._cond.wait(timeout)
            keys = [k for k, q in self._queues.items() if q]
            if not keys:
                return []
            self._turn = (self._turn + 1) % len(keys)
            keys = keys[self._turn :] + keys[: self._turn]
            batch: list = []
            while len(batch) < n and keys:
                for k in list(keys):
                    q = self._queues[k]
                    if not q:
                        keys.remove(k)
                        continue
                    batch.append(q.popleft())
                    if len(batch) >= n:
                        break
            for k in [k for k, q in self._queues.items() if not q]:
                del self._queues[k]
            return batch

    def qsize(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def oldest_detected(self) -> float | None:
        with self._cond:
            times = [x.detected_at for q in self._queues.values() for x in q if isinstance(x, ChangeCandidate)]
            return min(times, default=None)

    def sizes(self) -> dict[str, int]:
        """Change candidates waiting, per camera."""
        with self._cond:
            return {k: sum(1 for x in q if isinstance(x, ChangeCandidate)) for k, q in self._queues.items()}
