"""MMSA pickles (thuiar/MMSA ``aligned_50.pkl`` / ``unaligned_50.pkl``; DATA.md §5).

``{"train"|"valid"|"test": {"text_bert" (N, 3, L), "audio" (N, T_a, d_a), "vision" (N, T_v, d_v),
"regression_labels" (N,), "id" (N,), "raw_text" (N,), ["audio_lengths", "vision_lengths"]}}``,
right-padded. Aligned files become ``alignment: token`` (A/V step i ↔ BERT position i, lengths from
the attention mask); unaligned files ``alignment: none`` with each modality's own length. MMSA
features are used as they are (no z-normalisation); non-finite values become 0 and are counted.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from misalatch.data.canonical import SPLITS, CanonicalDataset, Segment
from misalatch.data.safe_pickle import (
    MAX_WORD_ID,
    NonFiniteCounter,
    check_unique_ids,
    describe,
    float_values,
    id_strings,
    infer_dataset_name,
    record_drops,
    safe_load,
    source_entry,
)
from misalatch.errors import DataFormatError

log = logging.getLogger(__name__)

READER = "mmsa"
REQUIRED_KEYS = ("text_bert", "audio", "vision", "regression_labels")


def _int_array(value: Any, where: str, field: str) -> np.ndarray:
    arr = float_values(value, where, field)
    if not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > 2**53):
        raise DataFormatError(f"{where}: field {field!r} must hold integers, found non-finite or huge values")
    out = np.rint(arr).astype(np.int64)
    if not np.array_equal(out, arr):
        raise DataFormatError(f"{where}: field {field!r} must hold integers, found non-integer values")
    return out


def _position_wp2word(length: int) -> np.ndarray:
    """Word index per BERT position for token-level data: ``[CLS]``/``[SEP]`` → −1, position j → j−1."""
    out = np.arange(-1, length - 1, dtype=np.int64)
    if length >= 2:
        out[-1] = -1
    return out


def _check_split(path: Path, split: str, d: Any, unaligned: bool) -> int:
    where = f"{path}: split {split!r}"
    if not isinstance(d, dict):
        raise DataFormatError(f"{where}: expected a dict of arrays, found {describe(d)}")
    need = REQUIRED_KEYS + (("audio_lengths", "vision_lengths") if unaligned else ())
    missing = [k for k in need if k not in d]
    if missing:
        raise DataFormatError(f"{where}: missing key(s) {missing}; found {sorted(map(str, d))}")
    tb = d["text_bert"]
    if not isinstance(tb, np.ndarray) or tb.dtype.kind not in "biuf" or tb.ndim != 3 or tb.shape[1] < 2:
        raise DataFormatError(f"{where}: key 'text_bert' must have shape (N, 3, L) and numbers, found {describe(tb)}")
    n = tb.shape[0]
    if n == 0:
        raise DataFormatError(f"{where}: split is empty (text_bert has 0 samples)")
    for key in ("audio", "vision"):
        arr = d[key]
        if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.dtype.kind not in "biuf":
            raise DataFormatError(f"{where}: key {key!r} must be a numeric array (N, T, d), found {describe(arr)}")
    for key in ("audio", "vision", "regression_labels", "id", "raw_text", "audio_lengths", "vision_lengths"):
        if key in d and not isinstance(d[key], (np.ndarray, list, tuple)):
            raise DataFormatError(f"{where}: key {key!r} must be an array or list, found {describe(d[key])}")
        if key in d and len(d[key]) != n:
            raise DataFormatError(
                f"{where}: key {key!r} has {len(d[key])} samples but 'text_bert' has {n}"
            )
    if not unaligned:
        for key in ("audio", "vision"):
            if d[key].shape[1] < tb.shape[2]:
                raise DataFormatError(
                    f"{where}: aligned file, but key {key!r} has {d[key].shape[1]} steps, fewer than the "
                    f"{tb.shape[2]} BERT positions"
                )
    return n


def read_mmsa_pickle(path: str | os.PathLike[str], *, dataset: str | None = None) -> CanonicalDataset:
    """Read an MMSA ``aligned_50.pkl`` or ``unaligned_50.pkl`` into a regression dataset.

    Alignment follows the file: ``audio_lengths``/``vision_lengths`` present → ``none``, else
    ``token``. ``bert_ids`` are the ``input_ids`` up to the attention-mask length and ``wp2word``
    is position-based (−1 at ``[CLS]``/``[SEP]``); ``raw_text`` becomes ``words`` when present.
    """
    path = Path(path)
    obj = safe_load(path)
    if not isinstance(obj, dict) or any(s not in obj for s in SPLITS):
        raise DataFormatError(
            f"{path}: expected an MMSA dict with splits {list(SPLITS)}, found {describe(obj)}"
        )
    flags = {s: isinstance(obj[s], dict) and "audio_lengths" in obj[s] for s in SPLITS}
    unaligned = flags["train"]
    if len(set(flags.values())) > 1:
        raise DataFormatError(f"{path}: some splits have 'audio_lengths' and others not: {flags}")
    alignment = "none" if unaligned else "token"
    nonfinite = NonFiniteCounter()
    dropped: Counter[str] = Counter()
    dropped_by_split: dict[str, dict[str, int]] = {}
    padding: Counter[str] = Counter()
    splits: dict[str, list[Segment]] = {}
    seen_ids: list[tuple[str, str]] = []
    for split in SPLITS:
        d = obj[split]
        n = _check_split(path, split, d, unaligned)
        where = f"{path}: split {split!r}"
        tb = np.asarray(d["text_bert"])
        input_ids = _int_array(tb[:, 0], where, "text_bert[:, 0] (input_ids)")
        mask = _int_array(tb[:, 1], where, "text_bert[:, 1] (attention_mask)")
        if np.any(input_ids < 0) or np.any(input_ids >= MAX_WORD_ID):
            raise DataFormatError(f"{where}: field 'text_bert[:, 0] (input_ids)' holds ids outside 0..{MAX_WORD_ID - 1}")
        lengths_t = mask.sum(axis=1)
        labels = float_values(d["regression_labels"], where, "regression_labels", n).reshape(n, -1)
        if labels.shape[1] == 0:
            raise DataFormatError(f"{where}: field 'regression_labels' has no value per sample")
        labels = labels[:, 0]
        ids = id_strings(d["id"], where, "id", n) if "id" in d else None
        if ids is not None:
            seen_ids.extend((seg_id, f"split {split!r} sample {i}") for i, seg_id in enumerate(ids))
        raw = d.get("raw_text")
        if raw is not None:
            if isinstance(raw, np.ndarray) and raw.dtype.kind in "iu":
                raise DataFormatError(f"{where}: field 'raw_text' must hold strings, found {describe(raw)}")
            raw = id_strings(raw, where, "raw_text", n)
        audio, vision = d["audio"], d["vision"]
        lengths_a = _int_array(d["audio_lengths"], where, "audio_lengths").reshape(-1) if unaligned else lengths_t
        lengths_v = _int_array(d["vision_lengths"], where, "vision_lengths").reshape(-1) if unaligned else lengths_t
        drops: Counter[str] = Counter()
        segs: list[Segment] = []
        for i in range(n):
            lt, la, lv = int(lengths_t[i]), int(lengths_a[i]), int(lengths_v[i])
            if not np.all(mask[i, :lt] == 1):
                raise DataFormatError(
                    f"{where} sample {i}: attention_mask is not ones followed by zeros (left padding?); "
                    "MMSA files are right-padded"
                )
            if la > audio.shape[1] or lv > vision.shape[1] or la < 0 or lv < 0:
                raise DataFormatError(
                    f"{where} sample {i}: lengths audio {la} / vision {lv} exceed the stored steps "
                    f"{audio.shape[1]} / {vision.shape[1]}"
                )
            if min(lt, la, lv) == 0:
                drops["empty"] += 1
                continue
            for name, arr, length in (("acoustic", audio, la), ("visual", vision, lv)):
                if np.any(arr[i, length:] != 0):
                    padding[name] += 1
            seg_id = ids[i] if ids is not None else f"{split}_{i}"
            words = raw[i].split() if raw is not None else None
            segs.append(
                Segment(
                    id=seg_id,
                    label=nonfinite.clean_label(labels[i]),
                    words=words,
                    visual=nonfinite.clean(vision[i, :lv], "visual", where=f"{where} sample {i}"),
                    acoustic=nonfinite.clean(audio[i, :la], "acoustic", where=f"{where} sample {i}"),
                    bert_ids=input_ids[i, :lt].copy(),
                    wp2word=_position_wp2word(lt),
                )
            )
        splits[split] = segs
        record_drops(path.name, split, drops, dropped, dropped_by_split)
    check_unique_ids(seen_ids, str(path), "id")
    if padding:
        log.warning("%s: %s samples have non-zero steps beyond their length (expected zero padding)",
                    path.name, dict(padding))
    if nonfinite.counts:
        log.info("%s: non-finite values set to 0: %s", path.name, nonfinite.counts)
    ds = CanonicalDataset(
        name=dataset or infer_dataset_name(path, "mmsa"),
        task="regression",
        splits=splits,
        alignment=alignment,
        num_classes=1,
        text_encoder="bert-base-uncased",  # the vocabulary of the stored ids
        meta={
            "reader": READER,
            "sources": [source_entry(path)],
            "dropped": dict(dropped),
            "dropped_by_split": dropped_by_split,
            "nonfinite": dict(nonfinite.counts),
            "nonzero_padding": dict(padding),
            "options": {"alignment": alignment, "bert_vocabulary": "bert-base-uncased"},
        },
    )
    ds.validate(str(path))
    return ds
