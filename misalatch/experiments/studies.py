"""Optuna storages and workers shared by sweeps and searches.

A study lives in a storage named by a URL: ``sqlite:///FILE`` (the default, nothing to install),
any SQLAlchemy URL Optuna accepts (``postgresql+psycopg2://user:pw@host/db``, ``mysql+pymysql://...``)
or ``journal:PATH`` (Optuna's journal file on a shared file system). Several processes on several
machines may work on one study at once: each pulls the next trial nobody holds.

A worker that dies (SIGKILL, a lost node) must not lose its run: every running trial carries a
heartbeat, and a trial whose heartbeat is older than the grace period is failed by the next worker
that looks and queued again (at most ``retries`` times), the same way a run that raised is retried.
RDB storages use Optuna's own heartbeat (``RDBStorage(heartbeat_interval=, grace_period=,
heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback)``); the journal storage has none, so
a small thread writes a ``misalatch_heartbeat`` timestamp into the trial and :func:`fail_stale`
applies the same rule.
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
from typing import Any, Iterator

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from misalatch.errors import ConfigError, MisalatchError

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


def open_storage(url: str, liveness: Liveness) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` with heartbeat and retries; clear errors for bad URLs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flagged experimental since Optuna 2.8, the documented way
        retry = RetryHeartbeatStaleTrialCallback(max_retry=liveness.retries)
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
    if url.startswith("sqlite"):
        # many workers on one file: wait for the write lock instead of failing at once
        engine_kwargs = {"connect_args": {"timeout": 120}}
        target = url.split(":///", 1)[-1]
        if target and target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat arguments are flagged experimental
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=liveness.heartbeat_interval,
                              grace_period=liveness.grace_period, heartbeat_stale_trial_callback=retry)
    except ImportError as err:
        raise ConfigError(f"--storage {redact(url)}: the database driver is not installed ({err})") from err
    except Exception as err:  # sqlalchemy ArgumentError / OperationalError
        raise StorageError(f"--storage {redact(url)}: cannot open the storage ({type(err).__name__}: "
                           f"{str(err).splitlines()[0]})") from err


def is_journal(storage: optuna.storages.BaseStorage) -> bool:
    from optuna.storages.journal import JournalStorage

    return isinstance(storage, JournalStorage)


def retry_callback(storage: optuna.storages.BaseStorage, retries: int) -> RetryHeartbeatStaleTrialCallback:
    """The storage's retry callback (RDB), or one with the same rule (journal)."""
    callback = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
    if callback is not None:
        return callback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RetryHeartbeatStaleTrialCallback(max_retry=retries)


def attempts(trial: FrozenTrial) -> int:
    """1 for a first attempt, 2 for its first retry, ..."""
    return 1 + len(trial.system_attrs.get("retry_history", []))  # the list RetryHeartbeatStaleTrialCallback keeps


def fail_stale(study: optuna.Study, liveness: Liveness) -> None:
    """Fail running trials whose worker stopped beating, and queue their retries."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not is_journal(study._storage):
            optuna.storages.fail_stale_trials(study)
            return
    now = time.time()
    callback = retry_callback(study._storage, liveness.retries)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.system_attrs.get(HEARTBEAT_ATTR)
        if beat is None and trial.datetime_start is not None:
            beat = trial.datetime_start.timestamp()
        if beat is None or now - float(beat) <= liveness.grace_period:
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker failed it first and queued the retry
        log.warning("trial %d: its worker stopped beating %.0f s ago; failed and queued again", trial.number,
                    now - float(beat))
        callback(study, study._storage.get_trial(trial._trial_id))


@contextlib.contextmanager
def journal_heartbeat(study: optuna.Study, trial: optuna.Trial, liveness: Liveness) -> Iterator[None]:
    """Beat for ``trial`` while the body runs (journal storages only; RDB storages beat themselves)."""
    if not is_journal(study._storage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time())
            except Exception:  # noqa: BLE001 - a finished trial or a transient file error
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
