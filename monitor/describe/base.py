"""The describer stage's interface: `Describer.describe(candidates) -> [Description]`, one plain
sentence per settled change. The embedded describer (`embedded`) and the VLM describer (`vlm`)
implement it; `factory.build_describer` picks one from the settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from monitor.config import DescriberConfig
from monitor.records import ChangeCandidate, Region


@dataclass(frozen=True, slots=True)
class Description:
    text: str
    labels: tuple[str | None, ...]  # one per candidate region, same order
    # The candidate's regions as the describer saw them (label, and the verdict an object
    # detector corrected); empty = the gate's regions with `labels`.
    regions: tuple[Region, ...] = ()


class Describer(Protocol):
    name: str
    max_wait_s: float  # the daemon waits up to this long for more changes to fill a batch

    def describe(self, candidates: Sequence[ChangeCandidate]) -> list[Description]:
        """One description per candidate, in the same order (batched for model describers)."""
        ...

    def reload(self, running: DescriberConfig, new: DescriberConfig) -> DescriberConfig:
        """SIGHUP: apply what can change without a restart; return the settings now in effect."""
        ...
