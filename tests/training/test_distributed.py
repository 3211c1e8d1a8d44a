"""torchrun on the CPU (gloo, 2 processes): one model in DistributedDataParallel, each rank on its
shard of every batch, matches a single process with the same global batch; only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from misalatch.training.distributed import SINGLE, Distributed
from tests.conftest import REPO

SCRIPT = REPO / "tests" / "training" / "ddp_fit.py"


def _env(tmp_path: Path) -> dict[str, str]:
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TMPDIR": str(tmp)}


def _run(cmd: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in _env(tmp_path).items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]


def test_shards_cover_the_batch_in_order() -> None:
    ctx = Distributed(rank=1, world_size=3)
    assert [s.tolist() for s in ctx.shards(7)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert ctx.shard(2).tolist() == [1]  # the third rank of a 2-sample batch gets nothing (and runs a stand-in)
    assert SINGLE.shards(5)[0].tolist() == [0, 1, 2, 3, 4] and not SINGLE.enabled


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    single, multi = tmp_path / "single.pt", tmp_path / "multi.pt"
    _run([sys.executable, str(SCRIPT), str(single)], tmp_path)
    _run(_torchrun(str(SCRIPT), str(multi)), tmp_path)
    a, b = torch.load(single, weights_only=False), torch.load(multi, weights_only=False)
    assert (a["world"], b["world"]) == (1, 2)
    assert len(a["history"]) == len(b["history"]) == 3  # 22 samples, batches of 7: the last one is 1 sample
    for ra, rb in zip(a["history"], b["history"]):
        for key in ("train_task", "train_diff", "train_sim", "train_recon", "train_total"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4), key  # the global batch's losses, not a shard's
        assert rb["dev_loss"] == pytest.approx(ra["dev_loss"], rel=1e-4)  # evaluation gathered over ranks
        assert rb["improved"] == ra["improved"]
    assert a["best_epoch"] == b["best_epoch"]
    diff = torch.cat([(a["state"][k].float() - b["state"][k].float()).abs().flatten() for k in a["state"]])
    # Adam's first steps are ~lr·sign(g): an element whose gradient is float noise may step either
    # way, so a handful of elements may differ by up to 2·lr per step; every other one agrees
    assert float(torch.quantile(diff[torch.randperm(diff.numel(), generator=torch.Generator().manual_seed(0))[:100_000]],
                                0.999)) < 1e-5
    assert float(diff.max()) < 2 * 1e-3 * 9


@pytest.mark.slow
def test_torchrun_train_writes_one_run_folder_from_rank_0(tmp_path: Path) -> None:
    out = tmp_path / "run"
    flags = ["--synthetic-size", "12", "6", "6", "--text-encoder", "learned", "--hidden-size", "8", "--batch-size",
             "5", "--device", "cpu", "--max-epochs", "1", "--out", str(out)]
    _run(_torchrun("-m", "misalatch", "train", *flags), tmp_path)
    marker = json.loads((out / "run.json").read_text())
    assert marker["processes"] == 2 and marker["complete"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"mae", "corr", "acc2_non0"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tmp"]  # nothing beside the run folder
    assert not [p.name for p in (tmp_path / "tmp").iterdir() if "misalatch" in p.name]  # rank 1's private folder is gone
    from misalatch.training.run_dir import load_run

    loaded = load_run(out, device="cpu")
    assert loaded.config.max_epochs == 1


def test_other_commands_refuse_to_run_under_torchrun(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from misalatch.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["sweep", "--out", "anywhere"]) == 1
    assert "runs as one process" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "two")
    assert main(["compare", "x"]) == 1
    assert "WORLD_SIZE='two': expected an integer" in capsys.readouterr().err
