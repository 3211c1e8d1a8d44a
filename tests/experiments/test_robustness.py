"""Robustness curves: determinism, level-0 identity, modality drop = zeros, degradation, files, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from misalatch.cli import main as cli_main  # noqa: E402
from misalatch.data.batching import collate
from misalatch.data.cache import save_prepared
from misalatch.data.canonical import CanonicalDataset, Segment
from misalatch.errors import ConfigError
from misalatch.experiments.robustness import (
    Perturbation,
    RobustnessConfig,
    curve_auc,
    evaluate_perturbed,
    find_runs,
    perturb_inputs,
    run_robustness,
    train_feature_scale,
)
from misalatch.training.config import TrainConfig
from misalatch.training.loop import evaluate
from misalatch.training.run_dir import evaluate_run, load_run
from misalatch.training.runs import train

TINY = dict(synthetic_size=(48, 24, 24), text_encoder="learned", hidden_size=16, batch_size=16, max_epochs=1)
SMALL = RobustnessConfig(noise_levels=(0.0, 0.9), frame_rates=(0.0, 0.5), seeds=(0, 1), conditions=("noise", "frames"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two intra-op threads on a shared, loaded 2-core machine spin ~30x slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def visual_cue_dataset(sizes: tuple[int, int, int] = (192, 32, 48), seed: int = 0) -> CanonicalDataset:
    """Word-aligned data whose label is carried ONLY by the visual features (dims 0-1 = label);
    text vectors and acoustic features are pure noise. A model must use vision to fit it."""
    rng = np.random.default_rng(seed)
    splits, k = {}, 0
    for split, size in zip(("train", "valid", "test"), sizes):
        segs = []
        for _ in range(size):
            steps, label = int(rng.integers(3, 9)), float(rng.uniform(-3, 3))
            visual = rng.normal(size=(steps, 6))
            visual[:, :2] = label + 0.3 * rng.normal(size=(steps, 2))
            segs.append(Segment(id=f"cue_{k:04d}", label=label, visual=visual.astype(np.float32),
                                text_vectors=rng.normal(size=(steps, 8)).astype(np.float32),
                                acoustic=rng.normal(size=(steps, 4)).astype(np.float32)))
            k += 1
        splits[split] = segs
    return CanonicalDataset(name="visual-cue", task="regression", splits=splits, synthetic=True)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two runs: the synthetic default (GloVe-path text) and the visual-cue data (text vectors)."""
    base = tmp_path_factory.mktemp("robustness")
    root = base / "sweep"
    train(TrainConfig(out=str(root / "synthetic"), **TINY))
    data = save_prepared(visual_cue_dataset(), base / "visual-cue-data")
    train(TrainConfig(data=str(data), out=str(root / "visual"), hidden_size=16, batch_size=32, max_epochs=5, lr=5e-3))
    return root


@pytest.fixture(scope="module")
def synthetic_run(sweep: Path):
    return load_run(sweep / "synthetic", device="cpu")


@pytest.fixture(scope="module")
def visual_run(sweep: Path):
    return load_run(sweep / "visual", device="cpu")


# ---- determinism and identity ----
def test_same_seed_same_metrics_other_seed_differs(synthetic_run) -> None:
    first = run_robustness(synthetic_run, SMALL)
    second = run_robustness(synthetic_run, SMALL)
    assert [(r.condition, r.modalities, r.level, r.seed, r.loss, r.metrics) for r in first.records] == \
        [(r.condition, r.modalities, r.level, r.seed, r.loss, r.metrics) for r in second.records]
    for condition, level in (("noise", 0.9), ("frames", 0.5)):
        by_seed = {r.seed: r for r in first.records if r.condition == condition and r.modalities == "av" and r.level == level}
        assert by_seed[0].loss != by_seed[1].loss, condition


