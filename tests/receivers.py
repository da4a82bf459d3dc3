"""Real local servers that notifications go to: an SMTP server that demands
STARTTLS and a login (aiosmtpd, with a trustme certificate), and an HTTP
receiver for webhooks. Both listen on 127.0.0.1 and record what arrives."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Mail:
    """One message as the server received it."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool  # the session was upgraded with STARTTLS before the message
    login: str | None  # the user the client logged in as

    @property
    def body(self) -> str:
        return self.message.get_content()


class MailServer:
    """aiosmtpd on 127.0.0.1: STARTTLS required, then AUTH required, then mail."""

    USER = "cohort-sync"
    PASSWORD = "smtp-Pa55word-not-for-logs"

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.ca_file = directory / "notify-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self.received: list[Mail] = []
        self.port = free_port()
        self._controller = Controller(
            self, hostname="127.0.0.1", port=self.port, tls_context=context,
            require_starttls=True, auth_required=True, authenticator=self._authenticate,
        )
        self._controller.start()

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = auth_data.login == self.USER.encode() and auth_data.password == self.PASSWORD.encode()
        if not ok:  # handled=False: aiosmtpd answers 535 itself
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=auth_data.login.decode())

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd's handler hook
        self.received.append(Mail(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            message=message_from_bytes(envelope.original_content, policy=policy.default),
            tls=session.ssl is not None,
            login=session.auth_data,
        ))
        return "250 OK"

    def env(self, sender: str = "Cohort Sync <cohort-sync@example.com>") -> dict[str, str]:
        """The publisher's settings for this server, and trust in its certificate."""
        return {
            "COHORT_SYNC_SMTP_HOST": "127.0.0.1",
            "COHORT_SYNC_SMTP_PORT": str(self.port),
            "COHORT_SYNC_SMTP_USER": self.USER,
            "COHORT_SYNC_SMTP_PASSWORD": self.PASSWORD,
            "COHORT_SYNC_SMTP_FROM": sender,
            "SSL_CERT_FILE": str(self.ca_file),
        }

    def to(self, address: str) -> list[Mail]:
        return [mail for mail in self.received if address in mail.rcpt_tos]

    def stop(self) -> None:
        self._controller.stop()


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records JSON posts and answers `status`."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.status = 200
        self.body = ""  # the answer's body (default: ok, or invalid_token for an error)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append((self.path, json.loads(body)))
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                default = "ok" if receiver.status < 300 else "invalid_token"
                self.wfile.write((receiver.body or default).encode())

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/services/T0001/B0002/secret-hook-token") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def texts(self) -> list[str]:
        return [payload["text"] for _, payload in self.posts]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
