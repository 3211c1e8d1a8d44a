"""MulT / MultiBench pickles (``mosi_data.pkl``, ``mosei_senti_data.pkl``, ``*_noalign.pkl``,
``mosi_raw.pkl``, ``mosei_raw.pkl``, ``humor.pkl``; DATA.md §7).

``{"train"|"valid"|"test": {"vision" (N, T_v, d_v), "audio" (N, T_a, d_a), "text" (N, T_t, 300),
"labels" (N, ...), "id" (N, ...)}}`` with fixed-length sequences zero-padded on the **left**. The
text holds GloVe vectors (no words, no ids), so the dataset carries ``text_vectors`` for the
``vectors`` text input. Lengths are recovered by stripping leading all-zero steps, as MultiBench does;
a sample whose text is all zero is dropped (reason ``empty``).
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
    NonFiniteCounter,
    class_label,
    describe,
    float_values,
    infer_dataset_name,
    record_drops,
    safe_load,
    source_entry,
)
from misalatch.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

READER = "mult"
MODALITY_KEYS = ("text", "audio", "vision")


def _first_nonzero_step(x: np.ndarray) -> int:
    """Index of the first step with any non-zero value in ``(T, d)``; ``T`` when all are zero."""
    nz = np.flatnonzero(np.any(x != 0, axis=1))
    return int(nz[0]) if nz.size else x.shape[0]


def _id_string(raw: Any) -> str:
    """One sample's id: a scalar, or an array whose elements (video id first) are joined by ``_``."""
    def text(v: Any) -> str:
        if isinstance(v, (bytes, np.bytes_)):
            return v.decode("utf-8", errors="replace")
        return str(v)

    if isinstance(raw, np.ndarray) and raw.ndim > 0 or isinstance(raw, (list, tuple)):
        parts = [text(v).strip() for v in np.asarray(raw, dtype=object).reshape(-1)]
        return "_".join(p for p in parts if p)
    return text(raw)


def _id_like(v: Any) -> bool:
    if isinstance(v, np.ndarray):
        return v.dtype.kind in "USiuf"
    if isinstance(v, (list, tuple)):
        return all(isinstance(x, (str, bytes, int, float, np.generic)) and not isinstance(x, bool) for x in v)
    return isinstance(v, (str, bytes, int, float, np.generic)) and not isinstance(v, bool)


def _label_column(labels: Any, n: int, where: str) -> np.ndarray:
    arr = float_values(labels, where, "labels", n)
    flat = arr.reshape(n, -1)
    if flat.shape[1] == 0:
        raise DataFormatError(f"{where}: 'labels' has no values per sample (shape {arr.shape})")
    if flat.shape[1] > 1:
        log.info("%s: labels have %d values per sample; using the first (sentiment)", where, flat.shape[1])
    return flat[:, 0]


