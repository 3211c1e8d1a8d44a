"""Reading third-party pickles without running their code (DATA.md §9).

``pickle.load`` on a downloaded file can execute anything: a pickle is a small program whose
``GLOBAL``/``REDUCE`` instructions call arbitrary functions. :func:`safe_load` runs it with an
unpickler whose ``find_class`` admits only what numpy arrays and scalars need (§9.1), so a refused
global raises :class:`~misalatch.errors.UnsafePickleError` *before* anything is called.
:func:`load_embedding_and_mapping` reads the original MISA ``embedding_and_mapping.pt`` with
``torch.load(weights_only=True)`` and two stand-ins (§9.2).

The small helpers at the end (checksums, non-finite counting) are shared by the pickle readers in
:mod:`misalatch.data.readers`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from misalatch.errors import DataFormatError, UnsafePickleError

log = logging.getLogger(__name__)

# DATA.md §9.1, exactly. Plain containers and scalars need no globals at all.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),
    }
)

# Errors a malformed or truncated byte stream can raise inside the unpickler.
_CORRUPT = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, ImportError, OverflowError, UnicodeDecodeError, MemoryError)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in :data:`ALLOWED_GLOBALS`.

    ``source`` names the file in error messages. Persistent ids are refused (the base class
    raises ``UnpicklingError`` when no ``persistent_load`` is defined).
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str, encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self.source}: refused to load global {module}.{name} (only numpy arrays/scalars, "
                "OrderedDict and plain containers are allowed; nothing from this file was executed)"
            )
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            # numpy 2 renamed numpy.core to numpy._core; the old path only warns and forwards.
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def _load_stream(fh: io.BufferedIOBase, source: str, encoding: str) -> object:
    try:
        return RestrictedUnpickler(fh, source=source, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except _CORRUPT as err:
        raise DataFormatError(
            f"{source}: not a readable pickle ({type(err).__name__}: {err}); the file may be truncated "
            "or of another format"
        ) from err


def safe_loads(data: bytes, *, source: str = "<bytes>", encoding: str = "latin1") -> object:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; see :func:`safe_load`."""
    return _load_stream(io.BytesIO(data), source, encoding)


def safe_load(path: str | os.PathLike[str], *, encoding: str = "latin1") -> object:
    """Load a third-party pickle, admitting only numpy arrays, scalars and plain containers.

    ``encoding="latin1"`` (the default) reads Python-2 pickles: their byte strings, including numpy
    array buffers, decode one byte per character, which numpy maps back losslessly. Python-3
    pickles are unaffected. Raises ``UnsafePickleError`` naming the file and the refused
    ``module.name``; ``DataFormatError`` for a file that is not a (complete) pickle.
    """
    path = Path(path)
    try:
        fh = open(path, "rb")  # streamed: multi-GB MMSA files are not held twice in memory
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read ({err.strerror or err})") from err
    with fh:
        return _load_stream(fh, str(path), encoding)


# ---- embedding_and_mapping.pt (DATA.md §9.2) ----


def _return_unk() -> int:
    """Stand-in for the original ``create_dataset.return_unk`` (the ``<unk>`` id)."""
    return 0


def _defaultdict_as_dict(default_factory: object = None, *args: object) -> dict:
    """Stand-in for ``collections.defaultdict``: torch's weights-only unpickler can only fill a
    plain dict, and the factory only served to map unknown words to 0, which callers do."""
    return dict(*args)


