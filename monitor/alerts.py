"""Alert rules: which change events also go to the alerts stream, and which rule fired."""

from __future__ import annotations

from monitor.config import AlertRule, CameraConfig
from monitor.records import ChangeEvent


class AlertRules:
    """Evaluates the configured rules in order; keeps the per-camera cooldown state."""

    def __init__(self, rules: list[AlertRule], cameras: list[CameraConfig]):
        self.rules = rules
        self.cameras = {c.id: c for c in cameras}

    def match(self, event: ChangeEvent) -> list[str]:
        """Names of the rules this event fires (cooldowns applied and updated)."""
        return []  # TODO(alerts): evaluate cameras, zones, keywords, regex, labels, fraction, cooldown
