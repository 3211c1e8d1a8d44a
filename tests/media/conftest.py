"""Tiny clips written with PyAV for the media tests (session-scoped: made once per test session).

``make_clip`` writes a clip with the given container, codecs, rates, channels and display rotation;
the pictures are a moving synthetic pattern (no face) unless ``frames`` are given, and the audio is a
tone. ``clips`` holds the standard set (one per container/codec pair and the odd cases); broken files
are derived from them by the tests.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av  # the media tests must run in CI: a missing extra is an error here, never a skip
import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mosi"
REAL_CLIP = SHARED / "Oz06ZWiO20M_6.mp4"
REAL_WAV = SHARED / "03bSnISJMiM_1.wav"


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    """A transcripts (or word timings) CSV, UTF-8, quoted as the csv module does."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@dataclass(frozen=True)
class ClipSpec:
    container: str = "mp4"
    video_codec: str | None = "libx264"
    audio_codec: str | None = "aac"
    fps: int = 25
    seconds: float = 1.0
    width: int = 96
    height: int = 64
    sample_rate: int = 44100
    channels: int = 2
    rotation: int = 0
    pix_fmt: str = "yuv420p"
    audio_format: str | None = None
    audio_delay: float = 0.0
    """Seconds of timestamps before the first audio sample (a stream that starts late)."""
    audio_gap: tuple[float, float] | None = None
    """(at, length) seconds: audio timestamps jump by ``length`` at ``at`` (a recorder dropped audio)."""


def pattern(i: int, width: int, height: int) -> np.ndarray:
    """A moving colour pattern with an asymmetric marker (white block top-left): no face."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([(x * 4 + i * 8) % 256, (y * 4) % 256, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    img[: height // 4, : width // 4] = 255
    return img


def write_clip(path: Path, spec: ClipSpec, frames: Callable[[int], np.ndarray] | None = None) -> Path:
    layout = "mono" if spec.channels == 1 else "stereo"
    options = {"movflags": "faststart"} if spec.container in ("mp4", "mov") else {}
    with av.open(str(path), mode="w", options=options) as out:
        vstream = astream = None
        if spec.video_codec:
            vstream = out.add_stream(spec.video_codec, rate=spec.fps)
            vstream.width, vstream.height, vstream.pix_fmt = spec.width, spec.height, spec.pix_fmt
            if spec.video_codec == "libx264":
                vstream.options = {"preset": "ultrafast"}
            if spec.rotation:
                vstream.set_display_rotation(spec.rotation)
        if spec.audio_codec:
            astream = out.add_stream(spec.audio_codec, rate=spec.sample_rate, layout=layout)
        n_frames = int(round(spec.seconds * spec.fps))
        if vstream is not None:
            for i in range(n_frames):
                img = frames(i) if frames else pattern(i, spec.width, spec.height)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                frame.time_base = Fraction(1, spec.fps)
                for packet in vstream.encode(frame):
                    out.mux(packet)
            for packet in vstream.encode(None):
                out.mux(packet)
        if astream is not None:
            fmt = spec.audio_format or astream.codec_context.codec.audio_formats[0].name
            total = int(round(spec.seconds * spec.sample_rate))
            t = np.arange(total) / spec.sample_rate
            tone = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
            block = astream.codec_context.frame_size or 1024
            resampler = av.AudioResampler(format=fmt, layout=layout, rate=spec.sample_rate)
            for s0 in range(0, total, block):
                chunk = tone[s0: s0 + block]
                data = np.repeat(chunk[None, :], spec.channels, axis=0).T.reshape(1, -1) if spec.channels > 1 \
                    else chunk[None, :]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="flt", layout=layout)
                frame.sample_rate = spec.sample_rate
                shift = spec.audio_delay
                if spec.audio_gap is not None and s0 / spec.sample_rate >= spec.audio_gap[0]:
                    shift += spec.audio_gap[1]
                frame.pts = s0 + int(round(shift * spec.sample_rate))
                frame.time_base = Fraction(1, spec.sample_rate)
                for converted in resampler.resample(frame):
                    for packet in astream.encode(converted):
                        out.mux(packet)
            for packet in astream.encode(None):
                out.mux(packet)
    return path


CLIPS: dict[str, ClipSpec] = {
    "mp4_h264_aac": ClipSpec(),
    "mkv_vp9_opus": ClipSpec(container="mkv", video_codec="libvpx-vp9", audio_codec="libopus", fps=24,
                             sample_rate=48000, seconds=1.0),
    "mov_mjpeg_pcm": ClipSpec(container="mov", video_codec="mjpeg", audio_codec="pcm_s16le", fps=15,
                              sample_rate=22050, channels=1, pix_fmt="yuvj420p"),
    "avi_mpeg4_mp3": ClipSpec(container="avi", video_codec="mpeg4", audio_codec="libmp3lame", fps=30,
                              sample_rate=32000),
    "webm_vp9_opus": ClipSpec(container="webm", video_codec="libvpx-vp9", audio_codec="libopus", fps=20,
                              sample_rate=48000, channels=1),
    "mkv_h264_flac": ClipSpec(container="mkv", audio_codec="flac", fps=12, sample_rate=8000, channels=2),
    "video_only": ClipSpec(audio_codec=None),
    "audio_only": ClipSpec(container="m4a", video_codec=None),
    "rotated": ClipSpec(rotation=-90, width=96, height=64),
    "long": ClipSpec(seconds=4.0, fps=10, width=64, height=48),
}


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The standard set of generated clips, by name (see ``CLIPS``)."""
    folder = tmp_path_factory.mktemp("clips")
    ext = {"mkv": "mkv", "mp4": "mp4", "mov": "mov", "avi": "avi", "webm": "webm", "m4a": "m4a"}
    return {name: write_clip(folder / f"{name}.{ext[spec.container]}", spec) for name, spec in CLIPS.items()}


@pytest.fixture(scope="session")
def make_clip(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_clip(name, frames=None, **ClipSpec fields)`` writes one more clip."""
    folder = tmp_path_factory.mktemp("more-clips")

    def make(name: str, frames: Callable[[int], np.ndarray] | None = None, **fields: object) -> Path:
        spec = ClipSpec(**fields)  # type: ignore[arg-type]
        return write_clip(folder / name, spec, frames)

    return make
