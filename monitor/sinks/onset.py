"""Early alerts: an alert rule with `early: true` fires as soon as a change starts, with what is
known then (its changed areas, and their labels when the detector is on), before the change has
settled and been described; its settled alert follows with the change's event.

The camera readers hand each view of a change under way to `observe` (never blocking: only the
latest view of each change waits); one thread matches them against the early rules, labelling
the regions with the detector when a rule asks for labels, and sends each rule's onset at most
once per change, straight to `<prefix>:alerts` and `<prefix>/alerts/<rule>`: not through the
spool, so it never takes a `seq` and never enters changes.jsonl. An onset alert is worth
something only now: one that Redis cannot take at once is counted and dropped (its settled
alert, from the spool, is durable); paho keeps MQTT's in its queue, in publish order.

Every onset is followed by a settled record with the same `change_id`: the change's event in
the alert (`EventWriter.write` asks `close` which rules announced it), or, when the change ended
with nothing logged (it went back before the transient minimum, or too little changed),
`reverted`'s record, sent the same live way; so does a settled change that was not logged after
all (`unlogged`: dropped from a full camera queue, or refused for going back in time).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import replace

import structlog

from monitor.detect.objects import ObjectDetector, one_per_object
from monitor.order.events import region_out
from monitor.records import ChangeCandidate, ChangeStart, Region, iso_utc
from monitor.sinks.alerts import AlertRules
from pipelines.phrases import sentence

log = structlog.get_logger(__name__)

_CLOSED_KEPT = 4096  # recently ended changes: a late view of one is not announced
SEND_WAIT_S = 2.0  # the longest the writer waits for an onset being sent (Redis' socket timeout applies too)
NOTHING_LOGGED = "the change ended with nothing logged: the scene went back, or too little changed"
NOT_LOGGED_QUEUE_FULL = "the change was not logged: its camera's queue was full"
NOT_LOGGED_BACK_IN_TIME = "the change was not logged: it is older than what its camera's log already holds"


class OnsetAlerts:
    """`observe(view)` and `reverted(view)` from the reader threads, `close(change_ids)` from the
    writer; `start()` before, `stop()` after. `redis` / `mqtt` are the running sinks (or None)."""

    def __init__(self, rules: AlertRules, redis=None, mqtt=None, detector: ObjectDetector | None = None):
        self.rules = rules
        self.redis, self.mqtt = redis, mqtt
        self.detector = detector  # labels at onset: only when a rule asks for them
        self._cond = threading.Condition()
        self._views: OrderedDict[str, ChangeStart] = OrderedDict()  # change_id -> latest view, not yet matched
        self._ended: list[tuple[ChangeStart, set[str], str]] = []  # nothing logged: (view, rules, why) to send
        self._fired: dict[str, set[str]] = {}  # change_id -> early rules that announced it
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._sending: set[str] = set()  # changes whose onset alerts are being handed to the outputs
        self._stop = False
        self._thread: threading.Thread | None = None
        self.sent = 0  # onset alerts handed to an output
        self.undelivered = 0  # onset alerts Redis could not take at once

    # -- the readers' and the writer's side --------------------------------------------------
    def observe(self, view: ChangeStart) -> None:
        with self._cond:
            if view.change_id in self._closed:
                return
            self._views[view.change_id] = view
            self._views.move_to_end(view.change_id)
            self._cond.notify_all()

    def close(self, change_ids: list[str] | tuple[str, ...]) -> set[str]:
        """The changes were settled into an event: no onset for them from now on; returns the
        early rules that announced any of them (their settled alert goes with the event)."""
        rules: set[str] = set()
        with self._cond:
            # An onset being sent goes out first: the settled alert must never overtake it.
            deadline = time.monotonic() + SEND_WAIT_S
            while self._sending.intersection(change_ids) and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            for cid in change_ids:
                self._views.pop(cid, None)
                rules |= self._fired.pop(cid, set())
                self._closed[cid] = None
            while len(self._closed) > _CLOSED_KEPT:
                self._closed.popitem(last=False)
        return rules

    def reverted(self, view: ChangeStart, why: str = NOTHING_LOGGED) -> None:
        """The change ended with no event: the rules that announced it get their settled record."""
        self._ending([view.change_id], view, why)

    def unlogged(self, cand: ChangeCandidate, why: str) -> None:
        """A settled change that gets no event after all (`why`): the same settled record."""
        if not cand.change_id:
            return
        # its onset's wall time: the after frame's, less the media time between them
        onset_wall = cand.after.wall_time - (cand.after.media_time - cand.onset_media_time)
        view = ChangeStart(cand.camera_id, cand.change_id, cand.onset_media_time, onset_wall, cand.after,
                           cand.regions, cand.scores.changed_fraction)  # fmt: skip
        self._ending([cand.change_id, *cand.merged], view, why)

    def _ending(self, change_ids: list[str], view: ChangeStart, why: str) -> None:
        rules = self.close(change_ids)
        if rules:
            with self._cond:
                self._ended.append((view, rules, why))
                self._cond.notify_all()

    # -- the thread ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="onset-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            log.info("onset_alerts_closed", sent=self.sent, undelivered=self.undelivered)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._views or self._ended or self._stop):
                    self._cond.wait()
                if self._ended:
                    view, rules, why = self._ended.pop(0)
                    ended = True
                elif self._views:
                    _, view = self._views.popitem(last=False)
                    rules, ended, why = set(self._fired.get(view.change_id, ())), False, ""
                else:
                    return  # stopping, nothing left
            try:
                if ended:
                    for rule in sorted(rules):
                        self._send(rule, *nothing_logged(rule, view, why))
                else:
                    self._match(view, rules)
            except Exception:  # noqa: BLE001 - one bad view must not end early alerts
                log.exception("onset_alert_failed", camera=view.camera_id, change_id=view.change_id)

    def _match(self, view: ChangeStart, announced: set[str]) -> None:
        regions = self._labelled(view)
        fired = self.rules.match_start(view, regions, skip=announced)
        if not fired:
            return
        with self._cond:
            if view.change_id in self._closed:  # settled meanwhile: too late for an onset
                return
            self._fired.setdefault(view.change_id, set()).update(fired)
            self._sending.add(view.change_id)
        try:
            for rule in fired:
                self._send(rule, *onset_alert(rule, view, regions))
        finally:
            with self._cond:
                self._sending.discard(view.change_id)
                self._cond.notify_all()

    def _labelled(self, view: ChangeStart) -> tuple[Region, ...]:
        if self.detector is None:
            return view.regions
        labelled = []
        for region in view.regions:
            found = self.detector.covering(view.frame, region)
            labelled.append(replace(region, label=found.label) if found is not None else region)
        return one_per_object(self.detector, labelled, lambda _region: view.frame)

    def _send(self, rule: str, fields: list[str], body: str) -> None:
        if self.redis is not None:
            if self.redis.add_live(fields):
                self.sent += 1
            else:
                self.undelivered += 1
                if self.undelivered == 1 or self.undelivered % 100 == 0:
                    log.warning("onset_alert_undelivered", rule=rule, total=self.undelivered, note="Redis is down")
        if self.mqtt is not None and self.mqtt.publish_live(rule, body):
            self.sent += 1


# -- payloads: the JSON body (MQTT, and `json` in Redis) and the Redis entry's fields --------------
def _payload(rule: str, view: ChangeStart, phase: str) -> dict:
    return {
        "phase": phase,
        "rule": rule,
        "change_id": view.change_id,
        "camera": view.camera_id,
        "t_onset": iso_utc(view.onset_wall_time),
        "media_t_onset": round(view.onset_media_time, 3),
    }


def _entry(doc: dict, time_key: str) -> tuple[list[str], str]:
    body = json.dumps(doc)
    keys = ("rule", "phase", "change_id", "camera")
    return [*(x for k in keys for x in (k, doc[k])), time_key, doc[time_key], "text", doc["text"], "json", body], body


def onset_alert(rule: str, view: ChangeStart, regions: tuple[Region, ...]) -> tuple[list[str], str]:
    labels = [r.label for r in regions]
    doc = {
        **_payload(rule, view, "onset"),
        "t": iso_utc(view.frame.wall_time),  # the frame these regions are of
        "t_alert": iso_utc(time.time()),
        "text": "under way: " + sentence(regions, labels, transient=False, settled=False),
        "regions": [region_out(r).model_dump() for r in regions],
        "labels": sorted({lab for lab in labels if lab}),
        "changed_fraction": view.changed_fraction,
    }
    return _entry(doc, "t_onset")


def nothing_logged(rule: str, view: ChangeStart, why: str = NOTHING_LOGGED) -> tuple[list[str], str]:
    doc = {**_payload(rule, view, "settled"), "t_after": iso_utc(view.frame.wall_time), "outcome": "nothing_logged",
           "text": why, "event_id": None}  # fmt: skip
    return _entry(doc, "t_after")
