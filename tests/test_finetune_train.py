"""`monitor finetune train`: stages, output folder, Ctrl-C + exact resume, one-line bad inputs.

A tiny random LLaVA (pipelines.tiny, 32 px, the synthetic vocabulary) and 40 synthetic pairs,
built once for the module."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import REPO, assert_no_traceback, default_sigint, error_lines, monitor_env, tiny_training_setup

from finetune.adapters import COMPRESSOR_FILE
from finetune.train import LOG_FILE, TrainSettings, train
from monitor.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_training_setup(tmp_path_factory.mktemp("finetune-train"), 40, seed=3)


def _settings(tiny: tuple[Path, Path], out: Path, **kw) -> TrainSettings:
    checkpoint, dataset = tiny
    base = dict(model=checkpoint, dataset=dataset, out=out, batch_size=4, progress=False, eval_fraction=0.1)
    return TrainSettings(**{**base, **kw})


def test_stage1_trains_only_the_compressor(tiny, tmp_path: Path) -> None:
    from peft import PeftModel

    from pipelines.captioner import ChangeCaptioner

    out = tmp_path / "stage1"
    summary = train(_settings(tiny, out, stage="compressor", max_steps=6, lr=1e-2))
    assert summary.steps == 6 and summary.samples == 24
    assert 0 < summary.trainable_parameters < summary.total_parameters
    for name in ("adapter_config.json", "adapter_model.safetensors", COMPRESSOR_FILE, LOG_FILE, "loss.png"):
        assert (out / name).is_file(), name
    log = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert log[-1]["eval_loss"] > 0
    saved = load_file(out / "adapter_model.safetensors")
    assert saved and all("compressor" in k for k in saved), sorted(saved)[:3]  # no LoRA, no LM weights
    assert not any("lora" in k for k in saved)
    # the compressor moved off its zero-shot start (gates begin at 0); the LM and vision tower did not
    compressor = load_file(out / COMPRESSOR_FILE)
    assert any(float(v.abs().max()) > 0 for k, v in compressor.items() if k.endswith("gate"))
    base = ChangeCaptioner.load(tiny[0]).model
    loaded = PeftModel.from_pretrained(base, out)  # plain peft reads it
    trained_gate = loaded.base_model.model.compressor.modules_to_save["default"].delta.gate
    assert torch.allclose(trained_gate, compressor["delta.gate"])


def test_stage2_lora_scoped_to_the_language_model(tiny, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    summary = train(_settings(tiny, out, stage="lora", max_steps=4, lr=5e-3, gradient_checkpointing=True))
    saved = load_file(out / "adapter_model.safetensors")
    lora = [k for k in saved if "lora_" in k]
    assert lora and all("language_model" in k for k in lora)
    targets = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in lora}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert any("compressor" in k for k in saved)  # stage 2 keeps training the compressor
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 32 and config["lora_alpha"] == 64
    assert Path(config["base_model_name_or_path"]) == tiny[0].resolve()
    assert summary.trainable_parameters < summary.total_parameters


def _state(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter_model.safetensors")


def test_ctrl_c_saves_a_checkpoint_and_resume_is_exact(tiny, tmp_path: Path) -> None:
    """SIGINT to a real `monitor finetune train` process: exit 130, one line, a checkpoint; the
    resumed run ends with exactly the weights of an uninterrupted run."""
    checkpoint, dataset = tiny
    steps = 200  # long enough that SIGINT lands mid-run on a fast machine
    straight = tmp_path / "straight"
    train(_settings(tiny, straight, stage="lora", max_steps=steps, lr=2e-3))

    out = tmp_path / "interrupted"
    args = ["--model", checkpoint, "--dataset", dataset, "--out", out, "--stage", "lora", "--lr", "2e-3"]
    args += ["--max-steps", steps, "--batch-size", 4, "--eval-fraction", 0.1, "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "finetune", "train", *map(str, args)],
        env=monitor_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    log = out / LOG_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_no_traceback(result)
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("monitor: interrupted at step")]
    assert len(lines) == 1 and "--resume" in lines[0], stderr
    stopped = int(lines[0].split("step ")[1].split("/")[0])
    assert 3 <= stopped < steps
    assert (out / "checkpoints" / f"step-{stopped:06d}" / "optimizer.pt").is_file()
    assert not (out / "adapter_model.safetensors").exists()

    # the same command without --resume refuses to start over; with it, it finishes exactly
    assert main(["finetune", "train", *map(str, args)]) == 1
    assert main(["finetune", "train", *map(str, args), "--resume"]) == 0
    resumed, reference = _state(out), _state(straight)
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.allclose(resumed[key], reference[key], atol=1e-6), key
    steps_logged = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps_logged[-1] == steps


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--qlora", "--stage", "compressor"], "--qlora goes with --stage lora"),
        (["--resume"], "no checkpoint to resume"),
        (["--init-compressor", "{tmp}"], "missing compressor.safetensors"),
    ],
)
def test_bad_settings_one_line(tiny, tmp_path: Path, capsys, extra, expected) -> None:
    checkpoint, dataset = tiny
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    code = main(["finetune", "train", "--model", str(checkpoint), "--dataset", str(dataset)]
                + ["--out", str(tmp_path / "out"), "--max-steps", "1", "--no-progress", *extra])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("monitor: error: ") and expected in err[0], err


def test_bad_dataset_and_model_one_line(tiny, tmp_path: Path) -> None:
    checkpoint, dataset = tiny
    broken = tmp_path / "broken"
    broken.mkdir()
    lines = dataset.read_text().splitlines()
    first = json.loads(lines[0])
    first["before"] = "images/missing.png"
    (broken / "pairs.jsonl").write_text("\n".join([json.dumps(first), *lines[1:3]]) + "\n")
    for name in {p for line in lines[:3] for p in (json.loads(line)["before"], json.loads(line)["after"])}:
        (broken / name).parent.mkdir(exist_ok=True)
        (broken / name).write_bytes((dataset.parent / name).read_bytes())
    cases = [
        (["--model", checkpoint, "--dataset", broken], "pairs.jsonl:1: before: image not found"),
        (["--model", tmp_path / "nothing", "--dataset", dataset], "no such checkpoint directory"),
        (["--model", checkpoint, "--dataset", dataset, "--lr", "-1"], "--lr: must be > 0"),
    ]
    for args, expected in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "monitor", "finetune", "train", *map(str, args), "--out", str(tmp_path / "o")],
            env=monitor_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert_no_traceback(proc)
        assert proc.returncode != 0
        problems = error_lines(proc) or [line for line in proc.stderr.splitlines() if "error:" in line]
        assert len(problems) == 1 and expected in problems[0], proc.stderr


def test_bench_finetune_json(capsys) -> None:
    methods = ["--methods", "compressor,qlora"]
    assert main(["bench", "finetune", "--steps", "1", "--batch-size", "2", *methods, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["method"]: r for r in doc["methods"]}
    assert list(rows) == ["compressor", "qlora"] and doc["arch"] == "tiny"
    for row in rows.values():
        assert row["samples_per_s"] > 0 and row["peak_mb"] > 0
        assert 0 < row["trainable_params"] < row["total_params"]
    assert rows["compressor"]["trainable_params"] < rows["qlora"]["trainable_params"]  # + LoRA
