"""A local Braze-compatible endpoint for the demo and the tests.

A real HTTP server on 127.0.0.1 implementing the partner cohort import
endpoints as ../shared/braze/cohort-import-api.md describes them: the keys
in the body (401 when wrong), Braze's 400 validations, cohort names and
membership. It also lets tests and the demo read the cohorts back and
inject faults (status codes, Retry-After, latency, dropped connections):

    GET    /_local/cohorts    names and members of every cohort
    GET    /_local/requests   every request received, with its outcome (and, for
                              a change, a digest of its identifiers: the same
                              batch sent twice has the same digest)
    POST   /_local/faults     {"faults": [...]} replaces the fault rules
    POST   /_local/reset      forgets cohorts, requests and faults

With rate_limit_per_hour set, it answers 429 (with Retry-After) to requests
beyond that rate, enforced over a sliding 10-second window, as Braze's
hourly limit would.

A fault rule: {"endpoint": "users"|"cohorts"|"any", "times": N (or
"probability": p), "status": 503, "retry_after": 1, "body": "...",
"latency_ms": 100, "drop": "before"|"after"}. "drop": "after" applies the
request and then closes the connection without answering (a lost ack).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import socket
import threading
import time
from collections import deque
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

MAX_IDENTIFIERS = 1000
RATE_WINDOW_SECONDS = 10.0
_PATH = re.compile(r"^/partners/(?P<partner>[^/]+)/cohorts(?P<users>/users)?/?$")
_CHANGE_KEYS = {"user_ids", "device_ids", "aliases", "should_remove"}


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _is_iso8601(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return bool(re.match(r"^\d{4}-\d{2}-\d{2}", value))


class LocalBraze:
    """The endpoint's state and behaviour; serve() puts it on a socket."""

    def __init__(
        self,
        *,
        partner_name: str,
        partner_api_key: str,
        data_import_key: str,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0,
        rate_limit_per_hour: float | None = None,
    ) -> None:
        self.partner_name = partner_name
        self.latency_ms = latency_ms
        self._window_limit = rate_limit_per_hour / 360 if rate_limit_per_hour else None
        self._window: deque[float] = deque()
        self._keys = (partner_api_key, data_import_key)
        self._lock = threading.Lock()
        self._cohorts: dict[str, dict[str, Any]] = {}
        self._requests: list[dict[str, Any]] = []
        self._faults: list[dict[str, Any]] = []
        self._random = random.Random(7)
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalBraze:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LocalBraze:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- read back and control (also reachable over HTTP) -------------------

    def cohorts(self) -> dict[str, Any]:
        with self._lock:
            return {
                cohort_id: {
                    "name": cohort["name"],
                    "created_at": cohort["created_at"],
                    "user_ids": sorted(v for t, v in cohort["members"] if t == "user_id"),
                    "aliases": [
                        {"alias_name": n, "alias_label": lbl}
                        for n, lbl in sorted(v for t, v in cohort["members"] if t == "alias")
                    ],
                    "device_ids": sorted(v for t, v in cohort["members"] if t == "device_id"),
                }
                for cohort_id, cohort in sorted(self._cohorts.items())
            }

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._requests]

    def seed(self, cohort_id: str, name: str, user_ids: list[str]) -> None:
        """Hold a cohort as if it had been published before (for tests that start mid-history)."""
        with self._lock:
            self._cohorts[cohort_id] = {
                "name": name, "created_at": None, "members": {("user_id", u) for u in user_ids},
            }

    def set_faults(self, faults: list[dict[str, Any]]) -> None:
        with self._lock:
            self._faults = [dict(f) for f in faults]

    def reset(self) -> None:
        with self._lock:
            self._cohorts.clear()
            self._requests.clear()
            self._faults.clear()

    # -- the Braze endpoints ----------------------------------------------

    def _over_rate_limit(self) -> bool:
        """True when this request exceeds the rate limit (then it is logged as a 429)."""
        if self._window_limit is None:
            return False
        now = time.monotonic()
        with self._lock:
            while self._window and now - self._window[0] >= RATE_WINDOW_SECONDS:
                self._window.popleft()
            if len(self._window) >= self._window_limit:
                self._requests.append({"endpoint": "any", "at": time.time(), "status": 429, "rate_limited": True})
                return True
            self._window.append(now)
        return False

    def _take_fault(self, endpoint: str) -> dict[str, Any] | None:
        """The first fault rule that fires for this request, logged as a request."""
        with self._lock:
            for fault in self._faults:
                if fault.get("endpoint", "any") not in ("any", endpoint):
                    continue
                if "times" in fault:
                    if fault["times"] <= 0:
                        continue
                    fault["times"] -= 1
                elif self._random.random() >= float(fault.get("probability", 0)):
                    continue
                described = {k: v for k, v in fault.items() if k not in ("times", "probability", "endpoint")}
                self._requests.append({"endpoint": endpoint, "at": time.time(), "fault": described})
                return fault
        return None

    def handle(self, path: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        match = _PATH.match(path)
        endpoint = "users" if match and match["users"] else "cohorts"
        entry: dict[str, Any] = {"endpoint": endpoint, "at": time.time()}
        try:
            if not match:
                raise _Reject(404, f"no such endpoint: {path}")
            try:
                body = json.loads(raw or b"")
            except ValueError:
                raise _Reject(400, "request body must be JSON") from None
            if not isinstance(body, dict):
                raise _Reject(400, "request body must be a JSON object")
            if match["partner"] != self.partner_name:
                raise _Reject(401, "Partner not enabled for this client")
            if body.get("partner_api_key") != self._keys[0]:
                raise _Reject(401, "Invalid partner API key")
            if body.get("client_secret") != self._keys[1]:
                raise _Reject(401, "Invalid client secret")
            cohort_id = body.get("cohort_id")
            if not isinstance(cohort_id, str) or not cohort_id.strip():
                raise _Reject(400, "cohort_id must be a non-empty string")
            entry["cohort_id"] = cohort_id
            if endpoint == "cohorts":
                status = self._name(cohort_id, body)
            else:
                status = self._change(cohort_id, body, entry)
            entry["status"] = status
            return status, {"message": "success"}
        except _Reject as reject:
            entry["status"] = reject.status
            entry["error"] = reject.message
            return reject.status, {"message": reject.message}
        finally:
            with self._lock:
                self._requests.append(entry)

    def _name(self, cohort_id: str, body: dict[str, Any]) -> int:
        name, created_at = body.get("name"), body.get("created_at")
        if not isinstance(name, str) or not name.strip():
            raise _Reject(400, "name must be a non-empty string")
        if not isinstance(created_at, str) or not _is_iso8601(created_at):
            raise _Reject(400, "created_at must be an ISO-8601 timestamp")
        with self._lock:
            cohort = self._cohorts.setdefault(
                cohort_id, {"name": None, "created_at": created_at, "members": set()}
            )
            cohort["name"] = name
            if cohort["created_at"] is None:
                cohort["created_at"] = created_at
        return 201

    def _change(self, cohort_id: str, body: dict[str, Any], entry: dict[str, Any]) -> int:
        changes = body.get("cohort_changes")
        if not isinstance(changes, list) or not all(isinstance(c, dict) for c in changes):
            raise _Reject(400, "cohort_changes must be an array of objects")
        parsed: list[tuple[bool, list[tuple[str, Any]]]] = []
        total = 0
        for change in changes:
            unknown = set(change) - _CHANGE_KEYS
            if unknown:
                raise _Reject(400, f"cohort_changes: unknown field(s) {sorted(unknown)}")
            should_remove = change.get("should_remove", False)
            if not isinstance(should_remove, bool):
                raise _Reject(400, "cohort_changes: should_remove must be a boolean")
            members: list[tuple[str, Any]] = []
            for key, kind in (("user_ids", "user_id"), ("device_ids", "device_id")):
                ids = change.get(key, [])
                if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
                    raise _Reject(400, f"cohort_changes: {key} must be an array of strings")
                members += [(kind, i) for i in ids]
            aliases = change.get("aliases", [])
            if not isinstance(aliases, list):
                raise _Reject(400, "cohort_changes: aliases must be an array of objects")
            for alias in aliases:
                if (
                    not isinstance(alias, dict)
                    or set(alias) != {"alias_name", "alias_label"}
                    or not all(isinstance(v, str) and v for v in alias.values())
                ):
                    raise _Reject(400, "cohort_changes: each alias needs alias_name and alias_label strings")
                members.append(("alias", (alias["alias_name"], alias["alias_label"])))
            total += len(members)
            parsed.append((should_remove, members))
        if total > MAX_IDENTIFIERS:
            raise _Reject(400, f"at most {MAX_IDENTIFIERS} identifiers per request, got {total}")
        added = {m for remove, ms in parsed if not remove for m in ms}
        removed = {m for remove, ms in parsed if remove for m in ms}
        if added & removed:
            raise _Reject(400, "the same user is both added and removed in one request")
        with self._lock:
            cohort = self._cohorts.setdefault(
                cohort_id, {"name": None, "created_at": None, "members": set()}
            )
            for remove, members in parsed:
                if remove:
                    cohort["members"].difference_update(members)
                else:
                    cohort["members"].update(members)
        members = sorted(repr((remove, m)) for remove, ms in parsed for m in ms)
        digest = hashlib.sha1("\n".join(members).encode()).hexdigest()[:16]
        entry.update(adds=len(added), removes=len(removed), identifiers=total, digest=digest)
        return 201


def _handler_for(braze: LocalBraze) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "LocalBraze/1"
        # headers and body are written separately: without TCP_NODELAY each
        # response waits out the peer's delayed ACK (about 40 ms)
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None,
                  raw: bytes | None = None, content_type: str = "application/json") -> None:
            data = raw if raw is not None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/_local/cohorts":
                self._send(200, braze.cohorts())
            elif self.path == "/_local/requests":
                self._send(200, braze.requests())
            else:
                self._send(404, {"message": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/_local/faults":
                braze.set_faults(json.loads(raw or b"{}").get("faults", []))
                self._send(200, {"message": "ok"})
                return
            if self.path == "/_local/reset":
                braze.reset()
                self._send(200, {"message": "ok"})
                return
            endpoint = "users" if self.path.rstrip("/").endswith("/users") else "cohorts"
            if braze.latency_ms:
                time.sleep(braze.latency_ms / 1000)
            if braze._over_rate_limit():
                self._send(429, {"message": "rate limited"}, {"Retry-After": str(int(RATE_WINDOW_SECONDS))})
                return
            fault = braze._take_fault(endpoint)
            if fault and fault.get("latency_ms"):
                time.sleep(fault["latency_ms"] / 1000)
            if fault and fault.get("drop") == "before":
                self._drop()
                return
            if fault and fault.get("status"):
                headers = {}
                if fault.get("retry_after") is not None:
                    headers["Retry-After"] = str(fault["retry_after"])
                body = fault.get("body")
                if body is not None:
                    self._send(fault["status"], None, headers, raw=body.encode(), content_type="text/html")
                else:
                    self._send(fault["status"], {"message": f"injected {fault['status']}"}, headers)
                return
            status, payload = braze.handle(self.path, raw)
            if fault and fault.get("drop") == "after":
                self._drop()
                return
            self._send(status, payload)

    return Handler
