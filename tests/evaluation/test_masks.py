"""Mask export: collection at valid steps, npz layout, plots, statistics, the `misalatch masks` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from misalatch.data.batching import Batch
from misalatch.errors import ConfigError, MisalatchError
from misalatch.evaluation.masks import collect_masks, export_masks, gini, label_classes, summarize
from misalatch.models.config import MisaConfig
from misalatch.models.misa import MISA
from misalatch.models.outputs import ModelInputs

PNG = b"\x89PNG\r\n\x1a\n"
TINY_BERT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=40,
                 max_position_embeddings=32)


def _glove_batch(lengths: list[int], labels: list[float], ids: list[str], seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    t, b = int(lens.max()), len(lengths)
    valid = (torch.arange(t)[:, None] < lens[None, :])
    inputs = ModelInputs(visual=torch.randn(t, b, 5, generator=g) * valid[..., None],
                         acoustic=torch.randn(t, b, 7, generator=g) * valid[..., None], lengths=lens,
                         text_ids=torch.where(valid, torch.randint(2, 20, (t, b), generator=g), torch.ones(t, b, dtype=torch.long)))
    return Batch(inputs=inputs, labels=torch.tensor(labels)[:, None], ids=ids)


def _glove_model(feedback: str = "sequence") -> MISA:
    torch.manual_seed(0)
    return MISA(MisaConfig(text_encoder="glove", text_input_size=8, vocab_size=20, visual_size=5, acoustic_size=7,
                           hidden_size=16, feedback=feedback))


@pytest.fixture()
def batches() -> list[Batch]:
    return [_glove_batch([4, 2, 3], [-1.2, 0.0, 2.6], ["a", "b", "c$_$1/2"], 0), _glove_batch([5, 1], [0.4, -3.0], ["d", "e"], 1)]


def test_gini_and_label_classes() -> None:
    assert gini(np.ones(7)) == pytest.approx(0.0)
    assert gini(np.array([0.0, 0.0, 0.0, 1.0])) == pytest.approx(0.75)
    assert gini(np.array([1.0, 3.0])) == pytest.approx(0.25)  # (|1-3|·2) / (2·2²·mean 2)
    assert gini(np.zeros(3)) == 0.0
    classes = label_classes(np.array([-1.2, 0.0, 2.6, 0.4, -3.0]), "regression")
    assert {k: v.tolist() for k, v in classes["sign"].items()} == {"negative": [0, 4], "zero": [1], "positive": [2, 3]}
    assert classes["rounded"]["3"].tolist() == [2] and classes["rounded"]["0"].tolist() == [1, 3]
    assert {k: v.tolist() for k, v in label_classes(np.array([1.0, 0.0, 1.0]), "classification")["class"].items()} == {
        "0": [1], "1": [0, 2]}


def test_collect_keeps_valid_steps_and_matches_the_model(batches: list[Batch]) -> None:
    model = _glove_model().train()
    collected = collect_masks(model, batches)
    assert model.training  # mode restored
    assert collected.ids == ["a", "b", "c$_$1/2", "d", "e"] and collected.task == "regression"
    np.testing.assert_allclose(collected.labels, [-1.2, 0.0, 2.6, 0.4, -3.0], rtol=1e-6)
    assert [a.shape for a in collected.masks["visual"]] == [(4, 5), (2, 5), (3, 5), (5, 5), (1, 5)]
    assert [a.shape for a in collected.masks["text"]] == [(4, 8), (2, 8), (3, 8), (5, 8), (1, 8)]
    model.eval()
    with torch.no_grad():
        ref = model(batches[1].inputs).masks
    np.testing.assert_array_equal(collected.masks["acoustic"][3], ref.acoustic[:5, 0].numpy())
    for arrays in collected.masks.values():
        values = np.concatenate(arrays)
        assert ((values > 0) & (values < 1)).all()


def test_collect_bert_text_rows_are_content_wordpieces() -> None:
    torch.manual_seed(0)
    cfg = MisaConfig(text_encoder="bert", text_input_size=32, bert_config=TINY_BERT, visual_size=5, acoustic_size=7,
                     hidden_size=16, feedback="static")
    model = MISA(cfg)
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    inputs = ModelInputs(visual=torch.randn(2, 2, 5), acoustic=torch.randn(2, 2, 7), lengths=torch.tensor([2, 1]),
                         bert_input_ids=ids, bert_attention_mask=(ids > 0).long(), bert_token_type_ids=torch.zeros_like(ids),
                         bert_wp2word=torch.tensor([[-1, 0, 0, 1, -1], [-1, 0, -1, -1, -1]]))
    collected = collect_masks(model, [Batch(inputs, torch.tensor([[1.0], [-1.0]]), ["x", "y"])])
    assert [a.shape for a in collected.masks["text"]] == [(3, 32), (1, 32)]
    assert collected.time_axis["text"].startswith("content wordpiece")
    # static: one mask vector per sample, shared by every content wordpiece
    np.testing.assert_array_equal(collected.masks["text"][0], np.repeat(collected.masks["text"][0][:1], 3, axis=0))


def test_export_writes_npz_plots_and_summary(batches: list[Batch], tmp_path: Path) -> None:
    collected = collect_masks(_glove_model(), batches)
    written = export_masks(collected, tmp_path / "out", samples=["c$_$1/2", "e"], meta={"split": "test"})
    with np.load(written["npz"], allow_pickle=False) as npz:
        assert npz["ids"].tolist() == collected.ids and str(npz["feedback"]) == "sequence"
        for m in ("text", "visual", "acoustic"):
            offsets, lengths = npz[f"{m}_offsets"], npz[f"{m}_lengths"]
            assert offsets.tolist() == [0, *np.cumsum(lengths).tolist()]
            for i, arr in enumerate(collected.masks[m]):
                np.testing.assert_array_equal(npz[m][offsets[i]: offsets[i + 1]], arr)
            np.testing.assert_allclose(npz[f"{m}_mean_per_feature"], np.concatenate(collected.masks[m]).mean(0), rtol=1e-6)
    heatmaps = sorted((tmp_path / "out" / "heatmaps").iterdir())
    assert [p.name for p in heatmaps] == ["sample-00002-c___1_2.png", "sample-00004-e.png"]
    for path in [*heatmaps, written["mean_mask"]]:
        assert path.read_bytes()[:8] == PNG
    summary = json.loads(written["summary"].read_text())
    assert summary["split"] == "test" and summary["n_samples"] == 5 and summary["heatmap_ids"] == ["c$_$1/2", "e"]
    visual = summary["modalities"]["visual"]
    values = np.concatenate(collected.masks["visual"])
    assert visual["mean"] == pytest.approx(float(values.mean())) and visual["gini"] == pytest.approx(gini(values))
    assert visual["per_class_sign"]["zero"]["n_samples"] == 1
    assert visual["per_class_sign"]["zero"]["mean"] == pytest.approx(float(collected.masks["visual"][1].mean()))
    assert set(summary["class_rules"]) == {"sign", "rounded"}
    assert summarize(collected)["modalities"]["text"]["feature_dim"] == 8
    with pytest.raises(ConfigError, match="'zz'"):
        export_masks(collected, tmp_path / "bad", samples=["zz"])
    export_masks(collected, tmp_path / "n", samples=2)
    assert len(list((tmp_path / "n" / "heatmaps").iterdir())) == 2


def test_a_model_without_feedback_is_refused(batches: list[Batch]) -> None:
    with pytest.raises(MisalatchError, match="no feedback"):
        collect_masks(_glove_model("none"), batches)


def test_masks_command_on_a_trained_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from misalatch.cli import main as cli_main
    from misalatch.training.config import TrainConfig
    from misalatch.training.runs import train

    tiny = dict(synthetic_size=(16, 8, 6), text_encoder="learned", hidden_size=16, batch_size=8, max_epochs=1)
    train(TrainConfig(out=str(tmp_path / "seq"), feedback="sequence", **tiny))
    assert cli_main(["masks", str(tmp_path / "seq"), "--split", "test", "--out", str(tmp_path / "m"), "--samples", "2"]) == 0
    assert "sequence masks, split test [SYNTHETIC data], 6 samples" in capsys.readouterr().out
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["n_samples"] == 6 and summary["synthetic"] is True and len(summary["heatmap_ids"]) == 2
    with np.load(tmp_path / "m" / "masks.npz", allow_pickle=False) as npz:
        assert npz["visual"].shape[1] == 47 and npz["ids"].shape == (6,)

    train(TrainConfig(out=str(tmp_path / "plain"), **tiny))
    assert cli_main(["masks", str(tmp_path / "plain")]) == 1
    assert "has no feedback" in capsys.readouterr().err
