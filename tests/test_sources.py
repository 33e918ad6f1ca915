"""`VideoSource` on real files: containers and codecs FFmpeg reads, the presentation-time sampling
grid, adaptive keyframes-only decoding, image sequences, frame records, real-time pacing, the stop
event and credential masking.

Inputs are the shared footage (read in place) and short clips transcoded in tmp_path from a
rendered synthetic scene. Bad input (missing / truncated / corrupt files, unreachable RTSP) is
covered by test_bad_input.py, not here.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from support import SHARED_DATA, need_video

from monitor.config import CameraConfig
from monitor.errors import SourceError
from monitor.records import Frame
from monitor.scene.scripted import render_sample_scene
from monitor.sources.video import VideoSource

CDNET = SHARED_DATA / "cdnet2014-highway" / "input"
SCENE_FPS = 10
SCENE_SECONDS = 10  # the scene generator needs ~9 s for its scripted changes
SCENE_W, SCENE_H = 320, 180


def camera(source: str | Path, sample_fps: float = 2.0, **kw) -> CameraConfig:
    return CameraConfig(id="cam", source=str(source), sample_fps=sample_fps, **kw)


def read_all(source: str | Path, sample_fps: float = 2.0, **kw) -> tuple[list[Frame], VideoSource]:
    src = VideoSource(camera(source, sample_fps, **kw))
    return list(src.frames()), src


def assert_on_grid(times: list[float], step: float, tol: float) -> None:
    assert times and times[0] == 0.0, times[:3]
    off = [(i, t) for i, t in enumerate(times) if abs(t - i * step) > tol + 1e-9]
    assert not off, f"off the {step} s grid (tol {tol}): {off[:5]}"


# -- containers and codecs -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """The synthetic scene's frames as BGR arrays (index = frame number at 10 fps)."""
    path = tmp_path_factory.mktemp("scene") / "scene.mp4"
    render_sample_scene(path, seconds=SCENE_SECONDS, seed=4, fps=SCENE_FPS, width=SCENE_W, height=SCENE_H)
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == SCENE_SECONDS * SCENE_FPS
    return frames


def transcode(
    frames: list[np.ndarray],
    path: Path,
    codec: str,
    pix_fmt: str,
    fps: int,
    size: tuple[int, int] | None,
    options: dict[str, str],
    bit_rate: int | None,
) -> None:
    step = SCENE_FPS // fps
    with av.open(str(path), mode="w") as c:
        stream = c.add_stream(codec, rate=fps)
        stream.width, stream.height = size or (SCENE_W, SCENE_H)
        stream.pix_fmt = pix_fmt
        if options:
            stream.codec_context.options = options
        if bit_rate:
            stream.bit_rate = bit_rate
        for i, img in enumerate(frames[::step]):
            if size:
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            c.mux(stream.encode(vf))
        c.mux(stream.encode(None))


# name, codec, pix_fmt, file fps, size, encoder options, bit rate, max mean |BGR diff|
CONTAINERS = [
    ("h264.mkv", "libx264", "yuv420p", 10, None, {"crf": "18"}, None, 3.5),
    ("ffv1.mkv", "ffv1", "yuv420p", 10, None, {}, None, 3.0),
    ("mpeg4.avi", "mpeg4", "yuv420p", 10, None, {}, 3_000_000, 4.0),
    ("mjpeg.avi", "mjpeg", "yuvj420p", 10, None, {}, 8_000_000, 4.0),
    # GIF: a fixed 3-3-2 palette (dithered), 160x90 at 5 fps.
    ("small.gif", "gif", "rgb8", 5, (160, 90), {}, None, 3.0),
]


@pytest.mark.parametrize(
    "name,codec,pix_fmt,fps,size,options,bit_rate,max_diff", CONTAINERS, ids=[c[0] for c in CONTAINERS]
)
def test_container_and_codec(
    tmp_path: Path,
    scene: list[np.ndarray],
    name: str,
    codec: str,
    pix_fmt: str,
    fps: int,
    size: tuple[int, int] | None,
    options: dict[str, str],
    bit_rate: int | None,
    max_diff: float,
) -> None:
    path = tmp_path / name
    transcode(scene, path, codec, pix_fmt, fps, size, options, bit_rate)
    frames, src = read_all(path, sample_fps=2)

    times = [f.media_time for f in frames]
    assert_on_grid(times, 0.5, tol=0.5 / fps)  # within half a frame of the file
    assert len(frames) == SCENE_SECONDS * 2, times
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert src.stats.sampled == len(frames) and src.stats.corrupt == 0

    w, h = size or (SCENE_W, SCENE_H)
    for f in frames:
        img = f.image
        assert img.shape == (h, w, 3) and img.dtype == np.uint8, (name, img.shape)
        grey = f.grey()
        assert grey.shape == img.shape[:2] and grey.dtype == np.uint8
        # The luma plane is grey (limited-range luma differs a little from full-range grey).
        assert np.abs(grey.astype(int) - cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)).mean() < 8, name

        # The source frame as the encoder saw it (after the same pixel-format conversion), so
        # what is left is the codec's loss and the reader's conversion back to BGR.
        ref = scene[round(f.media_time * SCENE_FPS)]
        if size:
            ref = cv2.resize(ref, size, interpolation=cv2.INTER_AREA)
        ref = av.VideoFrame.from_ndarray(ref, format="bgr24").reformat(format=pix_fmt).to_ndarray(format="bgr24")
        got = img
        if codec == "gif":  # the palette's dither differs frame to frame: compare local means
            got, ref = (cv2.GaussianBlur(x, (5, 5), 0) for x in (img, ref))
        diff = float(np.abs(got.astype(np.float32) - ref.astype(np.float32)).mean())
        assert diff < max_diff, f"{name} at {f.media_time}: mean |diff| {diff:.2f}"
        # Channel order: per-channel means agree with the source's (a B/R swap would not).
        means, ref_means = img.reshape(-1, 3).mean(0), ref.reshape(-1, 3).mean(0)
        assert np.abs(means - ref_means).max() < 1.5, (name, means, ref_means)


