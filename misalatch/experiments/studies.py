"""Optuna storages and workers shared by sweeps and searches.

A study lives in a storage named by a URL: ``sqlite:///FILE`` (the default, nothing to install),
any SQLAlchemy URL Optuna accepts (``postgresql+psycopg2://user:pw@host/db``, ``mysql+pymysql://...``)
or ``journal:PATH`` (Optuna's journal file on a shared file system). Several processes on several
machines may work on one study at once: each pulls the next trial nobody holds.

A worker that dies (SIGKILL, a lost node) must not lose its run: every running trial carries a
heartbeat (a ``misalatch_heartbeat`` timestamp that a small thread writes, the same for every
storage), and a trial whose heartbeat is older than the grace period is failed by the next worker
that looks and queued again (at most ``retries`` times), the same way a run that raised is retried.
A late heartbeat alone never fails a run that is visibly alive: when the trial's run folder is
locked by a live process on this machine (a loaded machine, a storage busy with other writers), it
is left running. A trial that was failed under a live worker on another host is not told twice: the
worker logs it and keeps the run folder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from misalatch.errors import ConfigError, MisalatchError
from misalatch.io.atomic import pid_alive

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal:"
HEARTBEAT_ATTR = "misalatch_heartbeat"


class StorageError(MisalatchError):
    """The study storage cannot be opened or reached."""


@dataclass(frozen=True)
class Liveness:
    """How a worker shows it is alive, and when a silent one is given up."""

    heartbeat_interval: int = 30  # seconds between heartbeats
    grace_period: int = 120  # a running trial silent for longer is failed and retried
    retries: int = 1  # extra attempts for a run that raised or whose worker died

    def __post_init__(self) -> None:
        if self.heartbeat_interval < 1:
            raise ConfigError(f"--heartbeat must be >= 1 second, got {self.heartbeat_interval}")
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(f"--grace ({self.grace_period} s) must be longer than --heartbeat "
                              f"({self.heartbeat_interval} s), or live workers are taken for dead")
        if self.retries < 0:
            raise ConfigError(f"--retries must be >= 0, got {self.retries}")


def default_storage(folder: str | Path) -> str:
    """``sqlite:///<folder>/study.db`` (absolute, so that every worker names the same file)."""
    return f"sqlite:///{(Path(folder).resolve() / 'study.db').as_posix()}"


def redact(url: str) -> str:
    """The URL without its password, for results files and logs."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by open_storage
        return url.split("@")[-1]


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; clear errors for bad URLs."""
    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

        path = url[len(JOURNAL_PREFIX):]
        if not path:
            raise ConfigError("--storage journal:PATH needs a file path (e.g. journal:/shared/sweeps/mosi.log)")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        except OSError as err:
            raise StorageError(f"--storage {url}: cannot open the journal file ({err.strerror})") from err
    if "://" not in url:
        raise ConfigError(f"--storage {url!r}: expected a URL such as sqlite:///sweeps/study.db, "
                          "postgresql+psycopg2://user@host/db or journal:/shared/study.log")
    engine_kwargs: dict = {"pool_pre_ping": True}
    sqlite_file = None  # the database file of a sqlite URL; none for an in-memory one (one process)
    if url.startswith("sqlite"):
        # many workers on one file: wait for the write lock instead of failing at once
        engine_kwargs = {"connect_args": {"timeout": 120}}
        target = url.split(":///", 1)[1] if ":///" in url else ""
        if target and target != ":memory:":
            sqlite_file = Path(target)
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        storage = RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError as err:
        raise ConfigError(f"--storage {redact(url)}: the database driver is not installed ({err})") from err
    except Exception as err:  # sqlalchemy ArgumentError / OperationalError
        raise StorageError(f"--storage {redact(url)}: cannot open the storage ({type(err).__name__}: "
                           f"{str(err).splitlines()[0]})") from err
    if sqlite_file is not None:  # only a file is shared by several workers
        _serialize_sqlite_transactions(storage)
    return storage


