"""Sweeps: workers sharing one study, a killed worker's run retried, resume, failures, statistics."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from scipy import stats as sps

from misalatch.errors import ConfigError
from misalatch.cli.sweep import parse_sweep
from misalatch.experiments.results import write_results
from misalatch.experiments.stats import paired_comparison
from misalatch.experiments.studies import Liveness
from misalatch.experiments.sweep import run_worker, start_sweep
from tests.experiments.conftest import TINY_FLAGS, wait_all, worker

GRID = ["--feedback", "none,static", "--seeds", "1,2"]


# ----------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------
def test_paired_statistics_match_a_hand_computation() -> None:
    variant = {1: 0.80, 2: 0.75, 3: 0.90, 4: 0.70, 5: 0.85}
    baseline = {1: 0.82, 2: 0.80, 3: 0.88, 4: 0.79, 5: 0.86, 6: 0.5}  # seed 6 has no pair
    got = paired_comparison(variant, baseline)
    d = [-0.02, -0.05, 0.02, -0.09, -0.01]
    mean = sum(d) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 4)
    t_crit = 2.7764451051977987  # t(0.975, 4), from a table
    t_stat = mean / (sd / math.sqrt(5))
    assert got.n == 5 and got.seeds == [1, 2, 3, 4, 5]
    assert got.differences == pytest.approx(d)
    assert got.mean == pytest.approx(-0.03)
    assert got.ci95 == pytest.approx((mean - t_crit * sd / math.sqrt(5), mean + t_crit * sd / math.sqrt(5)))
    assert got.p_value == pytest.approx(2 * sps.t.sf(abs(t_stat), 4))
    assert got.test == "paired t-test" and got.wilcoxon_p is None  # n < 6: no Wilcoxon

    six = paired_comparison({s: float(s) for s in range(6)}, {s: 0.5 * s - 0.1 for s in range(6)})
    assert six.wilcoxon_p == pytest.approx(sps.wilcoxon([0.5 * s + 0.1 for s in range(6)]).pvalue)
    one = paired_comparison({1: 1.0}, {1: 0.5, 2: 0.1})
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.p_value) and all(math.isnan(c) for c in one.ci95)
    nan = paired_comparison({1: float("nan"), 2: 1.0, 3: 2.0}, {1: 0.0, 2: 0.0, 3: 0.5})
    assert nan.seeds == [2, 3] and nan.differences == [1.0, 1.5]


# ----------------------------------------------------------------------------------------------
# the command line
# ----------------------------------------------------------------------------------------------
def test_comma_lists_become_grid_dimensions_and_bad_values_are_named(tmp_path: Path) -> None:
    args, spec = parse_sweep(["--out", str(tmp_path / "s"), "--feedback", "none,static", "--lr=1e-4,3e-4",
                              "--seeds", "7,8", "--max-epochs", "2"])
    assert spec.grid == {"feedback": ("none", "static"), "lr": (1e-4, 3e-4), "seed": (7, 8)}
    assert spec.base.max_epochs == 2 and spec.size == 8 and spec.baseline == {"feedback": "none"}
    assert spec.key({"feedback": "static", "lr": 3e-4}) == "feedback=static,lr=0.0003"
    assert spec.baseline_of({"feedback": "static", "lr": 3e-4}) == {"feedback": "none", "lr": 3e-4}
    with pytest.raises(ConfigError, match="not a valid value"):
        parse_sweep(["--out", str(tmp_path / "s"), "--feedback", "none,statik"])
    with pytest.raises(ConfigError, match="baseline"):
        parse_sweep(["--out", str(tmp_path / "s"), "--feedback", "none,static", "--baseline", "sequence"])
    with pytest.raises(ConfigError, match="--out"):
        parse_sweep(["--feedback", "none,static"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    args, spec = parse_sweep(["--out", str(tmp_path / "mine"), *GRID, *TINY_FLAGS])
    with pytest.raises(ConfigError, match="exists and is not empty"):
        start_sweep(spec, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------------------------
# workers (separate processes) on one storage
# ----------------------------------------------------------------------------------------------
def _trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=url).get_trials()


def _assert_four_runs_exactly_once(url: str, study: str, out: Path) -> list[optuna.trial.FrozenTrial]:
    trials = _trials(url, study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    points = sorted((t.params["feedback"], t.params["seed"]) for t in complete)
    assert points == [("none", 1), ("none", 2), ("static", 1), ("static", 2)], [(t.number, t.state, t.params) for t in trials]
    from misalatch.io.owned import is_owned

    assert is_owned(out, "sweep") and {"results.json", "results.md", "results.csv", "results.png", "sweep.json"} <= set(
        json.loads((out / "run.json").read_text())["files"])
    doc = json.loads((out / "results.json").read_text())
    assert doc["format"] == "misalatch-sweep-results" and doc["failed"] == [] and doc["pending"] == []
    assert sorted(r["run_dir"] for v in doc["variants"] for r in v["runs"] if r["state"] == "complete") == [
        "runs/none/seed-1", "runs/none/seed-2", "runs/static/seed-1", "runs/static/seed-2"]
    for v in doc["variants"]:
        for r in v["runs"]:
            assert (out / r["run_dir"] / "metrics.json").is_file() and r["best_epoch"] >= 1 and r["epochs_run"] >= 1
    return trials


@pytest.mark.slow
def test_two_workers_share_a_sqlite_sweep_without_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    cmd = ["sweep", "--out", str(out), *GRID, *TINY_FLAGS, "--max-epochs", "1", "--heartbeat", "1", "--grace", "30"]
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    procs = [worker(cmd, logs[0]), worker(cmd, logs[1])]  # the same command in two terminals
    codes = wait_all(procs, logs)
    assert codes == [0, 0], "\n".join(p.read_text()[-2000:] for p in logs)
    url = f"sqlite:///{out.resolve()}/study.db"
    _assert_four_runs_exactly_once(url, "sweep-sweep", out)
    started = [log.read_text().count("(trial ") for log in logs]
    assert sum(started) == 4, started  # every run trained once, by one of the two


def _kill_a_worker_mid_run_and_let_another_finish(tmp_path: Path, url: str) -> None:
    out = tmp_path / "sweep"
    common = ["--heartbeat", "1", "--grace", "4"]
    first = worker(["sweep", "--out", str(out), "--storage", url, "--study", "s", *GRID, *TINY_FLAGS,
                    "--max-epochs", "3", *common], tmp_path / "killed.log")
    victim = None
    deadline = time.time() + 180
    while victim is None and time.time() < deadline:  # wait until the worker is writing its run folder
        time.sleep(0.3)
        try:
            running = [t for t in _trials(url, "s") if t.state == TrialState.RUNNING and "run_dir" in t.user_attrs
                       and (out / t.user_attrs["run_dir"] / "config.yaml").is_file()]  # inside train_seed
        except Exception:  # noqa: BLE001 - the study is not created yet
            continue
        victim = running[0] if running else None
    assert victim is not None, (tmp_path / "killed.log").read_text()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    joiner = worker(["sweep", "--join", "--storage", url, "--study", "s", "--out", str(out), *common],
                    tmp_path / "joiner.log")
    assert wait_all([joiner], [tmp_path / "joiner.log"]) == [0], (tmp_path / "joiner.log").read_text()[-3000:]
    trials = _assert_four_runs_exactly_once(url, "s", out)
    dead = next(t for t in trials if t.number == victim.number)
    assert dead.state == TrialState.FAIL  # failed by the joiner's heartbeat check ...
    retry = next(t for t in trials if t.state == TrialState.COMPLETE and t.params == victim.params)
    assert retry.system_attrs["failed_trial"] == victim.number and retry.user_attrs["attempt"] == 2  # ... and retried
    assert (out / f"{victim.user_attrs['run_dir']}.failed-1").is_dir()  # the dead attempt's folder is kept aside


@pytest.mark.slow
def test_a_killed_worker_run_is_retried_by_another_sqlite(tmp_path: Path) -> None:
    _kill_a_worker_mid_run_and_let_another_finish(tmp_path, f"sqlite:///{tmp_path.resolve()}/shared.db")


@pytest.mark.slow
def test_a_killed_worker_run_is_retried_by_another_postgresql(tmp_path: Path, postgres_url: str) -> None:
    _kill_a_worker_mid_run_and_let_another_finish(tmp_path, postgres_url)


# ----------------------------------------------------------------------------------------------
# resume and failures (in-process)
# ----------------------------------------------------------------------------------------------
def _spec(tmp_path: Path, *extra: str):
    return parse_sweep(["--out", str(tmp_path / "sweep"), *GRID, *TINY_FLAGS, "--max-epochs", "1", *extra])[1]


def test_rerunning_an_interrupted_sweep_trains_only_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import misalatch.training.runs as runs

    real, calls = runs.train_seed, []

    def counting(setup, seed, run_dir, **kw):
        calls.append((setup.config.feedback, seed))
        if len(calls) == 2 and interrupt:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second run
        return real(setup, seed, run_dir, **kw)

    monkeypatch.setattr(runs, "train_seed", counting)
    spec, interrupt = _spec(tmp_path), True
    sweep = start_sweep(spec, tmp_path / "sweep", liveness=Liveness(1, 5))
    with pytest.raises(KeyboardInterrupt):
        run_worker(sweep)
    first_done = calls[0]
    metrics = next((tmp_path / "sweep" / "runs").glob("*/seed-*/metrics.json"))
    stamp = metrics.stat().st_mtime_ns

    interrupt, calls[:] = False, []
    sweep = start_sweep(spec, tmp_path / "sweep", liveness=Liveness(1, 5))  # the same command again
    run_worker(sweep)
    assert first_done not in calls and len(calls) == 3 and len(set(calls)) == 3
    assert metrics.stat().st_mtime_ns == stamp  # the finished run was not touched
    doc = json.loads(write_results(sweep)["json"].read_text())
    assert sum(v["n"] for v in doc["variants"]) == 4 and doc["failed"] == []
    calls[:] = []
    run_worker(start_sweep(spec, tmp_path / "sweep", liveness=Liveness(1, 5)))  # complete: nothing to do
    assert calls == []


def test_a_run_that_raises_is_retried_then_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import misalatch.training.runs as runs

    real = runs.train_seed

    def flaky(setup, seed, run_dir, **kw):
        if setup.config.feedback == "static" and seed == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(setup, seed, run_dir, **kw)

    monkeypatch.setattr(runs, "train_seed", flaky)
    sweep = start_sweep(_spec(tmp_path), tmp_path / "sweep", liveness=Liveness(1, 5, retries=2))
    run_worker(sweep)
    doc = json.loads(write_results(sweep)["json"].read_text())
    assert doc["failed"] == [{"key": "static", "seed": 2, "error": "RuntimeError: CUDA out of memory (simulated)",
                              "attempts": 3}]
    static = next(v for v in doc["variants"] if v["key"] == "static")
    assert static["n"] == 1 and [r["state"] for r in static["runs"]] == ["complete", "failed"]
    paired = [p for p in doc["paired"] if p["metric"] == "mae"]
    assert paired[0]["variant"] == "static" and paired[0]["baseline"] == "none" and paired[0]["n"] == 1
    md = (tmp_path / "sweep" / "results.md").read_text()
    assert "## Failed" in md and "CUDA out of memory" in md
    assert (tmp_path / "sweep" / "results.png").stat().st_size > 1000


# ----------------------------------------------------------------------------------------------
# a real sweep folder read by compare and report
# ----------------------------------------------------------------------------------------------
def test_a_real_sweep_is_read_by_compare_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from misalatch.cli import main as cli_main
    from misalatch.io.owned import read_marker

    out = tmp_path / "sweep"
    spec = parse_sweep(["--out", str(out), "--feedback", "none,static", "--seeds", "1", *TINY_FLAGS,
                        "--max-epochs", "1"])[1]
    sweep = start_sweep(spec, out, liveness=Liveness(1, 5))
    run_worker(sweep)
    text = write_results(sweep)["json"].read_text()
    assert "NaN" not in text and "null" in text  # one seed: no std, written as null (strict JSON)
    for folder in ("none", "static"):  # every run folder is an owned, complete train run
        marker = read_marker(out / "runs" / folder / "seed-1")
        assert marker is not None and marker["kind"] == "train" and marker["complete"]
        assert marker["config"]["feedback"] == folder and marker["config"]["seed"] == 1
    assert read_marker(out)["kind"] == "sweep"
    doc = json.loads(text)
    maes = {v["key"]: v["test"]["mae"]["mean"] for v in doc["variants"]}

    capsys.readouterr()
    assert cli_main(["compare", str(out)]) == 0
    table = capsys.readouterr().out
    head = table[:table.index("| run / variant |")]  # what data, which settings: above the table
    assert "**SYNTHETIC data**" in head and "(SYNTHETIC)." in head
    assert "`max_epochs` = 1 (default 500)" in head and "- `sweep/static`: `feedback` = static (default none)" in head
    for key, mae in maes.items():
        row = next(line for line in table.splitlines() if f"sweep/{key} " in line)
        assert f"{mae:.3f}" in row  # the value of results.json, not a recomputation elsewhere
    html = tmp_path / "x.html"
    assert cli_main(["report", str(out), "--out", str(html)]) == 0
    page = html.read_text()
    assert "<html" in page.lower() and all(f"{mae:.3f}" in page for mae in maes.values())
