"""HTTP transport for the Braze client: a shared pool of keep-alive connections.

`requests` costs about a millisecond of CPU per request (its session,
adapters, hooks and header merging), which at Braze's /users/track ceiling
(1,000 requests a second) is a whole core, and the publisher shares one
core (the GIL) between its workers, rendering and recording. This module
posts with the standard library's http.client instead: the workers share
a pool of keep-alive connections to the endpoint's host (at most the pool
size kept idle), each reused while the server keeps it open (a connection
the server closed while idle is noticed before reuse and replaced), with
the same timeouts and certificates as `requests` would use
(REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, else certifi's). Where a proxy applies
to the endpoint (HTTPS_PROXY and the like, as `requests` reads them), posts
go through `requests` instead, so nothing about proxies changes. Every
post says it is from cohort-sync (User-Agent). See docs/decisions/0016.

Failures are raised as TransportError, which says whether the request can
have reached the server (`never_sent`: the connection could not be made).
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import select
import socket
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cohort_sync import __version__

#: Every post's own headers (the caller's are added to them).
_HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": f"cohort-sync/{__version__}"}


class TransportError(Exception):
    """The request got no answer. `never_sent`: no connection was made, so the
    server cannot have seen it; `timeout`: it timed out (connecting or reading)."""

    def __init__(self, message: str, *, never_sent: bool, timeout: bool = False) -> None:
        super().__init__(message)
        self.never_sent = never_sent
        self.timeout = timeout


class Response:
    """What the client reads of an answer (the subset of requests.Response it uses)."""

    def __init__(self, status_code: int, reason: str, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.reason = reason
        self.headers = headers  # case-insensitive lookups (http.client's HTTPMessage, or requests')
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Transport:
    """Posts JSON bodies to one endpoint (scheme, host and port of `base_url`)."""

    def __init__(self, base_url: str, pool_size: int = 16) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._idle: queue.LifoQueue = queue.LifoQueue(maxsize=max(1, pool_size))  # shared by every thread
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._context = _ssl_context() if self._https else None
        self._fallback = _proxied_session(base_url, pool_size)

    @property
    def proxied(self) -> bool:
        return self._fallback is not None

    def post(self, path: str, body: str, headers: Mapping[str, str], timeout: tuple[float, float]) -> Response:
        """POST `body` (JSON text) to the endpoint's `path`; (connect, read) timeouts in seconds."""
        if self._fallback is not None:
            return self._post_proxied(path, body, headers, timeout)
        connection, fresh = self._connection(timeout[0])
        data = body.encode("utf-8")
        connecting = fresh  # until the connection is made, nothing can have reached the server
        try:
            if fresh:
                connection.timeout = timeout[0]
                connection.connect()
                connecting = False
            connection.sock.settimeout(timeout[1])
            connection.request("POST", self._prefix + path, body=data, headers={**_HEADERS, **headers})
            answer = connection.getresponse()
            content = answer.read()
        except BaseException as exc:
            self._discard(connection)
            raise _transport_error(exc, connecting) from None
        if answer.will_close:
            self._discard(connection)
        else:
            try:
                self._idle.put_nowait(connection)  # for the next post, of any thread
            except queue.Full:
                self._discard(connection)
        return Response(answer.status, answer.reason, answer.headers, content)

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        if self._fallback is not None:
            self._fallback.close()

    def _connection(self, connect_timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection the server kept open, else a new one (and whether it still has to connect)."""
        while True:
            try:
                connection = self._idle.get_nowait()
            except queue.Empty:
                break
            if connection.sock is not None and not _dropped(connection.sock):
                return connection, False
            self._discard(connection)
        if self._https:
            connection = http.client.HTTPSConnection(self._host, self._port, timeout=connect_timeout,
                                                     context=self._context)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=connect_timeout)
        with self._lock:
            self._connections.append(connection)
        return connection, True

    def _discard(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)

    def _post_proxied(self, path: str, body: str, headers: Mapping[str, str], timeout: tuple[float, float]
                      ) -> Response:
        import requests

        url = f"{'https' if self._https else 'http'}://{self._host}:{self._port}{self._prefix}{path}"
        try:
            answer = self._fallback.post(url, data=body.encode("utf-8"), timeout=timeout, headers={**_HEADERS, **headers})
        except requests.ConnectTimeout as exc:
            raise TransportError(f"ConnectTimeout: {exc}", never_sent=True, timeout=True) from None
        except requests.Timeout as exc:
            raise TransportError(f"ReadTimeout: {exc}", never_sent=False, timeout=True) from None
        except requests.ConnectionError as exc:
            reason = exc.args[0] if exc.args else None
            from urllib3.exceptions import NewConnectionError
            refused = isinstance(getattr(reason, "reason", reason), NewConnectionError)
            raise TransportError(f"ConnectionError: {exc}", never_sent=refused) from None
        return Response(answer.status_code, answer.reason or "", answer.headers, answer.content)


def _dropped(sock: socket.socket) -> bool:
    """A kept-alive connection the server closed (or that has stray bytes) while idle."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _transport_error(exc: BaseException, connecting: bool) -> BaseException:
    if not isinstance(exc, (OSError, http.client.HTTPException)):
        return exc  # not a network failure (KeyboardInterrupt, a bug): raised as it is
    if isinstance(exc, (socket.timeout, TimeoutError)):
        kind = "ConnectTimeout" if connecting else "ReadTimeout"
        return TransportError(f"{kind}: {exc or 'timed out'}", never_sent=connecting, timeout=True)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return TransportError(f"ConnectionError: {detail}", never_sent=connecting)


def _ssl_context() -> ssl.SSLContext:
    """Certificates as requests verifies them: the bundle REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE names (a file, or a directory of hashed certificates), else
    certifi's where installed (as requests, SSL_CERT_FILE is not read)."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        if os.path.isdir(bundle):
            return ssl.create_default_context(capath=bundle)
        return ssl.create_default_context(cafile=bundle)
    try:
        import certifi
    except ImportError:  # pragma: no cover - requests brings certifi
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _proxied_session(base_url: str, pool_size: int):
    """A requests session when the environment names a proxy for this endpoint, else None."""
    proxies = urllib.request.getproxies()
    host = urlsplit(base_url).hostname or ""
    scheme = urlsplit(base_url).scheme
    if not (proxies.get(scheme) or proxies.get("all")) or urllib.request.proxy_bypass(host):
        return None
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
