"""Data: the canonical dataset, loading by ``--data``, batching, text preparation and the prepared folder.

The names below are imported on first use (batching needs torch), so importing a reader or the
canonical dataset does not pay for them. ``misalatch.load_dataset`` is the way in; these turn its
segments into the model's batches.
"""

from __future__ import annotations

from misalatch.io.lazy import lazy_attributes

_LAZY = {
    "Batch": ("misalatch.data.batching", "Batch"),
    "BatchSpec": ("misalatch.data.batching", "BatchSpec"),
    "collate": ("misalatch.data.batching", "collate"),
    "iterate_batches": ("misalatch.data.batching", "iterate_batches"),
}

__all__ = list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY)
