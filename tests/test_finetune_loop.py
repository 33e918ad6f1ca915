"""The operator's loop: `finetune train` (LoRA) -> `finetune export` -> the daemon's VLM describer
picks the adapter up on reload (no restart) and its captions change toward the training captions;
`export --merge` gives a whole checkpoint that captions exactly like base + adapter."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from test_finetune_learn import SIZE, learnable_tiny_llava

from finetune.dataset import load_dataset
from finetune.metrics import score_captions
from finetune.synthetic import write_synthetic
from monitor.cli import main
from monitor.config import DescriberConfig
from monitor.describe.vlm import VlmDescriber
from monitor.records import ChangeCandidate, Frame, GateScores
from pipelines.captioner import ChangeCaptioner


def _candidates(dataset_path: Path) -> tuple[list[ChangeCandidate], dict[str, list[str]]]:
    """The dataset's pairs as the daemon's change candidates (BGR frames), with their references."""
    ds = load_dataset(dataset_path)
    cands, refs = [], {}
    for i, rec in enumerate(ds.records[:12]):
        before, after = (cv2.cvtColor(img, cv2.COLOR_RGB2BGR) for img in ds.images(rec))
        frames = [Frame("synthetic", 2 * i + k, float(k), t, img) for k, (t, img) in enumerate(
            [(rec.t_before, before), (rec.t_after, after)])]  # fmt: skip
        cands.append(ChangeCandidate("synthetic", frames[0], frames[1], 1.0, (), GateScores(0.5, 0.1)))
        refs[str(i)] = list(rec.captions)
    return cands, refs


def test_train_export_reload_in_the_describer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = learnable_tiny_llava(tmp_path / "checkpoint")  # 1/sqrt(fan_in) LM init: LoRA moves it fast
    dataset = write_synthetic(tmp_path / "data", 32, seed=11, size=SIZE)
    out, exported, merged = tmp_path / "run", tmp_path / "exported", tmp_path / "merged"
    train = ["finetune", "train", "--model", checkpoint, "--dataset", dataset, "--out", out, "--stage", "lora"]
    # --no-facts: the candidates below carry no regions, so the describer's prompts have no facts either
    train += ["--max-steps", 30, "--batch-size", 8, "--lr", 1e-2, "--eval-fraction", 0, "--no-progress", "--no-facts"]
    assert main([str(a) for a in train]) == 0
    assert main(["finetune", "export", "--adapter", str(out), "--out", str(exported)]) == 0
    assert main(["finetune", "export", "--adapter", str(out), "--merge", "--out", str(merged)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote adapter {exported}" in printed and f"wrote merged checkpoint {merged}" in printed
    info = json.loads((exported / "export.json").read_text())
    assert info["base_model"] == str(checkpoint.resolve()) and not info["merged"]

    running = DescriberConfig(kind="vlm", model=str(checkpoint), max_new_tokens=16)
    describer = VlmDescriber(running, warm_up=False)
    cands, refs = _candidates(dataset)
    before = [d.text for d in describer.describe(cands)]
    with_adapter = running.model_copy(update={"adapter": str(exported)})
    assert describer.reload(running, with_adapter) == with_adapter  # SIGHUP's path: no restart
    assert describer.name == "vlm:compressed:checkpoint+exported"
    after = [d.text for d in describer.describe(cands)]
    assert after != before

    # the adapter moved the model toward the training captions (30 steps on a random tiny LM: a
    # start, not a captioner; tests/test_finetune_learn.py is the proof that it learns)
    losses = [json.loads(line)["loss"] for line in (out / "training_log.jsonl").read_text().splitlines()]
    base_scores = score_captions(refs, dict(zip(refs, before)), java=False)
    tuned_scores = score_captions(refs, dict(zip(refs, after)), java=False)
    print(
        f"loop: training loss {losses[0]:.2f} -> {losses[-1]:.2f}; CIDEr-D base {base_scores.cider_d:.3f} -> "
        f"adapter {tuned_scores.cider_d:.3f}; e.g. {before[0]!r} -> {after[0]!r}"
    )
    assert losses[-1] < losses[0] - 1.0
    assert tuned_scores.cider_d > base_scores.cider_d

    # merged: a plain checkpoint (no peft at load) that captions exactly like base + adapter
    merged_captioner = ChangeCaptioner.load(merged)
    pairs = [describer.pair_input(c) for c in cands]
    assert merged_captioner.caption(pairs, max_new_tokens=16) == after
    assert describer.reload(with_adapter, running) == running
    assert [d.text for d in describer.describe(cands)] == before  # unloaded: back to the base model

    # `finetune eval` of the exported adapter: JSON, report files, the controls side by side
    report = tmp_path / "report"
    evaluate = ["finetune", "eval", "--model", checkpoint, "--adapter", exported, "--dataset", dataset]
    evaluate += ["--arrangement", "all", "--limit", 12, "--max-new-tokens", 16, "--no-java", "--json", "--no-facts"]
    capsys.readouterr()
    assert main([str(a) for a in [*evaluate, "--report", report]]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert list(scores) == ["normal", "swapped", "shuffled"] and scores["normal"]["pairs"] == 12
    assert scores["normal"]["cider_d"] == pytest.approx(tuned_scores.cider_d)  # the describer's captions
    assert (report / "scores.png").stat().st_size > 0
    assert set(json.loads((report / "scores.json").read_text())["systems"]) == set(scores)
