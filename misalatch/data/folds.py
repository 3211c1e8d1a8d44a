"""Standard folds: which videos belong to train / valid / test (DATA.md §8).

The CMU-MultimodalSDK standard folds (``cmu_mosi_std_folds`` / ``cmu_mosei_std_folds``) ship with
misalatch as ``misalatch/data/resources/standard_folds.json`` so that preparing CSD files needs no
network and no SDK. A user file in the same layout overrides them (another MOSEI variant, say).

Accepted layouts: ``{"<dataset>": {"train": [...], "valid": [...], "test": [...]}, ...}`` or, for a
file holding one dataset only, ``{"train": [...], "valid": [...], "test": [...]}``. ``dev`` is read
as ``valid``; keys starting with ``_`` (``_source``, ``_note``) are comments. Ids are strings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from misalatch.data.canonical import SPLITS
from misalatch.errors import DataFormatError

log = logging.getLogger(__name__)

PACKAGE_FOLDS = "standard_folds.json"
SPLIT_ALIASES: dict[str, str] = {"train": "train", "valid": "valid", "dev": "valid", "test": "test"}
DATASET_ALIASES: dict[str, str] = {"cmu_mosi": "mosi", "cmu-mosi": "mosi", "cmu_mosei": "mosei", "cmu-mosei": "mosei"}


def _read_bytes(path: str | Path | None) -> tuple[bytes, str]:
    """``(content, source name)`` of the user file, or of the package's own copy."""
    if path is None:
        ref = resources.files("misalatch.data").joinpath("resources", PACKAGE_FOLDS)
        return ref.read_bytes(), f"misalatch/data/resources/{PACKAGE_FOLDS}"
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: fold file not found")
    return path.read_bytes(), str(path)


def _parse_split_lists(obj: dict[str, Any], source: str, dataset: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {s: set() for s in SPLITS}
    for key, ids in obj.items():
        if key.startswith("_"):
            continue
        split = SPLIT_ALIASES.get(key.lower())
        if split is None:
            raise DataFormatError(
                f"{source}: {dataset!r}: unknown split {key!r} (expected train, valid (or dev), test)"
            )
        if not isinstance(ids, list):
            raise DataFormatError(f"{source}: {dataset!r}/{key}: expected a list of video ids, found {type(ids).__name__}")
        out[split].update(str(i) for i in ids)
    for a_i, a in enumerate(SPLITS):
        for b in SPLITS[a_i + 1:]:
            both = out[a] & out[b]
            if both:
                raise DataFormatError(
                    f"{source}: {dataset!r}: {len(both)} video(s) are in both {a!r} and {b!r}, e.g. {sorted(both)[:3]}"
                )
    return out


def load_folds(dataset: str, path: str | Path | None = None) -> dict[str, set[str]]:
    """Video ids per split for ``dataset`` (``mosi``, ``mosei``): ``{"train", "valid", "test"} -> set``.

    ``path`` None reads the standard folds shipped with misalatch; a user JSON file overrides them.
    Raises ``DataFormatError`` naming the file when the dataset is absent, a split is not a
    list, or a video sits in two splits.
    """
    data, source = _read_bytes(path)
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataFormatError(f"{source}: not valid JSON ({err})") from err
    if not isinstance(doc, dict):
        raise DataFormatError(f"{source}: expected a JSON object of fold lists, found {type(doc).__name__}")
    keys = {k.lower() for k in doc if not k.startswith("_")}
    if keys and keys <= set(SPLIT_ALIASES):  # a one-dataset file
        return _parse_split_lists(doc, source, dataset)
    name = DATASET_ALIASES.get(dataset.lower(), dataset.lower())
    found = next((k for k in doc if not k.startswith("_") and DATASET_ALIASES.get(k.lower(), k.lower()) == name), None)
    if found is None or not isinstance(doc[found], dict):
        have = sorted(k for k in doc if not k.startswith("_"))
        raise DataFormatError(
            f"{source}: no folds for dataset {dataset!r} (the file has {have}); give a fold file with "
            f"train/valid/test video lists for it"
        )
    return _parse_split_lists(doc[found], source, dataset)


def folds_source(path: str | Path | None = None) -> dict[str, str]:
    """``{"path", "sha256"}`` of the fold file used, for ``meta["sources"]``."""
    data, source = _read_bytes(path)
    return {"path": source, "sha256": hashlib.sha256(data).hexdigest(), "role": "folds"}


def split_of(folds: dict[str, set[str]]) -> dict[str, str]:
    """Invert fold lists: video id -> split."""
    return {vid: split for split, ids in folds.items() for vid in ids}
