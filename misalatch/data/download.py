"""Fetch public CMU-MultimodalSDK files with sha256 verification and resumable partial downloads.

Nothing else in misalatch touches the network: this module runs only when a user asks for a file
by name (``misalatch download NAME``). The CMU host is known to be unreliable (DATA.md §11.13), so:

* bytes go to ``<file>.part`` first and a rerun continues it with an HTTP ``Range`` request (a
  server that ignores ``Range`` answers 200 and the download restarts cleanly from byte 0);
* the file appears under its final name only after its sha256 matched (or, where no checksum is
  known, after the computed sha256 was logged so the user can record it);
* an existing final file is never overwritten;
* every failure is a ``DownloadError`` that says what happened and what to do; a partial file
  is kept for resuming, a complete file with the wrong checksum is deleted.

URLs are the SDK's standard recipes (``mmsdk/mmdatasdk/dataset/standard_datasets/CMU_MOSI/cmu_mosi.py``,
``CMU_MOSEI/cmu_mosei.py``) and the MulT-style processed pickles under ``raw_datasets/processed_data``.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from misalatch.errors import ConfigError, DownloadError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://immortal.multicomp.cs.cmu.edu"
CHUNK = 1 << 20
TIMEOUT_S = 60.0  # socket timeout: no byte at all for this long stops the download
STALL_S = 120.0  # and fewer than STALL_MIN_BYTES in any window this long (a server dribbling bytes)
STALL_MIN_BYTES = 64 << 10
MAX_BYTES = 50 << 30  # cap for files of unknown size (the largest SDK files are a few GB)


@dataclass(frozen=True)
class RemoteFile:
    """A known public file: ``path`` below the base URL, its sha256 when known, and what it is."""

    path: str
    sha256: str | None
    description: str
    size: int | None = None

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def _csd(dataset: str, folder: str, stem: str, description: str, sha256: str | None = None,
         size: int | None = None) -> tuple[str, RemoteFile]:
    return stem, RemoteFile(f"{dataset}/{folder}/{stem}.csd", sha256, description, size)


# One table of every file `misalatch download` knows. sha256 None: not known to the project; the
# computed value is logged after the download so that it can be recorded here.
REGISTRY: dict[str, RemoteFile] = dict([
    _csd("CMU-MOSI", "labels", "CMU_MOSI_Opinion_Labels", "MOSI segment sentiment labels (2199 segments)",
         # sha256 and size of the public copy in ../shared/data (DATA.md §13)
         "aef5f4617cdb067cc7606bb798eb6452c3de45f0f21cb3427be33c4d8c7fe852", 674_712),
    _csd("CMU-MOSI", "language", "CMU_MOSI_TimestampedWords", "MOSI words with timestamps (sp = pause)"),
    _csd("CMU-MOSI", "language", "CMU_MOSI_TimestampedPhones", "MOSI phonemes with timestamps"),
    _csd("CMU-MOSI", "language", "CMU_MOSI_TimestampedWordVectors", "MOSI GloVe 300-d word vectors"),
    _csd("CMU-MOSI", "visual", "CMU_MOSI_Visual_Facet_41", "MOSI FACET 4.1 (47-d; MISA's visual features)"),
    _csd("CMU-MOSI", "visual", "CMU_MOSI_Visual_Facet_42", "MOSI FACET 4.2 (35-d)"),
    _csd("CMU-MOSI", "visual", "CMU_MOSI_Visual_OpenFace_1", "MOSI OpenFace 1"),
    _csd("CMU-MOSI", "visual", "CMU_MOSI_Visual_OpenFace_2", "MOSI OpenFace 2"),
    _csd("CMU-MOSI", "acoustic", "CMU_MOSI_COVAREP", "MOSI COVAREP (74-d; contains -inf)"),
    _csd("CMU-MOSI", "acoustic", "CMU_MOSI_openSMILE_IS09", "MOSI openSMILE IS09"),
    _csd("CMU-MOSI", "acoustic", "CMU_MOSI_OpenSmile_EB10", "MOSI openSMILE emobase2010"),
    _csd("CMU-MOSEI", "labels", "CMU_MOSEI_Labels", "MOSEI labels: sentiment + 6 emotions (7 columns)"),
    _csd("CMU-MOSEI", "labels", "CMU_MOSEI_LabelsSentiment", "MOSEI sentiment labels (older file used by MISA)"),
    _csd("CMU-MOSEI", "language", "CMU_MOSEI_TimestampedWords", "MOSEI words with timestamps (sp = pause)"),
    _csd("CMU-MOSEI", "language", "CMU_MOSEI_TimestampedPhones", "MOSEI phonemes with timestamps"),
    _csd("CMU-MOSEI", "language", "CMU_MOSEI_TimestampedWordVectors", "MOSEI GloVe 300-d word vectors"),
    _csd("CMU-MOSEI", "language", "CMU_MOSEI_TimestampedGloveVectors_with_SP", "MOSEI GloVe vectors incl. sp"),
    _csd("CMU-MOSEI", "visual", "CMU_MOSEI_VisualFacet42", "MOSEI FACET 4.2 (35-d)"),
    _csd("CMU-MOSEI", "visual", "CMU_MOSEI_VisualOpenFace2", "MOSEI OpenFace 2 (713-d)"),
    _csd("CMU-MOSEI", "acoustic", "CMU_MOSEI_COVAREP", "MOSEI COVAREP (74-d; contains -inf)"),
    ("mosi_data_noalign", RemoteFile("raw_datasets/processed_data/cmu-mosi/seq_length_50/mosi_data_noalign.pkl",
                                     None, "MOSI MulT-style unaligned pickle (read with --format mult)")),
    ("mosei_senti_data", RemoteFile("raw_datasets/processed_data/cmu-mosei/seq_length_50/mosei_senti_data.pkl",
                                    None, "MOSEI MulT-style aligned pickle (read with --format mult)")),
    ("mosei_senti_data_noalign", RemoteFile(
        "raw_datasets/processed_data/cmu-mosei/seq_length_50/mosei_senti_data_noalign.pkl",
        None, "MOSEI MulT-style unaligned pickle (read with --format mult)")),
])


def resolve(name: str, registry: Mapping[str, RemoteFile] | None = None) -> tuple[str, RemoteFile]:
    """The registry entry for ``name`` (case-insensitive; a ``.csd``/``.pkl`` suffix is allowed)."""
    table = REGISTRY if registry is None else registry
    key = re.sub(r"\.(csd|pkl)$", "", name.strip(), flags=re.IGNORECASE)
    for known, entry in table.items():
        if known.lower() == key.lower():
            return known, entry
    close = difflib.get_close_matches(key, list(table), n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"unknown file {name!r}{hint}; `misalatch download --list` shows the known names")


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def content_problem(path: Path) -> str | None:
    """Why the file at ``path`` is not the format its name announces, or None when it is.

    Where no sha256 is known this is the only check of the body itself: an HTML login or error page,
    a gzip stream or any other body served under a ``.csd`` / ``.pkl`` URL is refused by its first
    bytes (the HDF5 signature; a binary pickle's PROTO opcode) instead of being stored as the file."""
    try:
        with path.open("rb") as fh:
            head = fh.read(512)
    except OSError as err:
        return f"it cannot be read ({err.strerror or err})"
    suffix = path.name.removesuffix(".part").rsplit(".", 1)[-1].lower()
    if suffix == "csd":
        ok, wanted = head.startswith(HDF5_SIGNATURE), "an HDF5 file (a CMU-SDK .csd)"
    elif suffix == "pkl":
        ok, wanted = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5, "a binary pickle (protocol 2-5)"
    else:
        return None
    if ok:
        return None
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in stripped:
        found = "an HTML page (a login, error or redirect page?)"
    elif head.startswith(b"\x1f\x8b"):
        found = "a gzip stream"
    elif head.startswith(b"PK\x03\x04"):
        found = "a zip archive"
    elif not head:
        found = "empty"
    else:
        found = f"starts with {head[:8]!r}"
    return f"expected {wanted}, but the body is {found}"


def check_base_url(base_url: str) -> str:
    """``base_url`` when it is an http(s) URL with a host; a ConfigError naming ``--base-url`` otherwise."""
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as err:
        raise ConfigError(f"--base-url {base_url!r}: not a valid URL ({err}); expected e.g. "
                          f"{DEFAULT_BASE_URL}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--base-url {base_url!r}: expected an http:// or https:// URL with a host "
                          f"(e.g. {DEFAULT_BASE_URL})")
    return base_url


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``bytes START-END/TOTAL`` (TOTAL may be ``*``) as numbers; None when absent or malformed."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if not match:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


def _total_from_content_range(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(?:\d+-\d+|\*)/(\d+)", value or "")
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class _Expect:
    """What a download must satisfy: the known sha256/size (or none), the size cap and the deadlines."""

    name: str
    sha256: str | None
    size: int | None
    max_bytes: int
    timeout: float
    stall_s: float


def _validators(part: Path) -> dict[str, str | int] | None:
    """ETag / Last-Modified / total recorded when ``part`` was started (resume only against those)."""
    try:
        doc = json.loads(part.with_name(part.name + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("total"), int) else None


def _save_validators(part: Path, response: http.client.HTTPResponse, total: int) -> None:
    doc = {"total": total, "etag": response.headers.get("ETag"), "last_modified": response.headers.get("Last-Modified")}
    part.with_name(part.name + ".json").write_text(json.dumps(doc), encoding="utf-8")


def _discard(part: Path) -> None:
    for path in (part, part.with_name(part.name + ".json")):
        path.unlink(missing_ok=True)


def _fetch(url: str, part: Path, expect: _Expect, *, progress: bool, _retry: bool = True) -> None:
    """Download ``url`` into ``part``, continuing what is there when that can be verified.

    Resuming is safe when the sha256 is known (the whole file is checked afterwards). Without one,
    a partial file is continued only with ``If-Range`` on the ETag / Last-Modified recorded when it
    was started, and only if the server's ``206`` starts exactly where the file ends and reports the
    same total; anything else starts again from byte 0.
    """
    from tqdm.auto import tqdm

    name = expect.name
    have = part.stat().st_size if part.exists() else 0
    recorded = _validators(part) if have else None
    if have and expect.sha256 is None and not (recorded and (recorded.get("etag") or recorded.get("last_modified"))):
        log.warning("%s: %s cannot be verified (no known sha256, no validator recorded); starting again from 0",
                    name, part)
        _discard(part)
        have = 0
    if have and (have > expect.max_bytes or (expect.size is not None and have > expect.size)):
        _discard(part)
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": "misalatch-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
        if recorded and (recorded.get("etag") or recorded.get("last_modified")):
            request.add_header("If-Range", str(recorded.get("etag") or recorded.get("last_modified")))
    host = urlsplit(url).netloc
    try:
        response = urllib.request.urlopen(request, timeout=expect.timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the part may already be complete
            total = _total_from_content_range(err.headers.get("Content-Range"))
            err.close()
            if total == have and (expect.sha256 is not None or (recorded and recorded.get("total") == have)):
                return
            log.warning("%s: the server refused to resume at byte %d; starting again from 0", name, have)
            _discard(part)
            return _fetch(url, part, expect, progress=progress, _retry=_retry)
        raise DownloadError(
            f"{name}: {url} answered HTTP {err.code} {err.reason}"
            + ("; the server may be down, try again later" if err.code >= 500 else "")
            + (f"; partial file kept at {part}" if have else "")
        ) from err
    except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"{name}: cannot reach {host} ({reason}); the server may be down or unreachable from here — "
            f"try again later, or give a mirror with --base-url"
            + (f"; partial file kept at {part} for resuming" if have else "")
        ) from err
    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.strip().isdigit() else None
        if have and status == 206:
            span = _content_range(response.headers.get("Content-Range"))
            total = span[2] if span else None
            mismatch = (span is None or span[0] != have or total is None
                        or (recorded is not None and recorded.get("total") != total)
                        or (expect.size is not None and total != expect.size))
            if mismatch:
                response.close()
                if not _retry:
                    raise DownloadError(f"{name}: {host} answered a resume at byte {have} with "
                                        f"Content-Range {response.headers.get('Content-Range')!r} twice; giving up")
                log.warning("%s: the server resumed at the wrong place (Content-Range %r for byte %d); starting "
                            "again from 0", name, response.headers.get("Content-Range"), have)
                _discard(part)
                return _fetch(url, part, expect, progress=progress, _retry=False)
            start = have
            log.info("%s: resuming at byte %d", name, have)
        elif status in (200, 203):
            if have:
                log.warning("%s: the server sent the whole file (HTTP %d); restarting from byte 0", name, status)
            start, total = 0, length
        else:
            raise DownloadError(f"{name}: {url} answered HTTP {status} to a download request")
        if total is None and expect.sha256 is None:
            raise DownloadError(
                f"{name}: {host} did not announce the file's size (no Content-Length) and no sha256 is known, so a "
                "complete download could not be told from a truncated one; nothing was saved"
            )
        limit = expect.size if expect.size is not None else expect.max_bytes
        if total is not None and (total > expect.max_bytes or (expect.size is not None and total != expect.size)):
            raise DownloadError(
                f"{name}: {host} announced {total} bytes but "
                + (f"the file has {expect.size} bytes" if expect.size is not None else
                   f"the limit is {expect.max_bytes} bytes") + "; nothing was saved"
            )
        if start == 0:
            _discard(part)
            if total is not None:
                with part.open("wb"):
                    pass
                _save_validators(part, response, total)
        written = start
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=name, disable=not progress)
        window_start, window_bytes = time.monotonic(), 0
        try:
            with part.open("r+b" if start else "wb") as fh:
                fh.seek(start)
                fh.truncate()
                while True:
                    block = response.read1(CHUNK)  # what arrived, not a full megabyte: progress is timely
                    if not block:
                        break
                    written += len(block)
                    if written > limit:
                        fh.close()
                        _discard(part)
                        raise DownloadError(
                            f"{name}: {host} sent more than the "
                            + (f"expected {expect.size}" if expect.size is not None else f"limit of {limit}")
                            + " bytes; stopped and deleted the partial file"
                        )
                    fh.write(block)
                    bar.update(len(block))
                    window_bytes += len(block)
                    now = time.monotonic()
                    if now - window_start >= expect.stall_s:
                        if window_bytes < STALL_MIN_BYTES:
                            raise socket.timeout(f"less than {STALL_MIN_BYTES} bytes in {expect.stall_s:.0f} s")
                        window_start, window_bytes = now, 0
        except (http.client.HTTPException, socket.timeout, ConnectionError, OSError) as err:
            raise DownloadError(
                f"{name}: the connection to {host} broke or stalled after {written} bytes"
                + (f" of {total}" if total else "") + f" ({err.__class__.__name__}: {err}); partial file kept at "
                f"{part} — run the same command again to resume"
            ) from err
        finally:
            bar.close()
    if total is not None and written < total:
        raise DownloadError(
            f"{name}: the connection to {host} closed after {written} of {total} bytes; partial file kept at "
            f"{part} — run the same command again to resume"
        )


def download(
    name: str,
    dest: str | Path,
    *,
    base_url: str | None = None,
    registry: Mapping[str, RemoteFile] | None = None,
    progress: bool = False,
    timeout: float = TIMEOUT_S,
    stall_s: float = STALL_S,
    max_bytes: int = MAX_BYTES,
) -> Path:
    """Download the known file ``name`` into the folder ``dest`` and return its path.

    ``base_url`` replaces the CMU host (a mirror, or a local server in tests); ``registry``
    replaces the table of known files. An existing verified file is returned as it is; an existing
    file whose checksum differs is an error (never overwritten). The file gets its final name only
    when it is complete and verified: its sha256 and size when the registry knows them, otherwise
    the size the server announced (a server that announces none is refused). ``timeout`` (no byte
    at all), ``stall_s`` (less than 64 KiB in that many seconds) and ``max_bytes`` (files of unknown
    size) bound a slow or endless server.
    """
    known, entry = resolve(name, registry)
    base = check_base_url(base_url or DEFAULT_BASE_URL)
    folder = Path(dest)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--dest {folder}: not a folder (the file is saved as {folder}/{entry.filename})")
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / entry.filename
    part = final.with_name(final.name + ".part")
    if final.exists():
        if entry.sha256 is None:
            problem = content_problem(final)
            if problem is not None:
                raise DownloadError(f"{known}: {final} already exists but is not the file ({problem}); it is not "
                                    "overwritten — move it away and run again")
            log.info("%s: %s already exists (no known sha256 to verify it); not downloading again", known, final)
            return final
        found = sha256_of(final)
        if found != entry.sha256:
            raise DownloadError(
                f"{known}: {final} already exists but its sha256 is {found}, expected {entry.sha256}; it is not "
                f"overwritten — move it away and run again"
            )
        log.info("%s: %s already present and verified", known, final)
        return final
    url = f"{base.rstrip('/')}/{entry.path}"
    log.info("%s: downloading %s", known, url)
    expect = _Expect(known, entry.sha256, entry.size, max_bytes, timeout, stall_s)
    _fetch(url, part, expect, progress=progress)
    size = part.stat().st_size
    found = sha256_of(part)
    if entry.sha256 is None:
        recorded = _validators(part)
        if recorded is None or recorded["total"] != size:
            _discard(part)
            raise DownloadError(f"{known}: the download's size {size} does not match the size the server announced "
                                f"({recorded and recorded['total']}); the file was deleted — run again")
        problem = content_problem(part)
        if problem is not None:
            _discard(part)
            raise DownloadError(f"{known}: {url}: {problem}; nothing was saved — check the URL or --base-url")
        log.warning("%s: could not verify the download (no known sha256); it is complete (%d bytes, as announced) "
                    "and its computed sha256 is %s — record it to check later copies", known, size, found)
    elif found != entry.sha256 or (entry.size is not None and size != entry.size):
        _discard(part)
        raise DownloadError(
            f"{known}: checksum mismatch for {url}: sha256 {found} ({size} bytes), expected {entry.sha256}"
            + (f" ({entry.size} bytes)" if entry.size else "")
            + "; the file was deleted — run again to download it afresh, or check the mirror"
        )
    else:
        log.info("%s: sha256 verified", known)
    part.with_name(part.name + ".json").unlink(missing_ok=True)
    if final.exists():  # appeared meanwhile (another download): never overwritten
        raise DownloadError(f"{known}: {final} appeared while downloading; the verified copy is kept at {part}")
    os.replace(part, final)
    return final
