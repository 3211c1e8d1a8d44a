"""The canonical dataset every reader produces (DATA.md §1.1).

A ``CanonicalDataset`` holds three splits of ``Segment`` objects plus dataset-level facts
(task, alignment, vocabulary, word vectors, preparation counts). Readers fill ``words`` and the
feature arrays; ``misalatch.data.text`` adds ``text_ids`` / ``bert_ids`` exactly once, when the
text encoder is known. Nothing here depends on torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from misalatch.errors import DataFormatError

SPLITS: tuple[str, ...] = ("train", "valid", "test")
Task = Literal["regression", "classification"]
Alignment = Literal["word", "token", "none"]
MODALITIES: tuple[str, ...] = ("t", "a", "v")  # text, acoustic, visual
LABEL_RANGES: dict[str, tuple[float, float]] = {"mosi": (-3.0, 3.0), "mosei": (-3.0, 3.0)}  # sentiment, documented


@dataclass
class Segment:
    """One labelled segment (utterance). Arrays are time-major: ``(T, d)``."""

    id: str
    label: float  # sentiment in [-3, 3] (regression) or a class index (classification)
    words: list[str] | None = None  # None when the source has no words (UR-FUNNY V1, MMSA, MulT)
    text_ids: np.ndarray | None = None  # (T,) int64, GloVe-path vocabulary ids (<unk> 0, <pad> 1)
    text_vectors: np.ndarray | None = None  # (T, d_e) float32, precomputed word vectors (MulT)
    visual: np.ndarray | None = None  # (T_v, d_v) float32
    acoustic: np.ndarray | None = None  # (T_a, d_a) float32
    bert_ids: np.ndarray | None = None  # (W,) int64, [CLS] wordpieces [SEP]
    wp2word: np.ndarray | None = None  # (W,) int64 word index per wordpiece, -1 for [CLS]/[SEP]
    truncated: bool = False  # the untruncated wordpiece count exceeded the budget

    @property
    def num_words(self) -> int:
        """Text length in steps (words for word-aligned data)."""
        for arr in (self.text_ids, self.text_vectors):
            if arr is not None:
                return int(arr.shape[0])
        if self.words is not None:
            return len(self.words)
        if self.bert_ids is not None:
            return int(self.bert_ids.shape[0])
        raise DataFormatError(f"segment {self.id!r} has no text field")


@dataclass
class CanonicalDataset:
    """Three splits of segments plus dataset-level facts.

    ``meta`` carries preparation facts that must travel with results: source files and checksums,
    drop counts by reason (``meta["dropped"]``), non-finite value counts (``meta["nonfinite"]``),
    truncation counts per split (``meta["truncated"]``), options used. ``meta["unlabelled"]`` marks
    data to predict on (``misalatch extract --text``): everything in ``test``, train and valid empty.
    """

    name: str
    task: Task
    splits: dict[str, list[Segment]]
    alignment: Alignment = "word"
    num_classes: int = 1  # 1 for regression; number of classes otherwise
    synthetic: bool = False  # True for generated data: every output says so
    vocab: list[str] | None = None  # GloVe-path vocabulary, index = id
    embedding: np.ndarray | None = None  # (V, d_e) float32 matrix for ``vocab``
    text_encoder: str | None = None  # what text fields were prepared for (bert path / "glove"...)
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- facts derived from the data (never stored twice) ----
    def _first(self, attr: str) -> np.ndarray | None:
        for split in SPLITS:
            for seg in self.splits.get(split, []):
                value = getattr(seg, attr)
                if value is not None:
                    return value
        return None

    @property
    def visual_dim(self) -> int | None:
        arr = self._first("visual")
        return None if arr is None else int(arr.shape[1])

    @property
    def acoustic_dim(self) -> int | None:
        arr = self._first("acoustic")
        return None if arr is None else int(arr.shape[1])

    @property
    def text_vector_dim(self) -> int | None:
        arr = self._first("text_vectors")
        return None if arr is None else int(arr.shape[1])

    @property
    def has_words(self) -> bool:
        return self._first("words") is not None

    def present_modalities(self) -> str:
        """Modalities with data, as a string over ``t``, ``a``, ``v``."""
        out = ""
        if any(self._first(a) is not None for a in ("words", "text_ids", "text_vectors", "bert_ids")):
            out += "t"
        if self.acoustic_dim is not None:
            out += "a"
        if self.visual_dim is not None:
            out += "v"
        return out

    def split_sizes(self) -> dict[str, int]:
        return {s: len(self.splits.get(s, [])) for s in SPLITS}

    def check_label_range(self, source: str = "<dataset>", *, allow: bool = False) -> None:
        """MOSI and MOSEI sentiment lies in [-3, 3] (their documented range): a label outside it is a
        misread (another column, another scale) and an error unless ``allow`` (``--allow-label-range``)."""
        if allow or self.task != "regression" or self.name.lower() not in LABEL_RANGES:
            return
        low, high = LABEL_RANGES[self.name.lower()]
        for split in SPLITS:
            bad = [seg for seg in self.splits.get(split, []) if not low <= seg.label <= high]
            if bad:
                raise DataFormatError(
                    f"{source}: split {split!r}: {len(bad)} label(s) outside {self.name}'s range [{low:g}, {high:g}] "
                    f"(e.g. segment {bad[0].id!r}: {bad[0].label:g}); pass --allow-label-range if that is intended"
                )

    def replace(self, **changes: Any) -> "CanonicalDataset":
        return dataclasses.replace(self, **changes)

    def validate(self, source: str = "<dataset>") -> None:
        """Check the invariants every consumer relies on; raise DataFormatError naming the problem."""
        for split in SPLITS:
            if split not in self.splits:
                raise DataFormatError(f"{source}: split {split!r} is missing")
            if not self.splits[split] and not (self.meta.get("unlabelled") and split != "test"):
                raise DataFormatError(f"{source}: split {split!r} is empty")
            bad = [seg.id for seg in self.splits[split] if not np.isfinite(seg.label)]
            if bad:  # a missing label read as 0 would be a valid neutral label: never silently
                raise DataFormatError(
                    f"{source}: split {split!r}: {len(bad)} label(s) are NaN or infinite (e.g. segment {bad[0]!r}); "
                    "a missing label is not a neutral 0 — fix or drop those segments"
                )
        dims: dict[str, int] = {}
        for split, segs in self.splits.items():
            for seg in segs:
                for attr in ("visual", "acoustic", "text_vectors"):
                    arr = getattr(seg, attr)
                    if arr is None:
                        continue
                    if arr.ndim != 2:
                        raise DataFormatError(
                            f"{source}: split {split!r} segment {seg.id!r}: {attr} must be 2-D (T, d), "
                            f"got shape {arr.shape}"
                        )
                    if dims.setdefault(attr, arr.shape[1]) != arr.shape[1]:
                        raise DataFormatError(
                            f"{source}: split {split!r} segment {seg.id!r}: {attr} has {arr.shape[1]} "
                            f"features but earlier segments have {dims[attr]}"
                        )
                if self.alignment == "word":
                    lengths = {a: getattr(seg, a).shape[0] for a in ("visual", "acoustic", "text_vectors", "text_ids")
                               if getattr(seg, a) is not None}
                    if seg.words is not None:
                        lengths["words"] = len(seg.words)
                    if len(set(lengths.values())) > 1:
                        raise DataFormatError(
                            f"{source}: split {split!r} segment {seg.id!r}: word-aligned modalities "
                            f"differ in length {lengths}"
                        )
                if self.task == "classification" and not (0 <= int(seg.label) < self.num_classes):
                    raise DataFormatError(
                        f"{source}: split {split!r} segment {seg.id!r}: label {seg.label} is not a class "
                        f"in 0..{self.num_classes - 1}"
                    )
