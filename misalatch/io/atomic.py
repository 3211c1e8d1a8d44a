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
import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
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
    missing is put back instead of removed: it is the only copy. A dead writer's journal
    (``mlnext``) is completed when ``read_journal`` accepts it, else discarded. Everything
    here happens inside ``folder``: a name read from disk never leads out of it, and symbolic
    links are removed, never followed. Returns what was removed.
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
        link = entry.is_symlink()  # a link is never ours: removed as a link, never followed
        if name.tag == "mlnext" and not link and entry.is_dir():
            journal = read_journal(entry, root)
            if journal is not None:
                log.warning("%s: completing the file set left half-committed by dead writer pid %d", root, name.pid)
                _roll_forward(entry, root, journal)
                continue
        final = root / name.final_name
        if (name.tag == "mlold" and not link and name.final_name not in (".", "..")
                and not (final.exists() or final.is_symlink())):
            log.warning("%s: restoring %s left aside by dead writer pid %d", final, entry.name, name.pid)
            os.rename(entry, final)
            continue
        log.info("removing %s, left by dead writer pid %d", entry, name.pid)
        if entry.is_dir() and not link:
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


# ----------------------------------------------------------------------------------------------
# several files as one unit
# ----------------------------------------------------------------------------------------------
JOURNAL_FILE = "COMMIT.json"
MAX_NAME_BYTES = 255  # the longest file name ext4, XFS, APFS and NTFS hold
MAX_JOURNAL_FILES = 64  # a checkpoint set has a handful of files
MAX_JOURNAL_BYTES = 1 << 20  # COMMIT.json names a few files; refuse to parse a huge one
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def plain_name_problem(name: object) -> str | None:
    """Why ``name`` is not a plain file name of a folder (None when it is one).

    A plain name is a non-empty string of at most ``MAX_NAME_BYTES`` UTF-8 bytes with no path
    separator (``/`` or ``\\``), no drive colon, no NUL or other control character, is not ``.`` or
    ``..`` and does not start with ``.`` (hidden names are our temporaries, journals and locks).
    Joined to a folder it always names an entry directly inside that folder.
    """
    if not isinstance(name, str):
        return f"a {type(name).__name__}, not a file name"
    if not name:
        return "an empty name"
    if name in (".", ".."):
        return f"{name!r} is not a file name"
    if "/" in name or "\\" in name or ":" in name:
        return f"{name[:80]!r} contains a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{name[:80]!r} contains a NUL or control character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"a name of {len(name.encode('utf-8', 'surrogatepass'))} bytes (at most {MAX_NAME_BYTES})"
    if name.startswith("."):
        return f"{name[:80]!r} is a hidden name (reserved for temporaries and journals)"
    if name == JOURNAL_FILE:
        return f"{name!r} is the journal's own file"
    return None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class JournalEntry:
    """One file of a committed set, as ``COMMIT.json`` names it."""

    name: str
    size: int
    sha256: str


def commit_files(folder: str | os.PathLike[str], files: Mapping[str, bytes], *, order: Sequence[str] | None = None,
                 register: Callable[[str], Any] | None = None) -> None:
    """Replace the files ``files`` (name -> content, plain names) in ``folder`` as one unit.

    Everything is first written into a journal folder beside them, then a ``COMMIT.json`` naming
    the files with their sizes and sha256 (the commit point), then the files are renamed into place
    in ``order`` (put a manifest last) and the journal is removed. A crash before the commit point
    leaves the old files untouched (the journal is discarded as a stale temporary); a crash after
    it is completed by ``recover_pending`` / ``cleanup_stale_temporaries``. ``register`` is
    called with every name before anything is written (the owned folder's marker). Every name must
    be a plain file name (``plain_name_problem``): the journal holds nothing else.
    """
    root = Path(folder)
    names = list(order) if order is not None else list(files)
    problems = [p for p in map(plain_name_problem, names) if p is not None]
    if sorted(names) != sorted(files) or len(set(names)) != len(names) or problems or len(names) > MAX_JOURNAL_FILES:
        raise ValueError(f"commit_files: bad names {names}" + (f" ({problems[0]})" if problems else ""))
    for name in names:
        if register is not None:
            register(name)
    journal = temporary_name(root / "files", "mlnext")
    journal.mkdir(parents=True)
    entries = []
    try:
        for name in names:
            atomic_write_bytes(journal / name, files[name])
            entries.append(JournalEntry(name, len(files[name]), hashlib.sha256(files[name]).hexdigest()))
        atomic_write_json(journal / JOURNAL_FILE, {"files": [dataclasses.asdict(e) for e in entries]})
    except BaseException:
        shutil.rmtree(journal, ignore_errors=True)
        raise
    _roll_forward(journal, root, entries)


