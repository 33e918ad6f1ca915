"""`monitor bench gate`: CPU cost of decode + change gate per sampled frame, on real footage.

Three measurements per video, in this order and in one process, each single-threaded
(PyAV decoder thread_count 1, `cv2.setNumThreads(1)`), timed with `time.process_time()`
(and wall time) around the whole loop, opening the file included:

- `naive-ssim`: decode every frame to a BGR array with PyAV, and on each sampled frame compute
  scikit-image's full-resolution SSIM (grey, data_range=255) against the previous sampled frame;
- `ours-keyframes`: `VideoSource` as the monitor runs it (keyframes-only decoding when the GOP is
  no longer than the sample interval) + `ChangeGate.detect` on every sampled frame;
- `ours-all-frames`: the same with keyframes-only decoding forced off;
- with `--detector MODEL`, two more: `ours-keyframes+embedded`, `ours-keyframes` plus the
  embedded describer on every change with the detector off (shapes and OpenCV's HOG), and
  `ours-keyframes+detector`, the same with that object detector naming what changed (crops
  around the changed regions, as the daemon runs it). `det ms/change` is the detector's share
  per change. The goal, on the room clip: with the detector on, cameras per core fall by at most
  10 % against the detector off; the fall against the gate alone is reported beside it.

Sampling is the same presentation-time grid in all three (`monitor.sources.sampler.Sampler`).
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import av
import cv2
import numpy as np

from monitor.bench.output import report
from monitor.config import CameraConfig, DetectorConfig, GateConfig
from monitor.describe.embedded import EmbeddedDescriber
from monitor.detect.objects import ObjectDetector
from monitor.detect.onnx_detector import OnnxDetector
from monitor.gate.change_gate import ChangeGate
from monitor.records import Frame
from monitor.sources.sampler import Sampler
from monitor.sources.video import VideoSource

DEFAULT_VIDEOS = ("one-by-one-person-detection.mp4", "car-detection.mp4", "motorway-cctv.avi")
GOAL_VIDEO = "one-by-one-person-detection.mp4"  # H.264, 1 s GOP
GOAL_MODE = "ours-keyframes"
GOAL_SPEEDUP, GOAL_CAMERAS = 20.0, 50.0
MODES = ("naive-ssim", "ours-keyframes", "ours-all-frames")


def footage_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "shared/data/videos"  # the checkout's ../shared


@dataclass
class Run:
    video: str
    mode: str
    decode: str  # what the decoder actually did: all-frames or keyframes-only
    sampled: int
    decoded: int
    cpu_s: float
    wall_s: float
    events: int | None = None  # gate candidates (ours only)
    detector_ms_per_change: float | None = None  # ours-keyframes+detector only
    cpu_ms_per_frame: float = 0.0
    wall_ms_per_frame: float = 0.0
    frames_per_s_per_core: float = 0.0
    cameras_per_core: float = 0.0
    speedup: float | None = None

    def derive(self, sample_fps: float) -> None:
        n, cpu = max(self.sampled, 1), max(self.cpu_s, 1e-9)
        self.cpu_ms_per_frame = 1000.0 * self.cpu_s / n
        self.wall_ms_per_frame = 1000.0 * self.wall_s / n
        self.frames_per_s_per_core = self.sampled / cpu
        self.cameras_per_core = self.frames_per_s_per_core / sample_fps


# -- the three measurements ----------------------------------------------------------------
def run_naive(path: Path, sample_fps: float, seconds: float | None, structural_similarity) -> Run:
    sampled = decoded = 0
    prev: np.ndarray | None = None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        sampler = Sampler(1.0 / sample_fps, float(stream.average_rate or stream.guessed_rate or 25))
        try:
            for vf in container.decode(stream):
                decoded += 1
                image = vf.to_ndarray(format="bgr24")  # like a cv2.VideoCapture.read() loop
                rel = sampler.take(vf.time)
                if rel is None:
                    continue
                if seconds is not None and rel >= seconds:
                    break
                grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
                if prev is not None:
                    structural_similarity(prev, grey, data_range=255)
                prev = grey
                sampled += 1
        except (av.FFmpegError, OSError):
            pass  # a broken tail ends the measurement, as it ends a source
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return Run(path.name, "naive-ssim", "all-frames", sampled, decoded, cpu, wall)


def run_ours(
    path: Path,
    sample_fps: float,
    seconds: float | None,
    keyframes: bool,
    describe: bool = False,
    detector_model: Path | None = None,
) -> Run:
    cam_id = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem)[:64] or "camera"
    cam = CameraConfig(id=cam_id, source=str(path), sample_fps=sample_fps)
    detector = describer = None
    if detector_model is not None:  # loaded before the clock starts, as the daemon does at start
        detector = ObjectDetector(OnnxDetector(DetectorConfig(model=detector_model)))
    if describe:
        describer = EmbeddedDescriber(detector=detector)
    sampled = events = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    source = VideoSource(cam, realtime=False, keyframes=keyframes)
    gate = ChangeGate(cam.id, GateConfig(), sample_fps, cam.masks)
    frames = source.frames()
    try:
        for frame in frames:
            if seconds is not None and frame.media_time >= seconds:
                break
            cand = gate.detect(frame)
            if cand is not None:
                events += 1
                if describer is not None:
                    describer.describe([cand])
            sampled += 1
    finally:
        frames.close()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    mode = "ours-keyframes" if keyframes else "ours-all-frames"
    run = Run(path.name, mode, source.stats.mode, sampled, source.stats.decoded, cpu, wall, events)
    if describer is not None:
        run.mode += "+embedded" if detector is None else "+detector"
    if detector is not None:
        run.detector_ms_per_change = 1000.0 * detector.seconds / max(1, events)
    return run


def _best(measure, repeat: int) -> Run:
    return min((measure() for _ in range(repeat)), key=lambda r: r.cpu_s)


def _warm_up(structural_similarity) -> None:
    """First calls pay for lazy imports and allocations; keep them out of both measurements."""
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 255, (72, 128), dtype=np.uint8) for _ in range(2))
    structural_similarity(a, b, data_range=255)
    gate = ChangeGate("warmup", GateConfig(), 1.0)
    for i, img in enumerate((a, b, a)):
        gate.detect(Frame("warmup", i, float(i), 0.0, cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)))


# -- report --------------------------------------------------------------------------------
def machine_info() -> dict:
    info = {
        "processor": platform.processor(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "av": av.__version__,
        "cv2": cv2.__version__,
        "numpy": np.__version__,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
        if model:
            info["cpu_model"] = model
    except OSError:
        pass
    try:
        import skimage

        info["skimage"] = skimage.__version__
    except ImportError:
        pass
    return info


def format_table(runs: list[Run], sample_fps: float) -> str:
    head = [
        "video",
        "mode",
        "decode",
        "sampled",
        "decoded",
        "cpu ms/frame",
        "frames/s/core",
        f"cameras@{sample_fps:g}fps/core",
        "speedup",
        "det ms/change",
    ]
    rows = [
        [
            r.video,
            r.mode,
            r.decode,
            str(r.sampled),
            str(r.decoded),
            f"{r.cpu_ms_per_frame:.2f}",
            f"{r.frames_per_s_per_core:.1f}",
            f"{r.cameras_per_core:.1f}",
            "-" if r.speedup is None else f"{r.speedup:.1f}x",
            "-" if r.detector_ms_per_change is None else f"{r.detector_ms_per_change:.0f}",
        ]
        for r in runs
    ]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    left = {0, 1, 2}

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def evaluate_goal(runs: list[Run], sample_fps: float) -> dict:
    goal = {
        "text": "ours ≥ 20× naive at 1 fps on H.264 with ≤1 s GOP, and ≥ 50 cameras at 1 fps per core",
        "video": GOAL_VIDEO,
        "mode": GOAL_MODE,
        "sample_fps": sample_fps,
    }
    ours = next((r for r in runs if r.video == GOAL_VIDEO and r.mode == GOAL_MODE), None)
    if ours is None:
        return {**goal, "evaluated": False}
    speedup = None if ours.speedup is None else round(ours.speedup, 2)
    return {
        **goal,
        "evaluated": True,
        "speedup": speedup,
        "cameras_per_core": round(ours.cameras_per_core, 2),
        "speedup_pass": bool(ours.speedup is not None and ours.speedup >= GOAL_SPEEDUP),
        "cameras_pass": bool(ours.cameras_per_core >= GOAL_CAMERAS),
    }


def evaluate_detector_goal(runs: list[Run]) -> dict:
    """Cameras per core with the detector on against off (the embedded describer's shapes and
    HOG), and against the gate alone, per video, side by side; the goal is the room clip's."""
    by = {(r.video, r.mode): r for r in runs}

    def kept(base_mode: str) -> dict[str, float]:
        return {
            video: round(r.cameras_per_core / max(by[(video, base_mode)].cameras_per_core, 1e-9), 3)
            for (video, mode), r in by.items()
            if mode == "ours-keyframes+detector" and (video, base_mode) in by
        }

    against_off, against_gate = kept("ours-keyframes+embedded"), kept("ours-keyframes")
    room = against_off.get(GOAL_VIDEO)
    return {
        "text": f"with the detector on, cameras per core fall by at most 10 % against off ({GOAL_VIDEO})",
        "kept_against_detector_off": against_off,
        "kept_against_gate_alone": against_gate,
        "evaluated": room is not None,
        "pass": room is not None and room >= 0.9,
    }


