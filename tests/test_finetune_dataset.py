"""finetune.dataset / convert / synthetic and `monitor finetune prepare|check`: the JSONL format,
every bad-dataset problem with its line, the LLaVA export, Spot-the-Diff parsing on the real
annotation files, capture folders with real JPEGs, and the synthetic generator."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import SHARED_DATA, T0, make_event

from finetune.convert import ConvertStats, from_captures, from_spotdiff, parse_spotdiff
from finetune.dataset import (
    QUESTION,
    DatasetError,
    PairRecord,
    conversation,
    load_dataset,
    to_llava,
    write_jsonl,
)
from finetune.language import caption_direction
from finetune.synthetic import COLOURS, KINDS, SYNTHETIC_WORDS, synthetic_pair, synthetic_pairs
from monitor.cli import main
from pipelines.prompt import NEXT_TURN

SPOTDIFF = SHARED_DATA / "spotdiff"


def _png(path: Path, value: int = 120, size: tuple[int, int] = (48, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((*size, 3), value, np.uint8)
    cv2.circle(img, (20, 20), 8, (0, 0, 255), -1)
    assert cv2.imwrite(str(path), img)
    return path


def _errors(err: str) -> list[str]:
    return [line.removeprefix("monitor: error: ") for line in err.splitlines() if line.startswith("monitor: error: ")]


# -- the JSONL format ---------------------------------------------------------------------------
BAD_LINES = [
    '{"id": "a", "before": "b.png", "after": "a.png", "captions": ["a red car appeared on the left"]}',
    '{"id": "a", "before": "b.png", "after": "a.png", "captions": ["a bag appeared"]}',
    '{"id": "b", "before": "missing.png", "after": "broken.png", "captions": ["a bag appeared"]}',
    '{"id": "c", "before": "b.png", "after": "a.png", "captions": []}',
    '{"id": "d", "before": "b.png", "captions": ["  "], "colour": 3}',
    "not json",
    "[1, 2]",
    "",
    '{"id": "e", "before": "b.png", "after": "a.png", "captions": ["no visible change", "a car appeared"]}',
    '{"id": "f", "before": "b.png", "after": "a.png", "captions": ["a van left"], "t_before": "yesterday"}',
    '{"id": "g", "before": "b.png", "after": "/nowhere/x.png", "captions": ["a van left"]}',
]


@pytest.fixture
def bad_dataset(tmp_path: Path) -> Path:
    _png(tmp_path / "b.png")
    _png(tmp_path / "a.png", 140)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(BAD_LINES) + "\n")
    return path


def test_every_problem_with_its_line(bad_dataset: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset(bad_dataset)
    p = f"{bad_dataset}"
    assert list(info.value.problems) == [
        f"{p}:2: id 'a' duplicates line 1",
        f"{p}:3: before: image not found: {bad_dataset.parent / 'missing.png'}",
        f"{p}:3: after: unreadable image (not a decodable image file): {bad_dataset.parent / 'broken.png'}",
        f'{p}:4: captions: empty (give at least one sentence, or ["no visible change"])',
        f"{p}:5: after: missing",
        f"{p}:5: captions: sentence 0 is empty",
        f"{p}:5: colour: unknown field",
        f"{p}:6: not JSON (Expecting value at column 1)",
        f"{p}:7: not a JSON object",
        f"{p}:9: 'no visible change' must be the only caption of a pair",
        f"{p}:10: t_before: not a number of seconds or an ISO-8601 time: 'yesterday'",
        f"{p}:11: after: image not found: /nowhere/x.png",
    ]
    ds = load_dataset(bad_dataset, skip_bad=True)
    assert [r.id for r in ds] == ["a"] and ds.skipped == 9 and len(ds.problems) == 12
    before, after = ds.images(ds.records[0])
    assert before.shape == (48, 64, 3) and before[20, 20].tolist() == [255, 0, 0]  # RGB: the red dot
    assert after[0, 0].tolist() == [140, 140, 140]


def test_check_cli_lists_problems_or_reports(bad_dataset: Path, capsys) -> None:
    assert main(["finetune", "check", str(bad_dataset)]) == 1
    out, err = capsys.readouterr()
    errors = _errors(err)
    assert len(errors) == 13 and errors[0].endswith(":2: id 'a' duplicates line 1")
    assert errors[-1] == f"12 problems in {bad_dataset}" and "Traceback" not in err and out == ""
    assert main(["finetune", "check", str(bad_dataset.parent), "--skip-bad"]) == 0
    out, err = capsys.readouterr()
    assert f"{bad_dataset}: 1 pairs OK (2 images decoded), 9 bad lines skipped" in out
    assert "direction of change pairs: appeared 1" in out and err.count("monitor: warning: skipped") == 12
    assert main(["finetune", "check", str(bad_dataset.parent / "nothing.jsonl")]) == 1
    assert _errors(capsys.readouterr().err) == [f"dataset not found: {bad_dataset.parent / 'nothing.jsonl'}"]


def test_record_round_trip_times_and_paths(tmp_path: Path) -> None:
    abs_after = _png(tmp_path / "elsewhere" / "after.jpg")
    _png(tmp_path / "data" / "img" / "before.jpg")
    rec = PairRecord(
        id=7,
        camera="gate",
        before="img/before.jpg",
        after=str(abs_after),
        t_before="2026-11-18T08:00:00.500Z",
        t_after=1795000012.5,
        captions=["  a person   arrived on the left "],
        regions=[{"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4, "change": "appeared", "label": "person"}],
    )
    assert (
        rec.id == "7"
        and rec.t_before == pytest.approx(1794988800.5)
        and rec.captions == ["a person arrived on the left"]
    )
    write_jsonl(tmp_path / "data" / "pairs.jsonl", [rec])
    ds = load_dataset(tmp_path / "data")
    assert ds.records == (rec,)
    assert ds.resolve(rec.before) == tmp_path / "data" / "img" / "before.jpg" and ds.resolve(rec.after) == abs_after
    with pytest.raises(ValueError, match="less than or equal to 1"):
        PairRecord(
            id="x", before="a", after="b", captions=["x"], regions=[{"x": 2, "y": 0, "w": 0, "h": 0, "change": "c"}]
        )


def test_llava_export_multi_turn_and_single(tmp_path: Path) -> None:
    for name in ("b1", "a1", "b2", "a2"):
        _png(tmp_path / "images" / f"{name}.png")
    records = [
        PairRecord(
            id="one",
            before="images/b1.png",
            after="images/a1.png",
            captions=["a red car appeared", "a box disappeared"],
        ),
        PairRecord(id="two", before="images/b2.png", after="images/a2.png", captions=["no visible change"]),
    ]
    write_jsonl(tmp_path / "pairs.jsonl", records)
    ds = load_dataset(tmp_path)
    assert to_llava(ds, tmp_path / "llava.json") == 2
    first, second = json.loads((tmp_path / "llava.json").read_text())
    assert first["image"] == ["images/b1.png", "images/a1.png"]
    assert first["conversations"] == [
        {"from": "human", "value": f"<image>\n<image>\n{QUESTION}"},
        {"from": "gpt", "value": "a red car appeared"},
        {"from": "human", "value": NEXT_TURN},
        {"from": "gpt", "value": "a box disappeared"},
    ]
    assert second["conversations"][1:] == [{"from": "gpt", "value": "no visible change"}]
    # elsewhere: absolute paths; one joined answer
    to_llava(ds, tmp_path / "out" / "single.json", multi_turn=False)
    (first, _) = json.loads((tmp_path / "out" / "single.json").read_text())
    assert first["image"][0] == str((tmp_path / "images" / "b1.png").resolve())
    assert first["conversations"][1:] == [{"from": "gpt", "value": "a red car appeared and a box disappeared"}]
    assert conversation(["x", "y", "z"], multi_turn=False)[1]["value"] == "x, y and z"


# -- Spot-the-Diff --------------------------------------------------------------------------------
def test_spotdiff_real_annotations() -> None:
    expected = {  # entries, unique img_ids, sentences in the files; pairs after cleaning
        "train": (9524, 8566, 17676, 8520),
        "val": (1634, 1493, 3310, 1485),
        "test": (1404, 1270, 2107, 1259),  # 1270 pairs / 2107 captions = the DDLA reference file
    }
    for split, (entries, unique, sentences, pairs) in expected.items():
        parsed, stats = parse_spotdiff(SPOTDIFF / f"{split}.json")
        c = stats.counts
        assert c["sentences read"] == sentences and entries - c["entries merged into an earlier img_id"] == unique
        assert unique - c["pairs without a usable sentence dropped"] == pairs == len(parsed) == stats.pairs
        kept = [s for caps in parsed.values() for s in caps if s != "no visible change"]
        nc_pairs = sum(caps == ["no visible change"] for caps in parsed.values())
        assert nc_pairs == c["no-change pairs"] > 0
        # every sentence read is kept, or dropped for one counted reason
        dropped = c["sentences dropped (too short)"] + c["repeated sentences dropped"] + c["no-change sentences"]
        assert len(kept) + dropped == sentences, split
        for s in kept:
            assert s == s.lower() and len(s.split()) >= 2 and re.fullmatch(r"[a-z0-9].*[a-z0-9]", s), s
    train, _ = parse_spotdiff(SPOTDIFF / "train.json")
    assert train["11231"] == ["there is a person on the stairs now"]  # was "_there is ..."
    test, stats = parse_spotdiff(SPOTDIFF / "test.json")
    assert test["224"] == ["no visible change"]  # three annotators, three ways to say "no difference"
    assert "9420" not in test  # its only sentence is empty
    assert test["564"][0] == "the white care on the bottom left is gone" and len(test["564"]) == 8  # 3 entries merged


def test_spotdiff_convert_checks_images(tmp_path: Path, capsys) -> None:
    ann = tmp_path / "ann.json"
    ann.write_text(
        json.dumps(
            [
                {"img_id": "1", "sentences": ["The blue car is gone.", "the blue car is gone", ""]},
                {"img_id": 2, "sentences": ["a man walked in"]},
                {"img_id": "3", "sentences": ["a van arrived"]},
                {"img_id": "4", "sentences": ["1"]},
            ]
        )
    )
    images = tmp_path / "imgs"
    _png(images / "1.png")
    _png(images / "1_2.png")
    _png(images / "2.png")  # 2_2.png missing
    (images / "3.png").write_bytes(b"garbage")
    _png(images / "3_2.png")
    with pytest.raises(DatasetError) as info:
        from_spotdiff(ann, images, tmp_path / "out")
    assert list(info.value.problems) == [
        f"{ann}: img_id 2: after: image not found: {images.resolve() / '2_2.png'}",
        f"{ann}: img_id 3: before: unreadable image (not a decodable image file): {images.resolve() / '3.png'}",
    ]
    code = main(
        [
            "finetune",
            "prepare",
            "--from-spotdiff",
            str(ann),
            "--images",
            str(images),
            "--out",
            str(tmp_path / "out"),
            "--skip-bad",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "1 pairs" in out and "2 bad pairs skipped" in out and "1 pairs without a usable sentence dropped" in out
    ds = load_dataset(tmp_path / "out")
    assert [(r.id, r.camera, r.captions) for r in ds] == [("1", "spotdiff", ["the blue car is gone"])]
    assert Path(ds.records[0].before) == images.resolve() / "1.png"  # outside the dataset: absolute
    assert main(["finetune", "prepare", "--from-spotdiff", str(ann), "--out", str(tmp_path / "o2")]) == 1
    assert _errors(capsys.readouterr().err) == [
        "--from-spotdiff needs --images DIR (the folder of <id>.png and <id>_2.png)"
    ]


# -- capture folders ------------------------------------------------------------------------------
def _capture(root: Path, seq: int, text: str, captions: str | None = None, *, folder_suffix: str = "") -> Path:
    event = make_event(camera="gate", seq=seq, text=text, t=10.0 * seq)
    folder = root / "gate" / event.t_after[:10] / (event.event_id + folder_suffix)
    folder.mkdir(parents=True)
    for name, value in (("before.jpg", 90), ("after.jpg", 160)):
        img = np.full((36, 64, 3), value, np.uint8)
        ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        (folder / name).write_bytes(data.tobytes())
    (folder / "event.json").write_text(event.model_dump_json() + "\n")
    if captions is not None:
        (folder / "captions.txt").write_text(captions, encoding="utf-8")
    return folder


def test_from_captures(tmp_path: Path, capsys) -> None:
    root = tmp_path / "captures"
    corrected = _capture(
        root, 1, "a person arrived in the centre", "a man in red arrived at the gate\n\n  a bag was left  \n"
    )
    _capture(root, 2, "a vehicle arrived on the right")  # no captions.txt: uncorrected
    _capture(root, 3, "something moved briefly", "Nothing changed.\n")  # the operator says: no change
    _capture(root, 4, "a person left", folder_suffix=".tmp")  # still being written: ignored
    path, stats = from_captures(root, tmp_path / "ds")
    ds = load_dataset(path)
    assert [r.captions for r in ds] == [["a man in red arrived at the gate", "a bag was left"], ["no visible change"]]
    first = ds.records[0]
    assert first.id == "gate-0000000000000001" and first.camera == "gate"
    assert (first.t_before, first.t_after) == (pytest.approx(T0 + 10 - 5), pytest.approx(T0 + 10))
    assert first.regions[0].label == "person" and first.regions[0].change == "appeared"
    assert first.before == "images/gate/gate-0000000000000001_before.jpg"
    assert stats.counts["uncorrected skipped (use --include-uncorrected)"] == 1
    assert stats.counts["unfinished captures ignored"] == 1 and stats.counts["no-change pairs"] == 1
    # retention deletes the capture: the dataset keeps its (hard-linked) images
    for f in corrected.iterdir():
        f.unlink()
    corrected.rmdir()
    assert load_dataset(path).images(first)[0][0, 0].tolist() == pytest.approx([90, 90, 90], abs=2)

    code = main(
        [
            "finetune",
            "prepare",
            "--from-captures",
            str(root),
            "--include-uncorrected",
            "--out",
            str(tmp_path / "d2"),
            "--llava-json",
        ]
    )
    assert code == 0 and "1 uncorrected" in capsys.readouterr().out
    ds2 = load_dataset(tmp_path / "d2")
    assert [r.captions for r in ds2] == [["a vehicle arrived on the right"], ["no visible change"]]
    assert len(json.loads((tmp_path / "d2" / "llava.json").read_text())) == 2


def test_bad_captures_listed_or_skipped(tmp_path: Path, capsys) -> None:
    root = tmp_path / "captures"
    _capture(root, 1, "a person arrived", "a person arrived\n")
    broken = _capture(root, 2, "a van arrived", "a van arrived\n")
    (broken / "event.json").write_text("{not json")
    no_after = _capture(root, 3, "a bag appeared", "a bag appeared\n")
    (no_after / "after.jpg").unlink()
    empty = _capture(root, 4, "x", "\n \n")
    code = main(["finetune", "prepare", "--from-captures", str(root), "--out", str(tmp_path / "ds")])
    errors = _errors(capsys.readouterr().err)
    assert code == 1 and errors[-1] == f"3 problems in {root}"
    rel = {p: str(p.relative_to(root)) for p in (broken, no_after, empty)}
    assert errors[0].startswith(f"{root}: {rel[broken]}: event.json: not a change event")
    assert errors[1] == f"{root}: {rel[no_after]}: after: image not found: {no_after / 'after.jpg'}"
    assert errors[2].startswith(f"{root}: {rel[empty]}: captions") and not (tmp_path / "ds" / "pairs.jsonl").exists()
    _, stats = from_captures(root, tmp_path / "ds", skip_bad=True)
    assert stats.pairs == 1 and stats.counts["bad pairs skipped"] == 3


def test_captures_written_by_the_daemon(tmp_path: Path) -> None:
    """The contract with monitor.sinks.captures: what CaptureSink writes, prepare reads."""
    from monitor.config import CapturesConfig
    from monitor.records import ChangeCandidate, Frame, GateScores
    from monitor.sinks.captures import CaptureSink

    sink = CaptureSink(CapturesConfig(enabled=True, dir=tmp_path / "cap"))
    event = make_event(camera="lot", seq=5, text="a vehicle arrived on the right")
    frames = [Frame("lot", i, 0.0, T0, np.full((40, 60, 3), 60 * i, np.uint8)) for i in (1, 2)]
    cand = ChangeCandidate("lot", frames[0], frames[1], 0.0, (), GateScores(0.9, 0.05))
    folder = sink.write(cand, event)
    (folder / "captions.txt").write_text("a white van parked on the right\n")
    path, _ = from_captures(tmp_path / "cap", tmp_path / "ds")
    (rec,) = load_dataset(path).records
    assert (rec.id, rec.captions) == (event.event_id, ["a white van parked on the right"])


# -- synthetic ------------------------------------------------------------------------------------
def _colour_share(img: np.ndarray, colour: str) -> float:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    mask = {
        "red": (r > g + 60) & (r > b + 60),
        "yellow": (r > b + 80) & (g > b + 80),
        "green": (g > r + 50) & (g > b + 50),
        "blue": (b > r + 60) & (b > g + 20),
    }[colour]
    return float(mask.sum())


def test_synthetic_captions_match_the_pixels() -> None:
    """At 64 px, every chromatic object that appeared/disappeared shows its named colour in its
    region of the frame it is in (>= 0.8 % of the frame) and not in the other frame."""
    size, checked = 64, 0
    for pair in synthetic_pairs(200, seed=3, size=size):
        assert pair.before.shape == pair.after.shape == (size, size, 3) and pair.before.dtype == np.uint8
        if pair.captions == ("no visible change",):
            assert pair.regions == () and np.abs(pair.after.astype(int) - pair.before).mean() > 1  # nuisances only
            continue
        assert len(pair.captions) == len(pair.regions) in (1, 2)
        for caption, region in zip(pair.captions, pair.regions):
            want = {"appeared": "appeared", "disappeared": "left", "moved": None}[region.change]
            assert caption_direction(caption) == want, caption
            assert region.label in caption and region.w * size >= 0.12 * size * 0.9
            colour = next((c for c in ("red", "yellow", "green", "blue") if f" {c}" in caption), None)
            if colour is None or region.change == "moved":
                continue
            x0, y0 = int(region.x * size), int(region.y * size)
            x1, y1 = int(np.ceil((region.x + region.w) * size)), int(np.ceil((region.y + region.h) * size))
            present, absent = (pair.after, pair.before) if region.change == "appeared" else (pair.before, pair.after)
            assert _colour_share(present[y0:y1, x0:x1], colour) >= 0.008 * size * size, (pair.id, caption)
            assert _colour_share(absent[y0:y1, x0:x1], colour) <= 0.004 * size * size, (pair.id, caption)
            checked += 1
    assert checked >= 60


def test_synthetic_is_deterministic_and_covers_its_vocabulary() -> None:
    a, b = synthetic_pair(17, seed=5, size=80), list(synthetic_pairs(18, seed=5, size=80))[17]
    assert np.array_equal(a.before, b.before) and np.array_equal(a.after, b.after) and a.captions == b.captions
    other = synthetic_pair(17, seed=6, size=80)
    assert not np.array_equal(a.before, other.before)
    pairs = list(synthetic_pairs(300, seed=1, size=32))
    captions = [c for p in pairs for c in p.captions]
    tokens = {t for text in [*captions, QUESTION, NEXT_TURN, "x, y and z"] for t in re.findall(r"\w+|[^\w\s]", text)}
    assert tokens - {"x", "y", "z"} <= set(SYNTHETIC_WORDS)
    assert all(f" {k} " in " ".join(captions) + " " for k in KINDS if k != "person") and "a person in" in " ".join(
        captions
    )
    assert all(any(f" {c} " in s + " " for s in captions) for c in COLOURS)
    assert {r.change for p in pairs for r in p.regions} == {"appeared", "disappeared", "moved"}
    no_change = sum(p.captions == ("no visible change",) for p in pairs) / len(pairs)
    assert 0.13 < no_change < 0.27
    with pytest.raises(ValueError, match="too small"):
        synthetic_pair(0, size=24)


def test_synthetic_two_change_share_and_no_disguised_moves() -> None:
    """`two_change_fraction` sets the share of two-change pairs; an arrival and a departure of the
    same kind and colour (which would look like one object moving) are never drawn together."""
    for fraction in (0.3, 0.7):
        pairs = [p for p in synthetic_pairs(400, seed=2, size=32, two_change_fraction=fraction) if p.regions]
        two = [p for p in pairs if len(p.regions) == 2]
        assert abs(len(two) / len(pairs) - fraction) < 0.08, fraction
        for p in two:
            said = {(r.change, c.split(" appeared")[0].split(" disappeared")[0]) for r, c in zip(p.regions, p.captions)}
            kinds = {what for change, what in said if change == "appeared"}
            assert not kinds & {what for change, what in said if change == "disappeared"}, p.captions


def test_prepare_synthetic_cli(tmp_path: Path, capsys) -> None:
    args = ["finetune", "prepare", "--synthetic", "12", "--image-size", "64", "--seed", "4", "--llava-json"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "a" / "pairs.jsonl").read_bytes() == (tmp_path / "b" / "pairs.jsonl").read_bytes()
    ds = load_dataset(tmp_path / "a")
    assert len(ds) == 12 and {r.camera for r in ds} == {"synthetic"}
    first = ds.records[0]
    assert (tmp_path / "a" / first.after).read_bytes() == (tmp_path / "b" / first.after).read_bytes()
    before, after = ds.images(first)
    pair = synthetic_pair(0, seed=4, size=64)
    assert np.array_equal(before, pair.before) and np.array_equal(after, pair.after)  # PNG: lossless
    assert tuple(first.captions) == pair.captions
    assert main(["finetune", "check", str(tmp_path / "a")]) == 0
    assert "12 pairs OK (24 images decoded)" in capsys.readouterr().out
    mix = ["--synthetic", "20", "--image-size", "32", "--no-change-fraction", "0", "--two-change-fraction", "1"]
    assert main(["finetune", "prepare", *mix, "--out", str(tmp_path / "two")]) == 0
    assert [len(r.captions) for r in load_dataset(tmp_path / "two", check_images=False)] == [2] * 20
    # misuse: one line each
    for bad, message in [
        (["--synthetic", "3", "--images", "x"], "--images goes with --from-spotdiff"),
        (["--synthetic", "3", "--image-size", "16"], "--image-size: at least 32 px"),
    ]:
        assert main(["finetune", "prepare", *bad, "--out", str(tmp_path / "c")]) == 1
        (line,) = _errors(capsys.readouterr().err)
        assert line.startswith(message)
    with pytest.raises(SystemExit) as info:  # argparse's own usage error
        main(["finetune", "prepare", "--synthetic", "3", "--two-change-fraction", "1.5", "--out", str(tmp_path / "c")])
    assert info.value.code == 2
    assert "--two-change-fraction: must be between 0 and 1 (got 1.5)" in capsys.readouterr().err


def test_help_of_every_step(capsys) -> None:
    for step in ("prepare", "check", "score"):
        with pytest.raises(SystemExit) as info:
            main(["finetune", step, "--help"])
        assert info.value.code == 0 and "usage: monitor finetune " + step in capsys.readouterr().out


def test_convert_stats_summary() -> None:
    stats = ConvertStats(pairs=3)
    stats.counts["b things"] += 2
    stats.counts["a things"] += 1
    assert stats.summary() == "3 pairs (1 a things, 2 b things)"
