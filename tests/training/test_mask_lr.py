"""The mask-generator learning-rate factor of MISA's feedback variants (docs/experiments.md,
"Take-off under MISA's full objective"): on by default for --model misa with feedback, absent for
plain MISA and --model mmlatch, and kept through a restore's learning-rate decay."""

from __future__ import annotations

import pytest
import torch

from misalatch.data.batching import BatchSpec
from misalatch.data.canonical import Segment
from misalatch.errors import ConfigError
from misalatch.models.config import MisaConfig
from misalatch.models.misa import MISA
from misalatch.training.config import FEEDBACK_MASK_LR_FACTOR, TrainConfig
from misalatch.training.loop import fit, param_groups

import numpy as np


def _model(feedback: str) -> MISA:
    torch.manual_seed(0)
    return MISA(MisaConfig(text_encoder="vectors", text_input_size=4, visual_size=8, acoustic_size=4, hidden_size=8,
                           feedback=feedback))


def test_the_default_factor_applies_to_misa_feedback_variants_only() -> None:
    assert FEEDBACK_MASK_LR_FACTOR == 10.0
    assert TrainConfig().resolved_mask_lr_factor == 1.0  # plain MISA: no generators, one learning rate
    for variant in ("sequence", "sequence-mlp", "static", "static-projected"):
        assert TrainConfig(feedback=variant).resolved_mask_lr_factor == FEEDBACK_MASK_LR_FACTOR
    assert TrainConfig(model="mmlatch", feedback="sequence").resolved_mask_lr_factor == 1.0
    assert TrainConfig(feedback="static", mask_lr_factor=1.0).resolved_mask_lr_factor == 1.0
    with pytest.raises(ConfigError, match="mask_lr_factor"):
        TrainConfig(feedback="static", mask_lr_factor=0.0)


def test_plain_misa_keeps_one_parameter_group_in_the_original_order() -> None:
    model = _model("none")
    groups = param_groups(model, 1e-4, {"feedback.": 10.0})
    assert len(groups) == 1 and groups[0]["lr"] == 1e-4
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in model.parameters()]


def test_feedback_generators_get_the_factor() -> None:
    model = _model("static")
    groups = param_groups(model, 1e-3, {"feedback.": 10.0})
    names = {id(p): n for n, p in model.named_parameters()}
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-2)]
    assert all(names[id(p)].startswith("feedback.") for p in groups[1]["params"])
    assert not any(names[id(p)].startswith("feedback.") for p in groups[0]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(param_groups(model, 1e-3, {"feedback.": 1.0})) == 1


def test_a_restore_decays_every_group_and_keeps_the_ratio() -> None:
    rng = np.random.default_rng(0)
    segs = [Segment(id=str(i), label=float(rng.normal()), text_vectors=rng.normal(size=(3, 4)).astype(np.float32),
                    visual=rng.normal(size=(3, 8)).astype(np.float32), acoustic=rng.normal(size=(3, 4)).astype(np.float32))
            for i in range(8)]
    lrs: list[list[float]] = []
    fit(_model("static"), segs, segs[:4], BatchSpec(text_encoder="vectors", visual_dim=8, acoustic_dim=4),
        batch_size=4, lr=1e-3, clip_value=1.0, max_epochs=6, patience=0, trials=3, lr_decay=0.5,
        dev_loss_reduction="batch_mean", generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
        lr_factors={"feedback.": 10.0},
        on_epoch_end=lambda state: lrs.append([g["lr"] for g in state.optimizer["param_groups"]]))
    assert all(fb == pytest.approx(10 * base) for base, fb in lrs)
    assert min(base for base, _ in lrs) < 1e-3  # a restore happened and decayed both groups
