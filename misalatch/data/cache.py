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

Saving claims the folder like every misalatch output (``misalatch.io.owned``: a ``run.json``
marker, a lock, a hidden staging sibling swapped in once complete), so a crash never leaves a
half-written dataset and ``--overwrite`` never replaces a folder misalatch did not write. Loading uses ``np.load(allow_pickle=False)``, JSON and safetensors only: it
never unpickles anything, so a prepared folder from elsewhere is safe to open.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import zipfile
import zlib
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
TASKS: tuple[str, ...] = ("regression", "classification")
ALIGNMENTS: tuple[str, ...] = ("word", "token", "none")
# dtype kinds each stored array may have (anything else is a forged or foreign archive)
_KINDS: dict[str, str] = {"ids": "U", "words": "U", "truncated": "b", "labels": "iuf", "text_ids": "iu",
                          "bert_ids": "iu", "wp2word": "iu", "text_vectors": "f", "visual": "f", "acoustic": "f"}
MAX_EXPANSION = 1100  # deflate's bound: a member cannot decompress to more than ~1032x its stored bytes
MAX_VOCAB = 10_000_000


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
    """Concatenated arrays plus offsets for one split (the inverse of ``_split_segments``)."""
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


def _read_npz(npz: Path) -> dict[str, np.ndarray]:
    """The arrays of one split archive, after checking every member's ``.npy`` header: a plain dtype
    and a declared size the member really holds (a 1 kB archive declaring 15 GiB is refused before
    anything is allocated). Broken or truncated archives give a DataFormatError naming the file."""
    try:
        size = npz.stat().st_size
        with zipfile.ZipFile(npz) as archive:
            for info in archive.infolist():
                name = info.filename
                if not name.endswith(".npy") or "/" in name:
                    raise DataFormatError(f"{npz}: member {name!r} is not an array of a split archive")
                if info.compress_size > size or info.file_size > max(info.compress_size, 1) * MAX_EXPANSION:
                    raise DataFormatError(f"{npz}: member {name!r} declares {info.file_size} bytes, more than "
                                          "the archive can hold")
                with archive.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    shape, _fortran, dtype = header(fh)  # rejects object dtypes and malformed headers
                    offset = fh.tell()
                if dtype.hasobject or dtype.kind not in "biufU" or dtype.fields is not None:
                    raise DataFormatError(f"{npz}: array {name[:-4]!r} has dtype {dtype}; only plain numbers, "
                                          "booleans and strings are stored in a prepared folder")
                declared = math.prod(shape) * dtype.itemsize
                if declared + offset != info.file_size:
                    raise DataFormatError(
                        f"{npz}: array {name[:-4]!r} declares shape {shape} of {dtype} ({declared} bytes) but "
                        f"the member holds {info.file_size - offset}; refused before loading"
                    )
        with np.load(npz, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except DataFormatError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error,
            NotImplementedError, KeyError) as err:  # object arrays, corrupt zip, truncation, odd compression
        raise DataFormatError(f"{npz}: unreadable split archive ({type(err).__name__}: {err})") from None


