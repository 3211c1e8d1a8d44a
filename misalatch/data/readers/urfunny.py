"""UR-FUNNY V1 and V2 release pickles (DATA.md §6, §13.5).

Both versions: ``data_folds.pkl`` (``{"train"|"dev"|"test": [id, ...]}``), ``humor_label_sdk.pkl``
(``{id: 0/1}``), ``covarep_features_sdk.pkl`` / ``openface_features_sdk.pkl`` (``{id:
{"punchline_features": (n_words, d), "context_features": [...]}}``) and ``word_embedding_list.pkl``
(GloVe vectors indexed by the word indexes). V1 gives the punchline's word indexes in
``word_embedding_indexes_sdk.pkl`` and no words; V2 gives ``language_sdk.pkl`` with the indexes
and the ``punchline_sentence``. Only the punchline is used (as MISA did); ``dev`` becomes ``valid``.

Word indexes are shifted by ``TEXT_ID_OFFSET`` so that ``text_ids`` keep the toolkit's
``<unk>`` 0 / ``<pad>`` 1 convention; the embedding gets two zero rows in front, so
``embedding[text_ids]`` is exactly the release's vector for every word.
File names may carry a prefix (``urfunny_v1_data_folds.pkl``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from misalatch.data.canonical import SPLITS, CanonicalDataset, Segment
from misalatch.data.safe_pickle import MAX_WORD_ID, NonFiniteCounter, describe, record_drops, safe_load, source_entry
from misalatch.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

READER = "urfunny"
TEXT_ID_OFFSET = 2  # ids 0 and 1 are <unk> and <pad>
FOLD_NAMES = {"train": "train", "dev": "valid", "valid": "valid", "test": "test"}
UNASSIGNED = "unassigned"
FILES = {
    "folds": "data_folds.pkl",
    "labels": "humor_label_sdk.pkl",
    "indexes": "word_embedding_indexes_sdk.pkl",  # V1
    "language": "language_sdk.pkl",  # V2
    "embedding": "word_embedding_list.pkl",
    "covarep": "covarep_features_sdk.pkl",
    "openface": "openface_features_sdk.pkl",
}


def _find(folder: Path, name: str, *, required: bool = True) -> Path | None:
    """``folder/name``, or the one file ending in ``_name`` (release copies carry prefixes)."""
    exact = folder / name
    if exact.is_file():
        return exact
    matches = sorted(p for p in folder.glob(f"*_{name}") if p.is_file())
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise DataFormatError(f"{folder}: several files match *{name}: {[m.name for m in matches]}")
    if required:
        raise DataFormatError(f"{folder}: UR-FUNNY file {name} not found")
    return None


def _key(raw: Any, where: str = "<ids>") -> str:
    """Ids are integers in the release; compare them as strings (``286943`` stays an id, DATA.md §11.4)."""
    if isinstance(raw, (float, np.floating)) and float(raw).is_integer():
        raw = int(raw)
    if isinstance(raw, (bool, np.bool_)) or not isinstance(raw, (int, np.integer, str)):
        raise DataFormatError(f"{where}: field 'id' must be an int or str id, found {type(raw).__name__} {raw!r:.40}")
    return str(raw)


def _parse_labels(obj: Any, path: Path) -> dict[str, int]:
    if not isinstance(obj, dict) or not obj:
        raise DataFormatError(f"{path}: expected a non-empty dict {{id: 0 or 1}}, found {describe(obj)}")
    out: dict[str, int] = {}
    for raw_id, value in obj.items():
        numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        v = float(value) if numeric else float("nan")  # "1" or True are not labels; NaN is no class
        if v not in (0.0, 1.0):
            raise DataFormatError(f"{path}: id {raw_id!r}: field 'label': humour label must be 0 or 1, found {value!r}")
        out[_key(raw_id, str(path))] = int(v)
    return out


def _parse_folds(obj: Any, path: Path) -> dict[str, list[str]]:
    if not isinstance(obj, dict) or not {"train", "test"} <= set(obj) or not ({"dev", "valid"} & set(obj)):
        raise DataFormatError(f"{path}: expected {{'train', 'dev', 'test'}} id lists, found {describe(obj)}")
    folds: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for fold, ids in obj.items():
        if fold not in FOLD_NAMES:
            raise DataFormatError(f"{path}: unknown fold {fold!r} (expected train, dev, test)")
        if not isinstance(ids, (list, tuple, np.ndarray)):
            raise DataFormatError(f"{path}: fold {fold!r} must be a list of ids, found {describe(ids)}")
        split = FOLD_NAMES[fold]
        keys = [_key(i, f"{path}: fold {fold!r}") for i in ids]
        for k in keys:
            if k in seen:
                raise DataFormatError(f"{path}: id {k} is in both fold {seen[k]!r} and fold {split!r}")
            seen[k] = split
        if not keys:
            raise DataFormatError(f"{path}: fold {fold!r} is empty")
        folds[split] = keys
    return folds


def read_urfunny_labels(
    labels_pkl: str | os.PathLike[str], folds_pkl: str | os.PathLike[str] | None = None
) -> dict[str, dict[str, int]]:
    """Labels grouped by split, for label checks without the feature files.

    Returns ``{"train"|"valid"|"test": {id: 0/1}}`` in fold order plus ``"unassigned"``: labelled
    ids in no fold (all of them when ``folds_pkl`` is None). A fold id without a label is an error.
    """
    labels_path = Path(labels_pkl)
    labels = _parse_labels(safe_load(labels_path), labels_path)
    out: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    assigned: set[str] = set()
    if folds_pkl is not None:
        folds_path = Path(folds_pkl)
        folds = _parse_folds(safe_load(folds_path), folds_path)
        for split, ids in folds.items():
            missing = [i for i in ids if i not in labels]
            if missing:
                raise DataFormatError(
                    f"{folds_path}: {len(missing)} ids of fold {split!r} have no label in {labels_path.name} "
                    f"(e.g. {missing[:3]})"
                )
            out[split] = {i: labels[i] for i in ids}
            assigned.update(ids)
    out[UNASSIGNED] = {i: v for i, v in labels.items() if i not in assigned}
    return out


def _by_key(obj: Any, path: Path, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a dict {{id: {what}}}, found {describe(obj)}")
    return {_key(k, str(path)): v for k, v in obj.items()}


def _entry(table: dict[str, Any], seg_id: str, key: str, path: Path) -> Any:
    entry = table[seg_id]
    if not isinstance(entry, dict) or key not in entry:
        raise DataFormatError(f"{path}: id {seg_id}: expected a dict with key {key!r}, found {describe(entry)}")
    return entry[key]


def _indexes(raw: Any, at: str, *, limit: int) -> np.ndarray:
    """Word indexes: whole numbers in ``0..limit-1`` (a forged 10**12 is refused before any use)."""
    if isinstance(raw, np.ndarray):
        arr = raw
    elif isinstance(raw, (list, tuple)) and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in raw):
        arr = np.asarray(raw, dtype=np.float64) if raw else np.zeros(0, np.int64)
    else:
        raise DataFormatError(f"{at}: field 'punchline_embedding_indexes' must be a list of integers, "
                              f"found {describe(raw)}")
    if arr.size and (arr.ndim != 1 or arr.dtype.kind not in "iuf"):
        raise DataFormatError(f"{at}: field 'punchline_embedding_indexes' must be a list of integers, "
                              f"found {describe(arr)}")
    arr = arr.reshape(-1)
    if arr.size:
        values = arr.astype(np.float64)
        if not np.all(np.isfinite(values)) or np.any(values != np.floor(values)):
            raise DataFormatError(f"{at}: field 'punchline_embedding_indexes' holds non-integer values")
        if values.min() < 0 or values.max() >= limit:
            bad = values.max() if values.max() >= limit else values.min()
            raise DataFormatError(f"{at}: field 'punchline_embedding_indexes' holds index {bad:.0f}, outside "
                                  f"0..{limit - 1}")
    return arr.astype(np.int64)


def _znorm(x: np.ndarray) -> np.ndarray:
    """Per-dimension z-normalisation over time (DATA.md §3.5 step 4): population std, +1e-6, non-finite → 0."""
    x64 = x.astype(np.float64)
    out = (x64 - x64.mean(axis=0, keepdims=True)) / (x64.std(axis=0, keepdims=True) + 1e-6)
    out[~np.isfinite(out)] = 0.0
    return out.astype(np.float32)


def _features(raw: Any, at: str, field: str, nonfinite: NonFiniteCounter) -> np.ndarray:
    arr = nonfinite.clean(raw, field, where=at)
    if arr.size == 0:
        return arr.reshape(0, 0)
    if arr.ndim != 2:
        raise DataFormatError(f"{at}: {field} punchline_features must be 2-D (n_words, d), found {arr.shape}")
    return arr


def read_urfunny(
    path: str | os.PathLike[str], *, version: int | None = None, normalize: bool = True
) -> CanonicalDataset:
    """Read a UR-FUNNY release folder (V1 or V2) into a binary classification dataset.

    ``version`` is detected from the files when None (``language_sdk.pkl`` → 2,
    ``word_embedding_indexes_sdk.pkl`` → 1). ``normalize`` z-normalises visual and acoustic per
    segment (§3.5). Drops are counted by reason: ``no_fold``, ``no_label``, ``missing_modality``,
    ``length_mismatch`` (V2 sentence vs. feature rows) and ``empty``.
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: UR-FUNNY folder not found")
    if version is None:
        if _find(folder, FILES["language"], required=False) is not None:
            version = 2
        elif _find(folder, FILES["indexes"], required=False) is not None:
            version = 1
        else:
            raise DataFormatError(
                f"{folder}: neither {FILES['language']} (V2) nor {FILES['indexes']} (V1) found; "
                "not a UR-FUNNY release folder"
            )
    if version not in (1, 2):
        raise ConfigError(f"UR-FUNNY version must be 1 or 2, got {version!r}")
    text_file = FILES["indexes"] if version == 1 else FILES["language"]
    paths = {
        "folds": _find(folder, FILES["folds"]),
        "labels": _find(folder, FILES["labels"]),
        "text": _find(folder, text_file),
        "covarep": _find(folder, FILES["covarep"]),
        "openface": _find(folder, FILES["openface"]),
        "embedding": _find(folder, FILES["embedding"], required=version == 1),
    }
    sources = [source_entry(p) for p in paths.values() if p is not None]
    folds = _parse_folds(safe_load(paths["folds"]), paths["folds"])
    labels = _parse_labels(safe_load(paths["labels"]), paths["labels"])
    text = _by_key(safe_load(paths["text"]), paths["text"], "word indexes")
    covarep = _by_key(safe_load(paths["covarep"]), paths["covarep"], "features")
    openface = _by_key(safe_load(paths["openface"]), paths["openface"], "features")

    embedding = None
    if paths["embedding"] is not None:
        emb_list = safe_load(paths["embedding"])
        try:
            emb = np.asarray(emb_list, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise DataFormatError(f"{paths['embedding']}: expected a list of equal-length vectors ({err})") from err
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise DataFormatError(f"{paths['embedding']}: expected (V, d_e) vectors, found shape {emb.shape}")
        embedding = np.concatenate([np.zeros((TEXT_ID_OFFSET, emb.shape[1]), np.float32), emb])

    nonfinite = NonFiniteCounter()
    dropped: Counter[str] = Counter()
    dropped_by_split: dict[str, dict[str, int]] = {}
    splits: dict[str, list[Segment]] = {}
    for split in SPLITS:
        drops: Counter[str] = Counter()
        segs: list[Segment] = []
        for seg_id in folds[split]:
            at = f"{folder}: split {split!r} id {seg_id}"
            if seg_id not in labels:
                drops["no_label"] += 1
                continue
            if seg_id not in text or seg_id not in covarep or seg_id not in openface:
                drops["missing_modality"] += 1
                continue
            idx = _indexes(_entry(text, seg_id, "punchline_embedding_indexes", paths["text"]), at,
                           limit=MAX_WORD_ID if embedding is None else embedding.shape[0] - TEXT_ID_OFFSET)
            a = _features(_entry(covarep, seg_id, "punchline_features", paths["covarep"]), at, "acoustic", nonfinite)
            v = _features(_entry(openface, seg_id, "punchline_features", paths["openface"]), at, "visual", nonfinite)
            words = None
            if version == 2:
                sentence = _entry(text, seg_id, "punchline_sentence", paths["text"])
                if isinstance(sentence, str):
                    words = sentence.split()
                elif isinstance(sentence, (list, tuple)) and all(isinstance(w, str) for w in sentence):
                    words = list(sentence)
                else:
                    raise DataFormatError(f"{at}: field 'punchline_sentence' must be a str or a list of str, "
                                          f"found {describe(sentence)}")
            lengths = {len(idx), a.shape[0], v.shape[0]} | ({len(words)} if words is not None else set())
            if len(lengths) > 1:
                drops["length_mismatch"] += 1
                continue
            if words is not None:
                keep = np.array([w != "sp" for w in words], dtype=bool)
                idx, a, v = idx[keep], a[keep], v[keep]
                words = [w for w, k in zip(words, keep) if k]
            if len(idx) == 0:
                drops["empty"] += 1
                continue
            if normalize:
                a, v = _znorm(a), _znorm(v)
            segs.append(
                Segment(
                    id=seg_id,
                    label=labels[seg_id],
                    words=words,
                    text_ids=idx + TEXT_ID_OFFSET,
                    visual=v,
                    acoustic=a,
                )
            )
        splits[split] = segs
        record_drops(f"UR-FUNNY V{version}", split, drops, dropped, dropped_by_split)
    in_folds = {i for ids in folds.values() for i in ids}
    no_fold = sum(1 for i in labels if i not in in_folds)
    if no_fold:
        dropped["no_fold"] += no_fold
        log.info("UR-FUNNY V%d: %d labelled ids are in no fold", version, no_fold)
    if nonfinite.counts:
        log.info("UR-FUNNY V%d: non-finite values set to 0: %s", version, nonfinite.counts)
    ds = CanonicalDataset(
        name="ur_funny",
        task="classification",
        splits=splits,
        alignment="word",
        num_classes=2,
        embedding=embedding,
        text_encoder=f"glove:{FILES['embedding']}" if embedding is not None else "learned",
        meta={
            "reader": READER,
            "sources": sources,
            "dropped": dict(dropped),
            "dropped_by_split": dropped_by_split,
            "nonfinite": dict(nonfinite.counts),
            "options": {
                "version": version,
                "normalize": normalize,
                "punchline_only": True,
                "text_ids_offset": TEXT_ID_OFFSET,
            },
        },
    )
    ds.validate(str(folder))
    return ds
