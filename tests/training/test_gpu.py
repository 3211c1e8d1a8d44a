"""GPU checks: skipped without CUDA (CI has no GPU); run them on a GPU machine with `pytest -m gpu`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from misalatch.data.batching import collate
from misalatch.training.config import TrainConfig
from misalatch.training.run_dir import load_run
from misalatch.training.runs import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; CI machines have none"),
]


def test_training_on_cuda_keeps_lengths_on_cpu(tmp_path: Path) -> None:
    result = train(TrainConfig(out=str(tmp_path / "gpu"), device="cuda", synthetic_size=(64, 32, 32),
                               max_epochs=1, batch_size=16, feedback="sequence"))
    run = load_run(result.runs[0].run_dir, device="cuda")
    batch = collate(run.dataset.splits["test"][:4], run.spec)
    inputs = batch.inputs.to("cuda")
    assert inputs.lengths.device.type == "cpu" and inputs.visual.device.type == "cuda"
    out = run.model(inputs)
    assert out.prediction.device.type == "cuda" and torch.isfinite(out.prediction).all()


def test_cpu_and_cuda_predictions_agree(tmp_path: Path) -> None:
    result = train(TrainConfig(out=str(tmp_path / "cpu"), device="cpu", synthetic_size=(32, 16, 16),
                               max_epochs=1, batch_size=16, text_encoder="learned"))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu = load_run(result.runs[0].run_dir, device="cpu")
    gpu = load_run(result.runs[0].run_dir, device="cuda")
    batch = collate(cpu.dataset.splits["test"], cpu.spec)
    a = cpu.model(batch.inputs).prediction
    b = gpu.model(batch.inputs.to("cuda")).prediction.cpu()
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