def _check_arrays(where: str, arrays: dict[str, np.ndarray], task: str, num_classes: int) -> None:
    """Dtypes and labels of one split, before any segment is built: NaN labels, classes outside
    ``0..num_classes-1`` and negative token ids are refused here rather than deep in training."""
    for key, arr in arrays.items():
        base = key.removesuffix("_offsets").removesuffix("_present")
        kinds = "iu" if key.endswith("_offsets") else "b" if key.endswith("_present") else _KINDS.get(base)
        if kinds is None:
            raise DataFormatError(f"{where}: unknown array {key!r}")
        if arr.dtype.kind not in kinds:
            raise DataFormatError(f"{where}: array {key!r} has dtype {arr.dtype}, expected kind {kinds!r}")
    labels = arrays.get("labels")
    if labels is not None and labels.size:
        if task == "classification":
            if not np.all(np.isfinite(labels)) or not np.all(labels == np.floor(labels)):
                raise DataFormatError(f"{where}: field 'labels' holds NaN or non-integer class labels")
            if labels.min() < 0 or labels.max() >= num_classes:
                raise DataFormatError(f"{where}: field 'labels' holds class {labels.max() if labels.max() >= num_classes else labels.min()}, "
                                      f"outside 0..{num_classes - 1}")
        elif not np.all(np.isfinite(labels)):
            raise DataFormatError(f"{where}: field 'labels' holds {int((~np.isfinite(labels)).sum())} NaN or "
                                  "infinite values (readers set them to 0 and count them; this folder was altered)")
    wp = arrays.get("wp2word")
    if wp is not None and wp.size and (wp.min() < -1 or wp.max() >= MAX_VOCAB):
        raise DataFormatError(f"{where}: field 'wp2word' holds word index {wp.min() if wp.min() < -1 else wp.max()}, "
                              "expected -1 (special tokens) or a word index")
    if "wp2word" in arrays and "bert_ids" in arrays and not np.array_equal(
            arrays.get("wp2word_offsets"), arrays.get("bert_ids_offsets")):
        raise DataFormatError(f"{where}: fields 'wp2word' and 'bert_ids' differ in length for some segment")
    for key in ("text_ids", "bert_ids"):
        arr = arrays.get(key)
        if arr is not None and arr.size and (arr.min() < 0 or arr.max() >= MAX_VOCAB):
            raise DataFormatError(f"{where}: field {key!r} holds token id {arr.min() if arr.min() < 0 else arr.max()}, "
                                  f"outside 0..{MAX_VOCAB - 1}")


def _dataset_fields(meta_path: Path, fields: Any) -> dict[str, Any]:
    """The dataset-level entries of ``meta.json``, each checked against the values that exist."""
    if not isinstance(fields, dict):
        raise DataFormatError(f"{meta_path}: field 'dataset' must be an object, found {type(fields).__name__}")
    name, task = fields.get("name"), fields.get("task")
    alignment, classes = fields.get("alignment", "word"), fields.get("num_classes", 1)
    if not isinstance(name, str) or not name:
        raise DataFormatError(f"{meta_path}: field 'dataset.name' must be a non-empty string, found {name!r}")
    if task not in TASKS:
        raise DataFormatError(f"{meta_path}: field 'dataset.task' must be one of {', '.join(TASKS)}, found {task!r}")
    if alignment not in ALIGNMENTS:
        raise DataFormatError(
            f"{meta_path}: field 'dataset.alignment' must be one of {', '.join(ALIGNMENTS)}, found {alignment!r}")
    if isinstance(classes, bool) or not isinstance(classes, int) or not (
            classes == 1 if task == "regression" else 2 <= classes <= 1000):
        raise DataFormatError(f"{meta_path}: field 'dataset.num_classes' must be 1 for regression and 2..1000 "
                              f"for classification, found {classes!r} ({task})")
    if not isinstance(fields.get("synthetic", False), bool):
        raise DataFormatError(f"{meta_path}: field 'dataset.synthetic' must be true or false")
    encoder = fields.get("text_encoder")
    if encoder is not None and not isinstance(encoder, str):
        raise DataFormatError(f"{meta_path}: field 'dataset.text_encoder' must be a string or null, found {encoder!r}")
    return fields


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
    ``save_prepared``; callers use it to fail before a long read). The rules are those of every
    misalatch output folder (``misalatch.io.owned.check_target``)."""
    check_target(out_dir, "prepare", overwrite=overwrite)


def prepared_files(dataset: CanonicalDataset) -> dict[str, bytes]:
    """The files of a prepared folder for ``dataset`` (name -> bytes), built in memory: a bad dataset
    fails before anything touches the disk. ``save_prepared`` writes them into a claimed folder;
    ``misalatch extract`` commits them as one unit beside its per-clip cache."""
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
    files: dict[str, bytes] = {}
    for split in SPLITS:
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **split_arrays[split])
        files[f"{split}.npz"] = buffer.getvalue()
    if vocab is not None:
        files[VOCAB_FILE] = json.dumps(vocab, ensure_ascii=False).encode("utf-8")
    if embedding is not None:
        from safetensors.numpy import save

        files[EMBEDDING_FILE] = save({"embedding": embedding})
    files[META_FILE] = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")  # last: the manifest
    return files


def save_prepared(dataset: CanonicalDataset, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``dataset`` as a prepared folder at ``out_dir`` and return its path.

    An existing non-empty ``out_dir`` is refused unless ``overwrite`` is True, and even then only
    when it is itself a prepared dataset: a folder of the user's own files is never deleted.
    """
    out = Path(out_dir)
    check_out_dir(out, overwrite=overwrite)
    files = prepared_files(dataset)  # everything in memory first: a bad dataset fails before the disk
    with claim_output(out, "prepare", overwrite=overwrite) as output:  # staged; swapped in when complete
        for name, data in files.items():
            output.write_bytes(name, data)
    fingerprint = json.loads(files[META_FILE])["fingerprint"]
    log.info("prepared dataset written to %s (%s)", out, fingerprint[:19])
    return out


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("misalatch")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


