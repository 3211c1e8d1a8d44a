"""Speed work that must not change the math: bucketed batches, sorted evaluation, multi-tensor Adam,
and a smoke run of the speed benchmark (a benchmark, not a timed test: nothing here checks a time)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from misalatch.data.batching import BUCKET_POOL_BATCHES, BatchSpec, batch_order, collate, segment_lengths
from misalatch.data.synthetic import make_synthetic_mosi
from misalatch.data.text import build_vocab
from misalatch.errors import ConfigError
from misalatch.models.config import MisaConfig
from misalatch.models.losses import task_loss
from misalatch.models.misa import MISA
from misalatch.training.config import TrainConfig
from misalatch.training.loop import evaluate, fit, make_optimizer

REPO = Path(__file__).resolve().parents[2]


def _lengths(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 60, size=n)


def test_bucketed_batches_cover_every_sample_once_and_group_lengths() -> None:
    lengths = _lengths(1000)
    gen = torch.Generator().manual_seed(0)
    batches = batch_order(1000, 16, shuffle=True, generator=gen, batching="bucketed", lengths=lengths)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert all(len(b) <= 16 for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    random = batch_order(1000, 16, shuffle=True, generator=torch.Generator().manual_seed(0), lengths=lengths)
    padded_random = sum(int(lengths[b].max()) * len(b) for b in random)
    assert padded < 0.7 * padded_random  # fewer padded steps than random batches of the same seed


def test_bucketed_batches_are_shuffled_across_and_within_buckets() -> None:
    lengths = np.repeat([5, 9], 16 * BUCKET_POOL_BATCHES)  # two lengths: many ties inside every pool
    a = batch_order(len(lengths), 16, shuffle=True, generator=torch.Generator().manual_seed(1), batching="bucketed",
                    lengths=lengths)
    b = batch_order(len(lengths), 16, shuffle=True, generator=torch.Generator().manual_seed(2), batching="bucketed",
                    lengths=lengths)
    # batch order is not sorted by length (across-bucket shuffle) ...
    maxima = [int(lengths[x].max()) for x in a]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)
    # ... and another seed gives other batch members (equal lengths stay in random order)
    assert {tuple(sorted(x.tolist())) for x in a} != {tuple(sorted(x.tolist())) for x in b}
    # same seed, same batches
    again = batch_order(len(lengths), 16, shuffle=True, generator=torch.Generator().manual_seed(1),
                        batching="bucketed", lengths=lengths)
    assert all(np.array_equal(x, y) for x, y in zip(a, again))


def test_random_batching_is_the_original_permutation_and_bad_mode_is_rejected() -> None:
    order = batch_order(50, 8, shuffle=True, generator=torch.Generator().manual_seed(3))
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(3)).tolist()
    assert np.concatenate(order).tolist() == expected
    with pytest.raises(ConfigError, match="batching"):
        batch_order(50, 8, shuffle=True, batching="sorted")


def _tiny_model_and_data(n: int = 40):
    data = build_vocab(make_synthetic_mosi(n_train=n, n_valid=4, n_test=4, seed=0, visual_dim=8, acoustic_dim=8))
    segs = data.splits["train"]
    spec = BatchSpec(text_encoder="glove", visual_dim=segs[0].visual.shape[1], acoustic_dim=segs[0].acoustic.shape[1])
    torch.manual_seed(0)
    cfg = MisaConfig(text_encoder="glove", text_input_size=8, vocab_size=len(data.vocab), hidden_size=8,
                     visual_size=spec.visual_dim, acoustic_size=spec.acoustic_dim)
    return MISA(cfg), segs, spec


def test_sorted_evaluation_gives_the_file_order_losses_and_predictions() -> None:
    model, segs, spec = _tiny_model_and_data()
    assert len(set(segment_lengths(segs, spec).tolist())) > 3  # the sort really reorders
    model.eval()
    with torch.no_grad():
        batches = [collate(segs[i : i + 16], spec) for i in range(0, len(segs), 16)]
        outs = [model(b.inputs) for b in batches]
        means = [float(task_loss(o.prediction, b.labels, 1)) for o, b in zip(outs, batches)]
        preds = torch.cat([o.prediction for o in outs]).reshape(-1).numpy()
    got = evaluate(model, segs, spec, batch_size=16, device=torch.device("cpu"))
    assert got.ids == [s.id for s in segs]
    np.testing.assert_allclose(got.predictions, preds, rtol=1e-5, atol=1e-6)
    assert got.loss == pytest.approx(float(np.mean(means)), rel=1e-6)
    sample = evaluate(model, segs, spec, batch_size=16, device=torch.device("cpu"), reduction="sample_mean")
    assert sample.loss == pytest.approx(float(np.mean((preds - got.labels) ** 2)), rel=1e-5)


def test_training_batches_default_to_the_original_random_order() -> None:
    assert TrainConfig().batching == "random"
    assert TrainConfig.from_dict({"batching": "bucketed"}).batching == "bucketed"


def _fit_tiny(batching: str, *, resume=None, max_epochs: int = 4):
    """fit() on tiny synthetic data (5 batches per epoch), every epoch's resume state kept in memory."""
    torch.manual_seed(0)
    model, segs, spec = _tiny_model_and_data(40)
    states = []
    result = fit(model, segs, segs[:8], spec, batch_size=8, lr=0.01, clip_value=1.0, max_epochs=max_epochs,
                 patience=1, trials=2, lr_decay=0.5, dev_loss_reduction="batch_mean",
                 generator=torch.Generator().manual_seed(7), device=torch.device("cpu"), batching=batching,
                 on_epoch_end=lambda state: states.append(copy.deepcopy(state)), resume=resume)
    return result, states


