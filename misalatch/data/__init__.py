"""Data: the canonical dataset, loading by ``--data``, batching, text preparation and the prepared folder.

The names below are imported on first use (batching needs torch), so importing a reader or the
canonical dataset does not pay for them. ``misalatch.load_dataset`` is the way in; these turn its
segments into the model's batches.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "Batch": ("misalatch.data.batching", "Batch"),
    "BatchSpec": ("misalatch.data.batching", "BatchSpec"),
    "collate": ("misalatch.data.batching", "collate"),
    "iterate_batches": ("misalatch.data.batching", "iterate_batches"),
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'misalatch.data' has no attribute {name!r}")
