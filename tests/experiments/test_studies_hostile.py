"""A stranger's study database and a silent server (issue 17 §4, §7, §8): nothing hangs, every stored
value is checked before use, and the documented storage URLs work."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import optuna
import pytest

from misalatch import cli
from misalatch.errors import ConfigError
from misalatch.experiments import search as search_mod
from misalatch.experiments.search import SearchFailed, SearchSpec, run_search_worker, start_search
from misalatch.experiments.studies import open_storage
from misalatch.experiments.sweep import STUDY_ATTR, SweepSpec, join_sweep, start_sweep
from misalatch.training.config import TrainConfig


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server on 127.0.0.1 that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def _one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"misalatch {argv[0]}: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# every URL form the docs name; the MySQL drivers are not installed here: a clear error, at once
URL_FORMS = ["postgresql://u@127.0.0.1:{port}/db", "postgresql+psycopg2://u@127.0.0.1:{port}/db",
             "postgres://u:secret@127.0.0.1:{port}/db", "mysql://u@127.0.0.1:{port}/db",
             "mysql+pymysql://u@127.0.0.1:{port}/db"]


@pytest.mark.slow
@pytest.mark.parametrize("form", URL_FORMS)
@pytest.mark.parametrize("command", ["sweep", "search"])
def test_a_server_that_accepts_and_never_answers_is_a_clear_error(
        form: str, command: str, silent_port: int, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MISALATCH_DB_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("MISALATCH_DB_STATEMENT_TIMEOUT", "1")
    url = form.format(port=silent_port)
    started = time.monotonic()
    line = _one_error_line([command, "--join", "--storage", url, "--study", "s"], capsys)
    assert time.monotonic() - started < 15
    assert "--storage" in line and str(silent_port) in line and "secret" not in line


def test_a_locked_sqlite_database_is_a_clear_error_after_the_busy_timeout(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MISALATCH_DB_STATEMENT_TIMEOUT", "1")
    db = tmp_path / "study.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock forever
    try:
        started = time.monotonic()
        line = _one_error_line(["sweep", "--join", "--storage", f"sqlite:///{db}", "--study", "s"], capsys)
        assert time.monotonic() - started < 15 and "locked" in line
    finally:
        holder.close()


def test_bad_timeout_settings_are_named(monkeypatch) -> None:
    monkeypatch.setenv("MISALATCH_DB_CONNECT_TIMEOUT", "inf")
    with pytest.raises(ConfigError, match="MISALATCH_DB_CONNECT_TIMEOUT"):
        open_storage("sqlite://")


# ---- a crafted study ----------------------------------------------------------------------------
def _crafted_sweep(tmp_path: Path, change) -> str:
    url = f"sqlite:///{tmp_path / 'crafted.db'}"
    spec = SweepSpec(TrainConfig(max_epochs=1), {"feedback": ("none",), "seed": (1,)})
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    doc: dict[str, Any] = {**spec.to_dict(), "out": str(tmp_path / "sweep")}
    change(doc)
    study.set_user_attr(STUDY_ATTR, doc)
    return url


def _huge_grid(doc: dict) -> None:  # 2 x 10^14 points from 2.2 x 10^5 values: 10^5 x 10^5 x 2 x 10^4
    doc["grid"] = {"lr": [1e-5 * (i + 1) for i in range(10**5)], "hidden_size": list(range(1, 10**5 + 1)),
                   "seed": list(range(2 * 10**4))}


CRAFTED = {
    "2e14-point grid": (_huge_grid, "more than 10000 points"),
    "+inf seed": (lambda d: d["grid"].__setitem__("seed", [float("inf")]), "seed"),
    "grid not a mapping": (lambda d: d.__setitem__("grid", [1, 2]), "malformed"),
    "values not lists": (lambda d: d["grid"].__setitem__("feedback", "none"), "malformed"),
    "base not a mapping": (lambda d: d.__setitem__("base", "x"), "malformed"),
    "base of wrong types": (lambda d: d["base"].__setitem__("max_epochs", "many"), "max_epochs"),
    "out not a path": (lambda d: d.__setitem__("out", 12), "give --out"),
    "relative out": (lambda d: d.__setitem__("out", "../../elsewhere"), "give --out"),
    "version": (lambda d: d.__setitem__("version", 99), "this version"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_sweep_study_is_refused_at_once(case: str, tmp_path: Path, capsys) -> None:
    change, expected = CRAFTED[case]
    url = _crafted_sweep(tmp_path, change)
    started = time.monotonic()
    line = _one_error_line(["sweep", "--join", "--storage", url, "--study", "s"], capsys)
    assert time.monotonic() - started < 20
    assert expected in line and "--study s" in line
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("change, expected", [
    (lambda d: d.__setitem__("trials", float("inf")), "trial count"),
    (lambda d: d.__setitem__("trials", 10**12), "--trials"),
    (lambda d: d["space"]["lr"].__setitem__("high", float("inf")), "finite"),
    (lambda d: d["space"]["lr"].__setitem__("step", 0), "step"),
    (lambda d: d.__setitem__("space", ["lr"]), "mapping"),
    (lambda d: d.__setitem__("objective", 3), "malformed"),
])
def test_a_crafted_search_study_is_refused_at_once(change, expected, tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'crafted.db'}"
    spec = SearchSpec(TrainConfig(max_epochs=1), {"lr": {"type": "float", "low": 0.1, "high": 1.0}}, trials=2)
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    doc = {**spec.to_dict(), "out": str(tmp_path / "search")}
    change(doc)
    study.set_user_attr(search_mod.STUDY_ATTR, doc)
    line = _one_error_line(["search", "--join", "--storage", url, "--study", "s"], capsys)
    assert expected in line


def test_a_search_whose_trials_all_fail_stops_with_the_first_error(tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError(f"data path missing (call {len(calls)})")

    monkeypatch.setattr(search_mod, "train_run_folder", broken)
    monkeypatch.setattr("misalatch.training.setup.setup_run", lambda cfg: None)
    spec = SearchSpec(TrainConfig(max_epochs=1), {"lr": {"type": "float", "low": 0.1, "high": 1.0}}, trials=50)
    search = start_search(spec, tmp_path / "search", sampler_seed=0)
    with pytest.raises(SearchFailed, match=r"5 trials in a row failed.*call 1\)"):
        run_search_worker(search)
    assert len(calls) == 5


# ---- the documented URL, and a failed start ----------------------------------------------------
def test_the_documented_postgresql_url_works_and_a_failed_start_blocks_no_retry(
        postgres_url: str, tmp_path: Path, silent_port: int, monkeypatch) -> None:
    monkeypatch.setenv("MISALATCH_DB_CONNECT_TIMEOUT", "1")
    spec = SweepSpec(TrainConfig(max_epochs=1), {"feedback": ("none", "static"), "seed": (1,)})
    out = tmp_path / "sweep"
    with pytest.raises(Exception, match="--storage"):  # a server that never answers: nothing is left behind
        start_sweep(spec, out, storage=f"postgresql://u@127.0.0.1:{silent_port}/db", study="mosi")
    assert not out.exists()
    bare = postgres_url.replace("postgresql+psycopg2://", "postgresql://")  # as the README writes it
    sweep = start_sweep(spec, out, storage=bare, study="mosi")
    assert sweep.study.user_attrs[STUDY_ATTR]["grid"]["feedback"] == ["none", "static"]
    assert join_sweep(bare, "mosi").spec.grid == spec.grid
