"""`monitor eval-log`: scoring a change log against a truth file, on hand-made logs (each score
can fail) and on a real run over the shared room clip with the real detector."""

from __future__ import annotations

import json

from support import DETECTOR, VIDEOS, make_event, run_monitor, run_source

from monitor.readers.eval_log import score, text_defects
from monitor.readers.truth import load_truth
from monitor.sinks.logfiles import JSONL_NAME

ROOM = VIDEOS / "one-by-one-person-detection.mp4"


def box(x: float, y: float, change: str, label: str | None) -> dict:
    return {"x": x, "y": y, "w": 0.1, "h": 0.2, "change": change, "label": label}


def write_log(path, events) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / JSONL_NAME).write_text("".join(e.model_dump_json() + "\n" for e in events))


def test_intervals_truth_scores_found_direction_names_and_quiet(tmp_path) -> None:
    truth_path = tmp_path / "t.json"
    truth_path.write_text(json.dumps({"present_intervals_s": [[10, 20], [40, 50]], "what": "person", "end_s": 80}))
    truth = load_truth(truth_path)
    events = [
        make_event(t=12, seq=1, text="a person arrived in the centre", regions=[box(0.4, 0.4, "appeared", "person")]),
        make_event(t=21, seq=2, text="something appeared and stayed", regions=[box(0.4, 0.4, "appeared", None)]),
        make_event(t=42, seq=3, text="a person arrived", regions=[box(0.4, 0.4, "appeared", "person")]),
        # nothing at 50 (a missed departure); and an event in the quiet stretch 50-80:
        make_event(t=70, seq=4, text="a car left the left", regions=[box(0.1, 0.4, "disappeared", "car")]),
    ]
    result = score(events, truth)
    assert (result.expected, result.found, result.direction_right) == (4, 3, 2)
    assert (result.named_expected, result.named_right) == (3, 2)
    assert result.quiet_events == 1 and result.defects == 1
    assert result.missed == ["person left at 50.0-50.0 s"]
    assert result.rates() == {"found": 0.75, "direction": 0.6667, "named": 0.6667, "static_persisting": None}


def test_a_pass_through_stands_for_arrival_and_departure(tmp_path) -> None:
    truth_path = tmp_path / "t.json"
    truth_path.write_text(json.dumps({"present_intervals_s": [[10, 16]], "what": "vehicle"}))
    passing = make_event(t=12, text="a car passed through the centre", regions=[box(0.4, 0.4, "appeared", "car")])
    passing = passing.model_copy(update={"transient": True})
    result = score([passing], load_truth(truth_path))
    assert (result.found, result.direction_right, result.named_right) == (2, 2, 2), result


def test_a_left_bag_must_persist(tmp_path) -> None:
    truth_path = tmp_path / "t.json"
    bag = {"id": "bag-1", "what": "bag", "kind": "arrived", "t_start": 20, "t": 22, "box": [0.7, 0.7, 0.1, 0.1]}
    bag |= {"static": True, "until": None}
    truth_path.write_text(json.dumps({"events": [bag], "quiet_s": [[30, 60]]}))
    truth = load_truth(truth_path)
    left = make_event(t=23, seq=1, text="a bag was left at the lower right", regions=[box(0.7, 0.7, "appeared", "bag")])
    result = score([left], truth)
    assert (result.static_expected, result.static_found, result.static_persisting) == (1, 1, 1)
    gone = make_event(t=40, seq=2, text="a bag was taken", regions=[box(0.72, 0.72, "disappeared", "bag")])
    result = score([left, gone], truth)
    assert (result.static_found, result.static_persisting, result.quiet_events) == (1, 0, 1)


def test_text_defects() -> None:
    assert text_defects("something appeared on the left and stayed and something appeared on the left and stayed")
    assert text_defects("a vehicle left the left") == ["nonsense place"]
    assert text_defects("a car arrived and 1 smaller changes elsewhere") == ["wrong count"]
    assert text_defects("a car arrived, a bus left, a dog arrived and a cat left") == ["more than 3 clauses"]
    assert text_defects("a person left the left side") == []
    assert text_defects("2 people arrived on the left and a car left the centre") == []


def test_bad_truth_files_are_one_line(tmp_path) -> None:
    write_log(tmp_path / "logs", [make_event()])
    bad = tmp_path / "bad.json"
    for content, expected in [
        ("{", "not JSON"),
        ('{"events": [{"kind": "came", "t": 1}]}', "events.0.kind"),
        ('{"note": "nothing to score"}', "needs `events` or a `present_intervals_s` list"),
    ]:
        bad.write_text(content)
        proc = run_monitor("eval-log", tmp_path / "logs", bad, timeout=30)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("monitor: error: "), lines
    bad.write_text('{"present_intervals_s": [[1, 2]]}')
    proc = run_monitor("eval-log", tmp_path / "nowhere", bad, timeout=30)
    assert proc.returncode == 1 and "no change log at" in proc.stderr


def test_room_clip_with_the_detector_meets_the_goals(tmp_path) -> None:
    """The shared room truth, told what the intervals are of (`--what person`, the file as
    shared): every arrival and departure found, direction and name right, nothing logged while
    the room is empty, no sentence defect."""
    run_source(ROOM, tmp_path / "logs", "room", describer={"detector": {"model": str(DETECTOR)}})
    shared = ROOM.with_suffix(".truth.json")
    untold = json.loads(run_monitor("eval-log", tmp_path / "logs", shared, "--json", timeout=60).stdout)
    assert untold["named_expected"] == 0  # the shared file does not say what the intervals are of
    truth = json.loads(shared.read_text())
    truth["what"] = "person"
    (tmp_path / "room.truth.json").write_text(json.dumps(truth))
    told = json.loads(
        run_monitor("eval-log", tmp_path / "logs", shared, "--json", "--what", "person", timeout=60).stdout
    )
    proc = run_monitor("eval-log", tmp_path / "logs", tmp_path / "room.truth.json", "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert told == doc and doc["named_expected"] == 12
    assert doc["rates"]["found"] >= 0.95 and doc["rates"]["direction"] == 1.0, doc
    assert doc["rates"]["named"] >= 0.9, doc
    assert doc["quiet_events"] == 0 and doc["defects"] == 0, doc
    table = run_monitor("eval-log", tmp_path / "logs", tmp_path / "room.truth.json", timeout=60)
    assert "arrivals and departures found" in table.stdout and "12/12" in table.stdout, table.stdout
