"""Optuna storages and workers shared by sweeps and searches.

A study lives in a storage named by a URL: ``sqlite:///FILE`` (the default, nothing to install),
any SQLAlchemy URL Optuna accepts (``postgresql+psycopg2://user:pw@host/db``, ``mysql+pymysql://...``)
or ``journal:PATH`` (Optuna's journal file on a shared file system). Several processes on several
machines may work on one study at once: each pulls the next trial nobody holds.

A worker that dies (SIGKILL, a lost node) or hangs as a whole must not lose its run: every running
trial carries a heartbeat in the storage (a ``misalatch_heartbeat`` value that a small thread
rewrites, the same for every storage), and a trial whose heartbeat a watching worker has seen
unchanged for longer than the grace period is failed and queued again (at most ``retries`` times),
the same way a run that raised is retried (``fail_stale``). Nothing local decides it (no process
id, no wall clock of another host), so it works across machines. A worker whose trial was taken over
notices at its next heartbeat, stops at the next epoch and is not told twice: it logs it.

Every storage URL gets a connect and a statement timeout (``Timeouts``), so a server that
accepts and never answers ends in a ``StorageError``, never a hang.
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
    # a worker alive but stuck (a hung data read, a dead-locked library) stops beating after this
    # many seconds without a training step, so that another worker takes its run over
    stall: int = 1800

    def __post_init__(self) -> None:
        if self.heartbeat_interval < 1:
            raise ConfigError(f"--heartbeat must be >= 1 second, got {self.heartbeat_interval}")
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(f"--grace ({self.grace_period} s) must be longer than --heartbeat "
                              f"({self.heartbeat_interval} s), or live workers are taken for dead")
        if self.retries < 0:
            raise ConfigError(f"--retries must be >= 0, got {self.retries}")
        if self.stall <= self.grace_period:
            raise ConfigError(f"--stall ({self.stall} s) must be longer than --grace ({self.grace_period} s)")

    @classmethod
    def from_flags(cls, heartbeat: int, grace: int | None, retries: int, stall: int | None) -> "Liveness":
        """The command line's values, with its defaults: grace 4 × heartbeat, stall max(1800, 2 × grace)."""
        grace = grace or 4 * heartbeat
        return cls(heartbeat, grace, retries, stall or max(1800, 2 * grace))


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


@dataclass(frozen=True)
class Timeouts:
    """How long a storage may take: to connect, and to answer one statement (seconds).

    Every URL form gets both, so that a database that accepts a connection and never answers (a
    wedged server, a firewall that swallows packets, a port of another service) ends in a clear
    error instead of a hang. ``MISALATCH_DB_CONNECT_TIMEOUT`` / ``MISALATCH_DB_STATEMENT_TIMEOUT``
    (seconds) change the defaults, e.g. for a slow link, or short for tests."""

    connect: float = 30.0
    statement: float = 300.0

    @classmethod
    def from_env(cls) -> "Timeouts":
        values = {}
        for field, name in (("connect", "MISALATCH_DB_CONNECT_TIMEOUT"), ("statement", "MISALATCH_DB_STATEMENT_TIMEOUT")):
            raw = os.environ.get(name)
            if raw is None or not raw.strip():
                continue
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or not 0 < value <= 86_400:
                raise ConfigError(f"{name}={raw!r}: expected a number of seconds in (0, 86400]")
            values[field] = value
        return cls(**values)


def normalize_url(url: str) -> str:
    """The SQLAlchemy URL with a database driver that is installed.

    SQLAlchemy 2.x maps a bare ``postgresql://`` to psycopg 3 and ``mysql://`` to mysqlclient; the
    documented ``postgresql://user@host/db`` must work with the psycopg2 that misalatch installs, so a
    bare scheme (and Heroku's ``postgres://``) gets the first installed driver of the dialect."""
    from sqlalchemy.engine import make_url

    import importlib.util

    parsed = make_url(url)
    given, _, driver = parsed.drivername.partition("+")
    backend = "postgresql" if given == "postgres" else given
    if not driver:
        for name, module in _DRIVERS.get(backend, ()):
            try:
                found = importlib.util.find_spec(module) is not None
            except ImportError:  # a dotted name whose package is missing
                found = False
            if found:
                driver = name
                break
    if (backend, driver) == (given, parsed.drivername.partition("+")[2]):
        return url  # as given: nothing to choose, or no driver installed (SQLAlchemy's ImportError says which)
    return parsed.set(drivername=f"{backend}+{driver}" if driver else backend).render_as_string(hide_password=False)


