"""misalatch: MISA and MISA+MMLatch for multimodal sentiment analysis.

The top-level names are imported lazily, so ``import misalatch`` stays light (no torch import until
a name that needs it is used).
"""

from __future__ import annotations

from misalatch.io.lazy import lazy_attributes

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

__getattr__ = lazy_attributes(__name__, _LAZY)
