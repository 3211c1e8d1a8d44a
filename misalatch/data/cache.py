"""The prepared dataset on disk, without pickle (DATA.md §3.8).

A prepared folder holds::

    meta.json              format, format_version, dataset-level fields, the reader's meta (sources
                           with sha256, options, drop / non-finite counts), split sizes, feature
                           dimensions and a content fingerprint
    vocab.json             the GloVe-path vocabulary (when the dataset has one)
    embedding.safetensors  the (V, d_e) word-vector matrix (when the dataset has one)
    train.npz valid.npz test.npz
                           per split: ids (fixed-width unicode), labels, truncated flags, and for every
                           per-segment field present the concatenated values plus offsets (N + 1,):
                           e.g. visual (ΣT, d_v) + visual_offsets; words as a unicode array + offsets.
                           <field>_present (N,) marks segments that have the field when not all do.

Saving claims the folder like every misalatch output (:mod:`misalatch.io.owned`: a ``run.json``
marker, a lock, a hidden staging sibling swapped in once complete), so a crash never leaves a
half-written dataset and ``--overwrite`` never replaces a folder misalatch did not write. Loading uses ``np.load(allow_pickle=False)``, JSON and safetensors only: it
never unpickles anything, so a prepared folder from elsewhere is safe to open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from misalatch.data.canonical import SPLITS, CanonicalDataset, Segment
from misalatch.errors import DataFormatError
from misalatch.io.owned import check_target, claim_output

log = logging.getLogger(__name__)

FORMAT = "misalatch-prepared"
FORMAT_VERSION = 1
META_FILE = "meta.json"
VOCAB_FILE = "vocab.json"
EMBEDDING_FILE = "embedding.safetensors"
ARRAY_FIELDS: tuple[str, ...] = ("text_ids", "text_vectors", "visual", "acoustic", "bert_ids", "wp2word")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=_json_default, ensure_ascii=False)


def _unicode_array(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=str) if values else np.zeros(0, dtype="<U1")


def _split_arrays(split: str, segs: list[Segment], task: str) -> dict[str, np.ndarray]:
    """Concatenated arrays plus offsets for one split (the inverse of :func:`_split_segments`)."""
    n = len(segs)
    label_dtype = np.int64 if task == "classification" else np.float64  # float64: labels round-trip exactly
    out: dict[str, np.ndarray] = {
        "ids": _unicode_array([s.id for s in segs]),
        "labels": np.array([s.label for s in segs], dtype=label_dtype).reshape(n),
        "truncated": np.array([bool(s.truncated) for s in segs], dtype=bool).reshape(n),
    }
    for field in ARRAY_FIELDS + ("words",):
        values = [getattr(s, field) for s in segs]
        present = np.array([v is not None for v in values], dtype=bool)
        if not present.any():
            continue
        lengths = np.zeros(n, dtype=np.int64)
        if field == "words":
            flat = [w for v in values if v is not None for w in v]
            lengths[present] = [len(v) for v in values if v is not None]
            out["words"] = _unicode_array([str(w) for w in flat])
        else:
            arrays = [np.asarray(v) for v in values if v is not None]
            for seg, arr in zip((s for s, p in zip(segs, present) if p), arrays):
                if arr.ndim == 0 or arr.shape[1:] != arrays[0].shape[1:]:
                    raise DataFormatError(
                        f"split {split!r} segment {seg.id!r}: {field} has shape {arr.shape}; every segment "
                        f"needs (T, ...) with trailing shape {arrays[0].shape[1:]}"
                    )
                if arr.dtype == object:
                    raise DataFormatError(f"split {split!r} segment {seg.id!r}: {field} is an object array")
            lengths[present] = [a.shape[0] for a in arrays]
            out[field] = np.ascontiguousarray(np.concatenate(arrays, axis=0))
        out[f"{field}_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if not present.all():
            out[f"{field}_present"] = present
    return out


def _split_segments(source: Path, split: str, arrays: dict[str, np.ndarray], task: str) -> list[Segment]:
    where = f"{source}: split {split!r}"
    for key in ("ids", "labels", "truncated"):
        if key not in arrays:
            raise DataFormatError(f"{where}: array {key!r} is missing")
    ids = arrays["ids"].tolist()
    n = len(ids)
    if arrays["labels"].shape != (n,) or arrays["truncated"].shape != (n,):
        raise DataFormatError(
            f"{where}: {n} ids but labels {arrays['labels'].shape} and truncated {arrays['truncated'].shape}"
        )
    labels = arrays["labels"].tolist()
    if task == "classification":
        labels = [int(v) for v in labels]
    per_field: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for field in ARRAY_FIELDS + ("words",):
        if field not in arrays:
            continue
        offsets = arrays.get(f"{field}_offsets")
        data = arrays[field]
        if (offsets is None or offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != data.shape[0]
                or np.any(np.diff(offsets) < 0)):
            raise DataFormatError(
                f"{where}: {field}_offsets must be (N+1,) = ({n + 1},) non-decreasing from 0 to "
                f"{data.shape[0]}, found {None if offsets is None else offsets.shape}"
            )
        present = arrays.get(f"{field}_present", np.ones(n, dtype=bool))
        if present.shape != (n,):
            raise DataFormatError(f"{where}: {field}_present has shape {present.shape}, expected ({n},)")
        per_field[field] = (data, offsets, present)
    segs = []
    for i in range(n):
        kwargs: dict[str, Any] = {}
        for field, (data, offsets, present) in per_field.items():
            if present[i]:
                part = data[offsets[i]:offsets[i + 1]]
                kwargs[field] = part.tolist() if field == "words" else part
        segs.append(Segment(id=ids[i], label=labels[i], truncated=bool(arrays["truncated"][i]), **kwargs))
    return segs


def _fingerprint(header: str, split_arrays: dict[str, dict[str, np.ndarray]], vocab: list[str] | None,
                 embedding: np.ndarray | None) -> str:
    """sha256 over the dataset-level JSON and every array's name, dtype, shape and bytes.

    Computed from content, not file bytes (npz archives carry timestamps), so the same data always
    gives the same fingerprint; checkpoints and results record it.
    """
    h = hashlib.sha256(header.encode("utf-8"))

    def add(name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        h.update(f"|{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())

    for split in SPLITS:
        for key in sorted(split_arrays[split]):
            add(f"{split}/{key}", split_arrays[split][key])
    h.update(("|vocab|" + _canonical_json(vocab)).encode("utf-8"))
    if embedding is not None:
        add("embedding", embedding)
    return "sha256:" + h.hexdigest()


def _header(dataset_fields: dict[str, Any], meta: dict[str, Any]) -> str:
    return _canonical_json({"dataset": dataset_fields, "meta": meta})


def is_prepared(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder holding a misalatch prepared dataset (its ``meta.json`` says so)."""
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        return False
    try:
        return json.loads(meta_path.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_out_dir(out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Raise ConfigError unless ``out_dir`` may receive a prepared dataset (called again by
    :func:`save_prepared`; callers use it to fail before a long read). The rules are those of every
    misalatch output folder (:func:`misalatch.io.owned.check_target`)."""
    check_target(out_dir, "prepare", overwrite=overwrite)


def save_prepared(dataset: CanonicalDataset, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``dataset`` as a prepared folder at ``out_dir`` and return its path.

    An existing non-empty ``out_dir`` is refused unless ``overwrite`` is True, and even then only
    when it is itself a prepared dataset: a folder of the user's own files is never deleted.
    """
    out = Path(out_dir)
    check_out_dir(out, overwrite=overwrite)
    # Everything is built in memory first, so a bad dataset fails before anything touches the disk.
    dataset_fields = {
        "name": dataset.name,
        "task": dataset.task,
        "alignment": dataset.alignment,
        "num_classes": int(dataset.num_classes),
        "synthetic": bool(dataset.synthetic),
        "text_encoder": dataset.text_encoder,
    }
    try:
        meta = json.loads(_canonical_json(dataset.meta))
    except (TypeError, ValueError) as err:
        raise DataFormatError(f"dataset {dataset.name!r}: meta cannot be stored as JSON ({err})") from err
    split_arrays = {s: _split_arrays(s, dataset.splits.get(s, []), dataset.task) for s in SPLITS}
    vocab = None if dataset.vocab is None else [str(w) for w in dataset.vocab]
    embedding = None if dataset.embedding is None else np.ascontiguousarray(dataset.embedding)
    if embedding is not None and embedding.ndim != 2:
        raise DataFormatError(f"dataset {dataset.name!r}: embedding must be (V, d_e), found {embedding.shape}")
    fingerprint = _fingerprint(_header(dataset_fields, meta), split_arrays, vocab, embedding)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "misalatch_version": _version(),
        "dataset": dataset_fields,
        "split_sizes": dataset.split_sizes(),
        "dims": {
            "visual": dataset.visual_dim,
            "acoustic": dataset.acoustic_dim,
            "text_vectors": dataset.text_vector_dim,
            "vocab_size": None if vocab is None else len(vocab),
            "embedding": None if embedding is None else list(embedding.shape),
        },
        "fields": {s: sorted(k for k in split_arrays[s] if not k.endswith(("_offsets", "_present")))
                   for s in SPLITS},
        "counts": {
            "dropped": meta.get("dropped", {}),
            "nonfinite": meta.get("nonfinite", {}),
            "truncated": {s: int(split_arrays[s]["truncated"].sum()) for s in SPLITS},
        },
        "sources": meta.get("sources", {}),
        "options": meta.get("options", {}),
        "meta": meta,
        "fingerprint": fingerprint,
    }

    with claim_output(out, "prepare", overwrite=overwrite) as output:  # staged; swapped in when complete
        for split in SPLITS:
            with output.open(f"{split}.npz", "wb") as handle:
                np.savez(handle, allow_pickle=False, **split_arrays[split])
        if vocab is not None:
            output.write_text(VOCAB_FILE, json.dumps(vocab, ensure_ascii=False))
        if embedding is not None:
            from safetensors.numpy import save

            output.write_bytes(EMBEDDING_FILE, save({"embedding": embedding}))
        output.write_text(META_FILE, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    log.info("prepared dataset written to %s (%s)", out, fingerprint[:19])
    return out


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("misalatch")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


def load_prepared(path: str | os.PathLike[str], *, verify: bool = True) -> CanonicalDataset:
    """Read a prepared folder (or its ``meta.json``) back into a :class:`CanonicalDataset`.

    Never unpickles. ``verify`` recomputes the content fingerprint and refuses a folder whose
    content no longer matches its ``meta.json``.
    """
    folder = Path(path)
    if folder.is_file() and folder.name == META_FILE:
        folder = folder.parent
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise DataFormatError(
            f"{folder}: not a prepared dataset (no {META_FILE}); create one with `misalatch prepare`"
        )
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataFormatError(f"{meta_path}: unreadable JSON ({err})") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise DataFormatError(f"{meta_path}: not a misalatch prepared dataset (format {found!r}, expected {FORMAT!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise DataFormatError(
            f"{meta_path}: unknown format_version {doc.get('format_version')!r}; this misalatch reads "
            f"version {FORMAT_VERSION}; prepare the dataset again with this version"
        )
    try:
        fields = doc["dataset"]
        meta = doc["meta"]
        task = fields["task"]
    except (KeyError, TypeError) as err:
        raise DataFormatError(f"{meta_path}: missing entry {err}") from err

    split_arrays: dict[str, dict[str, np.ndarray]] = {}
    splits: dict[str, list[Segment]] = {}
    for split in SPLITS:
        npz = folder / f"{split}.npz"
        if not npz.is_file():
            raise DataFormatError(f"{folder}: {npz.name} is missing")
        try:
            with np.load(npz, allow_pickle=False) as z:
                split_arrays[split] = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError) as err:  # object arrays, corrupt zip, truncation
            raise DataFormatError(f"{npz}: unreadable split archive ({err})") from err
        splits[split] = _split_segments(npz, split, split_arrays[split], task)
    vocab = None
    if (folder / VOCAB_FILE).is_file():
        try:
            vocab = json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataFormatError(f"{folder / VOCAB_FILE}: unreadable JSON ({err})") from err
        if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
            raise DataFormatError(f"{folder / VOCAB_FILE}: expected a JSON list of strings")
    embedding = None
    if (folder / EMBEDDING_FILE).is_file():
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            tensors = load_file(folder / EMBEDDING_FILE)
        except (SafetensorError, OSError, ValueError) as err:
            raise DataFormatError(f"{folder / EMBEDDING_FILE}: unreadable ({err})") from err
        if "embedding" not in tensors:
            raise DataFormatError(f"{folder / EMBEDDING_FILE}: tensor 'embedding' is missing")
        embedding = tensors["embedding"]
    if verify:
        found = _fingerprint(_header(fields, meta), split_arrays, vocab, embedding)
        if found != doc.get("fingerprint"):
            raise DataFormatError(
                f"{folder}: content does not match the fingerprint in {META_FILE} (files modified or "
                "corrupted); prepare the dataset again"
            )
    ds = CanonicalDataset(
        name=fields["name"],
        task=task,
        splits=splits,
        alignment=fields.get("alignment", "word"),
        num_classes=int(fields.get("num_classes", 1)),
        synthetic=bool(fields.get("synthetic", False)),
        vocab=vocab,
        embedding=embedding,
        text_encoder=fields.get("text_encoder"),
        meta=meta,
    )
    log.debug("loaded prepared dataset %s (%s)", folder, doc.get("fingerprint"))
    return ds


def read_prepared_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta.json`` document of a prepared folder (fingerprint, split sizes, counts) without
    loading the arrays; checkpoints and results record its ``fingerprint``."""
    meta_path = Path(path) / META_FILE if Path(path).name != META_FILE else Path(path)
    if not is_prepared(meta_path.parent):
        raise DataFormatError(f"{meta_path.parent}: not a prepared dataset (no misalatch {META_FILE})")
    return json.loads(meta_path.read_text(encoding="utf-8"))
