"""Golden-vector parity with the original MISA code (MISA.md §13.3), over every golden case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from misalatch.cli import main as cli_main
from misalatch.models.parity import check_parity
from tests.conftest import GOLDEN

CASES = sorted(GOLDEN.glob("*.json")) if GOLDEN.is_dir() else []


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden_case_passes_parity(case: Path) -> None:
    report = check_parity(case.with_suffix(".safetensors"))
    assert report.ok, report.summary()
    names = {c.name for c in report.comparisons}
    # every kind of tensor in the file was compared
    assert "output.prediction" in names and "loss.total" in names
    assert any(n.startswith("grad.") for n in names) and any(n.startswith("grad_norm.") for n in names)


def test_golden_cases_exist() -> None:
    assert len(CASES) >= 3, f"expected the golden cases in {GOLDEN}"


def test_check_parity_command_prints_every_tensor(capsys: pytest.CaptureFixture[str]) -> None:
    path = GOLDEN / "misa_glove_cmd_mosi.safetensors"
    assert cli_main(["check-parity", str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    n = sum(1 for line in lines if line.startswith(("ok ", "FAIL")))
    assert lines[-1] == f"parity: ok {n}/{n} tensors within tolerance"
    assert n == len([k for k in load_file(str(path)) if k.startswith(("output.", "loss.", "grad.", "grad_norm."))])


def _perturbed_copy(tmp_path: Path, key: str, delta: float) -> Path:
    src = GOLDEN / "misa_glove_cmd_mosi.safetensors"
    tensors = load_file(str(src))
    tensors[key] = tensors[key] + delta
    dst = tmp_path / "case_mosi.safetensors"
    save_file(tensors, str(dst))
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


@pytest.mark.parametrize("key", ["output.shared_v", "loss.diff", "grad.recon_a.recon_a_1.bias"])
def test_parity_detects_a_wrong_value(tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _perturbed_copy(tmp_path, key, 1e-3)
    assert cli_main(["check-parity", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("parity: FAILED 1/")
    assert f"FAIL {key}" in out


def test_parity_detects_wrong_masked_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain mean over all positions (the 2020-07 original) must fail the BERT case."""
    import misalatch.models.misa as misa_module

    def plain_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return hidden.mean(dim=1)

    monkeypatch.setattr(misa_module, "masked_mean", plain_mean)
    report = check_parity(GOLDEN / "misa_bert_cmd_mosi.safetensors")
    assert not report.ok
    assert any(c.name == "output.utt_t" for c in report.failures)


def test_parity_works_for_a_new_case_name(tmp_path: Path) -> None:
    """Any golden file of the format works, not only the shipped names (dataset from the suffix)."""
    src = GOLDEN / "misa_glove_adv_urfunny.safetensors"
    dst = tmp_path / "another_case_urfunny.safetensors"
    shutil.copy(src, dst)
    meta = json.loads(src.with_suffix(".json").read_text())
    meta["case"] = "another_case_urfunny"
    dst.with_suffix(".json").write_text(json.dumps(meta))
    assert check_parity(dst).ok