def read_mult_pickle(
    path: str | os.PathLike[str], *, dataset: str | None = None, task: str | None = None
) -> CanonicalDataset:
    """Read a MulT / MultiBench pickle.

    ``task`` defaults to ``classification`` (binary) for UR-FUNNY (``humor.pkl`` or
    ``dataset="ur_funny"``) and ``regression`` otherwise. Alignment is ``none`` for ``*_noalign``
    files or when the modalities have different step counts, else ``word``.
    """
    path = Path(path)
    name = dataset or infer_dataset_name(path, "mult")
    if task is None:
        task = "classification" if name == "ur_funny" else "regression"
    if task not in ("regression", "classification"):
        raise ConfigError(f"task must be 'regression' or 'classification', got {task!r}")
    obj = safe_load(path)
    if isinstance(obj, dict) and "valid" not in obj and "dev" in obj:
        obj = {("valid" if k == "dev" else k): v for k, v in obj.items()}
    if not isinstance(obj, dict) or any(s not in obj for s in SPLITS):
        raise DataFormatError(
            f"{path}: expected a MulT dict with splits {list(SPLITS)}, found {describe(obj)}"
        )
    steps: set[int] = set()
    for split in SPLITS:
        d = obj[split]
        where = f"{path}: split {split!r}"
        if not isinstance(d, dict) or any(k not in d for k in MODALITY_KEYS + ("labels",)):
            raise DataFormatError(
                f"{where}: expected keys {list(MODALITY_KEYS) + ['labels', 'id']}, found {describe(d)}"
            )
        n = None
        for key in MODALITY_KEYS:
            arr = d[key]
            if not isinstance(arr, np.ndarray) or arr.ndim != 3:
                raise DataFormatError(f"{where}: key {key!r} must be an array (N, T, d), found {describe(arr)}")
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise DataFormatError(f"{where}: key {key!r} has {arr.shape[0]} samples but 'text' has {n}")
            steps.add(arr.shape[1])
        if n == 0:
            raise DataFormatError(f"{where}: split is empty (0 samples)")
        if "id" in d:
            ids = d["id"]
            if not (isinstance(ids, (list, tuple)) or isinstance(ids, np.ndarray) and ids.ndim >= 1
                    and ids.dtype.kind in "USiuf"):
                raise DataFormatError(f"{where}: field 'id' must be an array or list of ids, found {describe(ids)}")
            if len(ids) != n:
                raise DataFormatError(f"{where}: key 'id' has {len(ids)} entries but 'text' has {n}")
            bad = next((v for v in (ids if not isinstance(ids, np.ndarray) else ()) if not _id_like(v)), None)
            if bad is not None:
                raise DataFormatError(f"{where}: field 'id' entries must be str, bytes, numbers or arrays of them, "
                                      f"found {describe(bad)}")
    alignment = "none" if ("noalign" in path.name.lower() or len(steps) > 1) else "word"

    nonfinite = NonFiniteCounter()
    dropped: Counter[str] = Counter()
    dropped_by_split: dict[str, dict[str, int]] = {}
    all_zero: Counter[str] = Counter()
    splits: dict[str, list[Segment]] = {}
    for split in SPLITS:
        d = obj[split]
        where = f"{path}: split {split!r}"
        text, audio, vision = d["text"], d["audio"], d["vision"]
        n = text.shape[0]
        labels = _label_column(d["labels"], n, where)
        ids = d.get("id")
        drops: Counter[str] = Counter()
        segs: list[Segment] = []
        for i in range(n):
            at = f"{where} sample {i}"
            t = nonfinite.clean(text[i], "text", where=at)
            start = _first_nonzero_step(t)
            if start == t.shape[0]:
                drops["empty"] += 1
                continue
            if alignment == "word":
                a = nonfinite.clean(audio[i, start:], "acoustic", where=at)
                v = nonfinite.clean(vision[i, start:], "visual", where=at)
            else:
                a = nonfinite.clean(audio[i], "acoustic", where=at)
                v = nonfinite.clean(vision[i], "visual", where=at)
                a, v = (_strip_left(a, "acoustic", all_zero), _strip_left(v, "visual", all_zero))
            if task == "classification":  # NaN is refused here, never read as class 0
                label: float | int = class_label(labels[i], at, "labels")
            else:
                label = nonfinite.clean_label(labels[i])
            segs.append(
                Segment(
                    id=_id_string(ids[i]) if ids is not None else f"{split}_{i}",
                    label=label,
                    text_vectors=t[start:].copy(),
                    visual=v,
                    acoustic=a,
                )
            )
        splits[split] = segs
        record_drops(path.name, split, drops, dropped, dropped_by_split)
    if all_zero:
        log.warning("%s: samples with an all-zero modality kept as one zero step: %s", path.name, dict(all_zero))
    if nonfinite.counts:
        log.info("%s: non-finite values set to 0: %s", path.name, nonfinite.counts)
    ds = CanonicalDataset(
        name=name,
        task=task,  # type: ignore[arg-type]
        splits=splits,
        alignment=alignment,  # type: ignore[arg-type]
        num_classes=2 if task == "classification" else 1,
        text_encoder="vectors",
        meta={
            "reader": READER,
            "sources": [source_entry(path)],
            "dropped": dict(dropped),
            "dropped_by_split": dropped_by_split,
            "nonfinite": dict(nonfinite.counts),
            "all_zero_modality": dict(all_zero),
            "options": {"alignment": alignment, "padding": "left", "task": task},
        },
    )
    ds.validate(str(path))
    return ds


def _strip_left(x: np.ndarray, name: str, all_zero: Counter[str]) -> np.ndarray:
    """Unaligned modality: drop its own leading zero steps; an all-zero one keeps one zero step."""
    start = _first_nonzero_step(x)
    if start == x.shape[0]:
        all_zero[name] += 1
        return x[-1:].copy()
    return x[start:].copy()
