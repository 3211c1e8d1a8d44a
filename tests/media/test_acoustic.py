"""Acoustic features: eGeMAPS low-level descriptors on the real WAV and clip by path; chunked analysis
equals one whole-signal analysis; silence and tiny segments are defined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from misalatch.media import default_recipe, extract_clip
from misalatch.media.acoustic import EGEMAPS_LLD_NAMES, acoustic_features, acoustic_names

from .conftest import REAL_CLIP, REAL_WAV


def test_real_wav_rows_dims_and_voicing() -> None:
    recipe = default_recipe()
    features = extract_clip(REAL_WAV, modalities=("acoustic",))
    assert features.acoustic is not None and features.visual is None and features.face_present is None
    assert features.duration == pytest.approx(3.330625)
    assert features.acoustic.shape == (333, recipe.acoustic_dim) == (333, 26)  # 10 ms rows
    assert features.acoustic_rate == recipe.acoustic_rate == 100.0
    assert recipe.acoustic_names == (*EGEMAPS_LLD_NAMES, "voiced")
    a = features.acoustic
    assert a.dtype == np.float32 and np.isfinite(a).all()
    voiced = a[:, -1].astype(bool)
    assert set(np.unique(a[:, -1])) == {0.0, 1.0} and 0.2 < voiced.mean() < 0.9  # someone speaks
    f0 = a[:, EGEMAPS_LLD_NAMES.index("F0semitoneFrom27.5Hz_sma3nz")]
    assert (f0[~voiced] == 0).all() and (f0[voiced] > 10).all()  # pitch only where voiced, 0 elsewhere
    loudness = a[:, EGEMAPS_LLD_NAMES.index("Loudness_sma3")]
    assert loudness[voiced].mean() > 2 * loudness[~voiced].mean() > 0  # speech is louder than the pauses


def test_real_clip_acoustic_rows_cover_the_clip() -> None:
    # the audio stream (7.44 s) is shorter than the clip (7.5 s): padded, rows for the whole clip
    features = extract_clip(REAL_CLIP, modalities=("acoustic",))
    assert features.acoustic is not None and features.acoustic.shape == (750, 26)
    assert features.warnings == ()


def test_chunked_analysis_equals_the_whole_signal() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(int(6.37 * 16000)) / 16000
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.5 * t)
    voiced = (np.sin(2 * np.pi * 0.7 * t) > -0.3).astype(float)
    signal = (0.3 * voiced * np.sin(2 * np.pi * np.cumsum(pitch) / 16000) + 0.01 * rng.normal(size=t.size))
    signal = signal.astype(np.float32)
    whole = acoustic_features([signal], sample_rate=16000, chunk_s=600, context_s=1.0).features
    blocks = np.array_split(signal, 97)  # uneven blocks, as a decoder gives them
    chunked = acoustic_features(blocks, sample_rate=16000, chunk_s=2.0, context_s=1.0).features
    assert whole.shape == chunked.shape == (637, 26)
    voicing_agrees = (whole[:, -1] == chunked[:, -1]).mean()
    assert voicing_agrees > 0.99
    same = whole[:, -1] == chunked[:, -1]
    np.testing.assert_allclose(chunked[same, :10], whole[same, :10], rtol=1e-4, atol=1e-4)


def test_silence_and_tiny_signals_are_defined() -> None:
    silence = acoustic_features([np.zeros(16000, np.float32)], sample_rate=16000).features
    assert silence.shape == (100, 26) and np.isfinite(silence).all() and not silence[:, -1].any()
    tiny = acoustic_features([np.zeros(100, np.float32)], sample_rate=16000).features
    assert tiny.shape == (0, 26)
    assert acoustic_features([np.ones(400, np.float32)], sample_rate=16000).features.shape == (2, 26)


def test_opensmile_is_opt_in_only() -> None:
    assert default_recipe().acoustic == "afx-egemaps"
    assert acoustic_names("opensmile-egemaps") == acoustic_names("afx-egemaps")


def test_generated_clips_at_any_rate_give_100_rows_a_second(clips: dict[str, Path]) -> None:
    for name in ("mkv_vp9_opus", "mov_mjpeg_pcm", "mkv_h264_flac", "audio_only"):
        features = extract_clip(clips[name], modalities=("acoustic",))
        assert features.acoustic is not None
        assert features.acoustic.shape == (int(features.duration * 16000) // 160, 26), name
        # the 220 Hz tone is voiced and at 220 Hz: 12 * log2(220 / 27.5) = 36 semitones
        f0 = features.acoustic[20:-20, EGEMAPS_LLD_NAMES.index("F0semitoneFrom27.5Hz_sma3nz")]
        assert np.median(f0) == pytest.approx(36.0, abs=1.0), name
