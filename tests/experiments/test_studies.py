"""Liveness of shared studies: a late heartbeat never takes a live run away, and a worker whose trial
was failed under it does not crash."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from misalatch.experiments.studies import HEARTBEAT_ATTR, Liveness, fail_stale, open_storage, run_trial
from misalatch.experiments.sweep import run_folder_alive
from misalatch.io.atomic import host_id
from misalatch.io.owned import lock_holder_alive, lock_path

LIVENESS = Liveness(heartbeat_interval=1, grace_period=2, retries=1)


def _study(tmp_path: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'study.db'}"), study_name="s")


def _stale_running_trial(study: optuna.Study, run_dir: str) -> optuna.Trial:
    trial = study.ask()
    trial.set_user_attr("run_dir", run_dir)
    study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - 60)
    return trial


def _write_lock(target: Path, pid: int, host: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path(target).write_text(json.dumps({"pid": pid, "host": host, "started": "now"}))


def test_lock_holder_alive_reads_the_lock(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "seed-1"
    assert lock_holder_alive(run) is False  # no lock
    _write_lock(run, os.getpid(), host_id())
    assert lock_holder_alive(run) is True
    _write_lock(run, 2**22 + 12345, host_id())  # beyond pid_max: no such process
    assert lock_holder_alive(run) is False
    _write_lock(run, 2**63, host_id())  # a crafted lock: a pid no process can have, not a crash
    assert lock_holder_alive(run) is False
    lock_path(run).write_text('{"pid": 1e400, "host": "%s"}' % host_id())  # JSON reads it as inf
    assert lock_holder_alive(run) is None  # cannot be read: neither alive nor dead
    _write_lock(run, os.getpid(), "another-host")
    assert lock_holder_alive(run) is None  # a pid of another machine means nothing here


def test_a_late_heartbeat_of_a_live_local_run_is_left_running(tmp_path: Path) -> None:
    study = _study(tmp_path)
    alive = _stale_running_trial(study, "runs/a/seed-1")
    dead = _stale_running_trial(study, "runs/b/seed-1")
    _write_lock(tmp_path / "runs/a/seed-1", os.getpid(), host_id())
    _write_lock(tmp_path / "runs/b/seed-1", 2**22 + 12345, host_id())
    fail_stale(study, LIVENESS, alive=run_folder_alive(tmp_path))
    states = {t.number: t.state for t in study.get_trials()}
    assert states[alive.number] == TrialState.RUNNING
    assert states[dead.number] == TrialState.FAIL
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["run_dir"] for t in waiting] == ["runs/b/seed-1"]  # only the dead one is retried


def test_a_trial_failed_under_its_worker_is_not_told_twice(tmp_path: Path) -> None:
    study = _study(tmp_path)

    def objective(trial: optuna.Trial) -> float:
        # another host's worker took this trial for dead while it ran
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return 1.0

    assert run_trial(study, objective, RuntimeError) is None
    [trial] = study.get_trials()
    assert trial.state == TrialState.FAIL  # left as the other worker recorded it; no ValueError


def test_run_trial_records_success_failure_and_non_finite(tmp_path: Path) -> None:
    study = _study(tmp_path)

    def failing(trial: optuna.Trial) -> float:
        raise RuntimeError("diverged")

    assert run_trial(study, lambda t: 0.5, RuntimeError).state == TrialState.COMPLETE
    assert run_trial(study, failing, RuntimeError).state == TrialState.FAIL
    assert run_trial(study, lambda t: float("nan"), RuntimeError).state == TrialState.FAIL
    assert [t.value for t in study.get_trials(states=(TrialState.COMPLETE,))] == [0.5]


def test_a_live_local_worker_is_never_failed_however_late_its_heartbeat(tmp_path: Path) -> None:
    import socket
    import subprocess

    study = _study(tmp_path)
    live = subprocess.Popen(["sleep", "60"])
    mine = _stale_running_trial(study, "runs/a/seed-1")  # no lock yet: still preparing its data
    mine.set_user_attr("worker", f"{socket.gethostname()}:{live.pid}")
    orphan = _stale_running_trial(study, "runs/d/seed-1")  # this process, but not running it (a Ctrl-C)
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    gone = _stale_running_trial(study, "runs/b/seed-1")
    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    gone.set_user_attr("worker", f"{socket.gethostname()}:{child.pid}")
    elsewhere = _stale_running_trial(study, "runs/c/seed-1")
    elsewhere.set_user_attr("worker", f"another-host:{os.getpid()}")
    try:
        fail_stale(study, LIVENESS, alive=run_folder_alive(tmp_path))
    finally:
        live.kill()
        live.wait()
    states = {t.number: t.state for t in study.get_trials()}
    assert states[mine.number] == TrialState.RUNNING
    assert states[gone.number] == TrialState.FAIL and states[elsewhere.number] == TrialState.FAIL
    assert states[orphan.number] == TrialState.FAIL


def test_an_interrupted_trial_is_failed_not_left_running(tmp_path: Path) -> None:
    import pytest

    study = _study(tmp_path)

    def objective(trial: optuna.Trial) -> float:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(study, objective, RuntimeError)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]


def test_recording_an_outcome_on_a_trial_failed_meanwhile_does_not_crash(tmp_path: Path) -> None:
    study = _study(tmp_path)

    def objective(trial: optuna.Trial) -> float:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        trial.set_user_attr("best_epoch", 3)  # raises UpdateFinishedTrialError
        return 1.0

    assert run_trial(study, objective, RuntimeError) is None


def test_a_trial_names_its_worker_before_its_objective_runs(tmp_path: Path, monkeypatch) -> None:
    """A slow first write of the objective (a busy database) must not let another worker take the
    trial: it is claimed the moment it is asked, so the live-worker check protects it."""
    from misalatch.experiments import studies

    study = _study(tmp_path)
    seen: dict[str, object] = {}

    def objective(trial: optuna.Trial) -> float:
        later = time.time() + 600  # as if the objective's first writes had taken ten minutes
        monkeypatch.setattr(studies.time, "time", lambda: later)
        fail_stale(study, LIVENESS)
        monkeypatch.undo()
        frozen = study._storage.get_trial(trial._trial_id)
        seen.update(state=frozen.state, worker=frozen.user_attrs.get("worker"))
        return 1.0

    done = run_trial(study, objective, RuntimeError)
    assert seen == {"state": TrialState.RUNNING, "worker": studies.worker_id()}
    assert done is not None and done.state == TrialState.COMPLETE


def _pop_until_empty(url: str, found: "multiprocessing.Queue") -> None:
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    popped = []
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        popped.append(study.ask()._trial_id)
    found.put(popped)


def test_workers_on_one_sqlite_file_never_pop_the_same_queued_trial(tmp_path: Path) -> None:
    """SQLite ignores Optuna's FOR UPDATE: without BEGIN IMMEDIATE two processes both claimed one
    WAITING trial (about 1 in 15 in this race) and trained the same run twice."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = _study(tmp_path)
    for i in range(120):
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs={"i": i}))
    queued = {t._trial_id for t in study.get_trials(deepcopy=False)}
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as separate workers are
    found = context.Queue()
    procs = [context.Process(target=_pop_until_empty, args=(url, found)) for _ in range(4)]
    for proc in procs:
        proc.start()
    popped = [i for _ in procs for i in found.get(timeout=240)]
    for proc in procs:
        proc.join(timeout=60)
    claimed = [i for i in popped if i in queued]
    assert sorted(claimed) == sorted(queued)  # every queued trial claimed exactly once


def test_an_in_memory_sqlite_study_works_and_creates_no_folder(tmp_path: Path, monkeypatch) -> None:
    """Only a database file gets the shared-file transaction hooks; an in-memory one would lose its
    tables when the hooks drop the first connections. ``sqlite://`` names no folder to make."""
    monkeypatch.chdir(tmp_path)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for url in ("sqlite:///:memory:", "sqlite://"):
        study = optuna.create_study(storage=open_storage(url))
        study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=2)
        assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2
    assert list(tmp_path.iterdir()) == []