# -- the sampling grid and keyframes-only decoding ----------------------------------------------
def media_duration(path: Path) -> tuple[float, int]:
    with av.open(str(path)) as c:
        return c.duration / av.time_base, c.streams.video[0].frames


@pytest.fixture(scope="module")
def person_2fps() -> tuple[list[float], list[int], VideoSource, float]:
    """The whole 139 s person clip at 2 fps, as fast as possible (no pacing)."""
    src = VideoSource(camera(need_video("one-by-one-person-detection.mp4"), 2))
    start = time.monotonic()
    times, seqs = [], []
    for f in src.frames():
        times.append(f.media_time)
        seqs.append(f.seq)
    return times, seqs, src, time.monotonic() - start


def test_grid_at_2fps_covers_the_whole_file(person_2fps) -> None:
    times, _, src, _ = person_2fps
    duration, _ = media_duration(need_video("one-by-one-person-detection.mp4"))
    assert_on_grid(times, 0.5, tol=0.05)
    assert abs(len(times) - duration * 2) <= 1, (len(times), duration)
    assert times[-1] >= duration - 1.0
    # A keyframe every 1 s is not often enough for 0.5 s samples: every frame is decoded.
    assert src.stats.mode == "all-frames"
    assert src.stats.keyframe_interval_s == pytest.approx(1.0, abs=0.05)
    assert src.stats.skipped_packets == 0


def test_keyframes_only_at_1fps() -> None:
    path = need_video("one-by-one-person-detection.mp4")
    duration, total = media_duration(path)
    frames, src = read_all(path, sample_fps=1)
    times = [f.media_time for f in frames]
    assert src.stats.mode == "keyframes-only"
    assert src.stats.decoded < 0.2 * total, (src.stats, total)
    assert src.stats.skipped_packets > 0
    assert_on_grid(times, 1.0, tol=0.05)
    assert times[-1] >= 138 and abs(len(times) - duration) <= 1, (times[-3:], len(times))
    assert [f.seq for f in frames] == list(range(len(frames)))


def test_long_gop_stays_all_frames() -> None:
    path = need_video("car-detection.mp4")
    frames, src = read_all(path, sample_fps=1)
    assert src.stats.mode == "all-frames"
    assert src.stats.keyframe_interval_s == pytest.approx(4.8, abs=0.1)
    assert src.stats.skipped_packets == 0
    assert_on_grid([f.media_time for f in frames], 1.0, tol=0.5 / 12.5)  # 12.5 fps: frames every 0.08 s
    duration, total = media_duration(path)
    assert src.stats.decoded == total
    assert abs(len(frames) - duration) <= 1


# -- image sequences -----------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["folder", "pattern"])
def test_image_sequence(form: str) -> None:
    assert (CDNET / "in000400.jpg").is_file(), f"shared data missing: {CDNET}"
    source = CDNET if form == "folder" else CDNET / "in%06d.jpg"
    frames, src = read_all(source, sample_fps=10, image_fps=30)
    times = [f.media_time for f in frames]
    assert_on_grid(times, 0.1, tol=0.5 / 30)
    n_images = len(list(CDNET.glob("in*.jpg")))
    assert n_images == 501
    assert abs(len(frames) - n_images / 3) <= 1, len(frames)

    # The first frame is in000400.jpg, the second in000403.jpg (every third image at 30 -> 10 fps).
    for frame, name in ((frames[0], "in000400.jpg"), (frames[1], "in000403.jpg")):
        ref = cv2.imread(str(CDNET / name))
        assert frame.image.shape == ref.shape
        assert np.abs(frame.image.astype(int) - ref).mean() < 2.0, name
        ref_grey = cv2.imread(str(CDNET / name), cv2.IMREAD_GRAYSCALE)  # libjpeg's own luma
        assert np.abs(frame.grey().astype(int) - ref_grey).max() <= 2, name
    # ... and not its neighbour (the comparison can tell images apart).
    neighbour = cv2.imread(str(CDNET / "in000401.jpg"), cv2.IMREAD_GRAYSCALE)
    assert np.abs(frames[0].grey().astype(int) - neighbour).mean() > 1.0