def detector_goal_line(goal: dict) -> str:
    def listed(ratios: dict[str, float]) -> str:
        return ", ".join(f"{v} {100 * x:.0f} %" for v, x in ratios.items())

    verdict = "PASS" if goal["pass"] else ("FAIL" if goal["evaluated"] else "not evaluated")
    off, alone = listed(goal["kept_against_detector_off"]), listed(goal["kept_against_gate_alone"])
    kept = f"cameras/core kept against the detector off: {off}; against the gate alone: {alone}"
    return f"goal: {goal['text']}: {verdict}; {kept}"


def goal_line(goal: dict) -> str:
    text = f"goal: {goal['text']}"
    if not goal["evaluated"]:
        return f"{text}: not evaluated ({GOAL_VIDEO} was not benchmarked)"
    verdict = {True: "PASS", False: "FAIL"}.__getitem__
    note = "" if goal["sample_fps"] == 1.0 else f", measured at {goal['sample_fps']:g} fps"
    return (
        f"{text}: speed-up {goal['speedup']:.1f}× {verdict(goal['speedup_pass'])}, "
        f"{goal['cameras_per_core']:.1f} cameras/core {verdict(goal['cameras_pass'])} "
        f"({GOAL_VIDEO}, {GOAL_MODE}{note})"
    )