@pytest.mark.parametrize("batching", ["random", "bucketed"])
def test_resume_is_exact_with_either_batching(batching: str) -> None:
    reference, states = _fit_tiny(batching)
    assert len(reference.history) >= 3
    resumed, _ = _fit_tiny(batching, resume=states[0])  # continue after epoch 1 in a fresh process state
    assert resumed.history == reference.history  # same batches, dropout masks, losses, decisions
    assert resumed.best_epoch == reference.best_epoch
    assert all(torch.equal(resumed.best_state[k], v) for k, v in reference.best_state.items())


def test_batching_mode_reaches_training() -> None:
    random_run, _ = _fit_tiny("random", max_epochs=1)
    bucketed_run, _ = _fit_tiny("bucketed", max_epochs=1)
    assert random_run.history[0]["train_total"] != bucketed_run.history[0]["train_total"]


def test_multi_tensor_adam_matches_the_default_bitwise() -> None:
    model, segs, spec = _tiny_model_and_data(24)
    batch = collate(segs[:12], spec)
    finals = []
    for make in (lambda p: torch.optim.Adam(p, lr=1e-3, foreach=False), lambda p: make_optimizer(p, 1e-3)):
        torch.manual_seed(0)
        m, _, _ = _tiny_model_and_data(24)
        m.eval()
        params = [p for p in m.parameters() if p.requires_grad]
        opt = make(params)
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            m(batch.inputs, batch.labels).losses.total.backward()
            opt.step()
        finals.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*finals))


def test_speed_benchmark_quick_runs_and_writes_json(tmp_path: Path) -> None:
    if not (REPO / ".." / "shared" / "data" / "mosi" / "mosi_text_labels.csv").is_file():
        pytest.skip("../shared/data/mosi/mosi_text_labels.csv not available")
    out = tmp_path / "speed.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed.py"), "--quick", "--paths", "word",
                           "--variants", "none", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    report = json.loads(out.read_text())
    row = report["rows"][0]
    assert row["path"] == "word" and row["variant"] == "none" and row["params"] > 0
    assert row["epoch_ratio"] > 0 and len(row["raw"]["original_epoch"]) == 1
    assert "epoch ratio" in proc.stdout
