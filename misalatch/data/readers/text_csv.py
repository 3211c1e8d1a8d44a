"""Reader for a text + label table: ``segment_id,text,label,split`` (extra columns ignored).

This is how real transcripts and labels without acoustic/visual features enter the toolkit, e.g.
``../shared/data/mosi/mosi_text_labels.csv`` (DATA.md §13.1). The ``csv`` module is used rather than
pandas so that ids stay strings (``286943`` must not become an integer; DATA.md §11.4) and an
empty transcript stays an empty string.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import re
from pathlib import Path

from misalatch.data.canonical import SPLITS, CanonicalDataset, Segment
from misalatch.errors import DataFormatError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("segment_id", "text", "label", "split")
SPLIT_ALIASES: dict[str, str] = {"train": "train", "valid": "valid", "dev": "valid", "test": "test"}
# A plain decimal number. float() alone also takes "0_3" (3.0), "١" (Arabic digits), "nan", "inf".
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _decode(path: Path, raw: bytes) -> str:
    """The file's text as UTF-8 (a BOM is allowed); UTF-16 and other encodings get a clear error."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataFormatError(f"{path}: the file is UTF-16 encoded; save it as UTF-8 (expected a UTF-8 CSV)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path}, line {line}: not valid UTF-8 (byte 0x{raw[err.start]:02x}); save the file as UTF-8"
        ) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_text_csv(path: str | Path) -> CanonicalDataset:
    """Read a text + label CSV into a word-only regression dataset (no acoustic/visual features).

    Segments with an empty ``text`` are dropped (a zero-length sequence cannot be packed) and counted
    in ``meta["dropped"]["empty"]``; rows with an empty ``split`` are in no fold and counted as
    ``no_fold`` (DATA.md §3.7). ``dev`` is read as ``valid``. Raises ``DataFormatError`` naming
    the file, line and field for anything else that does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file (expected a CSV with columns {', '.join(REQUIRED_COLUMNS)})")
    splits: dict[str, list[Segment]] = {s: [] for s in SPLITS}
    first_line: dict[str, int] = {}
    dropped: dict[str, list[str]] = {"empty": [], "no_fold": []}
    text = _decode(path, path.read_bytes())
    pulled = [0]  # lines handed to the csv module: the line of a csv.Error (its line_num lags)

    def lines():
        for line in io.StringIO(text, newline=""):
            pulled[0] += 1
            yield line

    reader = csv.DictReader(lines())
    try:
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DataFormatError(
                f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; the header has "
                f"{', '.join(repr(c) for c in columns) or 'no columns'} (expected at least {', '.join(REQUIRED_COLUMNS)})"
            )
        for row in reader:
            line = reader.line_num
            where = f"{path}, line {line}"
            if any(row.get(c) is None for c in REQUIRED_COLUMNS):
                raise DataFormatError(f"{where}: the row has fewer fields than the header ({len(columns)})")
            if None in row:  # DictReader's restkey: fields beyond the header (an unquoted comma in the text?)
                raise DataFormatError(f"{where}: the row has {len(columns) + len(row[None])} fields but the header "
                                      f"has {len(columns)} (quote a text that contains a comma)")
            seg_id = row["segment_id"].strip()
            if not seg_id:
                raise DataFormatError(f"{where}, field 'segment_id': empty id")
            if seg_id in first_line:
                raise DataFormatError(
                    f"{where}, field 'segment_id': duplicate id {seg_id!r} (first seen on line {first_line[seg_id]})"
                )
            first_line[seg_id] = line
            raw_label = row["label"].strip()
            label = float(raw_label) if _NUMBER.fullmatch(raw_label) else math.nan
            if not math.isfinite(label) or not -3.0 <= label <= 3.0:
                raise DataFormatError(
                    f"{where}, field 'label': expected a sentiment score in [-3, 3], got {raw_label!r}"
                )
            raw_split = row["split"].strip()
            if not raw_split:
                dropped["no_fold"].append(seg_id)
                continue
            split = SPLIT_ALIASES.get(raw_split.lower())
            if split is None:
                raise DataFormatError(
                    f"{where}, field 'split': unknown split {raw_split!r} (expected train, valid, dev or test)"
                )
            words = row["text"].split()
            if not words:
                dropped["empty"].append(seg_id)
                continue
            splits[split].append(Segment(id=seg_id, label=label, words=words))
    except csv.Error as err:  # a field over csv.field_size_limit(), a NUL byte, an unclosed quote
        raise DataFormatError(f"{path}, line {pulled[0]}: not a readable CSV row ({err})") from None

    for split in SPLITS:
        if not splits[split]:
            raise DataFormatError(f"{path}, field 'split': split {split!r} has no segments with text")
    counts = {reason: len(ids) for reason, ids in dropped.items() if ids}
    for reason, ids in dropped.items():
        if ids:
            log.info("%s: dropped %d segment(s), reason %r: %s", path.name, len(ids), reason,
                     ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else ""))
    meta = {
        "sources": [{"path": str(path), "sha256": _sha256(path)}],
        "reader": "text_csv",
        "dropped": counts,
        "dropped_ids": {reason: ids for reason, ids in dropped.items() if ids},
    }
    return CanonicalDataset(name=path.stem, task="regression", splits=splits, alignment="word", meta=meta)
