"""Decoding clips with PyAV (FFmpeg's libraries, bundled in the ``av`` wheel; no ffmpeg binary is called).

Every clip is read as a stream of blocks, so memory does not grow with its length:

* ``iter_audio`` yields mono float32 blocks at one sample rate (FFmpeg's resampler down-mixes any
  channel layout and converts any rate), exactly ``round((end - start) * rate)`` samples in all.
* ``iter_pictures`` yields RGB pictures on a fixed time grid (``rate`` per second; the picture on
  screen at each instant), turned upright by the display-matrix rotation a phone writes, with square
  pixels and the longer side at most ``max_side``.

Times are seconds from the container's start (a stream that starts late is placed where it starts, the
classic start-time offset trap). After decoding, the length of each stream is checked against what the
container declares: a stream that stops more than ``TOLERANCE_S`` early is a truncated file, an
error; a stream that is declared shorter than the clip (streams of different lengths) is padded with
silence or with rows without a picture, and a warning says so. Every failure is a
``misalatch.errors.MediaError`` reading ``FILE: reason``; only regular files are opened, so a
FIFO or a device never blocks.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import MediaError
from ._deps import require

#: Seconds by which a decoded stream may fall short of the declared length before it counts as
#: truncated (also the largest start or end gap filled silently).
TOLERANCE_S = 0.25
#: Largest picture accepted (pixels on a side), against crafted headers that would need gigabytes.
MAX_PICTURE_SIDE = 16384
#: A jump in audio timestamps longer than this is a gap, filled with silence.
GAP_S = 0.02
#: Seconds decoded before a segment's start after seeking (the decoder needs a run-up).
SEEK_RUN_UP_S = 1.0


@dataclass(frozen=True)
class AudioStreamInfo:
    """The first (best) audio stream of a clip as the container declares it."""

    codec: str
    sample_rate: int
    channels: int
    start: float
    """Seconds from the container's start to the stream's first sample."""
    duration: float | None
    """Declared length in seconds (None when the container does not say)."""


@dataclass(frozen=True)
class VideoStreamInfo:
    """The first (best) video stream of a clip as the container declares it."""

    codec: str
    width: int
    height: int
    frame_rate: float | None
    """Average frames per second (None when unknown)."""
    frames: int
    """Declared number of frames (0 when the container does not say)."""
    start: float
    duration: float | None


@dataclass(frozen=True)
class MediaInfo:
    """What ``probe_media`` found in a clip (no picture or sample is decoded)."""

    path: str
    format: str
    duration: float
    """Seconds from the container's start to the end of its longest stream."""
    audio: AudioStreamInfo | None
    video: VideoStreamInfo | None


def _fail(path: str | os.PathLike[str], reason: str) -> MediaError:
    return MediaError(f"{os.fspath(path)}: {reason}")


def _av_errors() -> tuple[type[BaseException], ...]:
    av = require("av")
    return (av.FFmpegError, OSError, ValueError, EOFError, IndexError, OverflowError, ZeroDivisionError)


