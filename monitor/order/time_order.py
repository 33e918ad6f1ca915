"""Per camera, `t_after` never decreases in a log dir, across runs: `TimeOrder.admit(camera, t)`
refuses what would go back in time (the same recording run twice into one log dir, a clock
stepped back), says it once per camera, and counts it; nothing is written out of order."""

from __future__ import annotations

import structlog

from monitor.records import iso_utc

log = structlog.get_logger(__name__)

BACK_IN_TIME = (
    "events going back in time in this log dir are refused (the same file run twice?); "
    "use another --log-dir or --camera-id"
)
TOLERANCE_S = 0.001  # the log keeps milliseconds


class TimeOrder:
    def __init__(self, logged_until: dict[str, float]):
        self.latest = dict(logged_until)  # camera -> latest t_after admitted (the log dir's, at start)
        self.refused: dict[str, int] = {}  # camera -> events refused

    def admit(self, camera: str, at: float) -> bool:
        last = self.latest.get(camera)
        if last is not None and at < last - TOLERANCE_S:
            self.refused[camera] = self.refused.get(camera, 0) + 1
            if self.refused[camera] == 1:
                log.error(
                    "event_refused", camera=camera, t_after=iso_utc(at), logged_until=iso_utc(last), why=BACK_IN_TIME
                )
            return False
        self.latest[camera] = at
        return True

    def errors(self) -> dict[str, str]:
        """One line per camera that had events refused, for the end of the run."""
        return {cid: f"camera {cid}: {n} events not written: {BACK_IN_TIME}" for cid, n in self.refused.items()}
