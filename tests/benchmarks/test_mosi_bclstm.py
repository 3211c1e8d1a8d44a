"""benchmarks/mosi_bclstm.py: the real utterance-level features become a per-utterance table, the
ridge reference of issue 19 is reproduced on it, and the sweep holds the variants the issue asks for."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import REPO, shared_file

SCRIPT = REPO / "benchmarks" / "mosi_bclstm.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("mosi_bclstm_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_features_give_the_issues_ridge_reference(bench, tmp_path: Path) -> None:
    source = shared_file("data", "mosi-bclstm", "transcripts.csv").parent
    labels = shared_file("data", "mosi", "mosi_text_labels.csv")
    table = bench.build_table(source, tmp_path / "table.csv")
    assert table["rows"] == 2199 and len(table["columns"]) == 2 + 100 + 73 + 100
    ds = bench.prepare(tmp_path / "table.csv", labels, tmp_path / "prepared")
    sizes = ds.split_sizes()
    assert sizes["test"] == 752 and sizes["train"] + sizes["valid"] == 1447 and 250 < sizes["valid"] < 350
    assert all(int(s.label >= 0) == table["binary"][s.id] for split in ds.splits.values() for s in split)
    train_speakers = {s.id.rsplit("_", 1)[0] for s in ds.splits["train"]}
    assert not train_speakers & set(ds.meta["held_out_speakers"])
    ridge = bench.ridge_reference(ds)
    tav, t = ridge["tav"]["given"]["test"], ridge["t"]["given"]["test"]
    assert (round(tav["mae"], 3), round(tav["corr"], 3), round(tav["acc2_non0"], 3)) == (0.946, 0.627, 0.785)
    assert (round(t["mae"], 3), round(t["corr"], 3), round(t["acc2_non0"], 3)) == (0.953, 0.604, 0.773)


def test_the_sweep_holds_the_issues_variants(bench) -> None:
    variants = bench.variants(quick=False)
    misa = {k: v for k, v in variants.items() if v.get("model", "misa") == "misa" and v["feedback"] == "none"}
    assert sorted(v["modalities"] for v in misa.values()) == ["t", "ta", "tav", "tv"]
    feedback = sorted(v["feedback"] for v in variants.values() if v.get("feedback", "none") != "none")
    assert feedback == ["sequence", "sequence-mlp", "static", "static-projected"]
    assert all(v["modalities"] == "tav" for v in variants.values() if v.get("feedback", "none") != "none")
    assert variants["mmlatch"] == {"model": "mmlatch", "modalities": "tav"}  # the original's recipe, untouched
    assert bench.BASELINE in variants
