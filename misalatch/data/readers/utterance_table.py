"""Reader for per-utterance feature tables: one row per utterance, from CSV, Parquet or NPZ.

This is how features that are already one vector per utterance and modality (an utterance-level
extractor, a published feature release, your own) enter the toolkit. The layout:

* CSV (``.csv``) and Parquet (``.parquet``, ``.pq``): one row per utterance with the columns
  ``segment_id``, ``split`` (``train``, ``valid`` / ``dev``, ``test``), optionally ``label``, and the
  feature columns of each modality, named by prefix: ``text_*``, ``acoustic_*``, ``visual_*`` (in the
  order of the file: ``acoustic_0, acoustic_1, ...``). A modality without columns is absent.
* NPZ (``.npz``): arrays ``segment_id`` and ``split`` (strings, shape ``(N,)``), optionally ``label``
  ``(N,)``, and one 2-D array ``(N, d)`` per modality named ``text``, ``acoustic`` or ``visual``.
  Read with ``allow_pickle=False``: object arrays are refused.

Labels are sentiment scores in [-3, 3] (regression). They come from the ``label`` column or from a
separate ``--labels`` CSV (``segment_id,label``, extra columns ignored, e.g.
``mosi_text_labels.csv``) joined on the segment id; every utterance of the table needs a label.

Each utterance becomes a segment of one step per modality (``(1, d)`` arrays; the text features
are precomputed text vectors, so the run's text encoder is ``vectors``). With ``normalize`` (the
default) every feature column is standardised with the mean and standard deviation of the training
split only (a constant column becomes 0), because per-utterance features come in very different
scales (an F0 mean in Hz beside probabilities). ``valid_fraction`` holds out part of the training
split for validation when the table has no validation rows: whole speakers (videos) are held out,
chosen with a seeded permutation, so that no speaker is on both sides (see ``hold_out_valid``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from misalatch.data.canonical import SPLITS, CanonicalDataset, Segment
from misalatch.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

READER = "utterance_table"
MODALITY_PREFIXES: dict[str, str] = {"text": "text_vectors", "acoustic": "acoustic", "visual": "visual"}
SPLIT_ALIASES: dict[str, str] = {"train": "train", "valid": "valid", "dev": "valid", "test": "test"}
SUFFIXES = (".csv", ".parquet", ".pq", ".npz")
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(nan|inf|infinity)", re.I)
# a segment id ends with _<clip>; everything before it names the video (one speaker per video in CMU-MOSI)
_CLIP_SUFFIX = re.compile(r"^(.+)_[^_]+$")


@dataclass
class _Table:
    """The file's content, checked for shape and type; nothing interpreted yet."""

    ids: list[str]
    splits: list[str]
    labels: np.ndarray | None  # (N,) float64
    features: dict[str, np.ndarray]  # modality -> (N, d) float64


def read_utterance_table(path: str | Path, *, labels: str | Path | None = None, normalize: bool = True,
                         valid_fraction: float | None = None, valid_seed: int = 0,
                         name: str | None = None) -> CanonicalDataset:
    """Read a per-utterance feature table (CSV, Parquet or NPZ, by suffix) into a regression dataset.

    ``labels``: a ``segment_id,label`` CSV joined on the id (it replaces a ``label`` column).
    ``valid_fraction``: hold out that share of the training speakers for validation (the table then
    must have no validation rows). Raises ``DataFormatError`` naming the file, the row or
    column and what was expected for anything that does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file (expected a per-utterance table: {', '.join(SUFFIXES)})")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = _read_csv(path)
    elif suffix in (".parquet", ".pq"):
        table = _read_parquet(path)
    elif suffix == ".npz":
        table = _read_npz(path)
    else:
        raise DataFormatError(f"{path}: unknown table type {path.suffix!r} (expected {', '.join(SUFFIXES)})")
    if not table.features:
        raise DataFormatError(f"{path}: no feature columns (expected columns named text_*, acoustic_* or visual_*"
                              f"{' or arrays text, acoustic, visual' if suffix == '.npz' else ''})")
    if labels is not None:
        if table.labels is not None:
            log.info("%s: the label column is replaced by the labels of %s", path.name, labels)
        table.labels = _join_labels(Path(labels), table.ids, path)
    elif table.labels is None:
        raise DataFormatError(f"{path}: no 'label' column; give the labels with --labels FILE.csv (segment_id,label)")
    return _build(path, table, normalize=normalize, valid_fraction=valid_fraction, valid_seed=valid_seed,
                  name=name, labels_path=None if labels is None else Path(labels))


# ----------------------------------------------------------------------------------------------
# the three file types
# ----------------------------------------------------------------------------------------------
def _feature_columns(path: Path, columns: list[str]) -> tuple[dict[str, list[int]], list[str]]:
    """Column indexes of each modality's features; the other columns, which must be known ones."""
    groups: dict[str, list[int]] = {}
    other = []
    for i, column in enumerate(columns):
        prefix, sep, _ = column.partition("_")
        if sep and prefix in MODALITY_PREFIXES:
            groups.setdefault(prefix, []).append(i)
        else:
            other.append(column)
    if len(set(columns)) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise DataFormatError(f"{path}: column(s) {', '.join(map(repr, twice))} appear more than once")
    for required in ("segment_id", "split"):
        if required not in other:
            raise DataFormatError(f"{path}: missing column {required!r} (expected segment_id, split, [label], "
                                  "and feature columns text_*, acoustic_*, visual_*)")
    unknown = [c for c in other if c not in ("segment_id", "split", "label")]
    if unknown:
        raise DataFormatError(f"{path}: unknown column(s) {', '.join(map(repr, unknown[:5]))}; feature columns are "
                              "named text_*, acoustic_* or visual_*, the others segment_id, split, label")
    return groups, other


