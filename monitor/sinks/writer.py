"""The write path: every event the orderer releases goes to the write-ahead spool (durable first,
when Redis or MQTT is configured; each of them delivers from it through its own cursor), then the
log files, and, for change events with `captures.enabled`, to a capture folder (written by the
capture sink's own thread, off this path)."""

from __future__ import annotations

from typing import TextIO

import structlog

from monitor.config import MonitorSettings
from monitor.records import ChangeCandidate, ChangeEvent
from monitor.sinks.alerts import AlertRules, alerts_for, early_advice
from monitor.sinks.captures import CaptureSink
from monitor.sinks.logfiles import LogFileSink, last_logged
from monitor.sinks.onset import OnsetAlerts

log = structlog.get_logger(__name__)


class EventWriter:
    """`write(events)` from the daemon's loop; `start()` before the first, `close()` after the last.

    `hold(event, candidate)` keeps a change's frames until its event is written (the orderer
    may hold the event back for `log.reorder_window_s`); only with captures enabled."""

    def __init__(self, settings: MonitorSettings, echo: TextIO | None = None):
        self.settings = settings
        self.sink = LogFileSink(settings.log, echo=echo)
        self.redis = self.mqtt = self.spool = self.rules = None
        if settings.redis.url or settings.mqtt.url:
            from monitor.sinks.mqtt import CURSOR, MqttSink, read_mqtt_password
            from monitor.sinks.redis_streams import RedisSink, default_spool_dir, read_password
            from monitor.sinks.spool import REDIS, Spool

            read_password(settings.redis)  # config errors before the spool is opened
            read_mqtt_password(settings.mqtt)
            cursors = [c for c, url in ((REDIS, settings.redis.url), (CURSOR, settings.mqtt.url)) if url]
            self.spool = Spool(default_spool_dir(settings), settings.redis.spool_max_bytes, cursors=cursors)
            self.rules = AlertRules(settings.alerts, settings.cameras)
            if settings.redis.url:
                self.redis = RedisSink(settings.redis, self.spool, self.rules)
            if settings.mqtt.url:
                self.mqtt = MqttSink(settings.mqtt, self.spool, [c.id for c in settings.cameras], self.rules.early)
        self.onsets: OnsetAlerts | None = None  # early alert rules, with an output to send them to
        if self.spool is not None and self.rules.early:
            from monitor.detect.objects import build_detector

            detector = build_detector(settings.describer.detector) if self.rules.needs_labels_early() else None
            self.onsets = OnsetAlerts(self.rules, self.redis, self.mqtt, detector)
            for line in early_advice(settings.alerts, settings.describer.detector.model):
                log.warning("early_alert_labels", note=line)
        self.captures = CaptureSink(settings.captures) if settings.captures.enabled else None
        self._frames: dict[str, ChangeCandidate] = {}  # event_id -> candidate, until written
        self.last_event: dict[str, str] = {}  # camera -> t_after of its last event (/healthz)
        self.by_camera: dict[str, int] = {}  # events written per camera (stats)
        self.logged_until: dict[str, float] = {}  # camera -> latest t_after already in the log dir (start)

    @property
    def written(self) -> int:
        return self.sink.written

    def start(self) -> dict[str, int]:
        """Start the sinks; returns the highest seq each camera already produced (log files, the
        Redis spool, Redis' delivered hash), so a restarted daemon continues its numbering: the
        Redis idempotency check relies on it, and so does anyone reading the log."""
        logged = last_logged(self.settings.log.dir)
        self.logged_until = {cam: at for cam, (_, at) in logged.items()}
        sources = [{cam: seq for cam, (seq, _) in logged.items()}]
        if self.spool is not None:
            sources.append(self.spool.last_seqs())
        if self.redis is not None:
            sources.append(self.redis.start())  # {} when Redis is unreachable now
        if self.mqtt is not None:
            self.mqtt.start()
        if self.onsets is not None:
            self.onsets.start()
        if self.captures is not None:
            self.captures.start()
        merged: dict[str, int] = {}
        for src in sources:
            for cam, seq in src.items():
                merged[cam] = max(merged.get(cam, 0), seq)
        return merged

    def hold(self, event: ChangeEvent, cand: ChangeCandidate) -> None:
        if self.captures is not None and event.kind == "change":
            self._frames[event.event_id] = cand

    def write(self, events: list[ChangeEvent]) -> None:
        if not events:
            return
        if self.spool is not None:  # into the durable spool first, then the log files
            self.spool.append([(e, alerts_for(self.rules, e, self._announced(e))) for e in events])
        for event in events:
            self.sink.write(event)
            self.last_event[event.camera] = event.t_after
            self.by_camera[event.camera] = self.by_camera.get(event.camera, 0) + 1
            cand = self._frames.pop(event.event_id, None)
            if cand is not None and self.captures is not None:
                self.captures.save(cand, event)

    def unlogged(self, cand: ChangeCandidate, why: str) -> None:
        """A settled change that gets no event after all: the early rules that announced it get
        their settled record (`why` is its text)."""
        if self.onsets is not None:
            self.onsets.unlogged(cand, why)

    def _announced(self, event: ChangeEvent) -> set[str]:
        """The early rules whose onset alert announced this event's change (or one merged into it)."""
        if self.onsets is None or not event.change_id:
            return set()
        return self.onsets.close([event.change_id, *event.merged_changes])

    def reopen_logs(self) -> None:
        """SIGHUP: new handlers on the same paths (logrotate moved the old files away)."""
        echo, written = self.sink.echo, self.sink.written
        self.sink = LogFileSink(self.settings.log, echo=echo)  # closes the old handlers
        self.sink.written = written
        log.info("log_files_reopened", log_dir=str(self.settings.log.dir))

    def finish_captures(self) -> None:
        """Write the captures still queued (before the run's final stats count them)."""
        if self.captures is not None:
            self.captures.close()

    def close(self) -> None:
        try:
            self.sink.close()
            if self.onsets is not None:
                self.onsets.stop()
            if self.mqtt is not None:
                self.mqtt.close()
            if self.redis is not None:
                self.redis.close()
            if self.spool is not None:
                self.spool.close()
        finally:
            if self.captures is not None:
                self.captures.close()
