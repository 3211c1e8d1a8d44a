"""One entry point from a ``--data`` value to a ``CanonicalDataset``.

The value is dispatched in a fixed order, so that each new source is one more branch:

1. built-in names (``synthetic``, the default: the generated SYNTHETIC MOSI-shaped data);
2. an existing path: a file by its suffix (``FILE_READERS``, ``.csv`` -> text CSV), a folder by
   ``FOLDER_READERS`` (prepared cache folders, SDK/pickle folders: to be added);
3. dataset names resolved under ``--data-root`` / ``MISALATCH_DATA`` (``NAMED_DATASETS``,
   ``mosi``, ``mosei``, ``ur_funny``: to be added);
4. otherwise an error that says what is accepted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

from misalatch.data.cache import is_prepared, load_prepared
from misalatch.data.canonical import CanonicalDataset
from misalatch.data.readers.text_csv import read_text_csv
from misalatch.data.synthetic.mosi import make_synthetic_mosi
from misalatch.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

DATA_ROOT_ENV = "MISALATCH_DATA"
DEFAULT_DATA = "synthetic"

# file suffix (lower case) -> reader(path)
FILE_READERS: dict[str, Callable[[Path], CanonicalDataset]] = {".csv": read_text_csv}
# (description, is_this_layout(folder), reader(folder)); tried in order
FOLDER_READERS: list[tuple[str, Callable[[Path], bool], Callable[[Path], CanonicalDataset]]] = [
    ("prepared dataset (meta.json, written by `misalatch prepare`)", is_prepared, load_prepared),
]
# dataset name -> loader(data_root, seed)
NAMED_DATASETS: dict[str, Callable[[Path | None, int], CanonicalDataset]] = {}


def _named_under_root(name: str) -> Callable[[Path | None, int], CanonicalDataset]:
    """``<data_root>/<name>`` (or its upper-case spelling, as in MISA's ``datasets/MOSI``), read
    like any ``--data`` folder; the error lists every place looked at."""

    def load(root: Path | None, seed: int) -> CanonicalDataset:
        if root is None:
            raise ConfigError(
                f"dataset {name!r} is looked up under a data root, but none is set: pass --data-root DIR or "
                f"set ${DATA_ROOT_ENV} (expected DIR/{name}, a folder written by `misalatch prepare`)"
            )
        candidates = list(dict.fromkeys([root / name, root / name.upper()]))
        for path in candidates:
            if path.is_dir():
                return _read_path(path)
        looked = ", ".join(str(p) for p in candidates)
        raise DataFormatError(f"dataset {name!r} not found under the data root {root}: looked for {looked}; "
                              + how_to_make(name, root / name))

    return load


# The commands that make a prepared folder of each named dataset (docs/data.md has the details).
_MAKE = {
    "mosi": ("misalatch download CMU_MOSI_Opinion_Labels --dest raw/mosi (and the words, visual, acoustic files, "
             "misalatch download --list), then misalatch prepare --format csd --dataset mosi "
             "--labels raw/mosi/CMU_MOSI_Opinion_Labels.csd --words raw/mosi/CMU_MOSI_TimestampedWords.csd "
             "--visual raw/mosi/CMU_MOSI_Visual_Facet_41.csd --acoustic raw/mosi/CMU_MOSI_COVAREP.csd --out {out}; "
             "or, from the MMSA/MISA pickle: misalatch prepare --format mmsa --input MOSI/aligned_50.pkl --out {out}"),
    "mosei": ("misalatch download CMU_MOSEI_LabelsSentiment --dest raw/mosei (and the words, visual, acoustic files, "
              "misalatch download --list), then misalatch prepare --format csd --dataset mosei ... --out {out}; "
              "or misalatch prepare --format mmsa --input MOSEI/aligned_50.pkl --out {out}"),
    "ur_funny": "misalatch prepare --format urfunny --input ted_humor_sdk_v1 --version 1 --out {out}",
}


def _family_of(name: str) -> str | None:
    """mosi / mosei / ur_funny when a folder name says which dataset it is meant to hold."""
    lowered = name.lower()
    for family in ("mosei", "mosi", "ur_funny", "urfunny"):
        if family in lowered:
            return "ur_funny" if family == "urfunny" else family
    return None


def how_to_make(name: str, out: Path) -> str:
    """The commands that make the prepared folder ``out`` of dataset ``name`` (for error messages)."""
    recipe = _MAKE.get(name)
    if recipe is None:
        return f"create it with misalatch prepare --format ... --out {out} (docs/data.md)"
    return f"make it with: {recipe.format(out=out)} (docs/data.md)"


for _name in ("mosi", "mosei", "ur_funny"):
    NAMED_DATASETS[_name] = _named_under_root(_name)

_SIZE_KEYS = {"train": "n_train", "valid": "n_valid", "test": "n_test",
              "n_train": "n_train", "n_valid": "n_valid", "n_test": "n_test"}


def resolve_data_root(data_root: str | os.PathLike[str] | None = None) -> Path | None:
    """``data_root``, else ``$MISALATCH_DATA``, else None."""
    value = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV) or None
    return None if value is None else Path(value).expanduser()


def _synthetic(sizes: dict[str, Any] | None, seed: int) -> CanonicalDataset:
    kwargs: dict[str, Any] = {}
    for key, value in (sizes or {}).items():
        if key not in _SIZE_KEYS:
            raise ConfigError(f"synthetic_sizes: unknown key {key!r} (expected train, valid, test)")
        kwargs[_SIZE_KEYS[key]] = value
    return make_synthetic_mosi(seed=seed, **kwargs)


def _accepted(data_root: Path | None) -> str:
    names = ", ".join(repr(n) for n in ["synthetic", *NAMED_DATASETS])
    files = ", ".join(FILE_READERS)
    root = f" (data root: {data_root})" if data_root is not None else f" (set --data-root or ${DATA_ROOT_ENV} for named datasets)"
    return f"accepted: a name ({names}), or a path to a file ({files})" + \
        (" or a prepared folder" if FOLDER_READERS else "") + root


def _read_path(path: Path) -> CanonicalDataset:
    if path.is_file():
        reader = FILE_READERS.get(path.suffix.lower())
        if reader is None:
            raise DataFormatError(
                f"{path}: cannot read files of type {path.suffix or '(no suffix)'!r}; readable: {', '.join(FILE_READERS)}"
            )
        ds = reader(path)
        ds.check_label_range(str(path))  # raw files only; `misalatch prepare --allow-label-range` to override
        return ds
    for description, matches, reader in FOLDER_READERS:
        if matches(path):
            log.debug("%s: reading as %s", path, description)
            ds = reader(path)
            ds.check_label_range(str(path))
            return ds
    known = ", ".join(d for d, _, _ in FOLDER_READERS) or "none yet"
    raise DataFormatError(f"{path}: folder is not in a layout misalatch can read (known folder layouts: {known})")


def load_dataset(spec: str = DEFAULT_DATA, *, data_root: str | None = None,
                 synthetic_sizes: dict[str, int] | None = None, seed: int = 0) -> CanonicalDataset:
    """Load the dataset named by ``spec`` (a ``--data`` value); see the module docstring for the order.

    ``synthetic_sizes`` (keys ``train``/``valid``/``test``) and ``seed`` apply to the synthetic data.
    A relative path is tried as given, then under the data root.
    """
    spec = spec.strip()
    root = resolve_data_root(data_root)
    if spec.lower() == "synthetic":
        dataset = _synthetic(synthetic_sizes, seed)
    else:
        candidates = [Path(spec).expanduser()]
        if root is not None and not candidates[0].is_absolute():
            candidates.append(root / spec)
        existing = next((p for p in candidates if p.exists()), None)
        if existing is not None:
            dataset = _read_path(existing)
        elif spec.lower() in NAMED_DATASETS:
            dataset = NAMED_DATASETS[spec.lower()](root, seed)
        elif any(sep in spec for sep in ("/", os.sep)) or Path(spec).suffix:
            tried = " or ".join(str(p) for p in candidates)
            family = _family_of(Path(spec).name)
            hint = f"; {how_to_make(family, Path(spec))}" if family and not Path(spec).suffix else ""
            raise DataFormatError(f"no such file or folder: {tried}{hint}")
        else:
            raise ConfigError(f"unknown dataset {spec!r}; {_accepted(root)}")
    dataset.validate(spec)
    return dataset
