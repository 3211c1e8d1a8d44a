"""Output folders misalatch owns: the marker, the lock and the staged replace.

Every output folder (a training run, a prepared dataset, a masks export, a sweep) carries a marker
``run.json`` that misalatch itself writes::

    {"format": "misalatch-run", "version": 1, "kind": "train", "created": ..., "pid": ..., "host": ...,
     "misalatch": "0.x", "complete": false, "files": ["best.json", "best.safetensors", ...]}

``files`` lists every path (relative, ``/``-separated) misalatch wrote there; a name is recorded
BEFORE its file is written, so a crash never leaves an unrecorded file. A folder is recognised as
misalatch's only by that marker, never by common file names, and ``overwrite`` replaces it only when
every entry in it is accounted for (listed, one of our temporaries, or a sub-folder with its own
valid marker). ``.``, the working directory or any parent of it, the home directory and ``/`` are
never used as output folders.

The new output is built in a hidden staging sibling ``.<name>.mlstage-<pid>-<token>@<host>`` and
swapped in by ``Output.commit`` (for a run: after its first checkpoint); an old folder stays
untouched until then, is set aside as ``.<name>.mlold-...`` during the two renames and removed
afterwards. A lock file ``.<name>.lock`` beside the target (holder pid, host, start time) keeps a
second writer out for the whole life of the claim.

Usage::

    with claim_output("runs/x", "train", overwrite=args.overwrite) as out:
        out.write_json("config.json", {...})    # written into the staging folder
        out.commit()                            # staged folder now is runs/x (old one removed)
        out.write_bytes("best.safetensors", b)  # written in place, atomically
    # on normal exit: committed if not yet, marker says complete; on an exception before commit()
    # the staging folder is removed and an old runs/x is left exactly as it was

    with open_output("runs/x", "train") as out:  # continue (resume) an existing folder in place
        ...
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator

from misalatch.errors import ConfigError, MisalatchError
from misalatch.io.atomic import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    cleanup_stale_temporaries,
    fsync_dir,
    host_id,
    parse_temporary_name,
    pid_alive,
    temporary_name,
)

log = logging.getLogger(__name__)

MARKER = "run.json"
MARKER_FORMAT = "misalatch-run"
MARKER_VERSION = 1
MAX_MARKER_BYTES = 16 << 20  # a marker lists a few hundred names; a larger one is not misalatch's
KINDS = ("train", "prepare", "masks", "sweep", "evaluate", "robustness", "search", "report", "compare",
         "benchmark")


class OutputLockedError(MisalatchError):
    """Another misalatch process is writing the same output folder."""


def _version() -> str:
    try:
        import misalatch

        return str(misalatch.__version__)
    except Exception:  # noqa: BLE001 - a marker without a version is still a marker
        return "unknown"


# ----------------------------------------------------------------------------------------------
# the marker
# ----------------------------------------------------------------------------------------------
def read_marker(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of ``folder`` when it is a valid misalatch marker, else None."""
    path = Path(folder) / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_MARKER_BYTES:
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != MARKER_FORMAT or doc.get("version") != MARKER_VERSION:
        return None
    files = doc.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    if doc.get("kind") not in KINDS:
        return None
    return doc


def is_owned(folder: str | os.PathLike[str], kind: str | None = None) -> bool:
    """True when ``folder`` carries a valid marker (of ``kind``, when given)."""
    doc = read_marker(folder)
    return doc is not None and (kind is None or doc["kind"] == kind)