# the drivers tried for a bare scheme, in order: (SQLAlchemy driver name, module to import)
_DRIVERS = {"postgresql": (("psycopg2", "psycopg2"), ("psycopg", "psycopg"), ("pg8000", "pg8000")),
            "mysql": (("pymysql", "pymysql"), ("mysqldb", "MySQLdb"), ("mysqlconnector", "mysql.connector"))}


def connect_args(url: str, timeouts: Timeouts) -> dict[str, Any]:
    """The DBAPI ``connect()`` arguments that bound connecting and each statement, per driver."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    connect_s, statement_ms = max(1, math.ceil(timeouts.connect)), max(1, int(timeouts.statement * 1000))
    return {k: v for k, v in _driver_args(backend, driver, connect_s, statement_ms, timeouts).items()
            if k not in parsed.query}  # a value the user put in the URL wins


def _driver_args(backend: str, driver: str, connect_s: int, statement_ms: int, timeouts: Timeouts) -> dict[str, Any]:
    if backend == "sqlite":
        return {"timeout": timeouts.statement}  # how long to wait for another writer's lock
    if backend == "postgresql" and driver in ("psycopg2", "psycopg"):
        # libpq: connect_timeout bounds the whole handshake; the server ends any statement past the limit
        return {"connect_timeout": connect_s, "options": f"-c statement_timeout={statement_ms}"}
    if backend == "postgresql" and driver == "pg8000":
        return {"timeout": timeouts.statement}  # a socket timeout on every read, the handshake included
    if backend == "mysql" and driver in ("pymysql", "mysqldb"):
        return {"connect_timeout": connect_s, "read_timeout": math.ceil(timeouts.statement),
                "write_timeout": math.ceil(timeouts.statement)}
    if backend == "mysql" and driver == "mysqlconnector":
        return {"connection_timeout": connect_s}
    return {}


def _make_parent(path: Path, url: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--storage {redact(url)}: cannot create the folder {path.parent} "
                          f"({err.strerror or err})") from None


def open_storage(url: str, timeouts: Optional[Timeouts] = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``; clear errors for bad URLs and unreachable or silent servers."""
    timeouts = timeouts or Timeouts.from_env()
    if not isinstance(url, str) or "\x00" in url:
        raise ConfigError(f"--storage {url!r}: not a URL")
    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

        path = url[len(JOURNAL_PREFIX):]
        if not path:
            raise ConfigError("--storage journal:PATH needs a file path (e.g. journal:/shared/sweeps/mosi.log)")
        _make_parent(Path(path), url)
        try:
            return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        except OSError as err:
            raise StorageError(f"--storage {url}: cannot open the journal file ({err.strerror})") from err
    if "://" not in url:
        raise ConfigError(f"--storage {url!r}: expected a URL such as sqlite:///sweeps/study.db, "
                          "postgresql://user@host/db or journal:/shared/study.log")
    try:
        url = normalize_url(url)
        args = connect_args(url, timeouts)
    except Exception as err:  # noqa: BLE001 - sqlalchemy ArgumentError, ValueError of a malformed URL
        raise ConfigError(f"--storage {redact(url)}: not a valid database URL ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None
    engine_kwargs: dict = {"connect_args": args}
    sqlite_file = None  # the database file of a sqlite URL; none for an in-memory one (one process)
    if url.startswith("sqlite"):
        # many workers on one file: wait (a bounded time) for the write lock instead of failing at once
        target = url.split(":///", 1)[1] if ":///" in url else ""
        if target and target != ":memory:":
            sqlite_file = Path(target)
            _make_parent(sqlite_file, url)
    else:
        engine_kwargs.update(pool_pre_ping=True, pool_timeout=timeouts.connect)
    try:
        if url.startswith("sqlite"):  # a local file, bounded by its busy timeout (and an in-memory database
            storage = RDBStorage(url, engine_kwargs=engine_kwargs)  # lives in the opening thread's connection)
        else:
            storage = _with_deadline(lambda: RDBStorage(url, engine_kwargs=engine_kwargs), url, timeouts)
    except ImportError as err:
        raise ConfigError(f"--storage {redact(url)}: the database driver is not installed ({err})") from err
    except MisalatchError:
        raise
    except Exception as err:  # sqlalchemy ArgumentError / OperationalError
        raise StorageError(f"--storage {redact(url)}: cannot open the storage ({type(err).__name__}: "
                           f"{_first_line(err)})") from err
    if sqlite_file is not None:  # only a file is shared by several workers
        _serialize_sqlite_transactions(storage)
    return storage


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _with_deadline(make: Callable[[], Any], url: str, timeouts: Timeouts) -> Any:
    """``make()`` in a helper thread, given up after the connect + statement timeouts: the drivers'
    own timeouts bound every step, and this bounds any step a driver leaves unbounded (a MySQL
    driver without a read timeout, DNS), so that opening a storage never hangs the command."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = make()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = err

    thread = threading.Thread(target=run, name="misalatch-open-storage", daemon=True)
    thread.start()
    thread.join(timeouts.connect + timeouts.statement)
    if thread.is_alive():
        raise StorageError(f"--storage {redact(url)}: no answer from the database within "
                           f"{timeouts.connect + timeouts.statement:.0f} s (MISALATCH_DB_CONNECT_TIMEOUT, "
                           "MISALATCH_DB_STATEMENT_TIMEOUT)")
    if "error" in result:
        raise result["error"]
    return result["value"]


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
    return 1 + len(typed_attr(trial.system_attrs, "retry_history", list) or [])  # the list RetryHeartbeatStaleTrialCallback keeps


# (study id, trial id) -> (the last heartbeat value seen, when this process first saw that value,
# on its own monotonic clock). Staleness is judged by how long the value has not changed as seen from
# here, never by comparing another host's clock with this one's.
_SEEN: dict[tuple[int, int], tuple[Any, float]] = {}
_RUNNING_HERE: set[int] = set()  # trial ids this process is running now (see run_trial)


def _clock() -> float:
    return time.monotonic()


def fail_stale(study: optuna.Study, liveness: Liveness) -> list[int]:
    """Fail running trials whose heartbeat stopped, and queue their retries; returns their numbers.

    The heartbeat lives in the storage (a value the worker rewrites every ``heartbeat_interval``), so
    it works across machines: a trial is taken for dead when this process has watched its heartbeat
    stay unchanged for longer than ``grace_period`` on its own monotonic clock. No process id and no
    wall clock is compared, so neither pid reuse nor clocks that differ between hosts can keep a dead
    worker's run or take a live one's; a worker that hangs as a whole (stopped, swapping, a frozen
    node) stops beating and is taken over like a dead one. A trial is never failed on first sight: a
    worker that starts watching waits one grace period. Trials this process runs are never failed here.
    """
    now = _clock()
    callback = retry_callback(liveness.retries)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    live_keys = set()
    stale = []
    for trial in running:
        key = (study._study_id, trial._trial_id)
        live_keys.add(key)
        beat = trial.system_attrs.get(HEARTBEAT_ATTR, trial.datetime_start)
        if trial._trial_id in _RUNNING_HERE:
            continue
        seen = _SEEN.get(key)
        if seen is None or seen[0] != beat:
            _SEEN[key] = (beat, now)
            continue
        if now - seen[1] <= liveness.grace_period:
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker failed it first and queued the retry
        log.warning("trial %d: its heartbeat has not changed for %.0f s (worker %s); failed and queued again",
                    trial.number, now - seen[1], trial.user_attrs.get("worker", "unknown"))
        callback(study, study._storage.get_trial(trial._trial_id))
        stale.append(trial.number)
    for key in [k for k in _SEEN if k[0] == study._study_id and k not in live_keys]:
        del _SEEN[key]  # finished trials: forget them
    return stale


class TrialTakenOver(MisalatchError):
    """This worker's trial was failed by another worker (its heartbeat had stopped) and retried."""


@dataclass
class Beat:
    """A running heartbeat; ``lost`` is set once the storage says the trial was taken over.

    The beat goes on only while the run makes progress: ``step`` (called after every training step)
    marks it, and a worker with no step for ``Liveness.stall`` seconds falls silent, so that a process
    that is alive but stuck is taken over like a dead one."""

    lost: threading.Event
    last_step: float = 0.0  # time.monotonic() of the last progress
    stalled: bool = False  # fell silent at least once (so ``check`` asks the storage)

    def step(self) -> None:
        self.last_step = time.monotonic()

    def check(self) -> None:
        """Raise ``TrialTakenOver`` when the trial belongs to another worker now (called between
        epochs, so that a worker that hung and came back stops writing the run another one retries)."""
        if self.lost.is_set():
            raise TrialTakenOver("this run was taken over by another worker while this one was not beating")


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial, liveness: Liveness) -> Iterator[Beat]:
    """Beat for ``trial`` every ``heartbeat_interval`` seconds while the body runs."""
    stop = threading.Event()
    state = Beat(threading.Event(), last_step=time.monotonic())

    def beat() -> None:
        while True:
            try:
                if time.monotonic() - state.last_step <= liveness.stall:
                    study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time())
                else:  # stuck: stay silent (another worker takes the run over), but learn when it did
                    if not state.stalled:
                        log.warning("trial %d: no training step for %d s; not beating any more, so that another "
                                    "worker can take this run over", trial.number, liveness.stall)
                    state.stalled = True
                    if study._storage.get_trial(trial._trial_id).state.is_finished():
                        state.lost.set()
                        return
            except UpdateFinishedTrialError:  # failed by another worker: it is theirs now
                state.lost.set()
                return
            except Exception:  # noqa: BLE001 - a transient storage error (each call is bounded by the timeouts)
                pass
            if stop.wait(liveness.heartbeat_interval):
                return

    thread = threading.Thread(target=beat, name="misalatch-heartbeat", daemon=True)
    thread.start()
    try:
        yield state
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