# -- entry point ---------------------------------------------------------------------------
def bench_gate(args) -> int:
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        print("monitor: error: bench gate's naive baseline needs scikit-image: pip install '.[bench]'", file=sys.stderr)
        return 1
    sample_fps = float(args.sample_fps)
    seconds = getattr(args, "seconds", None)
    detector_model = getattr(args, "detector", None)
    if detector_model is not None and not Path(detector_model).is_file():
        print(f"monitor: error: --detector: no such file: {detector_model}", file=sys.stderr)
        return 1
    repeat = max(1, int(getattr(args, "repeat", 1) or 1))
    if not 0 < sample_fps <= 60:
        print(f"monitor: error: --sample-fps must be in (0, 60], got {sample_fps:g}", file=sys.stderr)
        return 1
    if args.video:
        videos = [Path(v) for v in args.video]
    else:
        folder = footage_dir()
        if not folder.is_dir():
            print(f"monitor: error: shared footage not found at {folder} (pass --video FILE)", file=sys.stderr)
            return 1
        videos = [folder / name for name in DEFAULT_VIDEOS]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        print(f"monitor: error: no such video: {', '.join(missing)}", file=sys.stderr)
        return 1

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        _warm_up(structural_similarity)
        runs: list[Run] = []
        for path in videos:
            # Best of `repeat` runs each (as timeit does): the least disturbed by the rest of the machine.
            naive = _best(partial(run_naive, path, sample_fps, seconds, structural_similarity), repeat)
            group = [
                naive,
                _best(partial(run_ours, path, sample_fps, seconds, True), repeat),
                _best(partial(run_ours, path, sample_fps, seconds, False), repeat),
            ]
            if detector_model is not None:
                group.append(_best(partial(run_ours, path, sample_fps, seconds, True, True), repeat))
                group.append(_best(partial(run_ours, path, sample_fps, seconds, True, True, detector_model), repeat))
            for r in group:
                r.derive(sample_fps)
                r.speedup = naive.cpu_ms_per_frame / max(r.cpu_ms_per_frame, 1e-9) if naive.sampled else None
            runs += group
    finally:
        cv2.setNumThreads(threads)

    goal = evaluate_goal(runs, sample_fps)
    detector_goal = evaluate_detector_goal(runs) if detector_model is not None else None
    doc = {
        "benchmark": "gate",
        "sample_fps": sample_fps,
        "seconds": seconds,
        "timer": "time.process_time (single thread; cv2.setNumThreads(1), decoder thread_count 1)",
        "repeat": repeat,
        "machine": machine_info(),
        "results": [{k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(r).items()} for r in runs],
        "goal": goal,
        "detector_goal": detector_goal,
    }
    lines = [format_table(runs, sample_fps), goal_line(goal)]
    if detector_goal is not None:
        lines.append(detector_goal_line(detector_goal))
    report(args, doc, lambda: print("\n".join(lines)))
    return 0
