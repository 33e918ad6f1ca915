"""Sampling by presentation time: which decoded frames are due at the camera's `sample_fps`."""

from __future__ import annotations

import math
import time


class Sampler:
    """Picks frames on a regular presentation-time grid of `interval` seconds."""

    def __init__(self, interval: float, frame_rate: float):
        self.interval = interval
        self.eps = 0.5 / frame_rate  # half a frame: tolerate timestamp jitter
        self.frame_period = 1.0 / frame_rate
        self.t0: float | None = None
        self.next_t = 0.0
        self.count = 0
        self.last_packet_time: float | None = None
        self.start_wall = time.time()

    def due(self, t: float | None) -> bool:
        return t is None or not math.isfinite(t) or self.t0 is None or t - self.t0 + self.eps >= self.next_t

    def take(self, t: float | None) -> float | None:
        """Media time (from stream start) if this frame is due, else None."""
        self.count += 1
        if t is None or not math.isfinite(t):
            # Frames drained from the decoder at the end may lack a timestamp: the last packet
            # fed is the best estimate (skipped packets make frame counting wrong).
            t = self.last_packet_time if self.last_packet_time is not None else self.count * self.frame_period
        if self.t0 is None:
            self.t0 = t
        rel = t - self.t0
        if rel + self.eps < self.next_t:
            return None
        self.next_t = (math.floor((rel + self.eps) / self.interval) + 1) * self.interval
        return rel
