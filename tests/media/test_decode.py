"""Decoding with PyAV: the real clip and WAV by path, generated clips in other containers, codecs, rates and
channel counts, rotation, segments, and every way a file can be unusable (one MediaError naming it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from misalatch.errors import DataFormatError, MediaError
from misalatch.media import extract_clip, probe_media
from misalatch.media.decode import grid_size, iter_audio, iter_pictures

from .conftest import CLIPS, REAL_CLIP, REAL_WAV


def _audio(path: Path, start: float = 0.0, end: float | None = None, rate: int = 16000) -> np.ndarray:
    info = probe_media(path)
    notes: list[str] = []
    return np.concatenate(list(iter_audio(info, sample_rate=rate, start=start,
                                          end=info.duration if end is None else end, warnings=notes)))


def test_real_clip_probe() -> None:
    info = probe_media(REAL_CLIP)
    assert info.video is not None and info.audio is not None
    assert (info.video.codec, info.video.frames, info.video.frame_rate) == ("h264", 225, 30.0)
    assert (info.video.width, info.video.height) == (480, 360)
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", 44100, 2)
    assert info.duration == pytest.approx(7.5)
    # the audio stream is a little shorter than the video: padded, silently (within the tolerance)
    assert info.audio.duration == pytest.approx(7.441, abs=1e-3)


def test_real_clip_pictures_are_its_225_frames() -> None:
    info = probe_media(REAL_CLIP)
    notes: list[str] = []
    pictures = list(iter_pictures(info, rate=30.0, start=0.0, end=info.duration, max_side=640, warnings=notes))
    assert [len(p.rows) for p in pictures] == [1] * 225  # one decoded frame per grid row, none repeated
    assert all(p.image is not None and p.image.shape == (360, 480, 3) for p in pictures)
    assert notes == []
    # at 15 per second every other frame is used; max_side scales the picture down
    half = list(iter_pictures(info, rate=15.0, start=0.0, end=info.duration, max_side=240, warnings=notes))
    assert sum(len(p.rows) for p in half) == grid_size(0.0, 7.5, 15.0) == 113
    assert half[0].image is not None and half[0].image.shape == (180, 240, 3)


def test_real_wav_interleaved_stereo_is_one_mono_sample_per_frame() -> None:
    info = probe_media(REAL_WAV)
    assert info.audio is not None and info.video is None
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("pcm_s16le", 16000, 2)
    mono = _audio(REAL_WAV)
    assert mono.dtype == np.float32 and mono.shape == (53290,)  # 3.330625 s, not twice that
    raw = np.frombuffer(REAL_WAV.read_bytes()[-53290 * 4:], dtype="<i2").reshape(-1, 2) / 32768.0
    # FFmpeg's down-mix is the channels' mean, up to its normalisation: same waveform, same timing
    mean = raw.mean(axis=1)
    assert np.corrcoef(mono, mean)[0, 1] > 0.999
    assert np.abs(mono).max() <= 1.0


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_generated_clip_decodes_to_the_declared_length(clips: dict[str, Path], name: str) -> None:
    spec = CLIPS[name]
    info = probe_media(clips[name])
    assert (info.audio is not None) == (spec.audio_codec is not None)
    assert (info.video is not None) == (spec.video_codec is not None)
    assert info.duration == pytest.approx(spec.seconds, abs=0.1)
    notes: list[str] = []
    if info.audio is not None:
        assert info.audio.sample_rate == spec.sample_rate and info.audio.channels == spec.channels
        mono = _audio(clips[name])
        assert mono.shape == (round(info.duration * 16000),)
        # the tone is there, at its level, after resampling from any rate and down-mixing any layout
        body = mono[1600:-1600]
        assert 0.1 < np.sqrt(np.mean(body ** 2)) < 0.4
    if info.video is not None:
        pictures = list(iter_pictures(info, rate=10.0, start=0.0, end=info.duration, max_side=640,
                                      warnings=notes))
        assert sum(len(p.rows) for p in pictures) == grid_size(0.0, info.duration, 10.0)
        assert all(p.image is not None for p in pictures)
    assert notes == []


def test_rotation_metadata_turns_the_picture_upright(clips: dict[str, Path]) -> None:
    info = probe_media(clips["rotated"])
    picture = next(iter_pictures(info, rate=10.0, start=0.0, end=1.0, max_side=640, warnings=[]))
    image = picture.image
    assert image is not None and image.shape == (96, 64, 3)  # stored 96x64 landscape, shown portrait
    # the white marker written top-left is shown top-right after the 90-degree clockwise display turn
    assert image[:8, -8:].min() == 255 and image[:8, :8].mean() < 200
    plain = next(iter_pictures(probe_media(clips["mp4_h264_aac"]), rate=10.0, start=0.0, end=1.0,
                               max_side=640, warnings=[])).image
    assert plain is not None and plain.shape == (64, 96, 3) and plain[:8, :8].min() == 255


def test_a_segment_is_the_same_signal_as_the_whole_clip_there(clips: dict[str, Path]) -> None:
    whole = _audio(clips["long"])
    part = _audio(clips["long"], start=2.0, end=3.5)
    assert part.shape == (24000,)
    np.testing.assert_allclose(part, whole[32000:56000], atol=0.02)
    features = extract_clip(clips["long"], start=2.0, end=3.5)
    assert features.acoustic is not None and features.acoustic.shape[0] == 150
    assert features.visual is not None and features.visual.shape[0] == grid_size(2.0, 3.5, 15.0) == 23
    assert (features.start, features.end, features.duration) == (2.0, 3.5, 1.5)


@pytest.mark.parametrize("start, end", [(-1.0, 2.0), (3.0, 9.0), (5.0, None), (2.0, 2.0), (3.0, 1.0)])
def test_a_segment_outside_the_clip_is_refused(clips: dict[str, Path], start: float, end: float | None) -> None:
    with pytest.raises(MediaError, match=r"long\.mp4: segment .* (outside the clip|is empty)"):
        extract_clip(clips["long"], start=start, end=end)


def test_missing_streams_are_named(clips: dict[str, Path]) -> None:
    with pytest.raises(MediaError, match=r"video_only\.mp4: no audio stream"):
        extract_clip(clips["video_only"])
    with pytest.raises(MediaError, match=r"audio_only\.m4a: no video stream"):
        extract_clip(clips["audio_only"])
    assert extract_clip(clips["video_only"], modalities=("visual",)).acoustic is None
    assert extract_clip(clips["audio_only"], modalities=("acoustic",)).visual is None
    with pytest.raises(DataFormatError, match="modalities"):
        extract_clip(clips["audio_only"], modalities=("text",))


def _broken(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_unusable_files_give_one_error_naming_the_file(clips: dict[str, Path], tmp_path: Path) -> None:
    long_mp4 = clips["long"].read_bytes()
    mkv = clips["mkv_vp9_opus"].read_bytes()
    cases = {
        _broken(tmp_path, "empty.mp4", b""): "empty file",
        _broken(tmp_path, "junk.mp4", bytes(range(256)) * 64): "cannot open",
        _broken(tmp_path, "text.mkv", "not a video at all\n".encode() * 50): "cannot open",
        _broken(tmp_path, "cut.mp4", long_mp4[: len(long_mp4) * 6 // 10]): "truncated|cannot decode",
        _broken(tmp_path, "cut.mkv", mkv[: len(mkv) // 2]): "truncated",
        _broken(tmp_path, "head.mp4", long_mp4[:200]): "cannot open|truncated|cannot decode|no audio",
        tmp_path / "missing.mp4": "cannot read the file",
        tmp_path: "not a regular file",
    }
    for path, reason in cases.items():
        with pytest.raises(MediaError, match=rf"^{path}: ({reason})"):
            extract_clip(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(MediaError, match="not a regular file"):
        extract_clip(fifo)


def test_audio_that_starts_late_or_has_a_gap_stays_in_step(make_clip) -> None:
    late = make_clip("late.mkv", container="mkv", audio_codec="pcm_s16le", sample_rate=16000, channels=1,
                     seconds=1.0, fps=10, audio_delay=0.5)
    info = probe_media(late)
    assert info.audio is not None and info.audio.start == pytest.approx(0.5, abs=0.01)
    notes: list[str] = []
    audio = np.concatenate(list(iter_audio(info, sample_rate=16000, start=0.0, end=info.duration,
                                           warnings=notes)))
    assert audio.shape == (round(info.duration * 16000),)
    onset = int(np.flatnonzero(np.abs(audio) > 1e-3)[0])
    assert onset == pytest.approx(8000, abs=80)  # the tone starts at 0.5 s, where its timestamps say
    assert any("silence" in n for n in notes)

    gap = make_clip("gap.mkv", container="mkv", audio_codec="pcm_s16le", sample_rate=16000, channels=1,
                    seconds=1.0, fps=10, audio_gap=(0.4, 0.3), video_codec=None)
    audio = np.concatenate(list(iter_audio(probe_media(gap), sample_rate=16000, start=0.0, end=1.3,
                                           warnings=[])))
    # the writer's blocks are 1024 samples: the block after 0.384 s ends at 0.448 s, the next is stamped 0.748 s
    assert np.abs(audio[7300:11900]).max() < 1e-3  # the gap is silence
    assert np.abs(audio[12100:12800]).max() > 0.05  # and the tone resumes where its timestamps say


def test_damaged_bytes_give_features_or_one_media_error(clips: dict[str, Path], tmp_path: Path) -> None:
    """Bytes flipped anywhere in a clip: extraction either succeeds or raises MediaError naming the file,
    never another exception (and never hangs: the file is finite and only regular files are read)."""
    original = clips["mp4_h264_aac"].read_bytes()
    rng = np.random.default_rng(7)
    outcomes = set()
    for i in range(8):
        data = bytearray(original)
        for pos in rng.integers(0, len(data), size=12):
            data[pos] = int(rng.integers(0, 256))
        path = _broken(tmp_path, f"damaged{i}.mp4", bytes(data))
        try:
            features = extract_clip(path)
        except MediaError as exc:
            assert str(exc).startswith(f"{path}: ")
            outcomes.add("error")
        else:
            assert features.acoustic is not None and np.isfinite(features.acoustic).all()
            assert features.visual is not None and np.isfinite(features.visual).all()
            outcomes.add("features")
    assert outcomes <= {"error", "features"} and len(outcomes) >= 1
