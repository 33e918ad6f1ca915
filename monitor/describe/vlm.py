"""The VLM describer: the `pipelines` change captioner inside the daemon.

Loaded once at start (CUDA bf16/fp16 when available, CPU fp32 otherwise; optional 8/4-bit) and
warmed up. Each batch of candidates (round-robin across cameras, up to `describer.batch_size`,
waiting up to `max_wait_ms` for a fuller batch) becomes one batched caption call; every frame
goes through the vision tower once (cache key: camera, frame seq, read time). A LoRA adapter is
applied at load and swapped on reload (SIGHUP) without restarting.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import structlog

from monitor.config import DescriberConfig
from monitor.describe.base import Description
from monitor.describe.embedded import EmbeddedDescriber
from monitor.detect.objects import build_detector
from monitor.errors import ConfigError, MonitorError
from monitor.records import ChangeCandidate, Frame
from pipelines.phrases import facts_text

log = structlog.get_logger(__name__)

MAX_TURNS = 3
_PERSON = re.compile(r"\b(person|people|man|woman|child|someone|pedestrian)\b", re.IGNORECASE)
_VEHICLE = re.compile(r"\b(car|cars|van|truck|bus|vehicle|motorbike|lorry)\b", re.IGNORECASE)


class VlmDescriber:
    """Implements the daemon's `Describer` with a ChangeCaptioner."""

    @staticmethod
    def check(settings: DescriberConfig) -> None:
        """What start refuses before any weights load, also `monitor check-config`'s check:
        torch and transformers installed, a model named, CUDA there if asked for, and a
        complete LLaVA checkpoint (config, safetensors, tokenizer, image processor)."""
        try:
            import torch
            import transformers  # noqa: F401
        except ImportError as exc:
            raise MonitorError(
                f"describer kind vlm needs {exc.name or 'torch and transformers'}: pip install '.[vlm]'"
            ) from None
        from pipelines.checkpoint import CheckpointError, check_files, read_config, resolve_checkpoint

        if not settings.model:
            raise ConfigError("describer.model: required for kind vlm (a checkpoint directory or a cached repo id)")
        if settings.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"describer.device: {settings.device} but no CUDA GPU is available (use auto or cpu)")
        try:
            path = resolve_checkpoint(settings.model)
            read_config(path)
            check_files(path)
        except CheckpointError as exc:
            raise MonitorError(f"describer: {exc}") from None

    def __init__(self, settings: DescriberConfig, *, warm_up: bool = True):
        self.check(settings)
        from pipelines.captioner import ChangeCaptioner
        from pipelines.checkpoint import CheckpointError

        started = time.monotonic()
        try:
            self.captioner = ChangeCaptioner.load(
                settings.model,
                mode=settings.mode,
                device=settings.device,
                dtype=settings.dtype,
                quantization=settings.quantization,
                adapter=settings.adapter,
                batch_size=settings.batch_size,
            )
        except CheckpointError as exc:
            raise MonitorError(f"describer: {exc}") from None
        self.settings = settings
        self.max_wait_s = settings.max_wait_ms / 1000.0
        self._history: dict[str, deque[Frame]] = {}  # per camera, for `history_frames`
        self._adapter_stamp = _stamp(settings.adapter)
        # The facts (what, verdict, place) go into the prompt as the embedded describer says
        # them (with the detector when one is set, else shapes and HOG), the words fine-tuning
        # shows too; the same describer is the fallback if the model ever fails.
        self.detector = build_detector(settings.detector)
        self._fallback = EmbeddedDescriber(detector=self.detector)
        if warm_up:
            self.captioner.warm_up()
        log.info(
            "describer_loaded",
            describer=self.name,
            device=str(self.captioner.device),
            dtype=str(self.captioner.model.dtype).replace("torch.", ""),
            quantization=settings.quantization,
            seconds=round(time.monotonic() - started, 1),
        )

    @property
    def name(self) -> str:
        """Named in every event: `vlm:compressed:tiny-llava` (`+adapter-dir` with an adapter)."""
        adapter = f"+{Path(self.captioner.adapter).name}" if self.captioner.adapter else ""
        return f"vlm:{self.captioner.mode}:{Path(str(self.settings.model)).name}{adapter}"

    @property
    def frame_cache_hit_rate(self) -> float | None:
        """Of the frames described, the share whose vision features came from the frame cache."""
        cache = self.captioner.frame_cache
        looked = cache.hits + cache.misses
        return round(cache.hits / looked, 3) if looked else None

    def describe(self, candidates: Sequence[ChangeCandidate]) -> list[Description]:
        facts = [self.facts(c) for c in candidates]
        pairs = [self.pair_input(c, f) for c, f in zip(candidates, facts)]
        try:
            # one turn per region the gate saw (at most 3): a multi-turn model says one change per turn
            turns = [max(1, min(len(c.regions), MAX_TURNS)) for c in candidates]
            texts = self.captioner.caption(pairs, max_new_tokens=self.settings.max_new_tokens, turns=turns)
        except Exception as exc:  # noqa: BLE001 - out of memory at batch 1, a driver error: never crash
            log.error("vlm_describe_failed", error=f"{type(exc).__name__}: {exc}"[:300], changes=len(candidates))
            return self._fallback.describe(candidates)
        # Without a detector the labels are what the model's own sentence names (alert rules).
        return [
            Description(text, f.labels if self.detector is not None else self.labels(c, text), f.regions)
            for c, text, f in zip(candidates, texts, facts)
        ]

    def facts(self, cand: ChangeCandidate) -> Description:
        """What the embedded describer says: its sentence, and the regions with labels and
        settled verdicts."""
        return self._fallback.describe_one(cand)

    @staticmethod
    def frame_input(camera: str, frame: Frame):
        from pipelines.records import FrameInput

        # BGR -> RGB as a view; the read time in the key tells a restarted stream's frames apart.
        return FrameInput(frame.image[..., ::-1], frame.wall_time, key=(camera, frame.seq, frame.wall_time))

    def pair_input(self, cand: ChangeCandidate, facts: Description | None = None):
        """`facts` (default: `self.facts(cand)`) become the prompt's region text ('seen: a person
        arrived on the left'), built as fine-tuning builds it from a capture's regions."""
        from pipelines.records import PairInput

        facts = self.facts(cand) if facts is None else facts
        text = facts_text(facts.regions, cand.transient, cand.settled)
        return PairInput(
            self.frame_input(cand.camera_id, cand.before),
            self.frame_input(cand.camera_id, cand.after),
            text,
            history=self._history_of(cand),
        )

    def _history_of(self, cand: ChangeCandidate) -> tuple:
        """The camera's scenes before its last `history_frames` changes (their before frames),
        oldest first; then this change's before frame joins them. Compressed mode only: a pair
        image has no room for more frames."""
        keep = self.settings.history_frames if self.captioner.mode == "compressed" else 0
        if keep == 0:
            return ()
        scenes = self._history.setdefault(cand.camera_id, deque(maxlen=keep))
        history = tuple(self.frame_input(cand.camera_id, f) for f in scenes)
        if not scenes or scenes[-1].seq != cand.before.seq:
            scenes.append(cand.before)
        return history

    @staticmethod
    def labels(cand: ChangeCandidate, text: str) -> tuple[str | None, ...]:
        """One region: labelled with what the sentence names (person / vehicle), for alert rules."""
        if len(cand.regions) != 1:
            return tuple(None for _ in cand.regions)
        person, vehicle = bool(_PERSON.search(text)), bool(_VEHICLE.search(text))
        return ("person" if person and not vehicle else "vehicle" if vehicle and not person else None,)

    def reload(self, running: DescriberConfig, new: DescriberConfig) -> DescriberConfig:
        """SIGHUP: swap the LoRA adapter (a new path, none, or the same path rewritten) live. A bad
        adapter is refused and the current one kept. Returns the settings now in effect."""
        stamp = _stamp(new.adapter)
        if new.adapter == running.adapter and stamp == self._adapter_stamp:
            return running
        from pipelines.checkpoint import CheckpointError

        try:
            if new.adapter is None:
                self.captioner.unload_adapter()
            else:
                self.captioner.load_adapter(new.adapter)
        except CheckpointError as exc:
            log.error("adapter_reload_refused", error=str(exc), keeping=running.adapter or "none")
            return running
        self._adapter_stamp = stamp
        self.settings = self.settings.model_copy(update={"adapter": new.adapter})
        log.info("adapter_reloaded", adapter=new.adapter or "none", describer=self.name)
        return running.model_copy(update={"adapter": new.adapter})


def _stamp(adapter: str | None) -> float | None:
    """When the adapter's weights were written (a retrained adapter in the same place reloads)."""
    if adapter is None:
        return None
    try:
        return (Path(adapter).expanduser() / "adapter_model.safetensors").stat().st_mtime
    except OSError:
        return None
