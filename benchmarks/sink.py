"""A fast Braze-compatible sink for `make bench`: part of the benchmark, not of the product.

The local endpoint (`cohort-sync local-braze`) keeps profiles and checks
every object, on the standard library's threaded HTTP server: right for
tests and the demo, but it cannot absorb Braze's /users/track ceiling
(3,000 requests per 3 seconds, about 75,000 objects per second) beside a
publisher on a 2-core machine. This sink serves only the hot path, on one
asyncio event loop: HTTP/1.1 keep-alive, the keys checked, each body parsed
as JSON and its objects counted (and their data points, as Braze bills
them), an added latency that holds no thread, and Braze's rate limits with
their answers: /users/track's fixed 3-second window (aligned to epoch
time, with X-RateLimit-* headers) and the partner endpoints' hourly limit
in 10-second slices. It keeps counters, not profiles:

    GET  /_sink/stats   the counters (requests, objects, data points, 429s, ...)
    POST /_sink/reset   zero them

    python benchmarks/sink.py --port 0 --latency-ms 100 [--no-rate-limit] [--partner NAME]

It prints "sink listening on http://127.0.0.1:PORT" once ready. Keys come
from the environment, as for the local endpoint (BRAZE_REST_API_KEY,
BRAZE_PARTNER_API_KEY, BRAZE_DATA_IMPORT_KEY).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from typing import Any

TRACK_WINDOW = (3000, 3.0)
PARTNER_SLICE_SECONDS = 10.0
IDENTIFIER_KEYS = frozenset({"external_id", "user_alias", "braze_id", "email", "phone", "_update_existing_only"})


def data_points(array: str, obj: dict[str, Any]) -> int:
    """What Braze bills for one object: each attribute written (an array
    whole counts one, each add/remove element one), each event, each
    purchase and each of its properties."""
    if array == "attributes":
        points = 0
        for key, value in obj.items():
            if key in IDENTIFIER_KEYS:
                continue
            if isinstance(value, dict) and set(value) <= {"add", "remove"}:
                points += sum(len(v) for v in value.values() if isinstance(v, list))
            else:
                points += 1
        return points
    if array == "purchases":
        return 1 + len(obj.get("properties") or {})
    return 1


class Sink:
    def __init__(self, latency: float, rate_limit: bool, partner: str, per_hour: float) -> None:
        self.latency = latency
        self.rate_limit = rate_limit
        self.partner_prefix = f"/partners/{partner}/"
        self.partner_slice_limit = per_hour * PARTNER_SLICE_SECONDS / 3600
        self.rest_key = os.environ.get("BRAZE_REST_API_KEY", "")
        self.partner_key = os.environ.get("BRAZE_PARTNER_API_KEY", "")
        self.import_key = os.environ.get("BRAZE_DATA_IMPORT_KEY", "")
        self.reset()

    def reset(self) -> None:
        self.stats = {"requests": 0, "track_requests": 0, "partner_requests": 0, "attributes": 0, "events": 0,
                      "purchases": 0, "data_points": 0, "identifiers": 0, "rate_limited": 0, "refused": 0,
                      "first_at": None, "last_at": None}
        self.track_window = (0.0, 0)
        self.partner_slice = (0.0, 0)

    def _over_track_limit(self, now: float) -> tuple[bool, list[tuple[str, str]]]:
        limit, seconds = TRACK_WINDOW
        start = math.floor(now / seconds) * seconds
        count = self.track_window[1] + 1 if self.track_window[0] == start else 1
        self.track_window = (start, count)
        headers = [("X-RateLimit-Limit", str(limit)), ("X-RateLimit-Remaining", str(max(0, limit - count))),
                   ("X-RateLimit-Reset", str(math.ceil(start + seconds)))]
        return self.rate_limit and count > limit, headers

    def _over_partner_limit(self, now: float) -> bool:
        start = math.floor(now / PARTNER_SLICE_SECONDS) * PARTNER_SLICE_SECONDS
        count = self.partner_slice[1] + 1 if self.partner_slice[0] == start else 1
        self.partner_slice = (start, count)
        return self.rate_limit and count > self.partner_slice_limit

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes
               ) -> tuple[int, dict[str, Any], list[tuple[str, str]], float]:
        """(status, payload, headers, delay) for one request."""
        if method == "GET" and path == "/_sink/stats":
            return 200, self.stats, [], 0.0
        if method == "POST" and path == "/_sink/reset":
            self.reset()
            return 200, {"reset": True}, [], 0.0
        if method != "POST":
            return 405, {"message": "method not allowed"}, [], 0.0
        now = time.time()
        stats = self.stats
        stats["requests"] += 1
        stats["first_at"] = stats["first_at"] or now
        stats["last_at"] = now
        if path == "/users/track":
            over, limit_headers = self._over_track_limit(now)
            if headers.get("authorization") != f"Bearer {self.rest_key}":
                stats["refused"] += 1
                return 401, {"message": "Invalid API key"}, limit_headers, self.latency
            if over:
                stats["rate_limited"] += 1
                return 429, {"message": "rate limited"}, [*limit_headers, ("Retry-After", "1")], self.latency
            try:
                request = json.loads(body)
            except ValueError:
                return 400, {"message": "body is not JSON"}, limit_headers, self.latency
            stats["track_requests"] += 1
            processed = {}
            for array in ("attributes", "events", "purchases"):
                objects = request.get(array) or []
                stats[array] += len(objects)
                stats["data_points"] += sum(data_points(array, obj) for obj in objects)
                if objects:
                    processed[f"{array}_processed"] = len(objects)
            return 201, {"message": "success", **processed}, limit_headers, self.latency
        if path.startswith(self.partner_prefix):
            if self._over_partner_limit(now):
                stats["rate_limited"] += 1
                return 429, {"message": "rate limited"}, [("Retry-After", "1")], self.latency
            try:
                request = json.loads(body)
            except ValueError:
                return 400, {"message": "body is not JSON"}, [], self.latency
            if request.get("partner_api_key") != self.partner_key or request.get("client_secret") != self.import_key:
                stats["refused"] += 1
                return 401, {"message": "invalid partner api key or client secret"}, [], self.latency
            stats["partner_requests"] += 1
            for change in request.get("cohort_changes") or []:
                for key in ("user_ids", "aliases", "device_ids", "should_remove_user_ids"):
                    stats["identifiers"] += len(change.get(key) or []) if isinstance(change, dict) else 0
            return 201, {"message": "success"}, [], self.latency
        return 404, {"message": f"no route {path}"}, [], 0.0


REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 429: "Too Many Requests"}


class Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive; one request at a time per connection, as clients send them."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            method, path, _ = head[0].split(" ", 2)
            status, payload, extra, delay = self.sink.handle(method, path, headers, body)
            encoded = json.dumps(payload).encode()
            lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", "Content-Type: application/json",
                     f"Content-Length: {len(encoded)}", *(f"{k}: {v}" for k, v in extra)]
            response = ("\r\n".join(lines) + "\r\n\r\n").encode() + encoded
            if delay:
                self.loop.call_later(delay, self._write, response)
            else:
                self._write(response)

    def _write(self, response: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(args: argparse.Namespace) -> None:
    sink = Sink(args.latency_ms / 1000, not args.no_rate_limit, args.partner, args.rate_limit_per_hour)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(sink), "127.0.0.1", args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"sink listening on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--no-rate-limit", action="store_true", help="answer every request (capacity checks)")
    parser.add_argument("--partner", default="cohort_sync_bench")
    parser.add_argument("--rate-limit-per-hour", type=float, default=250_000)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()


async def _load(host: str, port: int, request: bytes, connections: int, seconds: float) -> dict[str, Any]:
    """Send `request` over `connections` keep-alive connections for `seconds`, as fast as answers come."""
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "statuses": statuses, "per_second": sum(statuses.values()) / elapsed}


def load(url: str, path: str, body: bytes, headers: dict[str, str], connections: int, seconds: float
         ) -> dict[str, Any]:
    """A load generator for capacity checks (run it in a process of its own)."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    return asyncio.run(_load(host, int(port), request, connections, seconds))
