"""The one atomic writer: every file misalatch writes goes through here.

A file is written under a temporary name in the SAME folder (so the final rename never crosses a
file system), flushed and fsynced, renamed over the final name with ``os.replace`` and the folder
is fsynced, so after a crash a reader sees either the old file or the complete new one — never a
0-byte or half-written file under the final name.

Temporary names are recognisable and carry the writer's pid and host::

    .<final-name>.mltmp-<pid>-<token>@<host>

so ``cleanup_stale_temporaries`` can remove exactly the leftovers of writers that are dead
(same host, pid no longer running) and nothing else. Staging folders of ``misalatch.io.owned``
use the same scheme with other tags (``mlstage`` / ``mlold``), and ``commit_files`` replaces
several files as one unit through a journal folder (``mlnext``) that is rolled forward after a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Sequence

log = logging.getLogger(__name__)

TEMP_TAG = "mltmp"  # a temporary file of the atomic writer
_NAME_RE = re.compile(r"^\.(?P<name>.+)\.(?P<tag>mltmp|mlstage|mlold|mlnext)-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})@(?P<host>[A-Za-z0-9_-]{1,64})$")


def host_id() -> str:
    """This machine's name, reduced to characters safe in a file name."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname() or "localhost")[:64] or "localhost"


def temporary_name(final: Path, tag: str = TEMP_TAG) -> Path:
    """A fresh, recognisable temporary sibling of ``final`` (``tag``: mltmp | mlstage | mlold)."""
    return final.parent / f".{final.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}@{host_id()}"


@dataclass(frozen=True)
class TemporaryName:
    """What a temporary name says: the final name it stands for, its kind and its writer."""

    path: Path
    final_name: str
    tag: str
    pid: int
    host: str


def parse_temporary_name(path: Path) -> TemporaryName | None:
    """The parts of one of our temporary names, or None for any other name."""
    match = _NAME_RE.match(path.name)
    if match is None:
        return None
    return TemporaryName(path, match["name"], match["tag"], int(match["pid"]), match["host"])


def pid_alive(pid: int) -> bool:
    """True when a process with this pid runs on this machine (or we cannot tell)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OverflowError:  # a pid no process can have (a corrupted or crafted lock, name or attribute)
        return False
    except OSError:
        return True
    try:  # Linux: a killed process its parent has not reaped yet (a zombie) is not running
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2 :].split(" ", 1)[0] not in ("Z", "X")
    except (OSError, ValueError, IndexError):
        return True


def writer_dead(name: TemporaryName) -> bool:
    """A writer is known dead only on this host; another host's files are never touched."""
    return name.host == host_id() and name.pid != os.getpid() and not pid_alive(name.pid)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    For libraries that insist on writing to a path themselves (``np.savez``, ``savefig``). On an
    exception the temporary file is removed and ``path`` is untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_symlink() or final.is_dir():
        from misalatch.errors import MisalatchError

        raise MisalatchError(f"{final}: is a {'symbolic link' if final.is_symlink() else 'folder'}; "
                             "refusing to write a file over it")
    tmp = temporary_name(final)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", *, encoding: str | None = None,
                newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a file for writing that appears under ``path`` only when the block ends without error."""
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not 'w' or 'wb'")
    with atomic_path(path) as tmp:
        # O_EXCL: never follow or reuse something planted under the temporary name; 0o666 & ~umask
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
        if "b" in mode:
            handle: IO[Any] = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline=newline)
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, newline: str | None = None) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", encoding="utf-8", newline=newline) as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, **dumps: Any) -> Path:
    """Serialise first (a value JSON cannot hold fails before anything is written), then write."""
    text = json.dumps(obj, indent=indent, **dumps)
    return atomic_write_text(path, text + "\n")


def atomic_savefig(figure: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """``figure.savefig`` through the atomic writer (a killed plot never leaves a 0-byte PNG)."""
    final = Path(path)
    kwargs.setdefault("format", final.suffix.lstrip(".") or "png")
    with atomic_open(final, "wb") as handle:
        figure.savefig(handle, **kwargs)
    return final


def cleanup_stale_temporaries(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Remove our temporary files and staging folders in ``folder`` whose writer is dead.

    Only names of the form written by this module are considered, only those of this host, and
    only when their pid is no longer running; a file of a live writer or of another machine (a
    shared file system) is left alone. A set-aside old folder (``mlold``) whose final name is
    missing is put back instead of removed: it is the only copy. Returns what was removed.
    """
    root = Path(folder)
    removed: list[Path] = []
    if not root.is_dir() or root.is_symlink():
        return removed
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = parse_temporary_name(entry)
        if name is None:
            if recursive and entry.is_dir() and not entry.is_symlink():
                removed += cleanup_stale_temporaries(entry, recursive=True)
            continue
        if not writer_dead(name):
            continue
        final = root / name.final_name
        if name.tag == "mlnext" and entry.is_dir() and _journal_complete(entry):
            log.warning("%s: completing the file set left half-committed by dead writer pid %d", root, name.pid)
            _roll_forward(entry, root)
            continue
        if name.tag == "mlold" and not (final.exists() or final.is_symlink()):
            log.warning("%s: restoring %s left aside by dead writer pid %d", final, entry.name, name.pid)
            os.rename(entry, final)
            continue
        log.info("removing %s, left by dead writer pid %d", entry, name.pid)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


