"""The Braze client's transport over HTTPS, against a real server on
127.0.0.1 whose certificate a test CA (trustme) signed: it trusts the
certificates `requests` would (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, else
certifi's bundle), and says who is posting."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from cohort_sync import __version__
from cohort_sync.braze.transport import Transport, TransportError


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Braze

    def do_POST(self) -> None:  # noqa: N802 - http.server's hook
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append({"user_agent": self.headers.get("User-Agent"), "body": json.loads(body)})
        answer = b'{"message": "success"}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def https_server(ca: trustme.CA) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _post(server: ThreadingHTTPServer, n: int = 1) -> int:
    transport = Transport(f"https://127.0.0.1:{server.server_address[1]}", pool_size=2)
    try:
        return transport.post("/users/track", json.dumps({"n": n}), {}, (5.0, 5.0)).status_code
    finally:
        transport.close()


def test_an_unknown_certificate_is_refused_before_anything_is_sent(https_server, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    before = len(https_server.seen)
    with pytest.raises(TransportError) as refused:
        _post(https_server)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert refused.value.never_sent  # the handshake failed: the server cannot have read the request
    assert len(https_server.seen) == before


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_the_bundle_requests_would_trust_is_trusted(https_server, ca_file, monkeypatch, variable):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv(variable, ca_file)
    assert _post(https_server, 7) == 201
    assert https_server.seen[-1]["body"] == {"n": 7}


def test_a_directory_bundle_is_read_as_one(https_server, ca, tmp_path, monkeypatch):
    """A CA directory (REQUESTS_CA_BUNDLE may name one) holds certificates by subject hash."""
    directory = tmp_path / "certs"
    directory.mkdir()
    pem = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    subject_hash = _subject_hash(pem)
    (directory / f"{subject_hash}.0").write_bytes(pem.read_bytes())
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(directory))
    assert _post(https_server) == 201


def test_every_post_says_it_is_from_cohort_sync(https_server, ca_file, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_file)
    _post(https_server)
    assert https_server.seen[-1]["user_agent"] == f"cohort-sync/{__version__}"


def _subject_hash(pem: Path) -> str:
    import subprocess

    return subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(pem)], check=True,
                          capture_output=True, text=True).stdout.strip()
