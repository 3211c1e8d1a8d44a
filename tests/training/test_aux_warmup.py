"""The auxiliary-loss warm-up of MISA's feedback variants (docs/experiments.md): the difference,
similarity and reconstruction weights ramp from 0 to their values over the feedback warm-up by
default, only for --model misa with a feedback variant; plain MISA and --model mmlatch train with
the full objective from epoch 1, as the originals do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from misalatch.data.batching import BatchSpec
from misalatch.data.canonical import Segment
from misalatch.errors import ConfigError
from misalatch.models.config import MisaConfig
from misalatch.models.misa import MISA
from misalatch.models.outputs import TaskLosses
from misalatch.training.config import TrainConfig
from misalatch.training.loop import aux_scale, fit

SPEC = BatchSpec(text_encoder="vectors", visual_dim=8, acoustic_dim=4)


def _segments(n: int = 8) -> list[Segment]:
    rng = np.random.default_rng(0)
    return [Segment(id=str(i), label=float(rng.normal()), text_vectors=rng.normal(size=(3, 4)).astype(np.float32),
                    visual=rng.normal(size=(3, 8)).astype(np.float32), acoustic=rng.normal(size=(3, 4)).astype(np.float32))
            for i in range(n)]


def _model(feedback: str = "static") -> MISA:
    torch.manual_seed(0)
    return MISA(MisaConfig(text_encoder="vectors", text_input_size=4, visual_size=8, acoustic_size=4, hidden_size=8,
                           feedback=feedback))


def test_the_ramp_is_linear_from_zero_and_ends_at_full_weight() -> None:
    assert [aux_scale(e, 4) for e in range(1, 8)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert aux_scale(1, 0) == 1.0 and aux_scale(50, 0) == 1.0


def test_the_default_applies_to_misa_feedback_variants_only() -> None:
    assert TrainConfig().resolved_aux_warmup_epochs == 0  # plain MISA: the original objective
    for variant in ("sequence", "sequence-mlp", "static", "static-projected"):
        assert TrainConfig(feedback=variant).resolved_aux_warmup_epochs == 10  # the feedback warm-up
    assert TrainConfig(feedback="static", warmup_epochs=4).resolved_aux_warmup_epochs == 4
    assert TrainConfig(model="mmlatch", feedback="sequence").resolved_aux_warmup_epochs == 0
    assert TrainConfig(feedback="static", aux_warmup_epochs=0).resolved_aux_warmup_epochs == 0
    with pytest.raises(ConfigError, match="aux_warmup_epochs"):
        TrainConfig(feedback="static", aux_warmup_epochs=-1)


def test_scaling_weights_every_term_beside_the_task() -> None:
    from misalatch.data.batching import iterate_batches

    model = _model()
    batch = next(iter(iterate_batches(_segments(), SPEC, 8)))
    losses = model.losses(model(batch.inputs), batch.labels)
    cfg = model.config
    aux = cfg.diff_weight * losses.diff + cfg.sim_weight * losses.sim + cfg.recon_weight * losses.recon
    half = losses.with_aux_scale(0.5)
    assert torch.allclose(half.total, losses.task + 0.5 * aux) and half.task is losses.task and half.diff is losses.diff
    assert torch.allclose(losses.with_aux_scale(0.0).total, losses.task)
    task_only = TaskLosses(task=torch.tensor(1.5), total=torch.tensor(1.5))
    assert task_only.with_aux_scale(0.0).total.item() == 1.5  # a model without auxiliary losses is unchanged


def test_fit_records_the_ramp_and_trains_on_the_task_alone_in_epoch_one() -> None:
    rows: list[dict] = []
    segs = _segments()
    fit(_model(), segs, segs[:4], SPEC, batch_size=4, lr=1e-3, clip_value=1.0, max_epochs=5, patience=10, trials=1,
        lr_decay=0.5, dev_loss_reduction="batch_mean", generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"), aux_warmup_epochs=4, on_epoch=rows.append)
    assert [r["aux_scale"] for r in rows] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert rows[0]["train_total"] == pytest.approx(rows[0]["train_task"])
    assert rows[-1]["train_total"] > rows[-1]["train_task"]  # full weights at the end
    plain: list[dict] = []
    fit(_model("none"), segs, segs[:4], SPEC, batch_size=4, lr=1e-3, clip_value=1.0, max_epochs=1, patience=10,
        trials=1, lr_decay=0.5, dev_loss_reduction="batch_mean", generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"), on_epoch=plain.append)
    assert "aux_scale" not in plain[0] and plain[0]["train_total"] > plain[0]["train_task"]