def test_level_zero_is_plain_evaluation(synthetic_run) -> None:
    test = synthetic_run.dataset.splits["test"]
    scale = train_feature_scale(synthetic_run.dataset.splits["train"], "av")
    plain = evaluate(synthetic_run.model, test, synthetic_run.spec, batch_size=16, device=synthetic_run.device)
    for condition in ("noise", "frames"):
        zero = evaluate_perturbed(synthetic_run, test, Perturbation(condition, "av", 0.0, seed=3), scale, batch_size=16)
        assert np.array_equal(zero.predictions, plain.predictions) and zero.metrics == plain.metrics
    result = run_robustness(synthetic_run, RobustnessConfig(noise_levels=(0.0, 0.5), seeds=(0, 1), conditions=("noise",)))
    reference = evaluate_run(synthetic_run, ("test",))["test"]
    for rec in result.records:
        if rec.level == 0.0:
            assert rec.metrics == reference.metrics and rec.loss == reference.loss


def test_noise_is_level_times_train_std_on_valid_steps_only(synthetic_run) -> None:
    train_split = synthetic_run.dataset.splits["train"]
    scale = train_feature_scale(train_split, "av")
    stacked = np.concatenate([s.visual for s in train_split]).astype(np.float64)
    assert np.allclose(scale.std.v, stacked.std(axis=0), rtol=1e-5)  # population std over all train steps
    assert scale.timesteps.v == stacked.shape[0]
    segments = synthetic_run.dataset.splits["test"]
    batch = collate(segments, synthetic_run.spec)
    noisy = perturb_inputs(batch.inputs, batch.ids, Perturbation("noise", "v", 0.5, seed=0), scale)
    delta = (noisy.visual - batch.inputs.visual).numpy()
    valid = np.arange(delta.shape[0])[:, None] < batch.inputs.lengths.numpy()[None, :]  # (T, B)
    assert np.all(delta[~valid] == 0.0)  # padding untouched
    ratio = delta[valid] / (0.5 * scale.std.v)
    assert abs(ratio.std() - 1.0) < 0.03 and abs(ratio.mean()) < 0.03
    assert torch.equal(noisy.acoustic, batch.inputs.acoustic)
    # the noise of a segment does not depend on the batch it is in
    alone = collate(segments[3:4], synthetic_run.spec)
    single = perturb_inputs(alone.inputs, alone.ids, Perturbation("noise", "v", 0.5, seed=0), scale)
    n = int(alone.inputs.lengths[0])
    assert torch.equal(single.visual[:n, 0], noisy.visual[:n, 3])


def test_frames_are_zeroed_at_the_same_steps_and_nested(synthetic_run) -> None:
    batch = collate(synthetic_run.dataset.splits["test"], synthetic_run.spec)
    scale = train_feature_scale(synthetic_run.dataset.splits["train"], "av")
    dropped = {}
    for rate in (0.3, 0.6):
        out = perturb_inputs(batch.inputs, batch.ids, Perturbation("frames", "av", rate, seed=1), scale)
        zero_v = (out.visual == 0).all(dim=2) & ~(batch.inputs.visual == 0).all(dim=2)
        zero_a = (out.acoustic == 0).all(dim=2) & ~(batch.inputs.acoustic == 0).all(dim=2)
        assert torch.equal(zero_v, zero_a)  # word-aligned: the same words lose both modalities
        valid = torch.arange(out.visual.shape[0])[:, None] < batch.inputs.lengths[None, :]
        assert abs(float(zero_v[valid].float().mean()) - rate) < 0.1
        kept = ~zero_v & valid
        assert torch.equal(out.visual[kept], batch.inputs.visual[kept])  # the rest is untouched
        dropped[rate] = zero_v
    assert bool((dropped[0.3] <= dropped[0.6]).all())  # common random numbers: nested drops


