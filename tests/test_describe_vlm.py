"""The VLM describer in the daemon, on a tiny random LLaVA: the real `monitor` process on shared
footage, SIGHUP adapter hot swap, the candidate -> pair conversion, `monitor models inspect`,
and the one-line errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from support import (
    REPO,
    StderrLines,
    assert_no_traceback,
    error_lines,
    free_port,
    make_adapter,
    monitor_env,
    need_video,
    read_events,
    run_monitor,
    scene,
)

from monitor.cli import main
from monitor.config import DescriberConfig
from monitor.describe.vlm import VlmDescriber
from monitor.records import ChangeCandidate, Frame, GateScores, Region
from pipelines.captioner import ChangeCaptioner
from pipelines.records import FrameInput, PairInput

T0 = 1_795_000_000.0


def test_daemon_end_to_end_with_the_vlm_describer(tiny_llava: Path, tmp_path: Path) -> None:
    video = need_video("one-by-one-person-detection.mp4")
    logs = tmp_path / "logs"
    proc = run_monitor(
        "run", "--source", video, "--describer", "vlm", "--model", tiny_llava, "--log-dir", logs,
        "--sample-fps", "1", "--quiet", env={"MONITOR_HTTP__BIND": f"127.0.0.1:{free_port()}"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    assert "describer_loaded" in proc.stderr and "describer=vlm:compressed:checkpoint" in proc.stderr
    events = read_events(logs)
    assert len(events) >= 6  # 6 arrivals and 6 departures, some coalesced
    assert {e["describer"] for e in events} == {"vlm:compressed:checkpoint"}
    assert all(e["text"] and "\n" not in e["text"] for e in events)


def test_sighup_swaps_the_lora_adapter_without_a_restart(tiny_llava: Path, tmp_path: Path) -> None:
    first = make_adapter(tiny_llava, tmp_path / "first", seed=1)
    second = make_adapter(tiny_llava, tmp_path / "second", seed=2)
    logs, cfg, port = tmp_path / "logs", tmp_path / "monitor.yaml", free_port()

    def write(adapter: Path | str) -> None:
        cfg.write_text(
            yaml.safe_dump(
                {
                    "cameras": [{"id": "room", "source": str(need_video("one-by-one-person-detection.mp4")),
                                 "realtime": True, "sample_fps": 2.0}],
                    "describer": {"kind": "vlm", "model": str(tiny_llava), "adapter": str(adapter)},
                    "log": {"dir": str(logs), "reorder_window_s": 0.0},
                    "http": {"bind": f"127.0.0.1:{port}"},
                }
            )
        )  # fmt: skip

    write(first)
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--config", str(cfg), "--quiet"],
        cwd=REPO, env=monitor_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    err = StderrLines(proc)
    try:
        assert "describer=vlm:compressed:checkpoint+first" in err.wait_for("describer_loaded", 30)
        err.wait_for("source_opened", 15)  # the SIGHUP handler is installed by then
        write(tmp_path / "no-such-adapter")
        proc.send_signal(signal.SIGHUP)
        assert "keeping=" in err.wait_for("adapter_reload_refused", 15)  # a bad adapter: the old one stays
        write(second)
        proc.send_signal(signal.SIGHUP)
        assert "describer=vlm:compressed:checkpoint+second" in err.wait_for("adapter_reloaded", 15)
        deadline = time.monotonic() + 30  # the first person arrives at 6 s of the video
        while not read_events(logs) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, "\n".join(err.lines)
    events = read_events(logs)
    assert events and {e["describer"] for e in events} == {"vlm:compressed:checkpoint+second"}
    after_swap = err.lines[next(i for i, line in enumerate(err.lines) if "adapter_reloaded" in line) :]
    assert not [line for line in after_swap if "needs_restart" in line]  # the adapter changed live


def _frame(seq: int, box: tuple[float, float] | None, camera: str = "east") -> Frame:
    rgb = scene(box, seed=3)
    return Frame(camera, seq, media_time=2.0 * seq, wall_time=T0 + 2.0 * seq, pixels=rgb[..., ::-1].copy())  # BGR


def _candidate(before: Frame, after: Frame, regions: tuple[Region, ...]) -> ChangeCandidate:
    return ChangeCandidate(
        before.camera_id, before, after, before.media_time + 1, regions, GateScores(0.8, 0.05), detected_at=T0
    )


LOWER_LEFT = Region(0.05, 0.7, 0.2, 0.25, "appeared", 0.05)
CENTRE = Region(0.4, 0.4, 0.2, 0.2, "disappeared", 0.04)


def test_candidates_become_rgb_pairs_with_regions_in_words(tiny_llava: Path) -> None:
    describer = VlmDescriber(DescriberConfig(kind="vlm", model=str(tiny_llava)), warm_up=False)
    before, after = _frame(1, None), _frame(2, (0.1, 0.6))
    pair = describer.pair_input(_candidate(before, after, (LOWER_LEFT,)))
    # Without a detector the facts are the embedded describer's shapes and HOG: large and wide.
    assert pair.regions_text == "seen: a vehicle arrived at the lower left"
    assert (pair.after.image == scene((0.1, 0.6), seed=3)).all()  # BGR frame -> RGB input
    assert pair.before.key == ("east", 1, T0 + 2.0) and pair.after.time == T0 + 4.0

    # the describer says what the captioner says for the same pair
    cands = [_candidate(before, after, (LOWER_LEFT,)), _candidate(_frame(7, None, "west"), _frame(8, None, "west"), ())]
    texts = [d.text for d in describer.describe(cands)]
    captioner = ChangeCaptioner.load(tiny_llava)
    empty = scene(None, seed=3)
    expected = [
        PairInput(FrameInput(empty, T0 + 2), FrameInput(scene((0.1, 0.6), seed=3), T0 + 4), pair.regions_text),
        PairInput(FrameInput(empty, T0 + 14), FrameInput(empty, T0 + 16)),
    ]
    assert texts == captioner.caption(expected, max_new_tokens=32)


def test_history_is_the_cameras_earlier_scenes_oldest_first(tiny_llava: Path) -> None:
    describer = VlmDescriber(DescriberConfig(kind="vlm", model=str(tiny_llava), history_frames=2), warm_up=False)
    east = [_frame(i, (0.1 * i, 0.5)) for i in range(5)]
    west = [_frame(i, None, "west") for i in range(2)]
    pairs = [describer.pair_input(_candidate(east[i], east[i + 1], (CENTRE,))) for i in range(4)]
    assert [[f.key[1] for f in p.history] for p in pairs] == [[], [0], [0, 1], [1, 2]]  # bounded, oldest first
    assert describer.pair_input(_candidate(west[0], west[1], ())).history == ()  # per camera
    # in the LM input: 2 tokens per history frame on top of the pair's 2 + 2 + 2 delta tokens
    batch = describer.captioner.collate([pairs[0], pairs[3]])
    placeholders = (batch["input_ids"] == describer.captioner.tokenizer.convert_tokens_to_ids("<image>")).sum(1)
    assert placeholders.tolist() == [6, 10]
    # a pair-mode describer has no room for history
    pair_mode = VlmDescriber(
        DescriberConfig(kind="vlm", model=str(tiny_llava), mode="pair", history_frames=2), warm_up=False
    )
    for i in range(3):
        assert pair_mode.pair_input(_candidate(east[i], east[i + 1], (CENTRE,))).history == ()


def test_describer_batches_across_cameras_and_encodes_each_frame_once(tiny_llava: Path) -> None:
    describer = VlmDescriber(DescriberConfig(kind="vlm", model=str(tiny_llava), max_wait_ms=20), warm_up=False)
    assert describer.max_wait_s == 0.02
    rows: list[int] = []
    describer.captioner.model.vision_tower.register_forward_hook(lambda _m, a, _o: rows.append(a[0].shape[0]))
    east = [_frame(i, (0.1 * i, 0.5)) for i in range(4)]
    west = [_frame(i, (0.5, 0.1 * i), "west") for i in range(4)]
    cands = [_candidate(f[i], f[i + 1], (CENTRE,)) for i in range(3) for f in (east, west)]
    together = describer.describe(cands)
    assert rows == [8]  # 6 pairs, 8 distinct frames, one vision-tower call
    one_by_one = [VlmDescriber(describer.settings, warm_up=False).describe([c])[0] for c in cands]
    assert [d.text for d in together] == [d.text for d in one_by_one]
    assert all(len(d.labels) == 1 for d in together)


def test_describer_labels_from_the_sentence() -> None:
    one = _candidate(_frame(1, None), _frame(2, None), (LOWER_LEFT,))
    two = _candidate(_frame(1, None), _frame(2, None), (LOWER_LEFT, CENTRE))
    assert VlmDescriber.labels(one, "a person arrived at the lower left.") == ("person",)
    assert VlmDescriber.labels(one, "a white van parked.") == ("vehicle",)
    assert VlmDescriber.labels(one, "a man got out of a car.") == (None,)
    assert VlmDescriber.labels(two, "a person arrived.") == (None, None)


def test_reload_swaps_and_unloads_the_adapter_in_process(tiny_llava: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_llava, tmp_path / "lora", seed=3)
    running = DescriberConfig(kind="vlm", model=str(tiny_llava))
    describer = VlmDescriber(running, warm_up=False)
    batch = describer.captioner.collate([describer.pair_input(_candidate(_frame(1, None), _frame(2, (0.3, 0.3)), ()))])

    def logits() -> torch.Tensor:
        with torch.no_grad():
            return describer.captioner.model(**batch).logits

    base = logits()
    with_adapter = running.model_copy(update={"adapter": str(adapter)})
    assert describer.reload(running, with_adapter) == with_adapter
    assert describer.name == "vlm:compressed:checkpoint+lora" and not torch.allclose(logits(), base, atol=1e-3)
    assert describer.reload(with_adapter, with_adapter) is with_adapter  # unchanged: nothing reloaded
    assert describer.reload(with_adapter, running) == running
    assert describer.name == "vlm:compressed:checkpoint" and torch.allclose(logits(), base, atol=1e-6)


def test_models_inspect_prints_json_and_a_table(tiny_llava: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "inspect", str(tiny_llava), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["lm_tokens_per_frame"]["compressed"] == 2 and info["lm_tokens_per_frame"]["two_image"] == 16
    assert info["context_length"] == 512 and info["parameters"]["total"] > 0
    assert main(["models", "inspect", str(tiny_llava)]) == 0
    assert "LM tokens per frame: two_image 16, pair 8, compressed 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["models", "inspect", "{tmp}/nothing"], 1, "monitor: error: {tmp}/nothing: no such checkpoint directory"),
        (
            ["run", "--source", "{video}", "--model", "{tmp}"],
            1,
            "monitor: error: describer: {tmp}: missing config.json",
        ),
        (["run", "--source", "{video}", "--describer", "vlm"], 2, "monitor: config error: describer.model: required"),
    ],
)
def test_bad_model_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, message: str
) -> None:
    fill = {"tmp": str(tmp_path), "video": str(need_video("one-by-one-person-detection.mp4"))}
    extra = ["--log-dir", str(tmp_path / "logs")] if args[0] == "run" else []
    assert main([a.format(**fill) for a in args] + extra) == code  # the real CLI, in-process
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("monitor: ")]
    assert len(lines) == 1 and lines[0].startswith(message.format(**fill)), lines


def test_missing_torch_names_the_extra_to_install(tiny_llava: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None; from monitor.cli import main; "
        f"sys.exit(main(['run', '--source', {str(need_video('one-by-one-person-detection.mp4'))!r}, "
        f"'--model', {str(tiny_llava)!r}, '--log-dir', {str(tmp_path)!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=monitor_env(), capture_output=True, text=True)
    assert proc.returncode == 1
    assert_no_traceback(proc)
    assert error_lines(proc) == ["describer kind vlm needs torch: pip install '.[vlm]'"]


def test_the_detectors_facts_are_in_the_prompt(tiny_llava: Path) -> None:
    """With `describer.detector`, the VLM is told what the embedded describer would say (object,
    verdict, place), and the event's regions carry the detector's labels, whatever the model says."""
    import av
    from support import DETECTOR, VIDEOS

    frames = {}
    with av.open(str(VIDEOS / "one-by-one-person-detection.mp4")) as container:
        for i, vf in enumerate(container.decode(video=0)):
            if i in (50, 300):
                frames[i] = Frame("room", i, i / 10, T0 + i / 10, vf.to_ndarray(format="bgr24"))
            if i > 300:
                break
    settings = DescriberConfig(kind="vlm", model=str(tiny_llava), detector={"model": str(DETECTOR)})
    describer = VlmDescriber(settings, warm_up=False)
    # the gate's verdict says the region "disappeared": the detector sees a person only after
    region = Region(0.5, 0.05, 0.2, 0.8, "disappeared", 0.1)
    cand = _candidate(frames[50], frames[300], (region,))
    pair = describer.pair_input(cand)
    assert pair.regions_text == "seen: a person arrived in the centre", pair.regions_text
    (desc,) = describer.describe([cand])
    assert desc.labels == ("person",) and [r.change for r in desc.regions] == ["appeared"]
