"""misalatch: MISA and MISA+MMLatch for multimodal sentiment analysis.

The top-level names are imported lazily, so ``import misalatch`` stays light (no torch import until
a name that needs it is used).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "train": ("misalatch.training.runs", "train"),
    "load_run": ("misalatch.training.run_dir", "load_run"),
    "evaluate_run": ("misalatch.training.run_dir", "evaluate_run"),
    "TrainConfig": ("misalatch.training.config", "TrainConfig"),
    "TrainResult": ("misalatch.training.runs", "TrainResult"),
    "MisaConfig": ("misalatch.models.config", "MisaConfig"),
    "MISA": ("misalatch.models.misa", "MISA"),
    "MisaOutput": ("misalatch.models.outputs", "MisaOutput"),
    "MMLatch": ("misalatch.models.mmlatch", "MMLatch"),
    "MMLatchConfig": ("misalatch.models.mmlatch", "MMLatchConfig"),
    "MMLatchOutput": ("misalatch.models.mmlatch", "MMLatchOutput"),
    "get_model": ("misalatch.models.registry", "get_model"),
    "ModelInputs": ("misalatch.models.outputs", "ModelInputs"),
    "load_dataset": ("misalatch.data.loading", "load_dataset"),
    "compute_metrics": ("misalatch.evaluation.metrics", "compute_metrics"),
    "extract_corpus": ("misalatch.media.corpus", "extract_corpus"),
    "ExtractOptions": ("misalatch.media.corpus", "ExtractOptions"),
    "predict_media": ("misalatch.training.predict_media", "predict_media"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'misalatch' has no attribute {name!r}")