def test_dropping_a_modality_equals_feeding_zeros(synthetic_run, visual_run) -> None:
    for run, modality, name in ((synthetic_run, "v", "visual"), (visual_run, "v", "visual"),
                                (visual_run, "a", "acoustic"), (visual_run, "t", "text_vectors")):
        test = run.dataset.splits["test"]
        scale = train_feature_scale(run.dataset.splits["train"], "")
        dropped = evaluate_perturbed(run, test, Perturbation("drop", modality, 1.0), scale)

        def zeros(batch, name=name):
            inputs = batch.inputs
            setattr(inputs, name, torch.zeros_like(getattr(inputs, name)))
            return inputs

        manual = evaluate(run.model, test, run.spec, batch_size=run.config.batch_size, device=run.device, perturb=zeros)
        assert np.array_equal(dropped.predictions, manual.predictions), (run.run_dir.name, modality)
        if run is visual_run and modality == "v":  # the label's carrier: dropping it must change the output
            plain = evaluate_run(run, ("test",))["test"]
            assert not np.array_equal(dropped.predictions, plain.predictions)


def test_noise_degrades_the_modality_that_carries_the_label(visual_run) -> None:
    config = RobustnessConfig(noise_levels=(0.0, 0.5, 0.9), frame_rates=(0.0, 0.5), seeds=(0, 1),
                              conditions=("noise", "drop"))
    result = run_robustness(visual_run, config)
    assert result.perturbable == "tav" and not result.notes

    def mae(condition: str, mods: str, level: float) -> float:
        values = [r.metrics["mae"] for r in result.records
                  if r.condition == condition and r.modalities == mods and r.level == level]
        return float(np.mean(values))

    clean = result.clean.metrics["mae"]
    assert clean < 0.9, f"the visual-cue run did not learn (mae {clean:.3f}); the test needs a trained model"
    assert mae("noise", "v", 0.5) > clean + 0.01
    assert mae("noise", "v", 0.9) > mae("noise", "v", 0.5) + 0.03
    for other in ("t", "a"):  # pure-noise modalities: their noise barely matters
        assert abs(mae("noise", other, 0.9) - clean) < 0.5 * (mae("noise", "v", 0.9) - clean)
    assert mae("drop", "v", 1.0) > clean + 0.3