def _torch_reason(message: str) -> str:
    """The informative line of torch's long weights-only refusal (e.g. the refused GLOBAL)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "WeightsUnpickler error" in ln or "Unsupported" in ln:
            i = lines.index(ln)
            return " ".join(lines[i:i + 2] if ln.endswith(":") else [ln])[:300]
    return (lines[-1] if lines else message)[:300]


def load_embedding_and_mapping(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Read the original MISA ``embedding_and_mapping.pt``: ``(embedding (V, d_e) float32, word2id)``.

    Uses ``torch.load(weights_only=True)`` with exactly two extra globals: ``collections.defaultdict``
    and ``create_dataset.return_unk``, both replaced by harmless stand-ins. Anything else is refused
    with ``UnsafePickleError``; the pickles' own word ids suffice for evaluation without this file.
    """
    import torch  # heavy; only this loader needs it

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: embedding_and_mapping file not found")
    allowed = [(_defaultdict_as_dict, "collections.defaultdict"), (_return_unk, "create_dataset.return_unk")]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafePickleError(
            f"{path}: refused by torch.load(weights_only=True) with only collections.defaultdict and "
            f"create_dataset.return_unk allowed ({_torch_reason(str(err))}); the pickles' word ids "
            "suffice for evaluation, so the file can be left out"
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise DataFormatError(f"{path}: not a readable torch file ({type(err).__name__}: {err})") from err
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise DataFormatError(f"{path}: expected a pair (embedding, word2id), found {type(obj).__name__}")
    emb, word2id = obj
    if not isinstance(emb, torch.Tensor) or emb.ndim != 2:
        shape = tuple(emb.shape) if hasattr(emb, "shape") else type(emb).__name__
        raise DataFormatError(f"{path}: embedding must be a 2-D tensor (V, d_e), found {shape}")
    if not isinstance(word2id, dict) or not all(isinstance(k, str) and isinstance(v, int)
                                               for k, v in word2id.items()):
        raise DataFormatError(f"{path}: word2id must map str to int, found {type(word2id).__name__}")
    bad = [w for w, i in word2id.items() if not 0 <= i < emb.shape[0]]
    if bad:
        raise DataFormatError(
            f"{path}: {len(bad)} word ids outside the embedding's {emb.shape[0]} rows (e.g. {bad[0]!r})"
        )
    return emb.detach().to(torch.float32).numpy().copy(), dict(word2id)


# ---- helpers shared by the pickle readers ----


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, recorded in ``meta["sources"]`` so results name their inputs."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_entry(path: str | os.PathLike[str]) -> dict[str, str]:
    """One ``meta["sources"]`` entry: ``{"path", "sha256"}`` (the text CSV reader's layout)."""
    return {"path": str(path), "sha256": sha256_file(path)}


class NonFiniteCounter:
    """Replace NaN/±inf by 0 (DATA.md §3.5 step 1) and count them per field for ``meta["nonfinite"]``."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def clean(self, arr: Any, field: str, *, where: str = "", dtype: type = np.float32) -> np.ndarray:
        """A fresh contiguous ``dtype`` copy of ``arr`` with non-finite values set to 0 (counted).

        ``where`` (file, split, sample) prefixes the error raised for non-numeric content.
        """
        try:
            out = np.array(arr, dtype=dtype, copy=True, order="C")
        except (TypeError, ValueError) as err:
            raise DataFormatError(
                f"{where}: {field} must be numeric, found {type(arr).__name__} ({err})"
            ) from err
        bad = ~np.isfinite(out)
        n = int(bad.sum())
        if n:
            out[bad] = 0
            self.counts[field] = self.counts.get(field, 0) + n
        return out

    def clean_label(self, value: float, field: str = "label") -> float:
        value = float(value)
        if not np.isfinite(value):
            self.counts[field] = self.counts.get(field, 0) + 1
            return 0.0
        return value


def infer_dataset_name(path: str | os.PathLike[str], default: str) -> str:
    """Guess ``mosi`` / ``mosei`` / ``ur_funny`` from a file name or its nearest folders (e.g.
    ``MOSI/Processed/aligned_50.pkl``, ``mosei_senti_data.pkl``, ``humor.pkl``); ``default`` otherwise."""
    p = Path(path).absolute()
    parts = [p.name, p.parent.name] + ([p.parent.parent.name] if p.suffix else [])
    for part in parts:
        low = part.lower()
        if "mosei" in low:
            return "mosei"
        if "mosi" in low:
            return "mosi"
        if "funny" in low or "humor" in low:
            return "ur_funny"
    return default


def describe(obj: object) -> str:
    """A short description of an unpickled object for error messages (type, shape or keys)."""
    if isinstance(obj, np.ndarray):
        return f"array of shape {obj.shape} ({obj.dtype})"
    if isinstance(obj, dict):
        keys = list(obj)[:8]
        more = ", ..." if len(obj) > 8 else ""
        return f"dict with keys {', '.join(repr(k) for k in keys)}{more}"
    if isinstance(obj, (list, tuple)):
        return f"{type(obj).__name__} of length {len(obj)}"
    return type(obj).__name__


def record_drops(label: str, split: str, drops: "Counter[str]", dropped: "Counter[str]",
                 dropped_by_split: dict[str, dict[str, int]]) -> None:
    """Add one split's drop counts to the dataset totals and log them once (shared by the readers)."""
    if drops:
        dropped.update(drops)
        dropped_by_split[split] = dict(drops)
        log.info("%s: split %s: dropped %s", label, split, dict(drops))
