"""finetune.metrics and `monitor finetune score`: COCO-exact scores on the shared DDLA files,
the Java-less fallback, direction / no-change accuracy, and one-line errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from support import SHARED_DATA

from finetune.language import caption_direction, is_no_change
from finetune.metrics import (
    ScoreInputError,
    load_coco_predictions,
    load_coco_references,
    score_captions,
    tokenize,
    write_coco,
)
from monitor.cli import main

SPOTDIFF = SHARED_DATA / "spotdiff"
GT, PRED = SPOTDIFF / "ddla_rerun_gtfile.json", SPOTDIFF / "ddla_rerun_predfile.json"
# ../shared/data/README.md: the COCO caption toolkit's scores of the DDLA rerun predictions.
DDLA = {
    "bleu_1": 0.2963,
    "bleu_2": 0.1870,
    "bleu_3": 0.1176,
    "bleu_4": 0.0757,
    "meteor": 0.1091,
    "rouge_l": 0.2797,
    "cider_d": 0.3506,
}


@pytest.fixture(scope="module")
def ddla() -> tuple[dict[str, list[str]], dict[str, str]]:
    refs = load_coco_references(GT)
    return refs, load_coco_predictions(PRED, refs)


def test_reproduces_the_coco_toolkit_on_ddla(ddla: tuple[dict, dict]) -> None:
    refs, preds = ddla
    assert (len(refs), sum(map(len, refs.values())), len(preds)) == (1270, 2107, 1270)
    scores = score_captions(refs, preds, java=True)
    for key, want in DDLA.items():
        assert getattr(scores, key) == pytest.approx(want, abs=0.001), key
    assert scores.tokenizer == "ptb-java" and scores.notes == () and scores.pairs == 1270
    # the Spot-the-Diff test pairs whose annotators all saw no difference (as parse_spotdiff finds)
    assert scores.no_change_pairs == 28
    assert scores.no_change_accuracy == 0.0  # DDLA never says so
    assert 0.10 < scores.direction_accuracy < 0.25 and scores.direction_pairs > 400
    per = {p["id"]: p for p in scores.per_pair}
    assert len(per) == 1270 and per["256"]["prediction"] == "the person walking is gone"
    assert per["256"]["direction"] == {"reference": "left", "predicted": "left"}


def test_java_tokenizer_is_pycocoevalcaps(ddla: tuple[dict, dict]) -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs, _ = ddla
    sample = {k: refs[k] for k in list(refs)[:300]}
    sample["odd"] = ['It isn\'t a "test", is it?', "", "two\nlines -- (really)...", "the car's door; 3.5 m"]
    ours = tokenize(sample, java=True)
    theirs = PTBTokenizer().tokenize({k: [{"caption": s} for s in v] for k, v in sample.items()})
    assert ours == theirs
    assert ours["odd"][0] == "it is n't a test is it"


def test_without_java_one_note_and_close_scores(ddla: tuple[dict, dict], monkeypatch, tmp_path: Path) -> None:
    refs, preds = ddla
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on PATH
    scores = score_captions(refs, preds)
    assert scores.meteor is None and scores.tokenizer == "python-approx"
    (note,) = scores.notes
    assert "java not found" in note and "METEOR" in note and "default-jre-headless" in note
    # The Python tokenisation is close to PTB's on these captions (measured: all within 0.0003).
    for key in ("bleu_1", "bleu_4", "rouge_l", "cider_d"):
        assert getattr(scores, key) == pytest.approx(DDLA[key], abs=0.002), key
    with pytest.raises(Exception, match="java not found"):
        score_captions(refs, preds, java=True)


def test_cli_without_java_says_so_in_one_line(monkeypatch, tmp_path: Path, capsys) -> None:
    refs = {"1": ["a red car appeared in the lower left"], "2": ["no visible change"]}
    preds = {"1": "a red car appeared in the lower left", "2": "a person left the top"}
    write_coco(tmp_path / "refs.json", tmp_path / "preds.json", refs, preds)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["finetune", "score", str(tmp_path / "refs.json"), str(tmp_path / "preds.json")]) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if line.startswith("monitor: warning: java not found")]
    assert len(warnings) == 1 and "METEOR" in warnings[0]
    # BLEU-1: 8 of 13 predicted words match (the second prediction shares none)
    rows = dict(line.split(None, 1) for line in out.splitlines() if line.startswith(("BLEU-1", "METEOR", "pairs")))
    assert rows["METEOR"].strip() == "-" and rows["BLEU-1"].strip() == "0.6154" and "python-approx" in rows["pairs"]


@pytest.mark.parametrize(
    ("sentence", "direction"),
    [
        ("a red car appeared in the lower left", "appeared"),
        ("a red car disappeared from the lower left", "left"),
        ("A person arrived on the left.", "appeared"),
        ("the car on the left is gone", "left"),
        ("the person on the left left", "left"),
        ("the white van left the top left corner", "left"),
        ("the black car is no longer there", "left"),
        ("there are more people", "appeared"),
        ("there are no more people on the sidewalk", "left"),
        ("a new car is parked on the left side", "appeared"),
        ("a bag was removed from the centre", "left"),
        ("a person in blue moved from the left to the top right", None),
        ("a person arrived and a car left", None),
        ("there is a person walking in the parking lot", None),
        ("no visible change", None),
    ],
)
def test_direction_words(sentence: str, direction: str | None) -> None:
    assert caption_direction(sentence) == direction


@pytest.mark.parametrize(
    ("sentence", "no_change"),
    [
        ("no visible change", True),
        ("No visible change.", True),
        ("there are no differences", True),
        ("i see no differences between the two images", True),
        ("nothing has changed", True),
        ("the images are identical", True),
        ("no differnces", True),
        ("there is no car in the after image", False),
        ("no people in the after photo", False),
        ("a red car appeared, no other change", False),
        ("nothing", False),
    ],
)
def test_no_change_recognition(sentence: str, no_change: bool) -> None:
    assert is_no_change(sentence) is no_change


def test_direction_and_no_change_accuracy() -> None:
    two = ["a van moved from the top to the centre", "a white car appeared at the bottom"]
    refs = {
        "a": ["a red car appeared in the lower left"],
        "b": ["a person disappeared from the centre", "the person is gone"],
        "c": ["no visible change"],
        "d": ["a box moved from the left to the right"],  # no direction: not judged
        "e": ["a van appeared at the top", "a bag disappeared from the bottom"],
        "f": ["there are no differences", "nothing changed"],
        "g": two,
        "h": two,
        "i": two,
        "j": ["a green bag appeared on the left"],
    }
    preds = {
        "a": "a red car appeared in the lower left",
        "b": "a person appeared in the centre",  # wrong direction
        "c": "No visible change.",
        "d": "no visible change",  # a false "no change"; d has no direction to judge
        "e": "a van appeared at the top",  # judged against the van's sentence: right
        "f": "a car left the top right",  # a missed "no change"
        "g": "a van moved from the top to the centre",  # the van's move, rightly: not judged
        "h": "a white car moved from the centre to the bottom",  # the car that appeared: wrong
        "i": "a van moved from the top to the centre. a white car disappeared from the bottom",  # 2nd wrong
        "j": "a green bag appeared on the left",  # "left" here is a place, not a departure
    }
    per = {p["id"]: p["direction"] for p in score_captions(refs, preds, java=False).per_pair}
    assert per["h"] == {"reference": "appeared", "predicted": None}
    assert per["i"] == {"reference": "appeared", "predicted": "left"}
    assert per["g"] == per["d"] == per["c"] == {"reference": None, "predicted": None}
    s = score_captions(refs, preds, java=False)
    assert (s.direction_pairs, s.direction_accuracy) == (6, 0.5)  # a, b, e, h, i, j; right: a, e, j
    assert (s.no_change_pairs, s.no_change_accuracy) == (2, 0.5)
    assert s.false_no_change == pytest.approx(1 / 8)
    exact = score_captions({"a": refs["a"]}, {"a": preds["a"]}, java=False)
    assert exact.bleu_4 == pytest.approx(1.0) and exact.rouge_l == pytest.approx(1.0)
    wrong = score_captions({"a": refs["a"]}, {"a": "nothing at all here"}, java=False)
    assert wrong.bleu_1 == pytest.approx(0.0, abs=1e-6) and wrong.cider_d == 0.0


def test_cli_score_json_and_report(ddla: tuple[dict, dict], tmp_path: Path, capsys) -> None:
    refs, preds = ddla
    ids = list(preds)[:40]
    write_coco(tmp_path / "r.json", tmp_path / "p.json", refs, {k: preds[k] for k in ids})
    code = main(["finetune", "score", str(tmp_path / "r.json"), str(tmp_path / "p.json"), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    direct = score_captions({k: refs[k] for k in ids}, {k: preds[k] for k in ids})
    assert printed["pairs"] == 40 and printed["cider_d"] == pytest.approx(direct.cider_d)
    assert printed["meteor"] == pytest.approx(direct.meteor) and printed["meteor"] > 0
    report = tmp_path / "report"
    assert main(["finetune", "score", str(tmp_path / "r.json"), str(tmp_path / "p.json"), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "CIDEr-D" in out and f"{direct.cider_d:.4f}" in out
    doc = json.loads((report / "scores.json").read_text())
    (system,) = doc["systems"].values()
    assert system["bleu_4"] == pytest.approx(direct.bleu_4) and len(system["per_pair"]) == 40
    png = cv2.imread(str(report / "scores.png"))
    assert png is not None and png.shape[0] > 200 and png.shape[1] > 400


def _bad_files(tmp_path: Path) -> dict[str, tuple[str, str, str]]:
    """name -> (refs text, preds text, expected error fragment)"""
    good_refs = json.dumps({"annotations": [{"image_id": "1", "caption": "a car"}]})
    good_preds = json.dumps([{"image_id": "1", "caption": "a car"}])
    return {
        "refs not JSON": ("{oops", good_preds, "refs.json: not JSON"),
        "preds not JSON": (good_refs, "", "preds.json: not JSON"),
        "no annotations": (json.dumps({"images": []}), good_preds, "refs.json: missing key 'annotations'"),
        "no caption": (
            json.dumps({"annotations": [{"image_id": "1"}]}),
            good_preds,
            "refs.json: annotations[0]: missing key 'caption'",
        ),
        "no image_id": (good_refs, json.dumps([{"caption": "x"}]), "predictions[0]: missing key 'image_id'"),
        "caption type": (good_refs, json.dumps([{"image_id": "1", "caption": 3}]), "predictions[0].caption"),
        "unknown id": (
            good_refs,
            json.dumps([{"image_id": "1", "caption": "x"}, {"image_id": 7, "caption": "y"}]),
            "preds.json: predictions[1].image_id '7': not in the references",
        ),
        "twice": (good_refs, json.dumps([{"image_id": 1, "caption": "x"}] * 2), "[1].image_id '1': a second"),
        "not a list": (good_refs, json.dumps({"image_id": "1"}), "preds.json: predictions: expected a list"),
    }


def test_bad_coco_files_one_line_each(tmp_path: Path, capsys) -> None:
    for name, (refs, preds, expected) in _bad_files(tmp_path).items():
        (tmp_path / "refs.json").write_text(refs)
        (tmp_path / "preds.json").write_text(preds)
        code = main(["finetune", "score", str(tmp_path / "refs.json"), str(tmp_path / "preds.json")])
        out, err = capsys.readouterr()
        assert code == 1, name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("monitor: error: ") and expected in lines[0], (name, err)
        assert "Traceback" not in err and out == ""
    with pytest.raises(ScoreInputError, match="not found"):
        load_coco_references(tmp_path / "missing.json")