# ---- areas ----
def test_auc_by_hand() -> None:
    assert curve_auc([0.0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    # unequal steps: (0.1 * 1 + 0.4 * (1 + 0) / 2) / 0.5 = 0.6
    assert curve_auc([0.0, 0.1, 0.5], [1.0, 1.0, 0.0]) == pytest.approx(0.6)
    assert curve_auc([0.2, 0.4], [0.7, 0.7]) == pytest.approx(0.7)  # normalised by the range: a mean height
    with pytest.raises(ConfigError):
        curve_auc([0.0], [1.0])
    with pytest.raises(ConfigError):
        curve_auc([0.0, 0.5, 0.5], [1.0, 1.0, 1.0])


def test_config_is_validated() -> None:
    for bad in (dict(noise_levels=(0.5,)), dict(noise_levels=(0.5, 0.1)), dict(frame_rates=(0.0, 1.5)),
                dict(seeds=()), dict(seeds=(1, 1)), dict(seeds=(-1,)), dict(conditions=("blur",)),
                dict(noise_levels=(0.0, float("nan")))):
        with pytest.raises(ConfigError):
            RobustnessConfig(**bad)


# ---- files and the command ----
def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_command_writes_curves_for_a_sweep(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "curves"
    code = cli_main(["robustness", str(sweep), "--out", str(out), "--levels", "0", "0.9", "--frame-rates", "0", "0.5",
                     "--seeds", "0", "1", "--metrics", "mae", "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "AUC" in printed and "not applicable" in printed
    raw = _rows(out / "raw.csv")
    assert list(raw[0])[:7] == ["variant", "run", "condition", "modalities", "level", "seed", "loss"]
    assert {"mae", "corr", "acc7"} <= set(raw[0])
    assert {r["variant"] for r in raw} == {"synthetic", "visual"}
    assert {r["modalities"] for r in raw if r["variant"] == "visual" and r["condition"] == "noise"} == {"t", "a", "v", "tav"}
    assert {r["modalities"] for r in raw if r["variant"] == "synthetic" and r["condition"] == "noise"} == {"a", "v", "av"}
    curves = _rows(out / "curves.csv")
    assert list(curves[0]) == ["variant", "condition", "modalities", "level", "metric", "mean", "std", "n"]
    assert {r["n"] for r in curves} == {"2"}  # one run x two noise seeds per variant
    areas = _rows(out / "auc.csv")
    assert list(areas[0]) == ["variant", "condition", "modalities", "metric", "auc", "std", "n", "level_min", "level_max"]
    # the stored area is the trapezoid of the stored curve
    for area in (a for a in areas if a["metric"] == "mae"):
        pts = {float(c["level"]): float(c["mean"]) for c in curves if (c["variant"], c["condition"], c["modalities"],
               c["metric"]) == (area["variant"], area["condition"], area["modalities"], "mae")}
        assert float(area["auc"]) == pytest.approx(curve_auc(sorted(pts), [pts[k] for k in sorted(pts)]))
    drops = _rows(out / "drop.csv")
    assert list(drops[0]) == ["variant", "modalities", "metric", "mean", "std", "n", "clean"]
    for name in ("noise-mae.png", "frames-mae.png", "drop-mae.png"):
        data = (out / name).read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "robustness.json").read_text())
    assert doc["format"] == "misalatch-robustness" and doc["synthetic"] is True
    visual = next(r for r in doc["runs"] if r["variant"] == "visual")
    train_visual = np.concatenate([s.visual for s in visual_cue_dataset().splits["train"]]).astype(np.float64)
    assert np.allclose(visual["train_scale"]["std"]["v"], train_visual.std(axis=0), rtol=1e-5)
    assert visual["train_scale"]["std"]["t"] is not None
    synthetic = next(r for r in doc["runs"] if r["variant"] == "synthetic")
    assert synthetic["train_scale"]["std"]["t"] is None and synthetic["perturbed"] == "av"
    assert (synthetic["model"], synthetic["feedback"]) == ("misa", "none")  # what was perturbed, by name
    assert json.loads((out / "run.json").read_text())["kind"] == "robustness"
    # an existing output is never overwritten without --overwrite
    before = (out / "raw.csv").read_bytes()
    assert cli_main(["robustness", str(sweep / "synthetic"), "--out", str(out), "--device", "cpu"]) == 1
    assert (out / "raw.csv").read_bytes() == before
    assert "not empty" in capsys.readouterr().err


def test_command_refuses_a_folder_without_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "config.yaml").write_text("data: synthetic\n")
    out = tmp_path / "out"
    assert cli_main(["robustness", str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a misalatch run folder" in err[0] and str(folder) in err[0]
    assert not out.exists()
    assert cli_main(["robustness", str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        find_runs([])


def test_runs_are_found_and_labelled_by_variant(tmp_path: Path) -> None:
    for rel in ("sweep/none/seed-1", "sweep/none/seed-2", "sweep/sequence", "sweep/.staging/x", "other/run"):
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "best.json").write_text("{}")
    (tmp_path / "sweep" / "link").symlink_to(tmp_path / "other", target_is_directory=True)
    found = find_runs([tmp_path / "sweep"])
    assert [(p.relative_to(tmp_path).as_posix(), label) for p, label in found] == [
        ("sweep/none/seed-1", "none"), ("sweep/none/seed-2", "none"), ("sweep/sequence", "sequence")]
    found = find_runs([tmp_path / "sweep" / "sequence", tmp_path / "other", tmp_path / "sweep" / "sequence"])
    assert [label for _, label in found] == ["sequence", "other/run"]  # the repeated run counted once
