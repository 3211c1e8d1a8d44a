"""Fetch public CMU-MultimodalSDK files with sha256 verification and resumable partial downloads.

Nothing else in misalatch touches the network: this module runs only when a user asks for a file
by name (``misalatch download NAME``). The CMU host is known to be unreliable (DATA.md §11.13), so:

* bytes go to ``<file>.part`` first and a rerun continues it with an HTTP ``Range`` request (a
  server that ignores ``Range`` answers 200 and the download restarts cleanly from byte 0);
* the file appears under its final name only after its sha256 matched (or, where no checksum is
  known, after the computed sha256 was logged so the user can record it);
* an existing final file is never overwritten;
* every failure is a :class:`DownloadError` that says what happened and what to do; a partial file
  is kept for resuming, a complete file with the wrong checksum is deleted.

URLs are the SDK's standard recipes (``mmsdk/mmdatasdk/dataset/standard_datasets/CMU_MOSI/cmu_mosi.py``,
``CMU_MOSEI/cmu_mosei.py``) and the MulT-style processed pickles under ``raw_datasets/processed_data``.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import logging
import os
import re
import socket
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
TIMEOUT_S = 60.0


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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _total_from_content_range(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(?:\d+-\d+|\*)/(\d+)", value or "")
    return int(match.group(1)) if match else None


def _fetch(url: str, part: Path, name: str, *, progress: bool, timeout: float) -> None:
    """Download ``url`` into ``part``, continuing what is there when the server honours ``Range``."""
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "misalatch-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    host = urlsplit(url).netloc
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the part may already be complete
            total = _total_from_content_range(err.headers.get("Content-Range"))
            err.close()
            if total == have:
                return
            log.warning("%s: the server refused to resume at byte %d; starting again from 0", name, have)
            part.unlink()
            return _fetch(url, part, name, progress=progress, timeout=timeout)
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
        if have and status == 206:
            start = have
            total = _total_from_content_range(response.headers.get("Content-Range"))
            log.info("%s: resuming at byte %d", name, have)
        else:
            if have:
                log.warning("%s: the server ignored the Range request (HTTP %d); restarting from byte 0", name, status)
            start = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        written = start
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=name, disable=not progress)
        try:
            with part.open("r+b" if start else "wb") as fh:
                fh.seek(start)
                fh.truncate()
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    written += len(block)
                    bar.update(len(block))
        except (http.client.HTTPException, socket.timeout, ConnectionError, OSError) as err:
            raise DownloadError(
                f"{name}: the connection to {host} broke after {written} bytes"
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
) -> Path:
    """Download the known file ``name`` into the folder ``dest`` and return its path.

    ``base_url`` replaces the CMU host (a mirror, or a local server in tests); ``registry``
    replaces the table of known files. An existing verified file is returned as it is; an existing
    file whose checksum differs is an error (never overwritten). See the module docstring for the
    resume and verification rules.
    """
    known, entry = resolve(name, registry)
    folder = Path(dest)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--dest {folder}: not a folder (the file is saved as {folder}/{entry.filename})")
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / entry.filename
    part = final.with_name(final.name + ".part")
    if final.exists():
        if entry.sha256 is None:
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
    url = f"{(base_url or DEFAULT_BASE_URL).rstrip('/')}/{entry.path}"
    log.info("%s: downloading %s", known, url)
    _fetch(url, part, known, progress=progress, timeout=timeout)
    found = sha256_of(part)
    if entry.sha256 is None:
        log.warning("%s: could not verify the download (no known sha256); computed sha256 %s — record it to "
                    "check later copies", known, found)
    elif found != entry.sha256:
        size = part.stat().st_size
        part.unlink()
        raise DownloadError(
            f"{known}: checksum mismatch for {url}: sha256 {found} ({size} bytes), expected {entry.sha256}"
            + (f" ({entry.size} bytes)" if entry.size else "")
            + "; the file was deleted — run again to download it afresh, or check the mirror"
        )
    else:
        log.info("%s: sha256 verified", known)
    os.replace(part, final)
    return final
