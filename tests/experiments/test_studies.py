"""Liveness of shared studies: a trial is taken over when its heartbeat in the storage stops changing
(whatever pids or clocks say), a live beating worker is never taken over, and a worker whose trial was
failed under it does not crash."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from misalatch.errors import ConfigError
from misalatch.experiments import studies
from misalatch.experiments.studies import HEARTBEAT_ATTR, Liveness, fail_stale, open_storage, run_trial
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


class _Clock:
    """The observer's monotonic clock, moved by hand."""

    def __init__(self, monkeypatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(studies, "_clock", lambda: self.now)


def test_a_trial_is_failed_only_when_its_heartbeat_stood_still_for_the_grace(tmp_path: Path, monkeypatch) -> None:
    """Staleness is what this observer saw: an unchanged heartbeat for longer than the grace period on
    its own clock. A heartbeat stamped far in the past (another host's clock) is not judged by its value,
    and neither a live pid on this machine nor a lock keeps a silent worker's run."""
    import socket

    clock = _Clock(monkeypatch)
    study = _study(tmp_path)
    silent = _stale_running_trial(study, "runs/a/seed-1")
    silent.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # a live pid here: not a verdict
    _write_lock(tmp_path / "runs/a/seed-1", os.getpid(), host_id())
    beating = _stale_running_trial(study, "runs/b/seed-1")
    assert fail_stale(study, LIVENESS) == []  # first sight: nothing is failed, whatever the stamps say
    clock.now += 1.5
    study._storage.set_trial_system_attr(beating._trial_id, HEARTBEAT_ATTR, time.time() - 3600)  # a skewed clock
    assert fail_stale(study, LIVENESS) == []  # within the grace period
    clock.now += 1.0  # silent for 2.5 s > grace 2 s; beating changed 1 s ago
    assert fail_stale(study, LIVENESS) == [silent.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[silent.number] == TrialState.FAIL and states[beating.number] == TrialState.RUNNING
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["run_dir"] for t in waiting] == ["runs/a/seed-1"]  # the retry is queued once
    clock.now += 10
    assert fail_stale(study, LIVENESS) == [beating.number]  # then it, too, stopped


_HUNG_WORKER = """
import sys, time
import optuna
from misalatch.experiments.studies import Liveness, heartbeat, open_storage
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="s", storage=open_storage(sys.argv[1]))
trial = study.ask()
print(trial.number, flush=True)
with heartbeat(study, trial, Liveness(heartbeat_interval=1, grace_period=2)) as beat:
    for _ in range(600):  # an epoch loop
        time.sleep(0.05)
        try:
            beat.check()
        except Exception as err:
            print("stopped:", err, flush=True)
            sys.exit(3)
"""


def test_a_worker_that_hangs_while_alive_is_taken_over_and_stops_when_it_wakes(tmp_path: Path) -> None:
    """A worker frozen as a whole (SIGSTOP: its pid stays alive) stops beating; another worker fails
    and retries its trial after the grace period; woken up, the first one sees the trial is no longer
    its own at its next heartbeat and stops instead of writing on."""
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = _study(tmp_path)
    liveness = Liveness(heartbeat_interval=1, grace_period=4, retries=1)  # slack for a loaded machine
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _HUNG_WORKER, url], stdout=subprocess.PIPE, text=True, env=env)
    try:
        number = int(proc.stdout.readline())
        [trial] = study.get_trials()
        deadline = time.time() + 5  # alive and beating: never taken over
        while time.time() < deadline:
            assert fail_stale(study, liveness) == []
            time.sleep(0.3)
        beat = study._storage.get_trial(trial._trial_id).system_attrs[HEARTBEAT_ATTR]
        while study._storage.get_trial(trial._trial_id).system_attrs[HEARTBEAT_ATTR] == beat:
            time.sleep(0.02)  # stop it just after a beat, not inside its write to the database
        os.kill(proc.pid, signal.SIGSTOP)
        deadline, failed = time.time() + 30, []
        while not failed and time.time() < deadline:
            failed = fail_stale(study, liveness)
            time.sleep(0.3)
        assert failed == [number]
        assert [t.state for t in study.get_trials() if t.number == number] == [TrialState.FAIL]
        assert len(study.get_trials(states=(TrialState.WAITING,))) == 1  # the retry
        os.kill(proc.pid, signal.SIGCONT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3 and "taken over by another worker" in out


def test_a_live_worker_stuck_without_training_steps_falls_silent_and_is_taken_over(tmp_path: Path) -> None:
    """Its heartbeat thread runs on, but a worker whose training makes no step for ``stall`` seconds
    (a hung data read, a dead-locked library) stops beating: another worker takes its run over, and the
    stuck one learns it at its next check instead of writing on."""
    from misalatch.experiments.studies import TrialTakenOver, heartbeat

    study = _study(tmp_path)
    liveness = Liveness(heartbeat_interval=1, grace_period=2, retries=1, stall=3)
    trial = study.ask()
    with heartbeat(study, trial, liveness) as beat:
        started = time.monotonic()
        while time.monotonic() - started < 4:  # training: a step every 0.1 s, longer than grace and stall
            beat.step()
            assert fail_stale(study, liveness) == []
            time.sleep(0.1)
        stuck = time.monotonic()  # now no step any more, while the process and its beat thread live
        failed: list[int] = []
        while not failed and time.monotonic() - stuck < 30:
            failed = fail_stale(study, liveness)
            time.sleep(0.2)
        assert failed == [trial.number] and time.monotonic() - stuck >= liveness.stall
        assert beat.lost.wait(10)  # the silent beat thread still watches the trial's state
        with pytest.raises(TrialTakenOver):
            beat.check()
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1  # the retry


def test_stall_must_outlast_the_grace_period() -> None:
    with pytest.raises(ConfigError, match="--stall"):
        Liveness(heartbeat_interval=1, grace_period=10, stall=5)


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
    """A slow first write of the objective (a busy database) must not let this process fail its own
    trial; the trial names its worker the moment it is asked."""
    study = _study(tmp_path)
    seen: dict[str, object] = {}

    def objective(trial: optuna.Trial) -> float:
        fail_stale(study, LIVENESS)
        later = studies._clock() + 600  # as if the objective's first writes had taken ten minutes
        monkeypatch.setattr(studies, "_clock", lambda: later)
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
