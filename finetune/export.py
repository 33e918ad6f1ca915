"""`monitor finetune export`: package a trained adapter for the daemon, or merge it into a checkpoint.

Package (default): OUT gets the peft adapter (adapter_config.json, adapter_model.safetensors,
which also carry the trained compressor/projector as peft modules_to_save), compressor.safetensors
/ compressor.json, and export.json (what it was trained from, when). The daemon's describer loads
it with `ChangeCaptioner.load_adapter` on reload (SIGHUP) without a restart. The adapter is
checked first: it must apply to the base model it names.

Merge (`merge=True`): LoRA folded into the LM (peft merge_and_unload) and the compressor saved
with it: OUT is a whole CompressedCaptioner checkpoint (config, safetensors, tokenizer, image
processor) that `ChangeCaptioner.load(OUT)` reads without peft.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from finetune.adapters import COMPRESSOR_FILE, COMPRESSOR_SETTINGS, save_model_folder
from finetune.evaluate import load_captioner
from monitor.errors import MonitorError

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
EXPORT_FILE = "export.json"


def adapter_base(adapter: Path) -> Path:
    """The base checkpoint the adapter was trained on (adapter_config.json's base_model_name_or_path)."""
    for name in ADAPTER_FILES:
        if not (adapter / name).is_file():
            raise MonitorError(f"{adapter}: missing {name} (not a finetune train output / peft adapter directory)")
    try:
        base = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise MonitorError(f"{adapter / 'adapter_config.json'}: unreadable ({exc})") from None
    if not base:
        raise MonitorError(f"{adapter / 'adapter_config.json'}: no base_model_name_or_path: give --model")
    return Path(base)


def export_adapter(adapter: Path, out: Path, *, model: Path | None = None, merge: bool = False) -> list[Path]:
    """Check that `adapter` applies to its base model, then copy it (or the merged checkpoint) to `out`."""
    adapter = Path(adapter)
    base = Path(model) if model is not None else adapter_base(adapter)
    if out.resolve() == adapter.resolve():
        raise MonitorError(f"--out {out} is the adapter folder itself: choose another folder")
    if out.exists() and any(out.iterdir()):
        raise MonitorError(f"{out}: not empty (export writes a fresh folder)")
    # Loading applies it: a wrong base (shapes, target modules) fails here, not in the daemon.
    captioner = load_captioner(base, adapter=None if merge else adapter, device="cpu")
    out.mkdir(parents=True, exist_ok=True)
    if merge:
        from peft import PeftModel

        try:
            merged = PeftModel.from_pretrained(captioner.model, adapter).merge_and_unload()
        except Exception as exc:  # noqa: BLE001 - wrong base model: one line
            raise MonitorError(
                f"{adapter}: cannot merge into {base} ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            ) from None
        written = save_model_folder(merged, captioner, out)
    else:
        written = []
        for name in (*ADAPTER_FILES, COMPRESSOR_FILE, COMPRESSOR_SETTINGS):
            if (adapter / name).is_file():
                shutil.copy2(adapter / name, out / name)
                written.append(out / name)
    info = {
        "adapter": str(adapter.resolve()),
        "base_model": str(base),
        "merged": merge,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / EXPORT_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return [*written, out / EXPORT_FILE]
