"""Helpers shared by the tests: run the real `monitor` process or the pipeline in-process, find
the shared footage, match logged events to truth; synthetic scenes, pairs, LoRA adapters and
training setups for the VLM tests (their fixture, `tiny_llava`, is in conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.bench.local_redis import free_port  # noqa: F401 - the tests take it from here
from monitor.config import load_settings
from monitor.daemon.service import Monitor
from monitor.readers import eval_log
from monitor.records import ChangeEvent, iso_utc

if TYPE_CHECKING:
    from pipelines.records import PairInput

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
VIDEOS = SHARED_DATA / "videos"
DETECTOR_DIR = REPO.parent / "shared" / "models" / "coco-detector"
DETECTOR = DETECTOR_DIR / "coco-detector.onnx"  # the real pretrained COCO detector (its README: spec, limits)
EXAMPLE_CONFIG = REPO / "config" / "monitor.example.yaml"

T0 = 1_795_000_000.0  # a fixed wall clock (2026-11-18) for hand-made events

# Never let a test reach the network for model weights.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def default_sigint() -> None:
    """Popen preexec_fn: a child of a shell's background job inherits SIGINT ignored, and Python then
    never raises KeyboardInterrupt (e.g. `.ci/run` started with `&`); Ctrl-C tests need it back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def monitor_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment without MONITOR_* settings, made offline, plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    return {**base, **OFFLINE_ENV, **(env or {})}


@contextmanager
def running(proc: subprocess.Popen):
    """The process; killed (and reaped) on the way out if it still runs."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_monitor(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 60, cwd: str | Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m monitor ARGS` as a real process; stdout/stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *map(str, args)],
        env=monitor_env(env),
        cwd=str(cwd or REPO),
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(proc: subprocess.CompletedProcess[str], kind: str = "error") -> list[str]:
    """The user-facing `monitor: error: ...` (or `config error`) lines of stderr."""
    prefix = f"monitor: {kind}: "
    return [line.removeprefix(prefix) for line in proc.stderr.splitlines() if line.startswith(prefix)]


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both, both
    assert "internal error" not in both, both


def need_video(name: str) -> Path:
    path = VIDEOS / name
    assert path.is_file(), f"shared footage missing: {path} (tests read ../shared/data in place)"
    return path


def run_source(
    source: Path | str,
    log_dir: Path,
    camera_id: str = "cam",
    gate: dict | None = None,
    describer: dict | None = None,
    **camera: Any,
) -> list[dict]:
    """Run one camera through the whole data path; return the events written to changes.jsonl."""
    settings = load_settings(
        None,
        cameras=[{"id": camera_id, "source": str(source), "gate": gate or {}, **camera}],
        log={"dir": str(log_dir), "reorder_window_s": 0},
        describer=describer or {},
    )
    result = Monitor(settings).run()
    assert not result.errors, result.errors
    return read_events(log_dir)


def read_events(log_dir: Path) -> list[dict]:
    path = log_dir / "changes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def direction(event: dict) -> str:
    """'arrived' / 'left' / 'other' from the event's regions, as `monitor eval-log` reads them."""
    return eval_log.direction(ChangeEvent.model_validate(event))


def match_events(
    expected: list[tuple[str, float | None, float | None]], events: list[dict], tol: float = 2.0
) -> tuple[list[int | None], list[int]]:
    """One-to-one matching of expected changes to logged events.

    `expected` items are (direction, onset time or None, completion time or None): the event's
    `media_t_onset` must be within `tol` of the onset and its `media_t_after` within `tol` of the
    completion, and its direction must agree. Returns (index of the event matched to each expected
    change or None, indices of events that matched nothing)."""
    used: set[int] = set()
    matched: list[int | None] = []
    for kind, t_onset, t_done in expected:
        best = None
        for i, ev in enumerate(events):
            if i in used or direction(ev) != kind:
                continue
            if t_onset is not None and abs(ev["media_t_onset"] - t_onset) > tol:
                continue
            if t_done is not None and abs(ev["media_t_after"] - t_done) > tol:
                continue
            best = i
            break
        if best is not None:
            used.add(best)
        matched.append(best)
    return matched, [i for i in range(len(events)) if i not in used]


