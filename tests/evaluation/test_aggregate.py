"""Tests of misalatch.evaluation.aggregate (METRICS.md §5)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from misalatch.evaluation.aggregate import AggregateRow, aggregate, write_aggregate
from misalatch.evaluation.metrics import MetricInputError

RUNS = [
    {"mae": 1.0, "acc7": 0.40},
    {"mae": 2.0, "acc7": 0.42},
    {"mae": 3.0, "acc7": 0.44},
    {"mae": 4.0, "acc7": 0.46},
]


def test_mean_and_sample_std() -> None:
    agg = aggregate(RUNS)
    assert list(agg) == ["mae", "acc7"]
    assert agg["mae"]["mean"] == pytest.approx(2.5)
    # ddof=1: sqrt((1.5² + 0.5² + 0.5² + 1.5²) / 3) = sqrt(5/3); ddof=0 would give sqrt(5/4)
    assert agg["mae"]["std"] == pytest.approx(math.sqrt(5 / 3))
    assert agg["acc7"]["std"] == pytest.approx(0.02 * math.sqrt(5 / 3))
    assert agg["mae"]["n"] == 4
    assert agg["mae"]["values"] == [1.0, 2.0, 3.0, 4.0]


def test_single_run_std_is_nan() -> None:
    agg = aggregate(RUNS[:1])
    assert agg["mae"]["mean"] == 1.0 and agg["mae"]["n"] == 1
    assert math.isnan(agg["mae"]["std"])


def test_nan_is_propagated_not_skipped() -> None:
    agg = aggregate([{"corr": 0.5}, {"corr": math.nan}, {"corr": 0.7}])
    assert math.isnan(agg["corr"]["mean"]) and math.isnan(agg["corr"]["std"])
    assert math.isnan(agg["corr"]["values"][1]) and agg["corr"]["values"][0] == 0.5


@pytest.mark.parametrize(
    ("runs", "match"),
    [
        ([], "no runs"),
        ([{"mae": 1.0}, {"mae": 1.0, "corr": 0.2}], r"run 1.*extra \['corr'\]"),
        ([{"mae": 1.0}, {"acc7": 0.3}], r"missing \['mae'\]"),
        ([{"mae": "1.0"}], "expected a number, got str"),
    ],
)
def test_aggregate_validation(runs: list, match: str) -> None:
    with pytest.raises(MetricInputError, match=match):
        aggregate(runs)


def test_row_rejects_seed_count_mismatch() -> None:
    with pytest.raises(MetricInputError, match="n=4 but 3 seeds"):
        AggregateRow(group={"dataset": "mosi"}, seeds=[1, 2, 3], metrics=aggregate(RUNS))


def test_write_aggregate(tmp_path: Path) -> None:
    seeds = [1111, 1112, 1113, 1114]
    rows = [
        AggregateRow({"dataset": "mosi", "feedback": "none", "text_encoder": "bert"}, seeds, aggregate(RUNS)),
        AggregateRow(
            {"dataset": "mosi", "feedback": "sequence", "text_encoder": "bert"},
            seeds[:1],
            aggregate([{"mae": 0.8, "acc7": 0.5}]),
        ),
    ]
    out = tmp_path / "exp"  # created by write_aggregate
    json_path, csv_path = write_aggregate(rows, out)
    assert (json_path, csv_path) == (out / "aggregate.json", out / "aggregate.csv")
    assert sorted(p.name for p in out.iterdir()) == ["aggregate.csv", "aggregate.json"]  # no temp files left

    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        table = list(reader)
    assert reader.fieldnames == [
        "dataset", "feedback", "text_encoder", "mae_mean", "mae_std", "acc7_mean", "acc7_std", "n", "seeds",
    ]
    assert len(table) == 2
    assert float(table[0]["mae_mean"]) == 2.5  # full precision, not rounded
    assert float(table[0]["mae_std"]) == pytest.approx(math.sqrt(5 / 3), abs=1e-15)
    assert table[0]["n"] == "4" and table[0]["seeds"] == "1111 1112 1113 1114"
    assert table[1]["feedback"] == "sequence" and math.isnan(float(table[1]["mae_std"]))

    doc = json.loads(json_path.read_text())
    assert doc["std_ddof"] == 1 and len(doc["rows"]) == 2
    first = doc["rows"][0]
    assert first["group"]["feedback"] == "none" and first["seeds"] == seeds
    assert first["metrics"]["acc7"]["values"] == [0.40, 0.42, 0.44, 0.46]
    assert doc["rows"][1]["metrics"]["mae"]["std"] is None  # NaN as null: strict JSON


def test_write_aggregate_replaces_existing_files(tmp_path: Path) -> None:
    row = AggregateRow({"dataset": "mosi"}, [1], aggregate([{"mae": 1.0}]))
    write_aggregate([row], tmp_path)
    row2 = AggregateRow({"dataset": "mosei"}, [1], aggregate([{"mae": 2.0}]))
    json_path, csv_path = write_aggregate([row2], tmp_path)
    assert json.loads(json_path.read_text())["rows"][0]["group"] == {"dataset": "mosei"}
    assert "mosi," not in csv_path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aggregate.csv", "aggregate.json"]