def _classify(folder: Path) -> tuple[list[Path], list[str]]:
    """What misalatch wrote in the owned ``folder`` (paths to delete to remove it) and what it did not
    (relative names, ``["."]`` without a valid marker).

    The marker's list of files is untrusted: a listed name counts only for a regular file at that
    place (a listed name that is a folder or a symbolic link is not ours: misalatch writes neither
    under a file's name, and never writes links). Sub-folders are entered only when they are real
    folders holding a listed file, or carry a valid marker of their own (e.g. ``masks-test/``).
    """
    ours: list[Path] = []
    foreign: list[str] = []
    if read_marker(folder) is None:
        return ours, ["."]
    # (folder, its name relative to the top, the files its marker lists, the folders above them)
    stack: list[tuple[Path, str, set[str], set[str], str]] = []

    def push_owned(path: Path, rel: str) -> None:
        doc = read_marker(path)
        assert doc is not None
        listed = {str(PurePosixPath(f)) for f in doc["files"]} | {MARKER}
        dirs = {str(p) for f in listed for p in PurePosixPath(f).parents if str(p) != "."}
        stack.append((path, "", listed, dirs, rel))

    push_owned(folder, "")
    while stack:
        current, inner, listed, dirs, prefix = stack.pop()
        try:
            entries = sorted(current.iterdir())
        except OSError:
            foreign.append(prefix + (inner or "."))
            continue
        for entry in entries:
            name = f"{inner}/{entry.name}" if inner else entry.name
            shown = prefix + name
            if parse_temporary_name(entry) is not None:
                ours.append(entry)  # our own temporary (a live writer's or a crashed one's)
            elif entry.is_symlink():
                foreign.append(shown)
            elif entry.is_dir():
                if name in dirs:
                    stack.append((entry, name, listed, dirs, prefix))
                elif is_owned(entry):
                    push_owned(entry, shown + "/")
                else:
                    foreign.append(shown + "/")
            elif name in listed and entry.is_file():
                ours.append(entry)
            else:
                foreign.append(shown)
    return ours, sorted(foreign)


def foreign_entries(folder: str | os.PathLike[str]) -> list[str]:
    """Entries of an owned ``folder`` that misalatch did not write (relative paths); [] = all ours.

    A folder without a valid marker returns ``["."]`` (nothing in it is provably ours).
    """
    return _classify(Path(folder))[1]


def remove_ours(folder: str | os.PathLike[str]) -> list[str]:
    """Delete what misalatch wrote in the owned ``folder``, and the folders left empty; return what is
    left (entries misalatch did not write, relative names). Nothing else is ever deleted."""
    root = Path(folder)
    ours, foreign = _classify(root)
    for path in ours:  # file by file, even when all is ours: a file added meanwhile is not in this list
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for current, _, _ in os.walk(root, topdown=False):  # innermost first; links are not followed
        try:
            os.rmdir(current)  # only an empty folder: a user's file keeps its folder
        except OSError:
            pass
    return foreign if root.exists() else []


def refuse_links(folder: str | os.PathLike[str], names: Iterable[str], *, what: str = "run folder",
                 error: type[MisalatchError] = MisalatchError) -> None:
    """Raise ``error`` when one of ``names`` (relative paths in ``folder``; absent ones are fine) is a
    symbolic link or sits in a folder that is one; a name ending in ``/`` also has the entries of
    that folder checked. misalatch never writes links, so a link in a folder it reads was put there
    by someone else and may lead out of the folder: it is never followed."""
    root = Path(folder)
    for name in names:
        here = root
        for part in PurePosixPath(name).parts:
            here = here / part
            if here.is_symlink():
                raise error(f"{here}: is a symbolic link; misalatch does not follow links inside a {what} "
                            "(they can lead out of it)")
        if name.endswith("/") and here.is_dir():
            try:
                inner = sorted(here.iterdir())[:10_000]
            except OSError:
                continue
            refuse_links(root, [f"{name}{p.name}" for p in inner], what=what, error=error)


def record_written(path: str | os.PathLike[str]) -> None:
    """Record ``path`` in the marker of its folder (when that folder is owned), e.g. after
    ``misalatch evaluate`` wrote ``evaluation.json`` into a run folder."""
    path = Path(path)
    doc = read_marker(path.parent)
    if doc is None or path.name in doc["files"]:
        return
    doc["files"] = sorted({*doc["files"], path.name})
    atomic_write_json(path.parent / MARKER, doc)


# ----------------------------------------------------------------------------------------------
# where an output may go
# ----------------------------------------------------------------------------------------------
def _protected(target: Path) -> str | None:
    """Why ``target`` may never be an output folder (None when it may)."""
    resolved = target.resolve()
    if resolved == Path(resolved.anchor):
        return "the root of the file system"
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        return "the working directory" if resolved == cwd else "a parent of the working directory"
    home = os.environ.get("HOME")
    if home:
        home_path = Path(home).resolve()
        if resolved == home_path or resolved in home_path.parents:
            return "the home directory" if resolved == home_path else "a parent of the home directory"
    return None


