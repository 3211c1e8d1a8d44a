"""Frame-level acoustic features: the 25 eGeMAPS v02 low-level descriptors and a voicing flag.

The default extractor is afx-audio (MIT licence; eGeMAPS written from the paper and openSMILE's
configuration): one row per 10 ms hop, row ``i`` analysing the audio from ``i * 10 ms`` (20 ms frames
for loudness, spectral shape and MFCC; 60 ms frames for F0, jitter, shimmer, HNR, harmonic levels and
formants), 3-frame smoothed as openSMILE's ``_sma3``. The descriptors that exist only in voiced speech
(``..._sma3nz``) are 0 in unvoiced rows, as openSMILE writes them; the last column, ``voiced``, says
which rows are voiced. openSMILE itself is an opt-in alternative only (``acoustic="opensmile-egemaps"``
in the recipe): its licence allows no commercial use.

The audio arrives in blocks (``misalatch.media.decode.iter_audio``) and is analysed in chunks of
``acoustic_chunk_s`` seconds with ``acoustic_context_s`` seconds on each side, so that memory stays flat
on long clips; rows are aligned to the whole clip's 10 ms grid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import DataFormatError
from ._deps import require

HOP_S = 0.010
#: The 25 eGeMAPS v02 low-level descriptors, in openSMILE's order and names.
EGEMAPS_LLD_NAMES: tuple[str, ...] = (
    "Loudness_sma3", "alphaRatio_sma3", "hammarbergIndex_sma3", "slope0-500_sma3", "slope500-1500_sma3",
    "spectralFlux_sma3", "mfcc1_sma3", "mfcc2_sma3", "mfcc3_sma3", "mfcc4_sma3",
    "F0semitoneFrom27.5Hz_sma3nz", "jitterLocal_sma3nz", "shimmerLocaldB_sma3nz", "HNRdBACF_sma3nz",
    "logRelF0-H1-H2_sma3nz", "logRelF0-H1-A3_sma3nz",
    "F1frequency_sma3nz", "F1bandwidth_sma3nz", "F1amplitudeLogRelF0_sma3nz",
    "F2frequency_sma3nz", "F2bandwidth_sma3nz", "F2amplitudeLogRelF0_sma3nz",
    "F3frequency_sma3nz", "F3bandwidth_sma3nz", "F3amplitudeLogRelF0_sma3nz",
)
_F0 = EGEMAPS_LLD_NAMES.index("F0semitoneFrom27.5Hz_sma3nz")
_SHORT_S = 0.020  # the 20 ms frame: n rows need n * hop + (short - hop) samples


def acoustic_names(extractor: str) -> tuple[str, ...]:
    """Column names of the acoustic features of ``extractor`` (both extractors give the same LLDs)."""
    if extractor not in ("afx-egemaps", "opensmile-egemaps"):
        raise DataFormatError(f"recipe: unknown acoustic extractor {extractor!r}")
    return (*EGEMAPS_LLD_NAMES, "voiced")


@dataclass
class AcousticResult:
    features: np.ndarray
    """(rows, dims) float32, finite."""
    replaced: int
    """Values that were NaN or infinite outside the voiced-only descriptors (set to 0)."""


def _lld_afx(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """(rows, 25) eGeMAPS LLDs of ``signal`` with afx-audio; rows = 1 + (len - 20 ms) // 10 ms."""
    egemaps = require("afx_audio.extractors.egemaps")
    return np.asarray(egemaps.extract_egemaps_lld(signal, sample_rate)["egemaps_lld"], dtype=np.float64).T


def _lld_opensmile(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    opensmile = require("opensmile")
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    frame = smile.process_signal(signal, sample_rate)
    return frame[list(EGEMAPS_LLD_NAMES)].to_numpy(dtype=np.float64)


_LLD = {"afx-egemaps": _lld_afx, "opensmile-egemaps": _lld_opensmile}


def _finish(lld: np.ndarray) -> tuple[np.ndarray, int]:
    """Add the voicing column, zero the unvoiced voiced-only descriptors, count other non-finite values."""
    voiced = np.isfinite(lld[:, _F0]) & (lld[:, _F0] != 0)
    out = np.nan_to_num(lld, nan=0.0, posinf=0.0, neginf=0.0)
    always = slice(0, _F0)  # loudness .. mfcc4 exist in every frame
    replaced = int((~np.isfinite(lld[:, always])).sum() + np.isinf(lld[:, _F0:]).sum())
    return np.concatenate([out, voiced[:, None].astype(np.float64)], axis=1).astype(np.float32), replaced


def acoustic_features(blocks: Iterable[np.ndarray], *, sample_rate: int, extractor: str = "afx-egemaps",
                      chunk_s: float = 30.0, context_s: float = 1.0) -> AcousticResult:
    """Features of a mono signal given as blocks: ``total_samples // (10 ms)`` rows.

    Row ``i`` describes the audio from ``i * 10 ms``. The signal is analysed in overlapping chunks;
    at most ``chunk_s + 2 * context_s`` seconds of audio are held at once.
    """
    lld = _LLD[extractor]
    hop = int(round(HOP_S * sample_rate))
    extra = int(round(_SHORT_S * sample_rate)) - hop
    chunk = max(1, int(round(chunk_s / HOP_S))) * hop
    context = max(1, int(round(context_s / HOP_S))) * hop

    rows: list[np.ndarray] = []
    replaced = 0
    buffer = np.zeros(0, np.float32)
    offset = 0  # sample index (in the whole signal) of buffer[0]; a multiple of hop
    done = 0  # rows produced so far
    total = 0

    def analyse(final: bool) -> None:
        nonlocal buffer, offset, done, replaced
        while True:
            first = done * hop - offset  # buffer index of the next row's first sample
            stop_rows = (offset + len(buffer)) // hop if final else done + chunk // hop
            if not final and offset + len(buffer) < stop_rows * hop + context:
                return
            if final:
                stop_rows = total // hop
            if stop_rows <= done:
                return
            end = min(len(buffer), stop_rows * hop - offset + context)
            window = buffer[:end]
            if final and end == len(buffer):
                window = np.concatenate([window, np.zeros(extra, np.float32)])
            values = lld(window.astype(np.float64), sample_rate)
            lo = first // hop
            part = values[lo: lo + (stop_rows - done)]
            if len(part) < stop_rows - done:  # fewer analysis frames than rows (a tiny signal): pad
                part = np.concatenate([part, np.zeros((stop_rows - done - len(part), part.shape[1]))])
            features, bad = _finish(part)
            rows.append(features)
            replaced += bad
            done = stop_rows
            keep_from = max(0, done * hop - context - offset)
            keep_from -= keep_from % hop
            buffer = buffer[keep_from:]
            offset += keep_from
            if final:
                return

    pending: list[np.ndarray] = []  # blocks not yet joined to the buffer (joining each one is quadratic)
    for block in blocks:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        total += block.size
        pending.append(block)
        if total - offset >= (done + chunk // hop) * hop - offset + context:
            buffer = np.concatenate([buffer, *pending])
            pending.clear()
            analyse(final=False)
    buffer = np.concatenate([buffer, *pending])
    analyse(final=True)
    dim = len(acoustic_names(extractor))
    features = np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)
    return AcousticResult(features=features, replaced=replaced)