def _number(text: str, where: str, field: str) -> float:
    raw = text.strip()
    if not _NUMBER.fullmatch(raw):
        raise DataFormatError(f"{where}, field {field!r}: expected a number, got {raw[:40]!r}")
    return float(raw)


def _read_csv(path: Path) -> _Table:
    from misalatch.data.readers.text_csv import _decode

    text = _decode(path, path.read_bytes())
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        columns = [c.strip() for c in next(reader, [])]
        if not columns or columns == [""]:
            raise DataFormatError(f"{path}: empty file (expected a header row: segment_id, split, ...)")
        groups, _ = _feature_columns(path, columns)
        index = {c: i for i, c in enumerate(columns)}
        ids, splits, labels = [], [], []
        rows: dict[str, list[list[float]]] = {m: [] for m in groups}
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if not row or row == [""]:
                continue
            if len(row) != len(columns):
                raise DataFormatError(f"{where}: {len(row)} fields, the header has {len(columns)}")
            ids.append(row[index["segment_id"]].strip())
            splits.append(row[index["split"]].strip())
            if "label" in index:
                labels.append(_number(row[index["label"]], where, "label"))
            for modality, cols in groups.items():
                rows[modality].append([_number(row[c], where, columns[c]) for c in cols])
    except csv.Error as err:
        raise DataFormatError(f"{path}, line {reader.line_num}: not a readable CSV row ({err})") from None
    features = {m: np.asarray(v, dtype=np.float64).reshape(len(ids), len(groups[m])) for m, v in rows.items()}
    return _Table(ids, splits, np.asarray(labels, np.float64) if "label" in index else None, features)


def _read_parquet(path: Path) -> _Table:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - pyarrow is pinned in requirements.lock
        raise ConfigError("reading Parquet needs pyarrow (pip install pyarrow)") from err
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... for a broken file
        raise DataFormatError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err})") from None
    columns = [str(c) for c in table.column_names]
    groups, _ = _feature_columns(path, columns)

    def strings(name: str) -> list[str]:
        values = table.column(name).to_pylist()
        bad = next((v for v in values if not isinstance(v, (str, int)) or isinstance(v, bool)), "ok")
        if bad != "ok":
            raise DataFormatError(f"{path}, column {name!r}: expected strings, got {bad!r}")
        return [str(v).strip() for v in values]

    def numbers(name: str) -> np.ndarray:
        try:
            values = np.asarray(table.column(name).to_numpy(zero_copy_only=False))
            if values.dtype.kind not in "iuf":
                raise TypeError(values.dtype)
            return values.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise DataFormatError(f"{path}, column {name!r}: expected numbers ({err})") from None

    features = {m: np.stack([numbers(columns[c]) for c in cols], axis=1) for m, cols in groups.items()}
    labels = numbers("label") if "label" in columns else None
    return _Table(strings("segment_id"), strings("split"), labels, features)


