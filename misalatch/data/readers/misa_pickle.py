"""Original MISA pickles (declare-lab/MISA ``train.pkl`` / ``dev.pkl`` / ``test.pkl``; DATA.md §4).

Each split is a list of samples: MOSI / MOSEI ``((word_ids, visual, acoustic, words), label,
segment_id)``, UR-FUNNY ``((word_ids, visual, acoustic, words), label)`` without an id (the toolkit
names it ``<split>_<index>``). Features are already cleaned and z-normalised by the original code;
the reader only zeroes non-finite values (counted). ``text_ids`` are the pickles' own ids (``<unk>``
0, ``<pad>`` 1, as in the original ``word2id``); the vocabulary and embedding come from
``embedding_and_mapping.pt`` when it is present (§9.2), else the vocabulary is rebuilt from the
(id, word) pairs in the pickles and the embedding is left to the text preparation step.
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
    class_label,
    describe,
    float_values,
    record_drops,
    infer_dataset_name,
    load_embedding_and_mapping,
    safe_load,
    source_entry,
)
from misalatch.errors import DataFormatError

log = logging.getLogger(__name__)

READER = "misa"
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.pkl",),
    "valid": ("dev.pkl", "valid.pkl"),
    "test": ("test.pkl",),
}
EMBEDDING_FILE = "embedding_and_mapping.pt"


def _split_file(folder: Path, split: str) -> Path:
    for name in SPLIT_FILES[split]:
        if (folder / name).is_file():
            return folder / name
    raise DataFormatError(
        f"{folder}: not a MISA pickle folder: no {' or '.join(SPLIT_FILES[split])} for split {split!r} "
        "(expected train.pkl, dev.pkl, test.pkl)"
    )


def _as_str(v: Any, where: str, field: str) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if not isinstance(v, str):
        raise DataFormatError(f"{where}: field {field!r} must be a str, found {type(v).__name__}")
    return str(v)


def _read_split(
    path: Path, split: str, nonfinite: NonFiniteCounter, pairs: dict[int, str], conflicts: Counter[str]
) -> tuple[list[Segment], bool, Counter[str]]:
    """Segments of one split file, whether it has ids (MOSI/MOSEI layout), and drop counts."""
    samples = safe_load(path)
    if not isinstance(samples, (list, tuple)):
        raise DataFormatError(f"{path}: expected a list of samples, found {describe(samples)}")
    if not samples:
        raise DataFormatError(f"{path}: split {split!r} is empty (0 samples)")
    has_id: bool | None = None
    segs: list[Segment] = []
    drops: Counter[str] = Counter()
    for i, sample in enumerate(samples):
        at = f"{path}: sample {i}"
        if not (isinstance(sample, (list, tuple)) and len(sample) in (2, 3)
                and isinstance(sample[0], (list, tuple)) and len(sample[0]) == 4):
            raise DataFormatError(
                f"{at}: expected ((word_ids, visual, acoustic, words), label[, segment_id]), "
                f"found {describe(sample)}"
            )
        if has_id is None:
            has_id = len(sample) == 3
        elif has_id != (len(sample) == 3):
            raise DataFormatError(f"{at}: mixes samples with and without segment ids")
        (word_ids, visual, acoustic, words), label = sample[0], sample[1]
        ids = word_ids if isinstance(word_ids, np.ndarray) else None
        if ids is None and isinstance(word_ids, (list, tuple)) and all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in word_ids):
            ids = np.asarray(word_ids, dtype=np.int64) if word_ids else np.zeros(0, np.int64)
        if ids is None or ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise DataFormatError(f"{at}: field 'word_ids' must be a 1-D integer array, found {describe(word_ids)}")
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= MAX_WORD_ID):
            raise DataFormatError(
                f"{at}: field 'word_ids' holds id {int(ids.max()) if ids.max() >= MAX_WORD_ID else int(ids.min())}, "
                f"outside 0..{MAX_WORD_ID - 1}"
            )
        v = nonfinite.clean(visual, "visual", where=at)
        a = nonfinite.clean(acoustic, "acoustic", where=at)
        if v.ndim != 2 or a.ndim != 2:
            raise DataFormatError(
                f"{at}: visual and acoustic must be 2-D (T, d), found {v.shape} and {a.shape}"
            )
        if words is not None and not isinstance(words, (list, tuple, np.ndarray)):
            raise DataFormatError(f"{at}: field 'words' must be a list of str, found {describe(words)}")
        word_list = None if words is None else [_as_str(w, at, "words") for w in
                                                (words.tolist() if isinstance(words, np.ndarray) else words)]
        lengths = {"word_ids": ids.shape[0], "visual": v.shape[0], "acoustic": a.shape[0]}
        if word_list is not None:
            lengths["words"] = len(word_list)
        if len(set(lengths.values())) > 1:
            raise DataFormatError(f"{at}: word-aligned fields differ in length {lengths}")
        if ids.shape[0] == 0:
            drops["empty"] += 1
            continue
        if word_list is not None:
            for wid, w in zip(ids.tolist(), word_list):
                if pairs.setdefault(wid, w) != w and wid > 1:
                    conflicts[w] += 1
        lab = float_values(label, at, "label").reshape(-1)
        if lab.size == 0:
            raise DataFormatError(f"{at}: field 'label' is empty")
        seg_id = _as_str(sample[2], at, "segment_id") if has_id else f"{split}_{i}"
        segs.append(
            Segment(
                id=seg_id,
                label=float(lab[0]),  # NaN kept until the task is known (regression: 0, counted)
                words=word_list,
                text_ids=ids.astype(np.int64),
                visual=v,
                acoustic=a,
            )
        )
    return segs, bool(has_id), drops


def read_misa_pickles(path: str | os.PathLike[str], *, dataset: str | None = None) -> CanonicalDataset:
    """Read a MISA ``datasets/<NAME>/`` folder (or one of its files) into a canonical dataset.

    UR-FUNNY (samples without ids, or ``dataset="ur_funny"``) becomes a binary classification task;
    MOSI/MOSEI a regression task. Word ids must lie inside the vocabulary of
    ``embedding_and_mapping.pt`` when that file is present.
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: MISA pickle folder not found")
    nonfinite = NonFiniteCounter()
    pairs: dict[int, str] = {0: "<unk>", 1: "<pad>"}
    conflicts: Counter[str] = Counter()
    sources: list[dict[str, str]] = []
    splits: dict[str, list[Segment]] = {}
    layout: dict[str, bool] = {}
    dropped: Counter[str] = Counter()
    dropped_by_split: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        file = _split_file(folder, split)
        sources.append(source_entry(file))
        splits[split], layout[split], drops = _read_split(file, split, nonfinite, pairs, conflicts)
        record_drops(file.name, split, drops, dropped, dropped_by_split)
    if len(set(layout.values())) > 1:
        raise DataFormatError(
            f"{folder}: some split files have segment ids and others not ({layout}); mixed MISA layouts"
        )
    name = dataset or infer_dataset_name(folder, "misa")
    classification = name == "ur_funny" or not layout["train"]
    check_unique_ids(((seg.id, f"split {split!r}") for split, segs in splits.items() for seg in segs),
                     str(folder), "segment_id")
    if classification:
        name = dataset or "ur_funny"
        for split, segs in splits.items():
            for seg in segs:  # NaN is refused, never read as class 0
                seg.label = class_label(seg.label, f"{folder}: split {split!r} segment {seg.id!r}: UR-FUNNY")
    else:
        for segs in splits.values():
            for seg in segs:
                seg.label = nonfinite.clean_label(seg.label)

    max_id = max(int(seg.text_ids.max()) for segs in splits.values() for seg in segs)
    emb_path = folder / EMBEDDING_FILE
    embedding = None
    if emb_path.is_file():
        embedding, word2id = load_embedding_and_mapping(emb_path)
        sources.append(source_entry(emb_path))
        if max_id >= embedding.shape[0]:
            raise DataFormatError(
                f"{folder}: word id {max_id} in the pickles is outside the {embedding.shape[0]}-row "
                f"embedding of {EMBEDDING_FILE}"
            )
        vocab = [f"<unused_{i}>" for i in range(embedding.shape[0])]
        for word, idx in word2id.items():
            if vocab[idx].startswith("<unused_"):  # the first word wins if two share an id
                vocab[idx] = word
        vocab_source = EMBEDDING_FILE
    else:
        distinct = np.unique(np.concatenate([seg.text_ids for segs in splits.values() for seg in segs])).size
        if max_id >= 4 * distinct + 1000:  # word2id was built over all splits: its ids are dense
            raise DataFormatError(
                f"{folder}: field 'word_ids': the largest id is {max_id} but only {distinct} distinct ids "
                f"occur; refusing to build a {max_id + 1}-entry vocabulary without {EMBEDDING_FILE}"
            )
        vocab = [pairs.get(i, f"<unused_{i}>") for i in range(max(max_id + 1, 2))]
        vocab_source = "pickles"
        if conflicts:
            log.warning("%s: %d words share an id with another word; the first seen names the id",
                        folder, sum(conflicts.values()))
    if nonfinite.counts:
        log.info("%s: non-finite values set to 0: %s", folder, nonfinite.counts)
    ds = CanonicalDataset(
        name=name,
        task="classification" if classification else "regression",
        splits=splits,
        alignment="word",
        num_classes=2 if classification else 1,
        vocab=vocab,
        embedding=embedding,
        text_encoder=f"glove:{EMBEDDING_FILE}" if embedding is not None else "learned",
        meta={
            "reader": READER,
            "sources": sources,
            "dropped": dict(dropped),
            "dropped_by_split": dropped_by_split,
            "nonfinite": dict(nonfinite.counts),
            "options": {"vocabulary": vocab_source},
        },
    )
    ds.validate(str(folder))
    return ds
