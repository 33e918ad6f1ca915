"""Frame sources: video files, image sequences and RTSP streams, read with PyAV.

Frames are sampled by presentation time at the camera's `sample_fps`. When keyframes come at
least as often as samples are needed, only the keyframes that are due are decoded at all
(the decoder also runs with `skip_frame = NONKEY`); otherwise every frame is decoded.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import structlog

from monitor.config import CameraConfig
from monitor.errors import SourceError, mask_secrets, mask_url
from monitor.records import Frame, unix_time
from monitor.sources.sampler import Sampler

log = structlog.get_logger(__name__)

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")
_KEYFRAMES_NEEDED = 3  # keyframe gaps seen before trusting the stream's GOP
# A creation_time before 2000 is a writer's placeholder (MP4 counts from 1904, others from 1970).
_PLACEHOLDER_BEFORE = 946684800.0


def recorded_start(container: av.container.InputContainer, path: str) -> float | None:
    """When a file's first frame was recorded (UNIX seconds): its `creation_time` (MP4, MOV and
    MKV writers set it), else its modification time less its length (a recorder writes up to
    its end); None when neither is known (an image sequence) or it would be in the future."""
    for meta in (container.metadata, container.streams.video[0].metadata):
        raw = meta.get("creation_time")
        try:
            t = unix_time(raw) if raw else None
        except ValueError:
            t = None
        if t is not None and t >= _PLACEHOLDER_BEFORE:
            return t if t <= time.time() else None
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    return mtime - (container.duration or 0) / 1e6  # av.time_base: microseconds


@dataclass
class SourceStats:
    decoded: int = 0  # frames the decoder produced
    sampled: int = 0  # frames handed on
    skipped_packets: int = 0  # packets never decoded (keyframe mode)
    corrupt: int = 0  # packets or frames that failed to decode
    mode: str = "all-frames"  # or "keyframes-only"
    keyframe_interval_s: float | None = None
    ended_early_s: float | None = None  # a file that ended before its declared length: media seconds read
    media_s: float = 0.0  # media time of the last frame handed on
    length_s: float | None = None  # a file's declared length (None: a stream, or not declared)


def is_network(source: str) -> bool:
    return source.lower().startswith(NETWORK_SCHEMES)


def image_sequence_pattern(source: str) -> tuple[str, int] | None:
    """`frames/in%06d.jpg` or a folder of numbered images -> (pattern, first number)."""
    path = Path(source)
    if "%" in source:
        folder, name = path.parent, path.name
        m = re.fullmatch(r"(.*)%0?(\d*)d(.*)", name)
        if not m or not folder.is_dir():
            return None
        prefix, suffix = m.group(1), m.group(3)
        numbers = _numbers(folder, prefix, suffix)
        return (source, min(numbers)) if numbers else (source, 0)
    if not path.is_dir():
        return None
    by_shape: dict[tuple[str, str, int], list[int]] = {}
    for entry in path.iterdir():
        m = re.fullmatch(r"(.*?)(\d+)(\.(?:jpe?g|png|bmp|tiff?|webp))", entry.name, re.IGNORECASE)
        if m:
            by_shape.setdefault((m.group(1), m.group(3), len(m.group(2))), []).append(int(m.group(2)))
    if not by_shape:
        raise SourceError(f"{source}: folder holds no numbered images (like in000001.jpg)")
    (prefix, suffix, width), numbers = max(by_shape.items(), key=lambda kv: len(kv[1]))
    return str(path / f"{prefix}%0{width}d{suffix}"), min(numbers)


def _numbers(folder: Path, prefix: str, suffix: str) -> list[int]:
    rx = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix))
    return [int(m.group(1)) for e in folder.iterdir() if (m := rx.fullmatch(e.name))]


class VideoSource:
    """Reads one camera and yields sampled `Frame`s in presentation order."""

    def __init__(
        self,
        camera: CameraConfig,
        realtime: bool | None = None,
        stop: threading.Event | None = None,
        keyframes: bool = True,
    ):
        self.camera = camera
        self.keyframes = keyframes  # False: never switch to keyframes-only decoding (benchmarks)
        self.realtime = camera.realtime if realtime is None else realtime
        self.stop = stop or threading.Event()
        self.stats = SourceStats()
        self.label = mask_url(camera.source)
        self.network = is_network(camera.source)
        self._container: av.container.InputContainer | None = None
        self._open_args: tuple[str, dict, dict] = (camera.source, {}, {})
        self._kf_decoder: av.CodecContext | None = None
        self._mode_reported = False
        # A reopened network source continues its media time (and frame seq) where the last
        # connection left off, plus the wall time it was away: time never runs backwards for
        # the gate, and event ids of the new connection never repeat old ones.
        self._media_offset = 0.0
        self._origin = time.time()  # wall time of media time 0 (set per read in frames())
        # clock "run": not before this (the camera's last event in the log dir), so a clip run
        # again, stamped faster than real time, continues after its previous run instead of going back
        self.not_before: float | None = None
        self._last_media: float | None = None
        self._last_wall: float | None = None
        self.opens = 0  # successful opens (reconnects = opens - 1)

    @property
    def last_wall(self) -> float | None:
        """Wall time of the last frame handed on (None before the first)."""
        return self._last_wall

    @property
    def last_media(self) -> float | None:
        return self._last_media

    # -- opening -------------------------------------------------------------------------
    def check(self) -> None:
        """Open and close at once, quietly: a file that cannot be read is refused before a run
        starts (one line, SourceError), instead of a failed camera inside a running daemon."""
        self._open()
        self.close()
        self.opens -= 1

    def first_time(self) -> float:
        """The wall time this source's first frame will carry: for a file with `clock:
        recorded` when it was recorded, else now or `not_before` (quietly opened and closed;
        SourceError)."""
        if self.network or self.camera.clock != "recorded":
            return self._origin_of(None, time.time())
        self._open()
        try:
            return self._origin_of(self._container, time.time())
        finally:
            self.close()
            self.opens -= 1

    def _origin_of(self, container, now: float) -> float:
        """The wall time of media time 0: when a file was recorded (`clock: recorded`, when it
        says), else `now` (the run's start), and with `clock: run` never before `not_before`."""
        if not self.network and self.camera.clock == "recorded":
            start = recorded_start(container, self.camera.source) if container is not None else None
            return now if start is None else start
        return max(now, self.not_before or 0.0)

    def open(self) -> None:
        self._open()
        cam = self.camera
        log.info("source_opened", camera=cam.id, source=self.label, sample_fps=cam.sample_fps)

    def _open(self) -> None:
        src, cam = self.camera.source, self.camera
        options: dict[str, str] = {}
        kwargs: dict = {}
        if self.network:
            if src.lower().startswith(("rtsp://", "rtsps://")):
                options["rtsp_transport"] = "tcp"
                # Stream probing reads 1 s instead of FFmpeg's 5 s (about 3 s of a live stream):
                # the SDP already names the codec, and 1 s shows the frame rate. A (re)connected
                # camera's first frame arrives that much sooner.
                options["analyzeduration"] = "1000000"
            kwargs["timeout"] = (cam.open_timeout_s, cam.read_timeout_s)
        else:
            seq = image_sequence_pattern(src)
            if seq is not None:
                if cam.image_fps is None:
                    raise SourceError(f"camera {cam.id}: image_fps is required for the image sequence {src}")
                src, first = seq
                kwargs["format"] = "image2"
                options.update(framerate=f"{cam.image_fps:g}", start_number=str(first))
            elif not os.path.exists(src):
                raise SourceError(f"camera {cam.id}: no such file: {src}")
            elif os.path.isdir(src):
                raise SourceError(f"camera {cam.id}: {src} is a folder without numbered images")
        self._open_args = (src, options, kwargs)
        self._kf_decoder = None  # a new connection may bring new codec parameters
        try:
            self._container = av.open(src, options=options, **kwargs)
        except av.FFmpegError as exc:
            raise SourceError(f"camera {cam.id}: cannot open {self.label}: {_reason(exc)}") from None
        except OSError as exc:
            raise SourceError(f"camera {cam.id}: cannot open {self.label}: {_reason(exc)}") from None
        if not self._container.streams.video:
            self.close()
            raise SourceError(f"camera {cam.id}: {self.label} has no video stream")
        self.opens += 1
        if self._last_media is not None and self._last_wall is not None:
            self._media_offset = self._last_media + max(0.0, time.time() - self._last_wall)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    # -- reading -------------------------------------------------------------------------
    def frames(self) -> Iterator[Frame]:
        if self._container is None:
            self.open()
        container = self._container
        assert container is not None
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # one core per camera scales best across many cameras
        sampler = Sampler(1.0 / self.camera.sample_fps, float(stream.average_rate or stream.guessed_rate or 25))
        self._origin = self._origin_of(container, sampler.start_wall)
        if not self.network:
            self.stats.length_s = (container.duration or 0) / 1e6 or None
        # Files: learn the keyframe interval from the packet index up front (no decoding), so
        # keyframes-only decoding starts at the first frame. Streams learn it as they go.
        key_gaps = [] if self.network else self._probe_keyframe_gaps()
        last_key: float | None = None
        keyframes_only = self._choose_mode(key_gaps, sampler.interval, False)
        decoder = self._keyframe_decoder(stream) if keyframes_only else stream.codec_context
        time_base = float(stream.time_base)  # a float: Fraction arithmetic per packet is slow
        first_t: float | None = None  # first and last packet time: how far a file was read
        last_t = 0.0
        try:
            for packet in container.demux(stream):
                if self.stop.is_set():
                    break
                if packet.pts is None and packet.size == 0:
                    continue  # the demuxer's end marker; the decoder is flushed below
                ptime = packet.pts * time_base if packet.pts is not None else None
                if ptime is not None:
                    last_t = ptime
                    first_t = ptime if first_t is None else first_t
                if packet.is_keyframe and ptime is not None:
                    if last_key is not None and ptime > last_key:
                        key_gaps = [*key_gaps[-7:], ptime - last_key]
                    last_key = ptime
                    mode = self._choose_mode(key_gaps, sampler.interval, keyframes_only)
                    if mode != keyframes_only:  # switch at a keyframe: either decoder can start here
                        keyframes_only = mode
                        decoder = self._keyframe_decoder(stream) if mode else stream.codec_context
                if keyframes_only and (not packet.is_keyframe or not sampler.due(ptime)):
                    self.stats.skipped_packets += 1
                    continue
                if ptime is not None:
                    sampler.last_packet_time = ptime
                yield from self._sample(self._decode(decoder, packet), sampler)
            if not self.stop.is_set():
                yield from self._sample(self._decode(decoder, None), sampler)
                if not self.network:
                    self._check_length(container, last_t - (first_t or 0.0), "its data ends")
        except (av.FFmpegError, OSError) as exc:
            # A truncated or broken file ends the stream cleanly; the caller sees why.
            self.stats.corrupt += 1
            if self.network:
                raise SourceError(f"camera {self.camera.id}: {self.label}: {_reason(exc)}") from None
            self._check_length(container, last_t - (first_t or 0.0), _reason(exc), always=True)
        finally:
            self.close()
        log.info("source_finished", camera=self.camera.id, **self.stats.__dict__)

    def _check_length(self, container, read: float, reason: str, always: bool = False) -> None:
        """A file that ends before the length its header declares (truncated, a copy cut short)
        is said once: what was read is processed, and the warning says where it stopped."""
        length = (container.duration or 0) / 1e6  # microseconds
        if always or (length > 0 and read < length - 1.0):
            self.stats.ended_early_s = round(read, 1)
            log.warning(
                "source_ended_early",
                camera=self.camera.id,
                source=self.label,
                read_s=round(read, 1),
                length_s=round(length, 1) if length else None,
                reason=reason,
            )

    def _probe_keyframe_gaps(self, max_packets: int = 400, max_seconds: float = 20.0) -> list[float]:
        """Keyframe intervals at the start of a file, read from its packets only."""
        src, options, kwargs = self._open_args
        gaps: list[float] = []
        try:
            with av.open(src, options=options, **kwargs) as probe:
                stream = probe.streams.video[0]
                first = last = None
                for i, packet in enumerate(probe.demux(stream)):
                    if packet.pts is None:
                        continue
                    t = float(packet.pts * packet.time_base)
                    first = t if first is None else first
                    if packet.is_keyframe:
                        if last is not None and t > last:
                            gaps.append(t - last)
                        last = t
                    if i >= max_packets or t - first > max_seconds or len(gaps) >= 8:
                        break
        except (av.FFmpegError, OSError):
            return []  # the main read reports problems; the mode is then learned while reading
        return gaps

    def _keyframe_decoder(self, stream: av.video.stream.VideoStream) -> av.CodecContext:
        """A second decoder that only ever sees keyframes: no reference frames are needed, and
        the deblocking filter is skipped (about 20 % of an H.264 keyframe's decode time; the
        gate works on a downscaled image where the blocking does not show)."""
        if self._kf_decoder is None:
            src = stream.codec_context
            ctx = av.CodecContext.create(src.name, "r")
            if src.extradata:
                ctx.extradata = src.extradata
            ctx.options = {"skip_loop_filter": "all"}
            ctx.skip_frame = "NONKEY"
            ctx.thread_count = 1
            self._kf_decoder = ctx
        return self._kf_decoder

    def _decode(self, decoder: av.CodecContext, packet: av.Packet | None) -> list[av.VideoFrame]:
        try:
            return decoder.decode(packet)
        except av.FFmpegError:
            self.stats.corrupt += 1  # a corrupt packet costs one frame, not the stream
            return []

    def _sample(self, decoded: list[av.VideoFrame], sampler: Sampler) -> Iterator[Frame]:
        for vf in decoded:
            self.stats.decoded += 1
            rel = sampler.take(vf.time)
            if rel is None:
                continue
            if self.network:
                wall = time.time()
            else:
                wall = self._origin + rel
                delay = sampler.start_wall + rel - time.time()  # pacing follows the run's own clock
                if self.realtime and delay > 0 and self.stop.wait(delay):
                    return
            media = rel + self._media_offset
            self._last_media, self._last_wall = media, wall
            self.stats.media_s = media
            # The decoder's frame travels on; colour conversion happens only if someone looks.
            yield Frame(self.camera.id, self.stats.sampled, round(media, 6), wall, vf)
            self.stats.sampled += 1

    def _choose_mode(self, gaps: list[float], interval: float, current: bool) -> bool:
        """Keyframes-only when keyframes come at least as often as samples are needed."""
        if len(gaps) < _KEYFRAMES_NEEDED:
            return current
        gop = max(gaps)
        self.stats.keyframe_interval_s = round(gop, 3)
        wanted = self.keyframes and gop <= interval * 1.05
        if wanted != current or not self._mode_reported:
            self._mode_reported = True
            self.stats.mode = "keyframes-only" if wanted else "all-frames"
            log.info(
                "decode_mode",
                camera=self.camera.id,
                mode=self.stats.mode,
                keyframe_interval_s=round(gop, 3),
                sample_interval_s=round(interval, 3),
            )
        return wanted


def _reason(exc: BaseException) -> str:
    """The useful part of an FFmpeg/OS error, never the (possibly secret-bearing) URL."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return mask_secrets(str(text))