class _Refused(Exception):
    """Why a journal found on disk is not completed (internal: logged, the journal discarded)."""


def _regular_file(path: Path) -> os.stat_result | None:
    """The stat of ``path`` when it is a regular file itself (not a link), None when absent."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise _Refused(f"{path.name} is {'a symbolic link' if stat.S_ISLNK(info.st_mode) else 'not a regular file'}")
    return info


def _journal_entries(journal: Path, root: Path) -> list[JournalEntry]:
    """Every check of ``read_journal``; raises ``_Refused`` with the first problem."""
    if journal.is_symlink() or not journal.is_dir():
        raise _Refused("the journal is not a folder")
    info = _regular_file(journal / JOURNAL_FILE)
    if info is None:
        raise _Refused(f"no {JOURNAL_FILE} (the writer died before its commit point)")
    if info.st_size > MAX_JOURNAL_BYTES:
        raise _Refused(f"{JOURNAL_FILE} has {info.st_size} bytes")
    try:
        doc = json.loads((journal / JOURNAL_FILE).read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise _Refused(f"{JOURNAL_FILE} is not readable JSON ({err})") from err
    raw = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_JOURNAL_FILES:
        raise _Refused(f"{JOURNAL_FILE}: 'files' must list 1..{MAX_JOURNAL_FILES} files")
    entries: list[JournalEntry] = []
    for item in raw:
        name = item.get("name") if isinstance(item, dict) else None
        problem = plain_name_problem(name)
        if problem is not None:
            raise _Refused(f"{JOURNAL_FILE}: entry {problem}")
        size, digest = item.get("size"), item.get("sha256")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _Refused(f"{JOURNAL_FILE}: {name!r} has no valid size")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise _Refused(f"{JOURNAL_FILE}: {name!r} has no valid sha256")
        entries.append(JournalEntry(name, size, digest))
    if len({e.name for e in entries}) != len(entries):
        raise _Refused(f"{JOURNAL_FILE} names a file twice")
    for entry in entries:
        src = _regular_file(journal / entry.name)  # None: moved into place by the writer before it died
        if src is not None and (src.st_size != entry.size or sha256_file(journal / entry.name) != entry.sha256):
            raise _Refused(f"{entry.name} does not match {JOURNAL_FILE}")
        dst = root / entry.name
        if dst.is_dir() and not dst.is_symlink():
            raise _Refused(f"{entry.name} would replace a folder")
    return entries


def read_journal(journal: Path, root: Path) -> list[JournalEntry] | None:
    """The files a journal found in ``root`` commits, when completing it is safe; else None (logged).

    A journal on disk is untrusted (a run folder may come from anyone): it is completed only when it
    is a real folder whose ``COMMIT.json`` lists plain file names (``plain_name_problem``), each
    still in the journal a regular file (not a link) of the listed size and sha256 or already moved,
    and none would replace a folder. All of this is checked before anything moves.
    """
    try:
        return _journal_entries(journal, root)
    except _Refused as why:
        log.warning("%s: discarding the unfinished file set %s: %s", root, journal.name, why)
        return None
    except OSError as err:
        log.warning("%s: discarding the unfinished file set %s: cannot read it (%s)", root, journal.name, err)
        return None


def _roll_forward(journal: Path, root: Path, entries: Sequence[JournalEntry]) -> None:
    """Move the journal's files into ``root`` (idempotent: what a first try moved is skipped)."""
    for entry in entries:
        src = journal / entry.name
        if src.is_file() and not src.is_symlink():
            os.replace(src, root / entry.name)
    fsync_dir(root)
    shutil.rmtree(journal, ignore_errors=True)


def recover_pending(folder: str | os.PathLike[str]) -> None:
    """Complete (or discard) half-committed file sets of dead writers in ``folder`` before reading."""
    cleanup_stale_temporaries(folder)
