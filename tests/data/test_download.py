"""``misalatch download`` against a local HTTP server on 127.0.0.1 (no test touches the internet)."""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from misalatch.data.download import REGISTRY, RemoteFile, download, resolve
from misalatch.cli.download import main as download_main
from misalatch.errors import ConfigError, DownloadError

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()
TABLE = {
    "tiny": RemoteFile("data/tiny.csd", SHA, "a test file", len(PAYLOAD)),
    "unverified": RemoteFile("data/tiny.csd", None, "no known checksum"),
    "wrong": RemoteFile("data/tiny.csd", "0" * 64, "checksum that cannot match"),
}


class Server:
    """Serves PAYLOAD under any path; ``mode`` picks the behaviour, ``requests`` records Range headers."""

    def __init__(self) -> None:
        self.mode = "range"  # range | norange | cut-once | error500
        self.requests: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                header = self.headers.get("Range")
                server.requests.append(header)
                if server.mode == "error500":
                    self.send_error(500, "Internal Server Error")
                    return
                match = re.match(r"bytes=(\d+)-$", header or "")
                start = int(match.group(1)) if match and server.mode != "norange" else 0
                if start >= len(PAYLOAD):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = PAYLOAD[start:]
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.mode == "cut-once":  # announce everything, send 30 000 bytes, hang up
                    server.mode = "range"
                    self.wfile.write(body[:30_000])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
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
    assert f"could not verify the download (no known sha256); computed sha256 {SHA}" in caplog.text


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
