"""A sweep over the two models (``--model misa,mmlatch``) gives one comparison table."""

from __future__ import annotations

import json
from pathlib import Path

from misalatch.cli.sweep import parse_sweep
from misalatch.experiments.results import write_results
from misalatch.experiments.studies import Liveness
from misalatch.experiments.sweep import run_worker, start_sweep
from misalatch.io.owned import read_marker
from tests.experiments.conftest import TINY_FLAGS


def test_sweep_over_models_gives_one_table(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    spec = parse_sweep(["--out", str(out), "--model", "misa,mmlatch", "--seeds", "1", *TINY_FLAGS,
                        "--max-epochs", "1"])[1]
    sweep = start_sweep(spec, out, liveness=Liveness(1, 5))
    run_worker(sweep)
    written = write_results(sweep)
    doc = json.loads(written["json"].read_text())
    models = {v["params"]["model"] for v in doc["variants"]}
    assert models == {"misa", "mmlatch"}
    # each run folder holds the model it was asked for (recorded by the run itself, not the sweep)
    for variant in doc["variants"]:
        run = variant["runs"][0]
        assert run["state"] == "complete"
        marker = read_marker(out / run["run_dir"])
        assert marker is not None and marker["config"]["model"] == variant["params"]["model"]
        sidecar = json.loads((out / run["run_dir"] / "best.json").read_text())
        assert sidecar["model"] == variant["params"]["model"]
    table = written["md"].read_text()
    assert "misa" in table and "mmlatch" in table  # both models in the one results table
