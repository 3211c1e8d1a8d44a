"""``misalatch download`` against a local HTTP server on 127.0.0.1 (no test touches the internet)."""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from misalatch.data.download import REGISTRY, RemoteFile, download, resolve
from misalatch.cli.download import main as download_main
from misalatch.errors import ConfigError, DownloadError

PAYLOAD = (b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 400)[:102_400]  # an HDF5 signature, 102,400 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()
TABLE = {
    "tiny": RemoteFile("data/tiny.csd", SHA, "a test file", len(PAYLOAD)),
    "unverified": RemoteFile("data/tiny.csd", None, "no known checksum"),
    "wrong": RemoteFile("data/tiny.csd", "0" * 64, "checksum that cannot match"),
}


class Server:
    """Serves PAYLOAD under any path; ``mode`` picks the behaviour, ``requests`` records Range headers.

    Modes: range (honours Range and If-Range against ``etag``), norange, cut-once, error500, nolength
    (no Content-Length, body ends at close), endless (no Content-Length, never ends), wrong206 (206
    from the wrong offset), dribble (a byte at a time, slowly), silent (headers, then nothing).
    """

    def __init__(self) -> None:
        self.mode = "range"
        self.etag = '"v1"'
        self.requests: list[str | None] = []
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                header = self.headers.get("Range")
                server.requests.append(header)
                mode = server.mode
                if mode == "error500":
                    self.send_error(500, "Internal Server Error")
                    return
                if mode in ("nolength", "endless"):
                    self.send_response(200)
                    self.end_headers()
                    if mode == "nolength":
                        self.wfile.write(PAYLOAD[:50_000])
                        return
                    while not server.stop.is_set():
                        try:
                            self.wfile.write(b"\0" * 65536)
                        except OSError:
                            return
                    return
                match = re.match(r"bytes=(\d+)-$", header or "")
                start = int(match.group(1)) if match and mode != "norange" else 0
                if_range = self.headers.get("If-Range")
                if if_range is not None and if_range != server.etag:
                    start = 0  # the file changed since the partial copy was started: send it whole
                if start >= len(PAYLOAD):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if mode == "wrong206" and start:
                    server.mode = "range"
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 0-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                    self.send_header("Content-Length", str(len(PAYLOAD)))
                    self.end_headers()
                    self.wfile.write(PAYLOAD)
                    return
                body = PAYLOAD[start:]
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", server.etag)
                self.end_headers()
                if mode == "cut-once":  # announce everything, send 30 000 bytes, hang up
                    server.mode = "range"
                    self.wfile.write(body[:30_000])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if mode in ("dribble", "silent"):
                    for byte in body[:200]:
                        if server.stop.wait(0.05 if mode == "dribble" else 10):
                            return
                        try:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


def test_success_with_checksum(server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="misalatch"):
        path = download("tiny", tmp_path / "out", base_url=server.url, registry=TABLE)
    assert path == tmp_path / "out" / "tiny.csd" and path.read_bytes() == PAYLOAD
    assert not (tmp_path / "out" / "tiny.csd.part").exists()
    assert "sha256 verified" in caplog.text
    # an existing verified file is returned without a request, never rewritten
    n = len(server.requests)
    assert download("TINY.csd", tmp_path / "out", base_url=server.url, registry=TABLE) == path
    assert len(server.requests) == n