@pytest.mark.parametrize("form", ["folder", "pattern"])
def test_image_sequence_needs_image_fps(form: str) -> None:
    source = CDNET if form == "folder" else CDNET / "in%06d.jpg"
    src = VideoSource(camera(source, sample_fps=10))
    with pytest.raises(SourceError, match="image_fps"):
        next(src.frames())
    assert src._container is None


# -- frame records -------------------------------------------------------------------------------
def test_frames_are_immutable_and_numbered(scene: list[np.ndarray], tmp_path: Path) -> None:
    path = need_video("car-detection.mp4")
    src = VideoSource(camera(path, sample_fps=4))
    gen = src.frames()
    frames = [next(gen) for _ in range(6)]
    gen.close()
    assert [f.seq for f in frames] == [0, 1, 2, 3, 4, 5]
    f = frames[2]

    with pytest.raises(dataclasses.FrozenInstanceError):
        f.media_time = 99.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.pixels = None  # type: ignore[misc]

    img = f.image
    assert img is f.image  # made once, then cached
    before = img.copy()
    with pytest.raises(ValueError):
        img[0, 0, 0] = 255 - img[0, 0, 0]
    assert np.array_equal(f.image, before)

    # grey() views the decoder's luma plane: it must not be a way to change the frame either.
    grey = f.grey()
    grey_before = grey.copy()
    with pytest.raises(ValueError):
        grey[:8, :8] = 255 - grey[:8, :8]
    assert np.array_equal(f.grey(), grey_before)

    # A frame built from an array: the same rules.
    arr = Frame("cam", 0, 0.0, 0.0, scene[0].copy())
    assert arr.image is arr.image and arr.grey().shape == scene[0].shape[:2]
    with pytest.raises(ValueError):
        arr.image[0, 0, 0] = 0


# -- real-time pacing ----------------------------------------------------------------------------
def test_realtime_paces_a_file() -> None:
    src = VideoSource(camera(need_video("one-by-one-person-detection.mp4"), 2), realtime=True)
    start = time.monotonic()
    gen = src.frames()
    times = []
    for f in gen:
        # No frame is handed on before its (file-time) wall clock.
        assert time.time() >= f.wall_time - 0.02, (f.media_time, f.wall_time - time.time())
        times.append(f.media_time)
        if f.media_time >= 3.0:
            break
    gen.close()
    elapsed = time.monotonic() - start
    assert times == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert elapsed >= 2.5, f"3 s of video read in {elapsed:.2f} s with realtime=True"
    assert src._container is None  # closing the generator closes the file


def test_default_reads_as_fast_as_possible(person_2fps) -> None:
    times, _, src, elapsed = person_2fps
    assert src.realtime is False
    assert times[-1] >= 138
    assert elapsed < 60, f"139 s of video took {elapsed:.1f} s without realtime"


# -- the stop event ------------------------------------------------------------------------------
@pytest.mark.parametrize("realtime", [True, False], ids=["realtime", "fast"])
def test_stop_event_ends_the_generator(realtime: bool) -> None:
    src = VideoSource(camera(need_video("one-by-one-person-detection.mp4"), 2), realtime=realtime)
    got_three = threading.Event()
    stopped_at: list[float] = []

    def stopper() -> None:
        got_three.wait(10)
        time.sleep(0.05)  # while the reader is (in realtime) waiting for the next frame
        src.stop.set()
        stopped_at.append(time.monotonic())

    thread = threading.Thread(target=stopper)
    thread.start()
    start = time.monotonic()
    seqs = []
    for f in src.frames():
        seqs.append(f.seq)
        if len(seqs) == 3:
            got_three.set()
            if not realtime:
                thread.join()  # the reader runs on only once the stop is set
        assert len(seqs) < 20, "the generator ignored the stop event"
    ended = time.monotonic()
    thread.join()
    assert stopped_at
    assert seqs[:3] == [0, 1, 2]
    if realtime:
        # Stop came while the reader waited for frame 4 (due 0.5 s after frame 3): it must wake
        # and end at once, without handing on frame 4.
        assert seqs == [0, 1, 2], seqs
        assert ended - stopped_at[0] < 0.25, f"{ended - stopped_at[0]:.2f} s from stop to end"
    else:
        # At most what the decoder had already produced when stop was set.
        assert len(seqs) <= 4, seqs
        assert ended - stopped_at[0] < 0.5, f"{ended - stopped_at[0]:.2f} s from stop to end"
    assert ended - start < 10
    assert src._container is None  # closed
    assert src.stats.sampled == len(seqs)


# -- credentials ---------------------------------------------------------------------------------
def test_label_masks_credentials() -> None:
    url = "rtsp://u:p4ss@127.0.0.1:1/x"
    src = VideoSource(camera(url))
    assert src.network
    assert "p4ss" not in src.label
    assert src.label == "rtsp://u:***@127.0.0.1:1/x"
    assert src._container is None  # nothing opened
    assert src.camera.source == url  # the real URL is kept for opening
