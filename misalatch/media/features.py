"""One clip (or a segment of it) to acoustic and visual feature matrices: ``extract_clip``."""

from __future__ import annotations

import concurrent.futures
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError, MediaError
from .acoustic import acoustic_features
from .decode import check_segment, grid_size, iter_audio, iter_pictures, probe_media
from .recipe import Recipe, default_recipe
from .visual import visual_features

log = logging.getLogger(__name__)

MODALITIES = ("acoustic", "visual")


@dataclass(frozen=True)
class SegmentFeatures:
    """The arrays of one extracted segment, as the extraction cache stores them (``to_bytes``)."""

    start: float
    """Seconds from the clip's start."""
    end: float
    duration: float
    """``end - start`` in seconds."""
    acoustic: np.ndarray | None
    """(T_a, recipe.acoustic_dim) float32, finite; row i describes the audio from ``start + i / acoustic_rate``."""
    acoustic_rate: float
    visual: np.ndarray | None
    """(T_v, recipe.visual_dim) float32, finite; row k is the picture at ``start + k / visual_rate``; rows
    without a face are zeros."""
    face_present: np.ndarray | None
    """(T_v,) bool."""
    visual_rate: float
    warnings: tuple[str, ...] = ()
    """What the caller should tell the user (no face in some rows, padded streams, replaced values)."""

    @classmethod
    def of(cls, clip: Any) -> "SegmentFeatures":
        """The segment part of any extractor's result (a ``ClipFeatures`` without its path)."""
        return SegmentFeatures(float(clip.start), float(clip.end), float(clip.duration), clip.acoustic,
                               float(clip.acoustic_rate), clip.visual, clip.face_present, float(clip.visual_rate),
                               tuple(clip.warnings))

    def to_bytes(self) -> bytes:
        """An ``.npz`` (no pickles) that ``from_file`` reads back."""
        arrays = {k: getattr(self, k) for k in ("acoustic", "visual", "face_present") if getattr(self, k) is not None}
        info = json.dumps({"start": self.start, "end": self.end, "duration": self.duration,
                           "acoustic_rate": self.acoustic_rate, "visual_rate": self.visual_rate,
                           "warnings": list(self.warnings)})
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, info=np.array(info), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: Path) -> "SegmentFeatures":
        """Read ``to_bytes``' output; a wrong dtype or rank is a ValueError (a damaged cache entry)."""
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(str(z["info"]))
            get = lambda k: z[k] if k in z.files else None  # noqa: E731
            acoustic, visual, face = get("acoustic"), get("visual"), get("face_present")
        for name, arr, kind in (("acoustic", acoustic, "f"), ("visual", visual, "f"), ("face_present", face, "b")):
            if arr is not None and (arr.dtype.kind != kind or arr.ndim != (1 if name == "face_present" else 2)):
                raise ValueError(f"{name}: {arr.dtype} {arr.shape}")
        return SegmentFeatures(float(info["start"]), float(info["end"]), float(info["duration"]), acoustic,
                               float(info["acoustic_rate"]), visual, face, float(info["visual_rate"]),
                               tuple(info["warnings"]))


@dataclass(frozen=True)
class ClipFeatures(SegmentFeatures):
    """Features of the segment ``[start, end)`` of one clip, as a recipe defines them."""

    path: str = ""
    """The clip, as the caller named it."""


def extract_clip(path: str | os.PathLike[str], recipe: Recipe | None = None, *, start: float | None = None,
                 end: float | None = None, modalities: Sequence[str] = MODALITIES) -> ClipFeatures:
    """Decode a clip and compute the features of ``recipe`` (default: ``default_recipe``).

    ``start``/``end`` cut a segment (seconds; default the whole clip). ``modalities`` selects the
    features computed (the others are None). Raises ``misalatch.errors.MediaError``
    (``FILE: reason``) for a clip that cannot be decoded, is empty or truncated, lacks a stream the
    modalities need, or when the segment lies outside it.
    """
    recipe = recipe or default_recipe()
    recipe.validate()  # a hand-built Recipe() has no feature names: the dims would not be the recipe's
    wanted = tuple(modalities)
    unknown = [m for m in wanted if m not in MODALITIES]
    if unknown or not wanted:
        raise DataFormatError(f"modalities: expected some of {MODALITIES}, got {wanted!r}")
    name = os.fspath(path)
    info = probe_media(name)
    if "acoustic" in wanted and info.audio is None:
        raise MediaError(f"{name}: no audio stream (the acoustic features need one)")
    if "visual" in wanted and info.video is None:
        raise MediaError(f"{name}: no video stream (the visual features need one)")
    seg_start, seg_end = check_segment(info, start, end)
    notes: list[str] = []

    def compute_acoustic() -> tuple[np.ndarray, list[str]]:
        heard: list[str] = []
        blocks = iter_audio(info, sample_rate=recipe.sample_rate, start=seg_start, end=seg_end, warnings=heard)
        result = acoustic_features(blocks, sample_rate=recipe.sample_rate, extractor=recipe.acoustic,
                                   chunk_s=recipe.acoustic_chunk_s, context_s=recipe.acoustic_context_s)
        if result.replaced:
            heard.append(f"{result.replaced} acoustic values were not finite and were set to 0")
        return result.features, heard

    acoustic = visual = present = None
    pending = None
    if "acoustic" in wanted and "visual" in wanted:
        # the audio runs in a second thread while the face mesh works on the pictures: FFmpeg and
        # NumPy's FFTs release the GIL, so the two overlap on a second core
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="misalatch-audio")
        pending = pool.submit(compute_acoustic)
        pool.shutdown(wait=False)
    elif "acoustic" in wanted:
        acoustic, heard = compute_acoustic()
        notes += heard

    if "visual" in wanted:
        seen: list[str] = []
        try:
            n_rows = grid_size(seg_start, seg_end, recipe.visual_rate)
            pictures = iter_pictures(info, rate=recipe.visual_rate, start=seg_start, end=seg_end,
                                     max_side=recipe.max_side, warnings=seen)
            vis = visual_features(pictures, n_rows, min_detection_confidence=recipe.min_detection_confidence,
                                  min_tracking_confidence=recipe.min_tracking_confidence)
        finally:
            if pending is not None:  # wait for the audio whatever happened (no thread left running)
                concurrent.futures.wait([pending])
        if pending is not None:
            acoustic, heard = pending.result()  # its MediaError, if any, is raised here
            notes += heard
        visual, present = vis.features, vis.face_present
        notes += seen + vis.warnings

    for note in notes:
        log.info("%s: %s", name, note)
    return ClipFeatures(path=name, start=seg_start, end=seg_end, duration=seg_end - seg_start,
                        acoustic=acoustic, acoustic_rate=recipe.acoustic_rate, visual=visual,
                        face_present=present, visual_rate=recipe.visual_rate, warnings=tuple(notes))