def _read_npz(path: Path) -> _Table:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:  # zipfile.BadZipFile, ValueError, OSError
        raise DataFormatError(f"{path}: not a readable .npz archive ({type(err).__name__}: {err})") from None
    with archive:
        names = set(archive.files)
        for required in ("segment_id", "split"):
            if required not in names:
                raise DataFormatError(f"{path}: missing array {required!r} (expected segment_id, split, [label], "
                                      "and text, acoustic and/or visual)")
        unknown = sorted(names - {"segment_id", "split", "label", *MODALITY_PREFIXES})
        if unknown:
            raise DataFormatError(f"{path}: unknown array(s) {', '.join(map(repr, unknown[:5]))} (expected "
                                  "segment_id, split, label, text, acoustic, visual)")

        def load(name: str) -> np.ndarray:
            try:
                return archive[name]
            except ValueError as err:  # an object array needs pickle, which is refused
                raise DataFormatError(f"{path}, array {name!r}: not a plain array ({err})") from None

        def strings(name: str) -> list[str]:
            arr = load(name)
            if arr.ndim != 1 or arr.dtype.kind not in "UiS":
                raise DataFormatError(f"{path}, array {name!r}: expected a 1-D array of strings, got {arr.dtype} "
                                      f"{arr.shape}")
            return [(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)).strip() for v in arr.tolist()]

        ids, splits = strings("segment_id"), strings("split")
        n = len(ids)
        labels = None
        if "label" in names:
            labels = load("label")
            if labels.shape != (n,) or labels.dtype.kind not in "iuf":
                raise DataFormatError(f"{path}, array 'label': expected {n} numbers, got {labels.dtype} {labels.shape}")
            labels = labels.astype(np.float64)
        features = {}
        for modality in MODALITY_PREFIXES:
            if modality in names:
                arr = load(modality)
                if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 1 or arr.dtype.kind not in "iuf":
                    raise DataFormatError(f"{path}, array {modality!r}: expected numbers of shape ({n}, d), got "
                                          f"{arr.dtype} {arr.shape}")
                features[modality] = arr.astype(np.float64)
        if len(splits) != n:
            raise DataFormatError(f"{path}, array 'split': {len(splits)} entries for {n} segment ids")
    return _Table(ids, splits, labels, features)