def _serialize_sqlite_transactions(storage: RDBStorage) -> None:
    """Make every SQLite transaction take the write lock when it begins (``BEGIN IMMEDIATE``).

    Optuna claims a queued trial by reading it ``FOR UPDATE`` and then writing RUNNING; SQLite
    ignores ``FOR UPDATE`` and Python's driver begins a transaction only at the first write, so two
    workers could both read WAITING and both run the same trial. With the lock taken at BEGIN the
    read and the write are one step (SQLAlchemy's documented recipe for pysqlite transactions)."""
    from sqlalchemy import event

    @event.listens_for(storage.engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(storage.engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    storage.engine.dispose()  # connections opened while Optuna made its tables predate the hooks


def retry_callback(retries: int) -> RetryHeartbeatStaleTrialCallback:
    """Optuna's retry rule: queue a copy of a failed trial, at most ``retries`` times."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flagged experimental since Optuna 2.8, the documented way
        return RetryHeartbeatStaleTrialCallback(max_retry=retries)


def attempts(trial: FrozenTrial) -> int:
    """1 for a first attempt, 2 for its first retry, ..."""
    return 1 + len(trial.system_attrs.get("retry_history", []))  # the list RetryHeartbeatStaleTrialCallback keeps


AliveCheck = Callable[[FrozenTrial], Optional[bool]]


def local_worker_alive(trial: FrozenTrial) -> Optional[bool]:
    """Whether the worker that holds ``trial`` (its ``worker`` attribute, ``host:pid``) is a live
    process on this machine; None when it runs elsewhere or has not said yet."""
    worker = trial.user_attrs.get("worker")
    if not isinstance(worker, str) or ":" not in worker:
        return None
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    if int(pid) == os.getpid():  # this process: alive for the trial only while it is running it
        return trial._trial_id in _RUNNING_HERE
    return pid_alive(int(pid))


_RUNNING_HERE: set[int] = set()  # trial ids this process is running now (see run_trial)


def fail_stale(study: optuna.Study, liveness: Liveness, alive: Optional[AliveCheck] = None) -> None:
    """Fail running trials whose worker stopped beating, and queue their retries.

    A trial whose worker is a live process on this machine is never failed, however late its
    heartbeat (a loaded machine, a storage busy with other writers): only a process that is gone,
    or one on another host that stopped beating, loses its run. ``alive(trial)`` may add a check
    (True: alive), e.g. the lock of the trial's run folder.
    """
    now = time.time()
    callback = retry_callback(liveness.retries)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.system_attrs.get(HEARTBEAT_ATTR)
        if beat is None and trial.datetime_start is not None:
            beat = trial.datetime_start.timestamp()
        if beat is None or now - float(beat) <= liveness.grace_period:
            continue
        if local_worker_alive(trial) or (alive is not None and alive(trial)):
            log.info("trial %d: heartbeat %.0f s old, but its worker is alive; left running",
                     trial.number, now - float(beat))
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker failed it first and queued the retry
        log.warning("trial %d: its worker stopped beating %.0f s ago; failed and queued again", trial.number,
                    now - float(beat))
        callback(study, study._storage.get_trial(trial._trial_id))


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial, liveness: Liveness) -> Iterator[None]:
    """Beat for ``trial`` every ``heartbeat_interval`` seconds while the body runs."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time())
            except Exception:  # noqa: BLE001 - a finished trial or a transient storage error
                pass
            if stop.wait(liveness.heartbeat_interval):
                return

    thread = threading.Thread(target=beat, name="misalatch-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_trial(study: optuna.Study, objective: Callable[[optuna.Trial], float], failure: type[Exception],
              after: Optional[Callable[[optuna.Study, FrozenTrial], None]] = None) -> Optional[FrozenTrial]:
    """Ask for one trial (the next queued one first), run ``objective`` and tell its outcome.

    The trial names its worker (``host:pid``, the ``worker`` attribute) before the objective runs.
    ``objective`` raises ``failure`` for a run that failed (recorded, not re-raised) and
    ``optuna.TrialPruned`` for one pruned or not needed. A trial that another worker failed while it
    ran (its heartbeat looked stale from another host) is not told again: its outcome is logged and
    None returned, so that one slow worker never crashes with Optuna's "Cannot tell a FAIL trial".
    """
    trial = study.ask()
    value: Optional[float] = None
    _RUNNING_HERE.add(trial._trial_id)
    # claim it at once: until the trial names its worker, another worker can only judge it by its
    # start time, and the objective's first storage writes may take seconds on a busy database
    with contextlib.suppress(Exception):
        study._storage.set_trial_user_attr(trial._trial_id, "worker", worker_id())
        study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time())
    try:
        value, state = objective(trial), TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except failure:
        state = TrialState.FAIL
    except UpdateFinishedTrialError:  # recording its outcome found the trial failed by another worker
        state = TrialState.FAIL
    except BaseException:  # Ctrl-C, SystemExit: the trial must not stay RUNNING under a live process
        with contextlib.suppress(Exception):
            study.tell(trial, state=TrialState.FAIL)
        raise
    finally:
        _RUNNING_HERE.discard(trial._trial_id)
    if study._storage.get_trial(trial._trial_id).state.is_finished():
        log.warning("trial %d was failed by another worker while this one ran it (its heartbeat arrived late); "
                    "its outcome here (%s) is not recorded and its retry stands", trial.number, state.name)
        return None
    if state == TrialState.COMPLETE and value is not None and not math.isfinite(value):
        state = TrialState.FAIL  # Optuna would fail it too; say so the same way
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    frozen = study._storage.get_trial(trial._trial_id)
    if after is not None:
        after(study, frozen)
    return frozen


def json_safe(value: Any) -> Any:
    """NaN/inf as None, for strict JSON files (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def load_existing_study(name: str, storage: optuna.storages.BaseStorage, url: str,
                        sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"--study {name}: no such study in {redact(url)} (it holds {known or 'none'}); start it "
                          "first with the same command without --join") from None


def _study_ready(name: str, url: str) -> bool:
    """Whether study ``name`` exists in ``url`` with its settings stored; a SQLite or journal file that does
    not exist yet is not created (the command that starts the study must find its folder as it left it)."""
    for prefix in ("sqlite:///", JOURNAL_PREFIX):
        if url.startswith(prefix) and not Path(url[len(prefix):]).is_file():
            return False
    import sqlalchemy.exc

    try:
        summaries = optuna.get_all_study_summaries(open_storage(url))
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, StorageError, OSError) as err:
        log.debug("%s: not readable yet (%s)", redact(url), err)  # the starter may be creating its tables now
        return False
    return any(s.study_name == name and s.user_attrs for s in summaries)


def wait_for_study(name: str, url: str, *, timeout: float, poll: float = 2.0,
                   on_wait: Callable[[str], None] | None = None) -> None:
    """Return once study ``name`` exists in ``url`` (``--join`` started before the study). ``on_wait`` is
    told once that the worker waits; after ``timeout`` seconds a ConfigError says how to start the study."""
    deadline = time.monotonic() + timeout
    told = False
    while not _study_ready(name, url):
        if time.monotonic() >= deadline:
            raise ConfigError(f"--study {name}: not in {redact(url)} after waiting {timeout:g} s; start it first with "
                              "the same command without --join (or wait longer with --wait SECONDS)")
        if not told and on_wait is not None:
            on_wait(f"waiting up to {timeout:g} s for study {name} to appear in {redact(url)} "
                    "(started by the same command without --join)")
            told = True
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
