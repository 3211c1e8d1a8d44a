"""examples/quickstart.ipynb runs headlessly (nbclient) at its small size and shows what it promises."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"


def _kernelspec(root: Path) -> str:
    """A kernelspec running THIS interpreter (the one with misalatch and its dependencies)."""
    name = "misalatch-test"
    folder = root / "kernels" / name
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "misalatch test", "language": "python",
    }))
    return name


def _text(cell: dict) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream")


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), "commit it without outputs"
    out = tmp_path / "quickstart"
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MISALATCH_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MISALATCH_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    kernel = _kernelspec(tmp_path / "jupyter")
    client = nbclient.NotebookClient(notebook, kernel_name=kernel, timeout=900,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    code = [c for c in notebook.cells if c.cell_type == "code"]
    printed = "\n".join(_text(c) for c in code)
    assert "small: True" in printed
    assert "synthetic" in printed and "(SYNTHETIC)" in printed
    assert "none: test MAE per seed" in printed and "static: test MAE per seed" in printed
    assert "MAE" in printed and "Acc-7" in printed  # the evaluation table
    # the sweep's own table: both variants with n = 1, read from the sweep's results.json
    results = json.loads((out / "sweep" / "results.json").read_text())
    table = (out / "sweep" / "results.md").read_text()
    assert table in printed
    assert {v["key"] for v in results["variants"]} == {"none", "static"}
    for variant in results["variants"]:
        assert f"{variant['test']['mae']['mean']:.3f}" in table or f"{variant['test']['mae']['mean']:.2f}" in table
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # curves, scatter, confusion, mean mask, the sweep's bar chart
    for name in ("sweep/runs/none/seed-1111/metrics.json", "sweep/runs/static/seed-1111/scatter-test.png",
                 "sweep/results.csv", "masks/summary.json", "report.html"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "masks" / "summary.json").read_text())
    assert set(summary["modalities"]) == {"text", "visual", "acoustic"}
    assert '<meta name="generator" content="misalatch report">' in (out / "report.html").read_text()
