"""The bad-input battery, run folder / config / CLI part (issue 8 §3): every case gets the typed
misalatch error, a one-line message naming the file and the field, exit status 1, nothing left behind."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from misalatch.cli import main as cli_main
from misalatch.errors import ConfigError, DataFormatError
from misalatch.training.config import TrainConfig
from tests.conftest import TINY_TRAIN

FAST = TINY_TRAIN


@pytest.fixture()
def run(tiny_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def _fails(capsys, argv: list[str], *needles: str, warnings: bool = False) -> str:
    code = cli_main(["-q", *argv])  # -q: only the error line (and warnings) on stderr
    err = capsys.readouterr().err
    assert code == 1, err
    if warnings:  # a warning line may come first; the error is the last line
        err = err.splitlines()[-1] + "\n"
    assert err.startswith(f"misalatch {argv[0]}: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def reseal(run: Path, name: str = "best") -> None:
    """Rewrite the manifest to match the (crafted) files: an attacker can, so the checks behind it must hold."""
    from misalatch.training.checkpoint import _manifest

    files = {f"{name}.safetensors": (run / f"{name}.safetensors").read_bytes(),
             f"{name}.json": (run / f"{name}.json").read_bytes()}
    (run / f"{name}.manifest.json").write_bytes(_manifest(name, files, None))


def _unchanged(folder: Path, before: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == before


# ---- the run folder ------------------------------------------------------------------------------
def test_truncated_weights(run, capsys):
    weights = run / "best.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    before = {p.name for p in run.iterdir()}
    _fails(capsys, ["evaluate", str(run)], "best.safetensors", "truncated")
    _unchanged(run, before)
    (run / "best.manifest.json").unlink()  # trusted without a manifest: safetensors itself refuses
    _fails(capsys, ["evaluate", str(run), "--trust-unverified"], "best.safetensors", "not a readable safetensors file",
           warnings=True)


def test_weights_of_another_configuration(run, capsys):
    import torch

    from misalatch.models.config import MisaConfig
    from misalatch.models.misa import MISA
    from misalatch.training.checkpoint import best_files, commit_checkpoints

    sidecar = json.loads((run / "best.json").read_text())
    other = MISA(MisaConfig.from_dict({**sidecar["model_config"], "hidden_size": 6}))
    keep = {k: v for k, v in sidecar.items() if k not in ("format", "format_version", "created", "versions")}
    commit_checkpoints(run, best_files("best", other.state_dict(), keep))  # a consistent set, wrong sizes
    err = _fails(capsys, ["predict", str(run), "--out", str(run.parent / "p.csv")], "best.safetensors",
                 "another configuration", "has shape")
    assert "[6]" in err or "6," in err
    assert not (run.parent / "p.csv").exists()
    del torch


@pytest.mark.parametrize("change, needles", [
    (lambda m: [m], ("best.json", "must be a JSON object, found a list")),
    (lambda m: {k: v for k, v in m.items() if k != "config"}, ("best.json", "'config' is missing")),
    (lambda m: {**m, "config": "lr=1"}, ("best.json", "'config' must be dict")),
    (lambda m: {**m, "model_config": {**m["model_config"], "hidden_size": "big"}}, ("best.json", "model_config.hidden_size")),
    (lambda m: {**m, "model_config": {**m["model_config"], "hidden_size": 10**8}}, ("best.json", "model_config.hidden_size", "outside")),
    (lambda m: {**m, "config": {**m["config"], "max_epochs": "ten"}}, ("best.json", "max_epochs must be an integer")),
])
def test_bad_sidecar(run, capsys, change, needles):
    meta = json.loads((run / "best.json").read_text())
    (run / "best.json").write_text(json.dumps(change(meta)))
    reseal(run)  # a consistent crafted set: the sidecar checks themselves must refuse it
    before = {p.name for p in run.iterdir()}
    _fails(capsys, ["evaluate", str(run)], *needles)
    _unchanged(run, before)
    _fails(capsys, ["masks", str(run)], str(run))


def test_garbled_sidecar(run, capsys):
    (run / "best.json").write_bytes(b"\xff\xfe{not json")
    _fails(capsys, ["evaluate", str(run)], "best.json", "best.manifest.json says")
    reseal(run)
    _fails(capsys, ["evaluate", str(run)], "best.json", "not valid JSON")


def test_modified_weights_fail_the_manifest(run, capsys):
    weights = run / "best.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte flipped
    weights.write_bytes(bytes(data))
    _fails(capsys, ["evaluate", str(run)], "best.safetensors", "sha256 does not match best.manifest.json")


def test_not_a_run_folder(tmp_path, capsys):
    _fails(capsys, ["evaluate", str(tmp_path)], "best.json", "is this a misalatch run folder")


# ---- outputs of evaluate / predict ---------------------------------------------------------------
def test_predict_out_is_a_folder_or_a_symlink_or_a_user_file(run, tmp_path, capsys):
    folder = tmp_path / "preds"
    folder.mkdir()
    _fails(capsys, ["predict", str(run), "--out", str(folder)], str(folder), "is a folder")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (tmp_path / "link.csv").symlink_to(victim)
    _fails(capsys, ["predict", str(run), "--out", str(tmp_path / "link.csv")], "symbolic link")
    _fails(capsys, ["predict", str(run), "--out", str(victim)], "exists; pass --overwrite")
    _fails(capsys, ["predict", str(run), "--out", str(victim), "--overwrite"], "not a file misalatch wrote")
    assert victim.read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == []


# ---- the config ----------------------------------------------------------------------------------
@pytest.mark.parametrize("yaml_text, needles", [
    ("synthetic_size: [a, b, c]\n", ("synthetic_size must be a list of 3 integers",)),
    ("synthetic_size: 5\n", ("synthetic_size must be a list",)),
    ("synthetic_size: [1, 2]\n", ("synthetic_size must be a list of 3 integers",)),
    ("seeds: '1,2'\n", ("seeds must be a list of integers",)),
    ("hidden_size: big\n", ("hidden_size must be an integer",)),
    ("hidden_size: 8.5\n", ("hidden_size must be an integer",)),
    ("max_epochs: true\n", ("max_epochs must be an integer",)),
    ("text_encoder: 5\n", ("text_encoder must be a string",)),
    ("activation: [relu]\n", ("activation must be one of",)),
    ("lr: .nan\n", ("lr must be a finite number",)),
    ("dropout: '0.5'\n", ("dropout must be a number",)),
    ("overwrite: yes please\n", ("overwrite must be true or false",)),
])
def test_bad_yaml_values(tmp_path, capsys, yaml_text, needles):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml_text)
    out = tmp_path / "out"
    _fails(capsys, ["train", "--config", str(cfg), "--out", str(out)], *needles)
    assert not out.exists()
    with pytest.raises(ConfigError, match=str(cfg)):
        TrainConfig.from_yaml(cfg)


@pytest.mark.parametrize("flags, needle", [
    (["--lr", "nan"], "lr must be a finite number"),
    (["--lr", "inf"], "lr must be a finite number"),
    (["--dropout", "nan"], "dropout must be a finite number"),
    (["--lr-decay", "-1"], "lr_decay"),
])
def test_bad_cli_numbers(tmp_path, capsys, flags, needle):
    _fails(capsys, ["train", *flags, "--out", str(tmp_path / "out")], needle)
    assert not (tmp_path / "out").exists()


# ---- token ids -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad_id", [-1, 10**6])
def test_out_of_vocabulary_and_negative_token_ids(tmp_path, capsys, bad_id):
    from misalatch.data.cache import save_prepared
    from misalatch.data.loading import load_dataset

    ds = load_dataset("synthetic", synthetic_sizes={"train": 8, "valid": 4, "test": 4})
    splits = {}
    for split, segs in ds.splits.items():
        splits[split] = [dataclasses.replace(s, words=None, text_ids=np.arange(2, 2 + len(s.words), dtype=np.int64))
                         for s in segs]
    first = splits["valid"][1]
    ids = first.text_ids.copy()
    ids[0] = bad_id
    splits["valid"][1] = dataclasses.replace(first, text_ids=ids)
    try:
        prepared = save_prepared(ds.replace(splits=splits, vocab=None, embedding=None), tmp_path / "prep")
    except DataFormatError as err:  # the prepared-folder writer may already refuse it: also fine
        assert "text_ids" in str(err)
        return
    if bad_id >= 0:
        # ids beyond a vocabulary only exist relative to a model: a run with a small vocabulary
        from misalatch.models.config import MisaConfig
        from misalatch.training.setup import check_token_ids

        with pytest.raises(DataFormatError, match=rf"segment {first.id!r}: text_ids holds id {bad_id}, outside"):
            check_token_ids(load_dataset(str(prepared)), MisaConfig(text_encoder="glove", vocab_size=100),
                            source=str(prepared))
        return
    out = tmp_path / "out"
    # refused when the prepared folder is loaded: the message names the file and the field
    _fails(capsys, ["train", "--data", str(prepared), "--text-encoder", "source", "--out", str(out), "--device", "cpu"],
           "valid.npz", "text_ids", str(bad_id))
    assert not out.exists()