def check_target(target: str | os.PathLike[str], kind: str, *, overwrite: bool = False,
                 flag: str = "--out") -> Path:
    """Raise a clear error unless ``target`` may receive a new ``kind`` output; return it.

    Allowed: a path that does not exist, an empty folder, or (with ``overwrite``) a folder whose
    marker is of the same kind and whose every entry misalatch wrote. Called again under the lock
    by ``claim_output``; callers use it to fail before a long computation.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    path = Path(target)
    if str(target) == "":
        raise ConfigError(f"{flag}: empty path")
    reason = _protected(path)
    if reason is not None:
        raise ConfigError(f"{flag} {target}: is {reason}; misalatch never writes its output there "
                          f"(choose a new folder, e.g. {flag} runs/my-run)")
    if path.is_symlink():
        raise ConfigError(f"{flag} {target}: is a symbolic link; give the real folder (or a new path), "
                          "misalatch does not write through links")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{flag} {target}: {parent} is a file, not a folder")
    if not path.exists():
        return path
    if not path.is_dir():
        raise ConfigError(f"{flag} {target}: exists and is a file, not a folder; choose another path")
    try:
        empty = not any(path.iterdir())
    except OSError as err:
        raise ConfigError(f"{flag} {target}: cannot be read ({err.strerror})") from err
    if empty:
        return path
    doc = read_marker(path)
    if not overwrite:
        what = f"a misalatch {doc['kind']} folder" if doc else "a folder misalatch did not create"
        hint = "; pass --overwrite to replace it" if doc and doc["kind"] == kind else ""
        raise ConfigError(f"{flag} {target}: exists and is not empty ({what}){hint}")
    if doc is None:
        raise ConfigError(f"{flag} {target}: refusing to overwrite: it has no misalatch {MARKER} marker, so it is "
                          "not a folder misalatch wrote (nothing was deleted); choose another path")
    if doc["kind"] != kind:
        raise ConfigError(f"{flag} {target}: refusing to overwrite a misalatch {doc['kind']} folder with a "
                          f"{kind} output; choose another path")
    foreign = foreign_entries(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"{flag} {target}: refusing to overwrite: it holds entries misalatch did not write "
                          f"({shown}); move them away or choose another path (nothing was deleted)")
    return path


# ----------------------------------------------------------------------------------------------
# the lock
# ----------------------------------------------------------------------------------------------
def lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def _describe_lock(path: Path) -> str:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {doc.get('pid')} on {doc.get('host')}, since {doc.get('started')}"
    except (OSError, ValueError, AttributeError):
        return "an unknown process"


# what reading a lock's pid and host may raise: unreadable, half-written or crafted (a pid of 1e400)
_UNREADABLE_LOCK = (OSError, ValueError, KeyError, TypeError, OverflowError)


def lock_holder_alive(target: str | os.PathLike[str]) -> bool | None:
    """Whether a live process on this machine holds ``target``'s lock: True / False, or None when
    the holder runs on another host (its pid means nothing here) or the lock cannot be read."""
    try:
        doc = json.loads(lock_path(Path(target)).read_text(encoding="utf-8"))
        pid, host = int(doc["pid"]), str(doc["host"])
    except FileNotFoundError:
        return False
    except _UNREADABLE_LOCK:
        return None
    if host != host_id():
        return None
    return pid_alive(pid)


class _Lock:
    """An exclusive lock file: O_CREAT|O_EXCL with the holder's pid, host and start time.

    A lock left by a dead process on this host (pid not running) is taken over with a warning; a
    lock of a live process or of another host stops the caller with ``OutputLockedError``.
    """

    def __init__(self, target: Path) -> None:
        self.path = lock_path(target)
        self.target = target
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"pid": os.getpid(), "host": host_id(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "target": str(self.target)}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except FileExistsError:
                if self._take_over_stale():
                    continue
                raise OutputLockedError(
                    f"{self.target}: another misalatch process is writing this folder ({_describe_lock(self.path)}); "
                    f"wait for it to finish, or remove {self.path} if that process is gone"
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(doc, handle)
                handle.flush()
                os.fsync(handle.fileno())
            self.held = True
            return
        raise OutputLockedError(f"{self.target}: could not take the lock {self.path} (contended)")

    def _take_over_stale(self) -> bool:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            pid, host = int(doc["pid"]), str(doc["host"])
        except FileNotFoundError:
            return True  # released meanwhile: try again
        except _UNREADABLE_LOCK:
            # a half-written lock: only its creator can be writing it right now; give it a moment
            time.sleep(0.2)
            try:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
                pid, host = int(doc["pid"]), str(doc["host"])
            except FileNotFoundError:
                return True
            except _UNREADABLE_LOCK:
                return False
        if host != host_id() or pid_alive(pid):
            return False
        # Rename (atomic) instead of unlink: of two processes taking over the same stale lock,
        # only one rename succeeds; the other sees FileNotFoundError and retries O_EXCL.
        aside = temporary_name(self.path, "mltmp")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True
        try:
            moved = json.loads(aside.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            moved = {}
        if moved.get("pid") != pid:  # we moved a fresh lock of a live process: put it back
            try:
                os.link(aside, self.path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            return True
        aside.unlink(missing_ok=True)
        log.warning("%s: taking over the lock of pid %d on %s, which is no longer running", self.target, pid, host)
        return True

    def release(self) -> None:
        if not self.held:
            return
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("pid") == os.getpid() and doc.get("host") == host_id():
                self.path.unlink()
        except (OSError, ValueError):
            pass
        self.held = False


# ----------------------------------------------------------------------------------------------
# the claim
# ----------------------------------------------------------------------------------------------
class Output:
    """An output folder being written: every file goes through ``file`` / ``write_*``."""

    def __init__(self, target: Path, kind: str, work: Path, *, committed: bool, marker: dict[str, Any]) -> None:
        self.target = target  # where the output lives once committed (what the user named)
        self.kind = kind
        self.path = work  # where files are written now: the staging folder, or target after commit
        self.committed = committed
        self._marker = marker

    # -- writing --------------------------------------------------------------------------------
    def _inside(self, relpath: str) -> tuple[str, Path]:
        """``relpath`` checked to stay inside the folder: relative, no ``..``, and no folder on the
        way a symbolic link (a reopened folder may come from anyone; a link would lead out of it)."""
        rel = PurePosixPath(relpath)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or "\x00" in relpath:
            raise ValueError(f"{relpath!r}: an output file must be a relative path inside the folder")
        here = self.path
        for part in rel.parts[:-1]:
            here = here / part
            if here.is_symlink() or here.exists() and not here.is_dir():
                raise MisalatchError(f"{here}: is {'a symbolic link' if here.is_symlink() else 'a file'}, not a "
                                     f"folder of this output; misalatch does not write through it")
        return str(rel), self.path / rel

    def file(self, relpath: str) -> Path:
        """Record ``relpath`` as ours and return its current path (parent folders created)."""
        name, path = self._inside(relpath)
        if name not in self._marker["files"]:
            self._marker["files"] = sorted({*self._marker["files"], name})
            self._write_marker()
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def remove(self, relpath: str) -> None:
        """Delete one of our files and drop it from the marker (a file we never wrote is refused)."""
        name, path = self._inside(relpath)
        if name not in self._marker["files"]:
            raise ValueError(f"{relpath!r} is not a file of this output; refusing to delete it")
        if path.is_dir() and not path.is_symlink():
            raise MisalatchError(f"{path}: is a folder, not the file this output wrote; it was not deleted")
        path.unlink(missing_ok=True)
        self._marker["files"] = [f for f in self._marker["files"] if f != name]
        self._write_marker()

    def record_tree(self, relpath: str) -> None:
        """Record every file under ``relpath`` (after a library such as a tokenizer wrote a folder)."""
        base = self.path / relpath
        names = [str(PurePosixPath(relpath) / p.relative_to(base).as_posix()) for p in base.rglob("*")
                 if p.is_file() and parse_temporary_name(p) is None]
        names = [n for n in names if n != MARKER]
        new = set(names) - set(self._marker["files"])
        if new:
            self._marker["files"] = sorted({*self._marker["files"], *new})
            self._write_marker()

    def write_bytes(self, relpath: str, data: bytes) -> Path:
        return atomic_write_bytes(self.file(relpath), data)

    def write_text(self, relpath: str, text: str) -> Path:
        return atomic_write_text(self.file(relpath), text)

    def write_json(self, relpath: str, obj: Any, **dumps: Any) -> Path:
        return atomic_write_json(self.file(relpath), obj, **dumps)

    @contextlib.contextmanager
    def open(self, relpath: str, mode: str = "wb") -> Iterator[Any]:
        with atomic_open(self.file(relpath), mode) as handle:
            yield handle

    @contextlib.contextmanager
    def directory(self, relpath: str) -> Iterator[Path]:
        """Yield a temporary folder that replaces ``relpath`` as a whole when the block succeeds
        (for libraries that write a folder themselves, e.g. ``tokenizer.save_pretrained``)."""
        final = self.file(relpath)
        staging = temporary_name(final, "mlstage")
        staging.mkdir()
        try:
            yield staging
            old = None
            if final.exists():
                old = temporary_name(final, "mlold")
                os.rename(final, old)
            os.rename(staging, final)
            fsync_dir(final.parent)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        self.record_tree(relpath)

    def annotate(self, **values: Any) -> None:
        """Store facts about the output in its marker (e.g. the run's config, for ``--resume``)."""
        reserved = {"format", "version", "kind", "files", "complete"} & set(values)
        if reserved:
            raise ValueError(f"marker keys {sorted(reserved)} are managed by Output")
        self._marker.update(values)
        self._write_marker()

    @property
    def marker(self) -> dict[str, Any]:
        return dict(self._marker)

    def _write_marker(self) -> None:
        atomic_write_json(self.path / MARKER, self._marker)

    # -- committing -----------------------------------------------------------------------------
    def commit(self) -> Path:
        """Swap the staging folder in as ``target`` (once; later calls do nothing). An old folder at
        ``target`` is removed only after the new one is in place."""
        if self.committed:
            return self.target
        staging, target = self.path, self.target
        fsync_dir(staging)
        old: Path | None = None
        if target.exists():
            old = temporary_name(target, "mlold")
            os.rename(target, old)
        try:
            os.rename(staging, target)
        except OSError:
            if old is not None:
                os.rename(old, target)
            raise
        fsync_dir(target.parent)
        self.path, self.committed = target, True
        if old is not None:
            _retire(old, target)
        log.debug("%s: committed (%s)", target, self.kind)
        return target

    def finish(self) -> None:
        self.commit()
        self._marker["complete"] = True
        self._marker["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._write_marker()


def _retire(old: Path, target: Path) -> None:
    """Remove a replaced output folder, set aside as ``old``: only what misalatch wrote goes. Entries a
    user added after the overwrite was checked (e.g. during a long first epoch) stay, in a visible
    folder beside the new output, never under a temporary name that a later cleanup would delete."""
    try:
        left = remove_ours(old)
    except OSError as err:
        left = [f"({err.strerror})"]
    if not old.exists():
        return
    kept = target.parent / f"{target.name}.kept-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        os.rename(old, kept)
    except OSError:
        kept = old
    log.warning("%s: the replaced folder held entries misalatch did not write (%s); they were kept in %s",
                target, ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else ""), kept)


def _new_marker(kind: str) -> dict[str, Any]:
    return {"format": MARKER_FORMAT, "version": MARKER_VERSION, "kind": kind,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(), "host": host_id(),
            "misalatch": _version(), "complete": False, "files": []}


@contextlib.contextmanager
def claim_output(target: str | os.PathLike[str], kind: str, *, overwrite: bool = False,
                 flag: str = "--out") -> Iterator[Output]:
    """Claim ``target`` for a new ``kind`` output; yield an ``Output`` writing into staging.

    On normal exit the output is committed (if the body did not already) and marked complete. On an
    exception before ``Output.commit`` nothing of the new output remains and an old folder at
    ``target`` is exactly as it was; after the commit the partial new output stays (a run folder
    that can be resumed).
    """
    path = Path(target)
    check_target(path, kind, overwrite=overwrite, flag=flag)  # fail fast, before the lock
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _Lock(path)
    lock.acquire()
    output: Output | None = None
    try:
        cleanup_stale_temporaries(path.parent)
        check_target(path, kind, overwrite=overwrite, flag=flag)  # again: under the lock
        staging = temporary_name(path, "mlstage")
        staging.mkdir()
        output = Output(path, kind, staging, committed=False, marker=_new_marker(kind))
        output._write_marker()
        yield output
        output.finish()
    except BaseException:
        if output is not None and not output.committed:
            shutil.rmtree(output.path, ignore_errors=True)  # the staging folder: the old target is untouched
        raise
    finally:
        lock.release()


@contextlib.contextmanager
def open_output(target: str | os.PathLike[str], kind: str, *, flag: str = "RUN_DIR") -> Iterator[Output]:
    """Reopen an existing owned ``kind`` folder in place (resume), under the same lock."""
    path = Path(target)
    if path.is_symlink():
        raise ConfigError(f"{flag} {target}: is a symbolic link; give the real folder")
    if not path.is_dir():
        raise ConfigError(f"{flag} {target}: no such folder")
    lock = _Lock(path)
    lock.acquire()
    try:
        doc = read_marker(path)
        if doc is None:
            raise ConfigError(f"{flag} {target}: not a misalatch output folder (no valid {MARKER})")
        if doc["kind"] != kind:
            raise ConfigError(f"{flag} {target}: is a misalatch {doc['kind']} folder, not {kind}")
        cleanup_stale_temporaries(path, recursive=True)
        doc["pid"], doc["host"], doc["complete"] = os.getpid(), host_id(), False
        output = Output(path, kind, path, committed=True, marker=doc)
        output._write_marker()
        yield output
        output.finish()
    finally:
        lock.release()


def check_file_target(target: str | os.PathLike[str], *, overwrite: bool = False, flag: str = "--out",
                      looks_ours: Any = None) -> Path:
    """Raise a clear error unless ``target`` may receive a single output file; return it.

    A new path is fine. An existing file is replaced only with ``overwrite`` and only when misalatch
    can tell it wrote it: it is recorded in the marker of its folder, or ``looks_ours(path)`` says
    so (e.g. the file starts with misalatch's CSV header). Folders and symbolic links never.
    """
    path = Path(target)
    if path.is_symlink():
        raise ConfigError(f"{flag} {target}: is a symbolic link; misalatch does not write through links")
    if path.is_dir():
        raise ConfigError(f"{flag} {target}: is a folder; give a file name (e.g. {Path(target) / 'out.csv'})")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{flag} {target}: {parent} is a file, not a folder")
    if not path.exists():
        return path
    doc = read_marker(path.parent)
    recorded = doc is not None and path.name in doc["files"]
    if recorded:
        if looks_ours is None or _looks_ours(looks_ours, path):
            return path
        raise ConfigError(f"{flag} {target}: is {path.name}, a file of the misalatch {doc['kind']} folder "
                          f"{path.parent} and not an output of this command; refusing to replace it (nothing was "
                          "changed); choose another path")
    if not overwrite:
        raise ConfigError(f"{flag} {target}: exists; pass --overwrite to replace it (only a file misalatch wrote)")
    if looks_ours is None or not _looks_ours(looks_ours, path):
        raise ConfigError(f"{flag} {target}: refusing to overwrite: it is not a file misalatch wrote (nothing was "
                          "changed); choose another path")
    return path


def _looks_ours(looks_ours: Any, path: Path) -> bool:
    try:
        return path.is_file() and not path.is_symlink() and bool(looks_ours(path))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False


def remove_owned(target: str | os.PathLike[str], kind: str | None = None) -> None:
    """Delete an owned folder whose every entry misalatch wrote (raises otherwise)."""
    path = Path(target)
    if path.is_symlink() or not is_owned(path, kind) or foreign_entries(path):
        raise ConfigError(f"{path}: not removed: not a misalatch folder holding only misalatch files")
    left = remove_ours(path)  # a file added meanwhile stays
    if left:
        log.warning("%s: not removed entirely: it holds entries misalatch did not write (%s)", path, ", ".join(left[:5]))


__all__ = [
    "MARKER", "Output", "OutputLockedError", "check_file_target", "check_target", "claim_output", "foreign_entries", "is_owned",
    "open_output", "read_marker", "record_written", "refuse_links", "remove_ours", "remove_owned",
]
