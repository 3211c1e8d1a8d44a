"""examples/quickstart.ipynb runs headlessly (nbclient) at its small size and shows what it promises; the
stored copy carries the outputs of one full run, names no path of the machine that ran it, and imports
public names only."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"
API_PAGES = REPO / "docs" / "api"


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


# ---------------------------------------------------------------------------------------------
# the stored notebook (no kernel needed)
# ---------------------------------------------------------------------------------------------
def _code_cells() -> list[dict]:
    return [c for c in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]


def _output_texts(cell: dict) -> list[str]:
    """Every text an output of ``cell`` holds (streams, text/plain, Markdown, HTML, errors); images left out."""
    texts = []
    for out in cell.get("outputs", []):
        texts.append("".join(out.get("text", "")))
        texts += ["".join(out.get("traceback", []))]
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/"):
                texts.append("".join(value))
    return texts


def test_stored_notebook_has_the_outputs_of_one_run() -> None:
    code = _code_cells()
    assert [c.get("execution_count") for c in code] == list(range(1, len(code) + 1)), \
        "store the notebook executed once, top to bottom (nbclient from the repository root)"
    for i, cell in enumerate(code):
        assert cell.get("outputs"), f"code cell {i} is stored without outputs"
        assert not [o for o in cell["outputs"] if o.get("output_type") == "error"], f"code cell {i} stored an error"
    printed = "\n".join(t for c in code for t in _output_texts(c))
    assert "small: False" in printed, "the stored outputs are of the full run, not of MISALATCH_NOTEBOOK_SMALL=1"
    assert "(SYNTHETIC)" in printed and "[SYNTHETIC data]" in printed


def test_stored_outputs_name_no_path_of_the_machine() -> None:
    machine = re.compile(r"(?<![\w.])/(?:work|tmp|home|root|Users|private|var/folders)/")
    for i, cell in enumerate(_code_cells()):
        for text in _output_texts(cell):
            assert str(REPO) not in text, f"code cell {i} prints the repository's absolute path"
            found = machine.search(text)
            assert found is None, f"code cell {i} prints an absolute path: ...{text[max(0, found.start() - 40):found.end() + 40]}..."


def public_packages() -> set[str]:
    """``misalatch`` and every sub-package an API reference page documents (``<!-- api: PACKAGE -->``)."""
    names = {"misalatch"}
    for page in API_PAGES.glob("*.md"):
        for name in re.findall(r"<!--\s*api:\s*([\w.]+)\s*-->", page.read_text(encoding="utf-8")):
            if REPO.joinpath(*name.split("."), "__init__.py").is_file():
                names.add(name)
    return names


def private_names(source: str, packages: set[str]) -> list[str]:
    """What ``source`` takes from misalatch that is not public: an import from a module that is not a
    documented package, a name missing from that package's ``__all__``, or ``misalatch.X`` with X not in
    ``misalatch.__all__``. Anything from outside misalatch (stdlib, IPython, third party) is fine."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            bad += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "misalatch" and a.name not in packages]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if node.level or module.split(".")[0] != "misalatch":
                continue
            if module not in packages:
                bad.append(f"from {module} import ... ({module} is not a documented public package)")
                continue
            exported = set(getattr(importlib.import_module(module), "__all__", ()))
            bad += [f"from {module} import {a.name}" for a in node.names if a.name not in exported]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "misalatch"
              and node.attr not in importlib.import_module("misalatch").__all__):
            bad.append(f"misalatch.{node.attr}")
    return bad


def test_public_name_check_sees_private_imports() -> None:
    packages = public_packages()
    assert {"misalatch", "misalatch.evaluation", "misalatch.experiments", "misalatch.data"} <= packages
    assert "misalatch.experiments.sweep" not in packages
    source = ("import os\nimport misalatch\nfrom IPython.display import Image\n"
              "from misalatch.evaluation import format_metrics_table\nmisalatch.train\n"
              "from misalatch.experiments.sweep import SweepSpec\nfrom misalatch.evaluation import gini\n"
              "import misalatch.training.run_dir\nmisalatch.training.run_dir.evaluate_run\n")
    assert private_names(source, packages) == [
        "from misalatch.experiments.sweep import ... (misalatch.experiments.sweep is not a documented public package)",
        "from misalatch.evaluation import gini", "import misalatch.training.run_dir", "misalatch.training"]


def test_notebook_imports_public_names_only() -> None:
    packages = public_packages()
    bad = [f"code cell {i}: {name}" for i, cell in enumerate(_code_cells())
           for name in private_names("".join(cell["source"]), packages)]
    assert not bad, "the notebook uses names that are not public API:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", ["misalatch", "misalatch.data", "misalatch.evaluation", "misalatch.experiments"])
def test_public_names_resolve(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