def make_event(
    camera: str = "gate",
    seq: int = 1,
    text: str = "a person arrived in the centre",
    t: float = 0.0,
    regions: list[dict] | None = None,
    fraction: float = 0.05,
    kind: str = "change",
) -> ChangeEvent:
    """A real ChangeEvent, as the daemon would write it, at `T0 + t`."""
    if regions is None:
        regions = [{"x": 0.4, "y": 0.5, "w": 0.1, "h": 0.3, "change": "appeared", "label": "person"}]
    return ChangeEvent(
        event_id=f"{camera}-{seq:016x}",
        camera=camera,
        seq=seq,
        kind=kind,
        t_before=iso_utc(T0 + t - 5),
        t_after=iso_utc(T0 + t),
        media_t_before=t - 5,
        media_t_after=t,
        media_t_onset=t - 2,
        text=text,
        regions=regions,
        scores={"ssim": 0.9, "changed_fraction": fraction} if kind == "change" else None,
        describer="embedded",
        latency_ms=1.0,
    )


class StderrLines:
    """Collects a running process's stderr lines in a thread; `wait_for` a word."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.reader.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, word: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if word in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no {word!r} on stderr within {timeout} s:\n" + "\n".join(self.lines))


# -- VLM test helpers (pipelines/torch imported inside, so support stays cheap for the rest) ----
def scene(box: tuple[float, float] | None, *, seed: int = 0, size: tuple[int, int] = (72, 128)) -> np.ndarray:
    """A 16:9 RGB frame: textured grey background (same for every call with the same seed) and,
    if `box` = (x, y) in 0-1, a red 20 % x 30 % rectangle with its top-left corner there."""
    h, w = size
    rng = np.random.default_rng(seed)
    img = np.clip(110 + rng.normal(0, 25, (h, w, 1)), 0, 255).repeat(3, axis=2).astype(np.uint8)
    if box is not None:
        x, y = int(box[0] * w), int(box[1] * h)
        img[y : y + int(0.3 * h), x : x + int(0.2 * w)] = (200, 30, 30)
    return img


def pairs_with_keys(camera: str = "cam", n: int = 4) -> list[PairInput]:
    """n-1 consecutive pairs of one camera: frame i is the after of pair i-1 and the before of pair i."""
    from pipelines.records import FrameInput, PairInput

    frames = [
        FrameInput(scene((0.1 + 0.15 * i, 0.5), seed=1), 1_795_000_000.0 + 5 * i, key=(camera, i)) for i in range(n)
    ]
    return [PairInput(frames[i], frames[i + 1], "the change is at the lower left") for i in range(n - 1)]


def make_adapter(checkpoint: Path, out: Path, seed: int) -> Path:
    """A peft LoRA adapter on the checkpoint's language model, with a non-zero (trained-looking) B."""
    import torch
    from peft import LoraConfig, get_peft_model

    from pipelines.captioner import ChangeCaptioner
    from pipelines.compressed import LORA_TARGET_MODULES

    cap = ChangeCaptioner.load(checkpoint)
    peft_model = get_peft_model(cap.model, LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGET_MODULES))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # B starts at zero
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    peft_model.save_pretrained(out)
    return out


def tiny_training_setup(root: Path, pairs: int, seed: int) -> tuple[Path, Path]:
    """A tiny checkpoint whose vocabulary covers the synthetic captions, and `pairs` synthetic
    pairs of `seed` at its 32 px: what the training tests train on."""
    from finetune.synthetic import SYNTHETIC_WORDS, write_synthetic
    from pipelines.tiny import save_tiny_llava

    checkpoint = save_tiny_llava(root / "checkpoint", words=SYNTHETIC_WORDS, image_size=32)
    return checkpoint, write_synthetic(root / "data", pairs, seed=seed, size=32)
