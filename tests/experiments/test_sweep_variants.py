"""Named variants (``misalatch sweep --variants FILE.yaml``): sweep points that are not a product of flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from misalatch.cli import main as cli_main
from misalatch.cli.sweep import parse_sweep
from misalatch.errors import ConfigError
from misalatch.experiments.results import write_results
from misalatch.experiments.studies import Liveness
from misalatch.experiments.sweep import SweepSpec, run_worker, start_sweep
from tests.experiments.conftest import TINY_FLAGS

pytestmark = pytest.mark.usefixtures("one_thread")


def _variants(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "variants.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_named_variants_make_one_sweep_with_paired_statistics(tmp_path: Path) -> None:
    variants = _variants(tmp_path, {"misa-tav": None, "misa-t": {"modalities": "t", "feedback": "none"},
                                    "mmlatch": {"model": "mmlatch"}})
    out = tmp_path / "sweep"
    args, spec = parse_sweep(["--out", str(out), "--variants", str(variants), "--baseline", "misa-tav",
                              "--seeds", "1,2", *TINY_FLAGS, "--max-epochs", "1", "--lr", "0.002"])
    assert spec.grid["variant"] == ("misa-tav", "misa-t", "mmlatch") and spec.size == 6
    misa_t, mml = (spec.config_for({"variant": v}, 1) for v in ("misa-t", "mmlatch"))
    assert (misa_t.modalities, misa_t.feedback, misa_t.lr, misa_t.loss) == ("t", "none", 0.002, "mse")
    # another model starts from its own recipe; the command line's own settings still apply
    assert (mml.model, mml.preset, mml.loss, mml.scheduler, mml.lr, mml.hidden_size) == (
        "mmlatch", "mmlatch", "l1", "plateau", 0.002, 8)
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec  # --join rebuilds it

    sweep = start_sweep(spec, out, liveness=Liveness(1, 5))
    run_worker(sweep)
    doc = json.loads(write_results(sweep)["json"].read_text())
    assert [v["key"] for v in doc["variants"]] == ["misa-tav", "misa-t", "mmlatch"]
    assert doc["sweep"]["variants"]["misa-t"] == {"modalities": "t", "feedback": "none"}
    paired = {(p["variant"], p["metric"]): p for p in doc["paired"]}
    assert {v for v, _ in paired} == {"misa-t", "mmlatch"}
    p = paired[("misa-t", "mae")]
    assert p["baseline"] == "misa-tav" and p["n"] == 2 and p["seeds"] == [1, 2]
    marker = yaml.safe_load((out / "runs" / "mmlatch" / "seed-1" / "config.yaml").read_text())
    assert (marker["model"], marker["loss"], marker["warmup_epochs"]) == ("mmlatch", "l1", 0)


def test_bad_variant_files_are_one_clear_error(tmp_path: Path) -> None:
    out = str(tmp_path / "s")
    for doc, message in (({"a": {"lrr": 0.1}}, "variant 'a': 'lrr' is not a training setting"),
                         ({"a": {"feedback": "static"}}, "'feedback' is also a grid dimension"),
                         ({"a": ["x"]}, "variant 'a' must map to settings"),
                         ({"a,b": {}}, "without commas")):
        with pytest.raises(ConfigError, match=message):
            parse_sweep(["--out", out, "--variants", str(_variants(tmp_path, doc)), "--feedback", "none,static",
                         "--seeds", "1", *TINY_FLAGS])
    assert cli_main(["sweep", "--out", out, "--variants", str(tmp_path / "missing.yaml"), "--seeds", "1"]) == 1
