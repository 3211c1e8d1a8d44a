"""benchmarks/mosi_text.py: the ridge baseline's closed form, and the whole script on a tiny real slice."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, minilm_path, shared_file

SCRIPT = REPO / "benchmarks" / "mosi_text.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("mosi_text_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_ridge_closed_form_matches_lstsq(bench) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.7 + rng.normal(0, 0.1, 30)
    for alpha in (0.0, 0.3, 10.0):
        w, b = bench.ridge_fit(x, y, alpha)
        # the same problem as least squares on the centred data stacked with sqrt(alpha) I
        xc, yc = x - x.mean(0), y - y.mean()
        stacked = np.vstack([xc, np.sqrt(alpha) * np.eye(5)])
        target = np.concatenate([yc, np.zeros(5)])
        expected = np.linalg.lstsq(stacked, target, rcond=None)[0]
        np.testing.assert_allclose(w, expected, rtol=1e-10, atol=1e-12)
        assert b == pytest.approx(y.mean() - x.mean(0) @ expected)
    # the penalty is chosen on validation: noise-only features want a large alpha
    noise = rng.normal(size=(40, 5))
    alpha, path = bench.ridge_select((noise[:20], rng.normal(size=20)), (noise[20:], rng.normal(size=20)))
    assert alpha == min(path, key=lambda p: (p["valid_mae"], -p["alpha"]))["alpha"] and len(path) == len(bench.ALPHAS)
    with pytest.raises(ValueError, match="do not match"):
        bench.ridge_fit(x, y[:-1], 1.0)


def test_quick_run_on_a_slice_of_real_mosi(bench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = shared_file("data", "mosi", "mosi_text_labels.csv")
    minilm_path()
    out = tmp_path / "bench"
    assert bench.main(["--csv", str(csv_path), "--quick", "--out", str(out), "--device", "cpu"]) == 0
    document = json.loads((out / "benchmark.json").read_text())
    assert document["format"] == "misalatch-benchmark-mosi-text" and document["quick"] is True
    assert document["seeds"] == [1111] and document["max_epochs"] == 1
    run = document["misa"]["runs"][0]
    assert run["epochs_run"] == 1 and (out / "runs" / "seed-1111" / "metrics.json").is_file()
    assert set(document["misa"]["test"]["mae"]) == {"mean", "std", "n", "values"}
    assert document["ridge"]["alpha"] in bench.ALPHAS and np.isfinite(document["ridge"]["test"]["mae"])
    assert set(document["misa"]["checks"]) == {"mae", "corr", "acc2_non0", "better_than_ridge"}
    table = (out / "benchmark.md").read_text()
    assert "| MISA, text only" in table and "| ridge on frozen MiniLM" in table
    assert "wall time" in capsys.readouterr().out
    # a folder the script did not write is refused
    user = tmp_path / "mine"
    user.mkdir()
    (user / "x.txt").write_text("keep")
    assert bench.main(["--csv", str(csv_path), "--quick", "--out", str(user), "--no-ridge"]) == 1
    assert (user / "x.txt").read_text() == "keep"