# ----------------------------------------------------------------------------------------------
# several files as one unit
# ----------------------------------------------------------------------------------------------
JOURNAL_FILE = "COMMIT.json"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def commit_files(folder: str | os.PathLike[str], files: Mapping[str, bytes], *, order: Sequence[str] | None = None,
                 register: Callable[[str], Any] | None = None) -> None:
    """Replace the files ``files`` (name -> content, names without folders) in ``folder`` as one unit.

    Everything is first written into a journal folder beside them, then a ``COMMIT.json`` naming
    the files with their sizes and sha256 (the commit point), then the files are renamed into place
    in ``order`` (put a manifest last) and the journal is removed. A crash before the commit point
    leaves the old files untouched (the journal is discarded as a stale temporary); a crash after
    it is completed by ``recover_pending`` / ``cleanup_stale_temporaries``. ``register`` is
    called with every name before anything is written (the owned folder's marker).
    """
    root = Path(folder)
    names = list(order) if order is not None else list(files)
    if sorted(names) != sorted(files) or any("/" in n or n.startswith(".") or n == JOURNAL_FILE for n in names):
        raise ValueError(f"commit_files: bad names {names}")
    for name in names:
        if register is not None:
            register(name)
    journal = temporary_name(root / "files", "mlnext")
    journal.mkdir(parents=True)
    try:
        entries = []
        for name in names:
            atomic_write_bytes(journal / name, files[name])
            entries.append({"name": name, "size": len(files[name]), "sha256": hashlib.sha256(files[name]).hexdigest()})
        atomic_write_json(journal / JOURNAL_FILE, {"files": entries})
    except BaseException:
        shutil.rmtree(journal, ignore_errors=True)
        raise
    _roll_forward(journal, root)


def _journal_complete(journal: Path) -> bool:
    """True when the journal's COMMIT.json is valid and every file still in it matches it."""
    try:
        doc = json.loads((journal / JOURNAL_FILE).read_text(encoding="utf-8"))
        entries = doc["files"]
        for entry in entries:
            path = journal / entry["name"]
            if path.exists() and (path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]):
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _roll_forward(journal: Path, root: Path) -> None:
    doc = json.loads((journal / JOURNAL_FILE).read_text(encoding="utf-8"))
    for entry in doc["files"]:
        src = journal / entry["name"]
        if src.exists():  # idempotent: a second roll-forward skips what the first moved
            os.replace(src, root / entry["name"])
    fsync_dir(root)
    shutil.rmtree(journal, ignore_errors=True)


def recover_pending(folder: str | os.PathLike[str]) -> None:
    """Complete (or discard) half-committed file sets of dead writers in ``folder`` before reading."""
    cleanup_stale_temporaries(folder)
