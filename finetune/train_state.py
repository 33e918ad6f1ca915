"""Resumable training checkpoints: trainable weights, optimizer, scheduler, step and RNG states.

OUT/checkpoints/step-000120/ holds `trainable.safetensors` (only the parameters that train, so a
checkpoint of a LoRA run is megabytes), `optimizer.pt`, `scheduler.pt`, `rng.pt` and
`state.json` (step, samples seen, the settings that must not change on resume). The newest
`keep` checkpoints are kept. A checkpoint is written to a temporary folder and renamed, so an
interrupted save never leaves a half checkpoint behind.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from monitor.errors import MonitorError

STATE_FILE = "state.json"


@dataclass(frozen=True)
class TrainState:
    step: int  # optimizer steps done
    identity: dict[str, Any]  # settings a resumed run must share (stage, model, dataset, batch...)


def checkpoint_dirs(out: Path) -> list[Path]:
    root = out / "checkpoints"
    found = [d for d in root.glob("step-*") if (d / STATE_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda d: d.name)


def rng_state() -> dict[str, Any]:
    """Every random generator training draws from (dropout, shuffling helpers)."""
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def save_checkpoint(
    out: Path,
    state: TrainState,
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rng: dict[str, Any],
    *,
    keep: int = 2,
) -> Path:
    """`rng`: the generators' states at the start of step `state.step` (an interrupted step has
    already drawn dropout masks; the resumed run must draw them again)."""
    final = out / "checkpoints" / f"step-{state.step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in params.items()}, tmp / "trainable.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng, tmp / "rng.pt")
    (tmp / STATE_FILE).write_text(json.dumps({"step": state.step, "identity": state.identity}, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoint_dirs(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    directory: Path,
    identity: dict[str, Any],
    params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> TrainState:
    """Restore everything saved by save_checkpoint into the live objects. One-line errors for a
    checkpoint of another run or a damaged one."""
    try:
        saved = json.loads((directory / STATE_FILE).read_text())
        step = int(saved["step"])
        theirs = saved["identity"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MonitorError(f"{directory / STATE_FILE}: unreadable training state ({exc})") from None
    for key, value in identity.items():
        if theirs.get(key) != value:
            raise MonitorError(
                f"{directory}: cannot resume: {key} was {theirs.get(key)!r}, now {value!r} "
                "(use a new --out or the same settings)"
            )
    try:
        weights = load_file(directory / "trainable.safetensors")
        missing = sorted(set(params) - set(weights))
        if missing:
            raise MonitorError(f"{directory}: cannot resume: trainable weight {missing[0]} not in the checkpoint")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(weights[name].to(p.device, p.dtype))
        optimizer.load_state_dict(torch.load(directory / "optimizer.pt", map_location="cpu", weights_only=True))
        scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=True))
        rng = torch.load(directory / "rng.pt", weights_only=False)  # our own file: python/numpy states
    except MonitorError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged or truncated files: one line
        raise MonitorError(f"{directory}: cannot resume ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return TrainState(step, theirs)
