"""benchmarks/feedback_parts.py runs and its parts add up to at most the step they belong to."""

from __future__ import annotations

import importlib.util
import sys

import torch

from tests.conftest import REPO


def test_parts_of_a_feedback_step(capsys) -> None:
    spec = importlib.util.spec_from_file_location("feedback_parts_benchmark", REPO / "benchmarks" / "feedback_parts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        assert module.main(["--limit", "128", "--batches", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [float(x) for x in line.split("|")[2:4]]
            for line in printed.splitlines() if line.startswith("| ") and "---" not in line and "part" not in line}
    assert set(rows) == {"encoders", "mask generators", "head + losses", "step"}
    assert rows["mask generators"][0] == 0.0 and rows["mask generators"][1] > 0  # only feedback has generators
    for column in (0, 1):
        assert sum(rows[k][column] for k in ("encoders", "mask generators", "head + losses")) <= rows["step"][column]
    assert "step ratio" in printed
