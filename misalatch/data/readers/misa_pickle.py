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
    record_drops,
    NonFiniteCounter,
    describe,
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


def _as_str(v: Any) -> str:
    return v.decode("utf-8", errors="replace") if isinstance(v, (bytes, np.bytes_)) else str(v)


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
        ids = np.asarray(word_ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise DataFormatError(f"{at}: word_ids must be a 1-D integer array, found {describe(ids)}")
        v = nonfinite.clean(visual, "visual", where=at)
        a = nonfinite.clean(acoustic, "acoustic", where=at)
        if v.ndim != 2 or a.ndim != 2:
            raise DataFormatError(
                f"{at}: visual and acoustic must be 2-D (T, d), found {v.shape} and {a.shape}"
            )
        word_list = None if words is None else [_as_str(w) for w in words]
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
        lab = np.asarray(label, dtype=np.float64).reshape(-1)
        if lab.size == 0:
            raise DataFormatError(f"{at}: label is empty")
        seg_id = _as_str(sample[2]) if has_id else f"{split}_{i}"
        segs.append(
            Segment(
                id=seg_id,
                label=nonfinite.clean_label(lab[0]),
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
    if classification:
        name = dataset or "ur_funny"
        for split, segs in splits.items():
            for seg in segs:
                if seg.label not in (0.0, 1.0):
                    raise DataFormatError(
                        f"{folder}: split {split!r} segment {seg.id!r}: UR-FUNNY label must be 0 or 1, "
                        f"found {seg.label}"
                    )
                seg.label = int(seg.label)

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
