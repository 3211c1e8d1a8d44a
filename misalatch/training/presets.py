"""Named training presets: the starting values of a run, below a config file and flags.

A preset is a partial ``TrainConfig`` (field name → value). Order
of precedence, lowest first: the ``TrainConfig`` defaults, the preset, a ``--config`` file, flags.
Every registered model names its preset (``ModelSpec.recipe``); ``--model mmlatch`` without
``--preset`` starts from it.

``misa``: the defaults (MISA.md §11). ``mmlatch``: the original MMLatch recipe (MMLATCH.md §6):
L1 loss, Adam 5e-4, batch 32, ReduceLROnPlateau (factor 0.5, patience 2, cooldown 2, min lr =
lr / 20) stepped twice per epoch as the original (on the training set's L1, then on the validation
L1, both averaged over samples), early stopping after 10 non-improving epochs counted from epoch 1
(the toolkit's patience counts the epochs tolerated, so 9; no feedback warm-up), at most 100
epochs, no clipping; and
the model's own sizes where ``TrainConfig`` shares a field with MISA (h = 100, mask dropout 0.2,
feedback on, fixed GloVe vectors, BERT frozen).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from misalatch.models.names import Registry

PRESETS: Registry[Mapping[str, Any]] = Registry("training preset")

PRESETS.add("misa", MappingProxyType({"model": "misa"}))
PRESETS.add("mmlatch", MappingProxyType({
    "model": "mmlatch",
    "loss": "l1",
    "lr": 5e-4,
    "batch_size": 32,
    "scheduler": "plateau",
    "plateau_factor": 0.5,
    "plateau_patience": 2,
    "plateau_cooldown": 2,
    "plateau_min_lr_factor": 1 / 20,
    "patience": 9,  # stop at the 10th non-improving epoch, as the original's patience 10 (ignite)
    "warmup_epochs": 0,  # the original's patience counts from epoch 1 (no feedback warm-up)
    "plateau_steps": "train-then-dev",  # the original steps the schedule on the train, then the dev loss
    "trials": 1,
    "max_epochs": 100,
    "clip_value": 0.0,
    "dev_loss_reduction": "sample_mean",
    "hidden_size": 100,
    "feedback": "sequence",
    "mask_dropout": 0.2,
    "generator_dropout": 0.1,
    "freeze_embeddings": True,
    "bert_freeze": "all",
}))


def preset_values(name: str) -> dict[str, Any]:
    """The values of preset ``name`` (ConfigError listing the valid names if unknown)."""
    return dict(PRESETS.get(name))
