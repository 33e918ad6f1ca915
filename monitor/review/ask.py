"""A question about one event (`monitor ask EVENT_ID "what colour was the car?"`, and the review
page's Ask), answered by the VLM describer's model from that event's before and after frames
(its capture), with the event's facts in the prompt as the daemon gives them."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2

from monitor.config import DescriberConfig
from monitor.errors import MonitorError
from monitor.records import unix_time
from monitor.review.corrections import capture_folder, frame_file
from monitor.sinks.logfiles import JSONL_NAME
from pipelines.phrases import facts_text

MAX_QUESTION = 300  # characters


def find_event(log_dir: Path, event_id: str) -> dict:
    """The event's record from changes.jsonl (or a rotated copy)."""
    for path in [log_dir / JSONL_NAME, *sorted(log_dir.glob(JSONL_NAME + ".*"))]:
        try:
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    if event_id in line:
                        rec = json.loads(line)
                        if rec.get("event_id") == event_id:
                            return rec
        except (OSError, ValueError):
            continue
    raise MonitorError(f"no event {event_id} in {log_dir / JSONL_NAME}")


class Asker:
    """The VLM loaded once (on the first question), then one question at a time."""

    def __init__(self, settings: DescriberConfig, captures: Path | None):
        if settings.kind != "vlm":
            raise MonitorError("asking needs the VLM describer: describer.kind vlm and describer.model (or --model)")
        from monitor.describe.vlm import VlmDescriber

        VlmDescriber.check(settings)  # the same refusals as the daemon's start
        self.settings = settings
        self.captures = captures
        self._captioner = None
        self._lock = threading.Lock()

    def _model(self):
        if self._captioner is None:
            from pipelines.captioner import ChangeCaptioner

            s = self.settings
            self._captioner = ChangeCaptioner.load(
                s.model, mode=s.mode, device=s.device, dtype=s.dtype, quantization=s.quantization, adapter=s.adapter
            )
        return self._captioner

    def ask(self, record: dict, question: str) -> str:
        from monitor.records import RegionOut
        from pipelines.records import FrameInput, PairInput

        question = " ".join(question.split())[:MAX_QUESTION]
        if not question:
            raise MonitorError("ask: the question is empty")
        folder = capture_folder(self.captures, record)
        frames = []
        for name, stamp in (("before", "t_before"), ("after", "t_after")):
            path = frame_file(folder, f"{name}.jpg") if folder is not None else None
            image = cv2.imread(str(path)) if path is not None else None
            if image is None:
                raise MonitorError(f"ask: event {record.get('event_id')} has no {name} frame in its capture")
            frames.append(FrameInput(image[..., ::-1].copy(), unix_time(record[stamp])))
        regions = [RegionOut.model_validate(r) for r in record.get("regions") or []]
        facts = facts_text(regions, bool(record.get("transient")), record.get("settled", True))
        pair = PairInput(frames[0], frames[1], facts, question=question)
        with self._lock:
            (answer,) = self._model().caption([pair], max_new_tokens=self.settings.max_new_tokens)
        return answer