def stored_folder(doc: dict[str, Any], out: str | Path | None, source: str) -> Path:
    """``out`` when given, else the folder a study names (``--join``): an absolute path as text, or a
    ConfigError asking for ``--out`` (a crafted study may hold anything)."""
    if out is not None:
        return Path(out)
    value = doc.get("out")
    if not isinstance(value, str) or not value or "\x00" in value or not os.path.isabs(value) or len(value) > 4096:
        raise ConfigError(f"{source}: the study names no usable folder ({str(value)[:100]!r}); give --out FOLDER")
    return Path(value)


def typed_attr(attrs: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``attrs[name]`` when it has the type ``kind`` (not a bool for int), else None: attributes of a
    stranger's study are read through this, so that a wrong type is "missing", not a crash."""
    value = attrs.get(name)
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, kind) else None


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
    not exist yet is not created (the command that starts the study must find its folder as it left it).

    Only a study that is not there yet is waited for: a file storage whose folder does not exist, and a
    server that refuses, times out or is misconfigured, are errors at once (a hung server would otherwise
    make ``--join`` wait for ``--wait`` seconds and report the wrong cause)."""
    for prefix in ("sqlite:///", JOURNAL_PREFIX):
        if url.startswith(prefix):
            path = Path(url[len(prefix):])
            if not path.parent.is_dir():
                raise StorageError(f"--storage {redact(url)}: the folder {path.parent} does not exist; start the "
                                   "study first with the same command without --join, or check the path")
            if not path.is_file():
                return False
            if prefix == "sqlite:///" and not _sqlite_schema_done(path):
                return False  # opening it now would race the starter creating the tables (both insert them)
    import sqlalchemy.exc

    try:
        summaries = optuna.get_all_study_summaries(open_storage(url))
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, StorageError) as err:
        # A starter still creating its tables is waited for; a locked, foreign or unreadable file is an
        # error now (a lock held past the busy timeout would otherwise make --join wait for --wait)
        final = ("locked", "not a database", "disk i/o", "malformed", "readonly", "permission")
        if not url.startswith(("sqlite:///", JOURNAL_PREFIX)) or any(w in str(err).lower() for w in final):
            raise StorageError(f"--storage {redact(url)}: cannot read the studies ({str(err).splitlines()[0][:200]})") \
                from None
        log.debug("%s: not readable yet (%s)", redact(url), err)  # the starter may be creating its tables now
        return False
    return any(s.study_name == name and s.user_attrs for s in summaries)


def _sqlite_schema_done(path: Path) -> bool:
    """Whether Optuna has finished creating its tables in the SQLite file (its schema version is
    stored last), read without writing anything."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
    except sqlite3.DatabaseError as err:
        if "no such table" in str(err):
            return False
        raise StorageError(f"--storage sqlite:///{path}: cannot read it ({err})") from None


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