def load_prepared(path: str | os.PathLike[str], *, verify: bool = True) -> CanonicalDataset:
    """Read a prepared folder (or its ``meta.json``) back into a ``CanonicalDataset``.

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
    for key in ("dataset", "meta"):
        if key not in doc:
            raise DataFormatError(f"{meta_path}: field {key!r} is missing")
    fields = _dataset_fields(meta_path, doc["dataset"])
    meta = doc["meta"]
    if not isinstance(meta, dict):
        raise DataFormatError(f"{meta_path}: field 'meta' must be an object, found {type(meta).__name__}")
    task = fields["task"]

    split_arrays: dict[str, dict[str, np.ndarray]] = {}
    for split in SPLITS:  # every archive is checked before any segment is built
        npz = folder / f"{split}.npz"
        if not npz.is_file():
            raise DataFormatError(f"{folder}: {npz.name} is missing")
        split_arrays[split] = _read_npz(npz)
        _check_arrays(f"{npz}", split_arrays[split], task, int(fields.get("num_classes", 1)))
    vocab = None
    if (folder / VOCAB_FILE).is_file():
        from misalatch.data.text import read_vocab_file

        vocab = read_vocab_file(folder / VOCAB_FILE)
    for split in SPLITS:
        if vocab is not None and "text_ids" in split_arrays[split] and split_arrays[split]["text_ids"].size:
            top = int(split_arrays[split]["text_ids"].max())
            if top >= len(vocab):
                raise DataFormatError(f"{folder / (split + '.npz')}: field 'text_ids' holds id {top}, outside the "
                                      f"{len(vocab)} words of {VOCAB_FILE}")
    splits = {split: _split_segments(folder / f"{split}.npz", split, split_arrays[split], task) for split in SPLITS}
    seen: dict[str, str] = {}
    for split, segs in splits.items():
        for seg in segs:
            if seg.id in seen:
                raise DataFormatError(f"{folder}: field 'ids': duplicate id {seg.id!r} (splits {seen[seg.id]!r} "
                                      f"and {split!r})")
            seen[seg.id] = split
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
        if embedding.ndim != 2 or embedding.dtype.kind != "f":
            raise DataFormatError(f"{folder / EMBEDDING_FILE}: tensor 'embedding' must be a 2-D float matrix, "
                                  f"found {embedding.dtype} {embedding.shape}")
        if vocab is not None and embedding.shape[0] != len(vocab):
            raise DataFormatError(f"{folder / EMBEDDING_FILE}: tensor 'embedding' has {embedding.shape[0]} rows but "
                                  f"{VOCAB_FILE} has {len(vocab)} words")
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
        alignment=fields.get("alignment", "word"),  # checked by _dataset_fields
        num_classes=int(fields.get("num_classes", 1)),
        synthetic=bool(fields.get("synthetic", False)),
        vocab=vocab,
        embedding=embedding,
        text_encoder=fields.get("text_encoder"),
        meta=meta,
    )
    ds.validate(str(folder))  # widths, word-aligned lengths, class labels: as every reader's output
    log.debug("loaded prepared dataset %s (%s)", folder, doc.get("fingerprint"))
    return ds


def read_prepared_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta.json`` document of a prepared folder (fingerprint, split sizes, counts) without
    loading the arrays; checkpoints and results record its ``fingerprint``."""
    meta_path = Path(path) / META_FILE if Path(path).name != META_FILE else Path(path)
    if not is_prepared(meta_path.parent):
        raise DataFormatError(f"{meta_path.parent}: not a prepared dataset (no misalatch {META_FILE})")
    return json.loads(meta_path.read_text(encoding="utf-8"))