def _join_labels(labels_path: Path, ids: list[str], table_path: Path) -> np.ndarray:
    """The label of every id, from a ``segment_id,label`` CSV (extra columns ignored)."""
    from misalatch.data.readers.text_csv import _decode

    if not labels_path.is_file():
        raise DataFormatError(f"{labels_path}: no such labels file (expected a CSV with columns segment_id, label)")
    reader = csv.DictReader(io.StringIO(_decode(labels_path, labels_path.read_bytes()), newline=""))
    found: dict[str, float] = {}
    try:
        missing = [c for c in ("segment_id", "label") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataFormatError(f"{labels_path}: missing column(s) {', '.join(map(repr, missing))} "
                                  "(expected segment_id, label)")
        for row in reader:
            where = f"{labels_path}, line {reader.line_num}"
            seg = (row.get("segment_id") or "").strip()
            if seg in found:
                raise DataFormatError(f"{where}, field 'segment_id': duplicate id {seg!r}")
            found[seg] = _number(row.get("label") or "", where, "label")
    except csv.Error as err:
        raise DataFormatError(f"{labels_path}, line {reader.line_num}: not a readable CSV row ({err})") from None
    absent = [i for i in ids if i not in found]
    if absent:
        raise DataFormatError(f"{labels_path}: no label for {len(absent)} segment id(s) of {table_path.name}, e.g. "
                              f"{', '.join(map(repr, absent[:3]))}")
    return np.array([found[i] for i in ids], dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# from the table to the dataset
# ----------------------------------------------------------------------------------------------
def speaker_of(segment_id: str) -> str:
    """The video (= speaker in CMU-MOSI) of ``<video>_<clip>``; an id without ``_`` is its own group."""
    match = _CLIP_SUFFIX.match(segment_id)
    return match.group(1) if match else segment_id


def hold_out_valid(ids: list[str], fraction: float, seed: int) -> set[str]:
    """The ids of whole speakers, drawn with a seeded permutation, that make up about ``fraction`` of
    ``ids``: speakers are taken in permuted order until the held-out share reaches the fraction."""
    if not 0 < fraction < 1:
        raise ConfigError(f"--valid-fraction must be in (0, 1), got {fraction}")
    speakers = sorted({speaker_of(i) for i in ids})
    if len(speakers) < 2:
        raise ConfigError("--valid-fraction needs at least two speakers (videos) in the training split")
    counts = {s: 0 for s in speakers}
    for i in ids:
        counts[speaker_of(i)] += 1
    order = np.random.default_rng(seed).permutation(len(speakers))
    held: set[str] = set()
    total = 0
    for k in order:
        if total >= fraction * len(ids) or len(held) == len(speakers) - 1:
            break
        held.add(speakers[k])
        total += counts[speakers[k]]
    return {i for i in ids if speaker_of(i) in held}


def _build(path: Path, table: _Table, *, normalize: bool, valid_fraction: float | None, valid_seed: int,
           name: str | None, labels_path: Path | None) -> CanonicalDataset:
    from misalatch.data.readers.text_csv import _sha256

    n = len(table.ids)
    seen: dict[str, int] = {}
    split_of = []
    for row, (seg, raw) in enumerate(zip(table.ids, table.splits), start=1):
        where = f"{path}, row {row}"
        if not seg:
            raise DataFormatError(f"{where}, field 'segment_id': empty id")
        if seg in seen:
            raise DataFormatError(f"{where}, field 'segment_id': duplicate id {seg!r} (first in row {seen[seg]})")
        seen[seg] = row
        split = SPLIT_ALIASES.get(raw.lower())
        if split is None:
            raise DataFormatError(f"{where}, field 'split': unknown split {raw!r} (expected train, valid, dev or test)")
        split_of.append(split)
    assert table.labels is not None
    for row, value in enumerate(table.labels, start=1):
        if not math.isfinite(value) or not -3.0 <= value <= 3.0:
            raise DataFormatError(f"{path}, row {row} ({table.ids[row - 1]!r}), field 'label': expected a sentiment "
                                  f"score in [-3, 3], got {float(value)!r}")
    held: set[str] = set()
    if valid_fraction is not None:
        if "valid" in split_of:
            raise ConfigError(f"{path}: has validation rows already; --valid-fraction holds out part of train only "
                              "when the table has none")
        held = hold_out_valid([i for i, s in zip(table.ids, split_of) if s == "train"], valid_fraction, valid_seed)
        split_of = ["valid" if i in held else s for i, s in zip(table.ids, split_of)]
    for split in SPLITS:
        if split not in split_of:
            hint = " (hold out part of train with --valid-fraction)" if split == "valid" else ""
            raise DataFormatError(f"{path}, field 'split': split {split!r} has no rows{hint}")

    nonfinite: dict[str, int] = {}
    features = {}
    train_rows = np.array([s == "train" for s in split_of])
    standardised = {}
    for modality, values in table.features.items():
        bad = ~np.isfinite(values)
        if bad.any():
            nonfinite[modality] = int(bad.sum())
            values = np.where(bad, 0.0, values)
        if normalize:
            mean, std = values[train_rows].mean(axis=0), values[train_rows].std(axis=0)
            constant = std < 1e-12
            values = np.where(constant, 0.0, (values - mean) / np.where(constant, 1.0, std))
            standardised[modality] = int((~constant).sum())
        features[modality] = values.astype(np.float32)
    splits: dict[str, list[Segment]] = {s: [] for s in SPLITS}
    for row in range(n):
        parts = {MODALITY_PREFIXES[m]: values[row : row + 1] for m, values in features.items()}
        splits[split_of[row]].append(Segment(id=table.ids[row], label=float(table.labels[row]), **parts))
    if nonfinite:
        log.info("%s: non-finite feature values set to 0: %s", path.name, nonfinite)
    sources = [{"path": str(path), "sha256": _sha256(path)}]
    if labels_path is not None:
        sources.append({"path": str(labels_path), "sha256": _sha256(labels_path)})
    meta = {
        "sources": sources,
        "reader": READER,
        "dropped": {},
        "nonfinite": nonfinite,
        "options": {"normalize": normalize, "valid_fraction": valid_fraction, "valid_seed": valid_seed,
                    "standardised_columns": standardised},
        "held_out_speakers": sorted({speaker_of(i) for i in held}),
    }
    ds = CanonicalDataset(name=name or path.stem, task="regression", splits=splits, alignment="word", meta=meta)
    ds.validate(str(path))
    return ds