def test_resume_after_interruption(server: Server, tmp_path: Path) -> None:
    server.mode = "cut-once"
    with pytest.raises(DownloadError, match=r"closed after 30000 of 102400 bytes; partial file kept") as err:
        download("tiny", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    part = tmp_path / "tiny.csd.part"
    assert "run the same command again to resume" in str(err.value)
    assert part.stat().st_size == 30_000 and not (tmp_path / "tiny.csd").exists()
    path = download("tiny", tmp_path, base_url=server.url, registry=TABLE)
    assert server.requests == [None, "bytes=30000-"]
    assert path.read_bytes() == PAYLOAD and not part.exists()


def test_server_ignoring_range_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    server.mode = "norange"
    (tmp_path / "tiny.csd.part").write_bytes(b"stale bytes from another attempt")
    path = download("tiny", tmp_path, base_url=server.url, registry=TABLE)
    assert server.requests == ["bytes=32-"]
    assert path.read_bytes() == PAYLOAD


def test_complete_part_file_is_verified_and_renamed(server: Server, tmp_path: Path) -> None:
    (tmp_path / "tiny.csd.part").write_bytes(PAYLOAD)  # a run that stopped after the last byte
    path = download("tiny", tmp_path, base_url=server.url, registry=TABLE)
    assert server.requests == [f"bytes={len(PAYLOAD)}-"] and path.read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_no_file(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"checksum mismatch .* expected 0{64}; the file was deleted"):
        download("wrong", tmp_path, base_url=server.url, registry=TABLE)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_with_other_checksum_is_not_overwritten(server: Server, tmp_path: Path) -> None:
    (tmp_path / "tiny.csd").write_bytes(b"something else")
    with pytest.raises(DownloadError, match="is not overwritten"):
        download("tiny", tmp_path, base_url=server.url, registry=TABLE)
    assert (tmp_path / "tiny.csd").read_bytes() == b"something else" and server.requests == []


def test_unknown_checksum_is_logged(server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="misalatch"):
        path = download("unverified", tmp_path, base_url=server.url, registry=TABLE)
    assert path.read_bytes() == PAYLOAD
    assert "could not verify the download (no known sha256); it is complete (102400 bytes, as announced)" in caplog.text
    assert f"computed sha256 is {SHA}" in caplog.text
    assert not (tmp_path / "tiny.csd.part.json").exists()


def test_http_error_500(server: Server, tmp_path: Path) -> None:
    server.mode = "error500"
    with pytest.raises(DownloadError, match=r"answered HTTP 500 .*the server may be down"):
        download("tiny", tmp_path, base_url=server.url, registry=TABLE)
    assert not (tmp_path / "tiny.csd").exists()


def test_server_down(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    (tmp_path / "tiny.csd.part").write_bytes(PAYLOAD[:100])
    with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1:\d+ .*server may be down.*partial file kept"):
        download("tiny", tmp_path, base_url=f"http://127.0.0.1:{port}", registry=TABLE, timeout=5)
    assert (tmp_path / "tiny.csd.part").stat().st_size == 100


def test_registry_names_and_urls() -> None:
    name, entry = resolve("cmu_mosi_opinion_labels.csd")
    assert name == "CMU_MOSI_Opinion_Labels"
    assert entry.path == "CMU-MOSI/labels/CMU_MOSI_Opinion_Labels.csd" and entry.sha256 is not None
    assert all(e.sha256 is None or len(e.sha256) == 64 for e in REGISTRY.values())
    with pytest.raises(ConfigError, match="did you mean CMU_MOSEI_COVAREP"):
        resolve("CMU_MOSEI_COVARP")


def test_cli(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert download_main(["--list"]) == 0
    assert "CMU_MOSEI_VisualFacet42" in capsys.readouterr().out
    import misalatch.data.download as dl

    monkeypatch.setattr(dl, "REGISTRY", TABLE)
    assert download_main(["tiny", "--dest", str(tmp_path), "--base-url", server.url]) == 0
    assert f"saved: {tmp_path / 'tiny.csd'}" in capsys.readouterr().out
    from misalatch.cli import main as cli_main

    assert cli_main(["download", "nope"]) == 1
    assert "unknown file 'nope'" in capsys.readouterr().err


# ---- hostile or broken servers (issue 8 §2) ----

SIZED = {"sized": RemoteFile("data/tiny.csd", None, "size known, sha256 not", len(PAYLOAD))}


def test_unknown_checksum_needs_a_content_length(server: Server, tmp_path: Path) -> None:
    server.mode = "nolength"  # 50 000 bytes, then the connection closes: complete or truncated?
    with pytest.raises(DownloadError, match=r"did not announce the file's size .*nothing was saved"):
        download("unverified", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_unknown_checksum_truncated_body_never_gets_the_final_name(server: Server, tmp_path: Path) -> None:
    server.mode = "cut-once"
    with pytest.raises(DownloadError, match=r"closed after 30000 of 102400 bytes"):
        download("unverified", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    assert not (tmp_path / "tiny.csd").exists() and (tmp_path / "tiny.csd.part").stat().st_size == 30_000
    # resumed against the recorded ETag, completed, and only then renamed
    path = download("unverified", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    assert server.requests[-1] == "bytes=30000-" and path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.csd"]


def test_tampered_resume_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    server.mode = "cut-once"
    with pytest.raises(DownloadError):
        download("unverified", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    server.etag = '"v2"'  # the file on the server changed: its tail no longer fits the partial copy
    path = download("unverified", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    assert path.read_bytes() == PAYLOAD  # sent whole (If-Range failed), not spliced onto the old part
    # a partial file without recorded validators (unknown origin) is never continued
    path.unlink()
    (tmp_path / "tiny.csd.part").write_bytes(b"x" * 1000)
    n = len(server.requests)
    path = download("unverified", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    assert server.requests[n:] == [None] and path.read_bytes() == PAYLOAD


def test_wrong_offset_206_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    (tmp_path / "tiny.csd.part").write_bytes(PAYLOAD[:40_000])
    server.mode = "wrong206"  # answers the Range request with the file from byte 0
    path = download("tiny", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    assert server.requests == ["bytes=40000-", None] and path.read_bytes() == PAYLOAD


def test_tampered_part_with_known_checksum_is_caught(server: Server, tmp_path: Path) -> None:
    (tmp_path / "tiny.csd.part").write_bytes(b"\xff" * 40_000)  # not the file's first bytes
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download("tiny", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_endless_stream_is_stopped_at_the_cap(server: Server, tmp_path: Path) -> None:
    server.mode = "endless"
    with pytest.raises(DownloadError, match=r"sent more than the expected 102400 bytes; stopped"):
        download("tiny", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    assert list(tmp_path.iterdir()) == []
    big = {"big": RemoteFile("data/x.csd", "0" * 64, "unknown size")}
    with pytest.raises(DownloadError, match=r"sent more than the limit of 300000 bytes; stopped"):
        download("big", tmp_path, base_url=server.url, registry=big, timeout=5, max_bytes=300_000)
    assert list(tmp_path.iterdir()) == []


def test_announced_size_over_the_known_size_is_refused(server: Server, tmp_path: Path) -> None:
    short = {"short": RemoteFile("data/tiny.csd", None, "size known", 1000)}
    with pytest.raises(DownloadError, match="announced 102400 bytes but the file has 1000 bytes"):
        download("short", tmp_path, base_url=server.url, registry=short, timeout=5)
    assert download("sized", tmp_path, base_url=server.url, registry=SIZED).read_bytes() == PAYLOAD


def test_slow_server_hits_the_stall_deadline(server: Server, tmp_path: Path) -> None:
    server.mode = "dribble"  # a byte every 50 ms: alive, but never finishing
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"broke or stalled .*less than 65536 bytes in 1 s"):
        download("tiny", tmp_path, base_url=server.url, registry=TABLE, timeout=5, stall_s=1.0)
    assert time.monotonic() - start < 10 and not (tmp_path / "tiny.csd").exists()
    server.mode = "silent"  # headers, then nothing: the socket timeout
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"broke or stalled"):
        download("tiny", tmp_path / "b", base_url=server.url, registry=TABLE, timeout=0.5)
    assert time.monotonic() - start < 10


def test_registry_records_size_wherever_sha256_is_known() -> None:
    for name, entry in REGISTRY.items():
        assert (entry.sha256 is None) == (entry.size is None), name


# ---- the body is the announced format (no sha256 known) ------------------------------------------
@pytest.mark.parametrize("body, found", [
    (b"<!DOCTYPE html><html><body>Please log in</body></html>" + b" " * 2000, "an HTML page"),
    (b"\x1f\x8b\x08\x00" + bytes(5000), "a gzip stream"),
    (bytes(range(256)) * 40, "starts with"),
])
def test_a_body_that_is_not_the_announced_format_is_refused(body: bytes, found: str, server: Server, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "PAYLOAD", body)
    with pytest.raises(DownloadError, match=f"expected an HDF5 file.*{found}.*nothing was saved"):
        download("unverified", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_a_server_ignoring_range_without_a_checksum_stores_the_file_not_a_splice(server: Server, tmp_path: Path) -> None:
    server.mode = "cut-once"
    with pytest.raises(DownloadError):
        download("unverified", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    server.mode = "norange"  # a 200 with the whole body to the Range request
    path = download("unverified", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    assert path.read_bytes() == PAYLOAD


def test_a_tampered_part_is_kept_out_of_the_final_name(server: Server, tmp_path: Path) -> None:
    server.mode = "cut-once"
    with pytest.raises(DownloadError):
        download("unverified", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    part = tmp_path / "tiny.csd.part"
    part.write_bytes(b"<html>" + part.read_bytes()[6:])  # its head replaced; validators still match
    with pytest.raises(DownloadError, match="an HTML page"):
        download("unverified", tmp_path, base_url=server.url, registry=TABLE, timeout=5)
    assert not (tmp_path / "tiny.csd").exists() and not part.exists()


def test_an_existing_file_that_is_not_the_format_is_not_taken(tmp_path: Path) -> None:
    (tmp_path / "tiny.csd").write_bytes(b"<html>login</html>")
    with pytest.raises(DownloadError, match="already exists but is not the file"):
        download("unverified", tmp_path, base_url="http://127.0.0.1:9", registry=TABLE)
    assert (tmp_path / "tiny.csd").read_bytes() == b"<html>login</html>"


def test_the_real_mosi_labels_file_matches_its_pinned_checksum() -> None:
    from misalatch.data.download import content_problem, sha256_of

    real = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mosi" / "CMU_MOSI_Opinion_Labels.csd"
    if not real.is_file():
        pytest.skip("the shared MOSI labels file is not here")
    entry = REGISTRY["CMU_MOSI_Opinion_Labels"]
    assert sha256_of(real) == entry.sha256 and real.stat().st_size == entry.size
    assert content_problem(real) is None