@contextmanager
def open_container(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Open a regular, non-empty file with PyAV; any failure is a MediaError naming the file."""
    av = require("av")
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except OSError as exc:
        raise _fail(name, f"cannot read the file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise _fail(name, "not a regular file")
    if st.st_size == 0:
        raise _fail(name, "empty file")
    try:
        container = av.open(name, mode="r", metadata_errors="ignore")
    except _av_errors() as exc:
        raise _fail(name, f"cannot open as audio or video ({_reason(exc)})") from None
    try:
        yield container
    finally:
        container.close()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.replace(os.linesep, " ")[:200]


def _origin(container: Any) -> float:
    start = container.start_time
    return start / 1_000_000 if start is not None else 0.0


def _stream_start(stream: Any, origin: float) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return max(0.0, float(stream.start_time * stream.time_base) - origin)


def _stream_duration(stream: Any) -> float | None:
    if stream.duration is None or stream.time_base is None or stream.duration <= 0:
        return None
    return float(stream.duration * stream.time_base)


def _scan_end(container: Any, origin: float) -> float:
    """End of the last packet (demuxed, not decoded), for containers that declare no duration."""
    end = 0.0
    for packet in container.demux():
        if packet.pts is None or packet.time_base is None:
            continue
        stop = float((packet.pts + (packet.duration or 0)) * packet.time_base) - origin
        end = max(end, stop)
    return end


def probe_media(path: str | os.PathLike[str]) -> MediaInfo:
    """Streams, codecs, rates and durations of a clip, as its container declares them.

    Raises ``misalatch.errors.MediaError`` for a file that is missing, empty, not a regular
    file, not a media container, or has neither an audio nor a video stream.
    """
    name = os.fspath(path)
    with open_container(name) as container:
        try:
            return _probe(name, container)
        except MediaError:
            raise
        except _av_errors() as exc:
            raise _fail(name, f"cannot read the container ({_reason(exc)})") from None


def _probe(name: str, container: Any) -> MediaInfo:
    origin = _origin(container)
    audio = video = None
    a = container.streams.best("audio")
    if a is not None:
        ctx = a.codec_context
        audio = AudioStreamInfo(codec=ctx.name, sample_rate=int(ctx.sample_rate or 0),
                                channels=int(ctx.channels or 0), start=_stream_start(a, origin),
                                duration=_stream_duration(a))
        if audio.sample_rate <= 0 or audio.channels <= 0:
            raise _fail(name, f"the audio stream declares {audio.sample_rate} Hz and {audio.channels} channels")
    v = container.streams.best("video")
    if v is not None:
        ctx = v.codec_context
        rate = v.average_rate or v.guessed_rate
        video = VideoStreamInfo(codec=ctx.name, width=int(ctx.width or 0), height=int(ctx.height or 0),
                                frame_rate=float(rate) if rate else None, frames=int(v.frames or 0),
                                start=_stream_start(v, origin), duration=_stream_duration(v))
        if not (0 < video.width <= MAX_PICTURE_SIDE and 0 < video.height <= MAX_PICTURE_SIDE):
            raise _fail(name, f"the video stream declares a {video.width}x{video.height} picture (expected "
                              f"1 to {MAX_PICTURE_SIDE} pixels on a side)")
    if audio is None and video is None:
        raise _fail(name, "no audio or video stream")
    streams = [s for s in (audio, video) if s is not None]
    ends = [s.start + s.duration for s in streams if s.duration is not None]
    if len(ends) == len(streams):
        # every stream says how long it is: the clip ends with the longest (a container header that
        # claims hours more than its streams hold would otherwise be padded with hours of silence)
        duration = max(ends)
    elif container.duration is not None and container.duration > 0:
        duration = max([container.duration / 1_000_000, *ends])
    else:
        duration = _scan_end(container, origin)
    if not duration > 0 or not math.isfinite(duration):
        raise _fail(name, "no audio or video in the file (duration 0)")
    return MediaInfo(path=name, format=container.format.name, duration=float(duration), audio=audio, video=video)


def check_segment(info: MediaInfo, start: float | None, end: float | None) -> tuple[float, float]:
    """The segment ``[start, end)`` in seconds, defaulting to the whole clip; a segment outside the clip
    (beyond its end by more than ``TOLERANCE_S``) or empty is a MediaError."""
    s = 0.0 if start is None else float(start)
    e = info.duration if end is None else float(end)
    if not (math.isfinite(s) and math.isfinite(e)):
        raise _fail(info.path, f"segment [{s}, {e}) is not a pair of finite seconds")
    if s < 0 or s >= info.duration or e > info.duration + TOLERANCE_S or e <= s:
        raise _fail(info.path, f"segment [{s:.3f}, {e:.3f}) s is outside the clip (0 to {info.duration:.3f} s)"
                    if e > s else f"segment [{s:.3f}, {e:.3f}) s is empty")
    return s, min(e, info.duration)


def _stream_end(stream: AudioStreamInfo | VideoStreamInfo, info: MediaInfo) -> float:
    return stream.start + stream.duration if stream.duration is not None else info.duration


def iter_audio(info: MediaInfo, *, sample_rate: int, start: float, end: float,
               warnings: list[str]) -> Iterator[np.ndarray]:
    """Mono float32 blocks of the segment ``[start, end)`` at ``sample_rate``: exactly
    ``round((end - start) * sample_rate)`` samples in all.

    Frame timestamps place the audio: silence before a stream that starts late, and silence in a gap
    between packets (a recorder that dropped audio), so the audio stays in step with the pictures. The
    blocks are FFmpeg's down-mix and resampling of every channel. A stream that ends before the segment
    does is padded with silence (a warning when the gap exceeds ``TOLERANCE_S``), unless the
    container declares more audio than was decoded: then the file is truncated (MediaError).
    """
    av = require("av")
    if info.audio is None:
        raise _fail(info.path, "no audio stream (the acoustic features need one)")
    total = int(round((end - start) * sample_rate))
    produced = 0  # samples yielded so far (segment-relative index of the next one)
    pos: int | None = None  # segment-relative index of the resampler's next output sample
    filled = 0  # silence inserted for gaps and a late start
    decoded_end = None

    def place(block: np.ndarray) -> Iterator[np.ndarray]:
        """Yield the part of ``block`` (starting at ``pos``) inside the segment, silence before it."""
        nonlocal produced, pos, filled
        assert pos is not None
        if pos > produced and produced < total:
            gap = min(pos, total) - produced
            filled += gap
            produced += gap
            for begin in range(0, gap, sample_rate):  # in 1-s blocks: memory stays flat
                yield np.zeros(min(sample_rate, gap - begin), np.float32)
        part = block[max(0, produced - pos):][: max(0, total - produced)]
        pos += block.size
        if part.size:
            produced += part.size
            yield part

    with open_container(info.path) as container:
        stream = container.streams.best("audio")
        origin = _origin(container)
        try:
            if start > SEEK_RUN_UP_S:
                container.seek(int((start - SEEK_RUN_UP_S + origin) / stream.time_base), stream=stream,
                               backward=True)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in _decode(container, stream):
                t = frame.time - origin if frame.time is not None else None
                if pos is None:
                    pos = int(round(((t if t is not None else info.audio.start) - start) * sample_rate))
                elif t is not None and decoded_end is not None and t - decoded_end > GAP_S:
                    # a gap in the timestamps: flush what the resampler holds, then continue at t
                    for out in resampler.resample(None):
                        yield from place(_samples(out))
                    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
                    pos = max(pos, int(round((t - start) * sample_rate)))
                if t is not None:
                    decoded_end = max(decoded_end or 0.0, t + frame.samples / frame.sample_rate)
                for out in resampler.resample(frame):
                    yield from place(_samples(out))
                if produced >= total:
                    break
            else:
                if pos is not None:
                    for out in resampler.resample(None):
                        yield from place(_samples(out))
        except MediaError:
            raise
        except _av_errors() as exc:
            got = start + produced / sample_rate
            raise _fail(info.path, f"cannot decode the audio after {got:.2f} s ({_reason(exc)})") from None
    if filled > TOLERANCE_S * sample_rate:
        warnings.append(f"{filled / sample_rate:.2f} s of the audio segment are silence filled in for gaps or "
                        "a late start")
    missing = total - produced
    if missing > 0:
        got = start + produced / sample_rate
        declared = _stream_end(info.audio, info)
        if declared - max(got, decoded_end or 0.0) > TOLERANCE_S and end - got > TOLERANCE_S:
            raise _fail(info.path, f"truncated: the audio stops at {got:.2f} s but the container declares "
                                   f"{declared:.2f} s")
        if missing > TOLERANCE_S * sample_rate:
            warnings.append(f"the audio ends {missing / sample_rate:.2f} s before the segment: padded with silence")
        for begin in range(0, missing, sample_rate):  # in 1-s blocks: memory stays flat
            yield np.zeros(min(sample_rate, missing - begin), np.float32)


def _samples(frame: Any) -> np.ndarray:
    return np.asarray(frame.to_ndarray(), dtype=np.float32).reshape(-1)


def _decode(container: Any, stream: Any) -> Iterator[Any]:
    for packet in container.demux(stream):
        yield from packet.decode()


@dataclass(frozen=True)
class Picture:
    """One decoded picture and the grid rows (indices into the segment's time grid) it stands for."""

    rows: range
    image: np.ndarray | None
    """RGB uint8 (height, width, 3), upright; None for rows that have no picture (before the first or
    after the last frame of a video stream shorter than the clip)."""


def grid_size(start: float, end: float, rate: float) -> int:
    """Number of grid instants ``start + k / rate`` inside ``[start, end)``."""
    return max(0, int(math.ceil((end - start) * rate - 1e-6)))


def iter_pictures(info: MediaInfo, *, rate: float, start: float, end: float, max_side: int,
                  warnings: list[str]) -> Iterator[Picture]:
    """The pictures on screen at ``start + k / rate`` for every such instant in ``[start, end)``.

    Each decoded frame is shown from its time until the next frame's, so any frame rate (variable too)
    maps onto the grid; only frames that some grid row shows are converted. Pictures are turned upright
    by the frame's display-matrix rotation, given square pixels and scaled so that the longer side is
    at most ``max_side``.
    """
    if info.video is None:
        raise _fail(info.path, "no video stream (the visual features need one)")
    n_rows = grid_size(start, end, rate)
    native_dt = 1.0 / info.video.frame_rate if info.video.frame_rate else 1.0 / 30
    k = 0
    with open_container(info.path) as container:
        stream = container.streams.best("video")
        stream.thread_type = "AUTO"
        origin = _origin(container)
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        aspect = Fraction(sar) if sar and sar > 0 else Fraction(1)
        prev = None  # (time, frame)
        last_t = None
        try:
            if start > SEEK_RUN_UP_S:
                container.seek(int((start + origin) / stream.time_base), stream=stream, backward=True)
            for frame in _decode(container, stream):
                if frame.time is not None:
                    t = frame.time - origin
                else:
                    t = (last_t + native_dt) if last_t is not None else info.video.start
                if last_t is not None:
                    t = max(t, last_t)  # out-of-order timestamps: keep the grid moving forward only
                last_t = t
                first = k
                if prev is None:
                    # rows before the first frame: none, unless the gap is within the tolerance
                    while k < n_rows and start + k / rate < t - TOLERANCE_S:
                        k += 1
                    if k > first:
                        yield Picture(range(first, k), None)
                        warnings.append(f"the video starts {t - start:.2f} s into the segment: no picture "
                                        f"in the first {k - first} rows")
                    first = k
                    while k < n_rows and start + k / rate < t:
                        k += 1
                    if k > first:
                        yield Picture(range(first, k), _image(frame, aspect, max_side))
                else:
                    while k < n_rows and start + k / rate < t:
                        k += 1
                    if k > first:
                        yield Picture(range(first, k), _image(prev[1], aspect, max_side))
                prev = (t, frame)
                if k >= n_rows:
                    break
            # the last frame shows for its own duration, and through a gap up to the tolerance (a
            # container a few milliseconds longer than its video: audio priming, rounding)
            if prev is not None and k < n_rows:
                first = k
                until = prev[0] + native_dt + TOLERANCE_S
                while k < n_rows and start + k / rate < until:
                    k += 1
                if k > first:
                    yield Picture(range(first, k), _image(prev[1], aspect, max_side))
        except MediaError:
            raise
        except _av_errors() as exc:
            raise _fail(info.path, f"cannot decode the video ({_reason(exc)})") from None
    if k < n_rows:
        got = start + k / rate
        declared = _stream_end(info.video, info)
        if declared - got > TOLERANCE_S + native_dt and end - got > TOLERANCE_S:
            raise _fail(info.path, f"truncated: the video stops at {got:.2f} s but the container declares "
                                   f"{declared:.2f} s")
        if (n_rows - k) / rate > TOLERANCE_S:
            warnings.append(f"the video ends {(n_rows - k) / rate:.2f} s before the segment: no picture in "
                            f"the last {n_rows - k} rows")
        yield Picture(range(k, n_rows), None)


def _image(frame: Any, aspect: Fraction, max_side: int) -> np.ndarray:
    width = frame.width * aspect
    height = Fraction(frame.height)
    scale = min(Fraction(1), Fraction(max_side) / max(width, height))
    w, h = max(2, int(round(width * scale))), max(2, int(round(height * scale)))
    if (w, h) != (frame.width, frame.height):
        image = frame.to_ndarray(format="rgb24", width=w, height=h)
    else:
        image = frame.to_ndarray(format="rgb24")
    turns = int(round((frame.rotation or 0) / 90)) % 4
    if turns:
        image = np.rot90(image, k=turns)
    return np.ascontiguousarray(image)
