"""HTTP client for Braze's partner cohort import endpoints.

One pooled requests.Session per run and an explicit timeout on every call.
Transient failures (429, 423, 5xx, connection errors, timeouts) are retried
with exponential backoff and jitter, honouring Retry-After, capped in
attempts and in total time. Any other 4xx is fatal and shows the server's
message. Secrets travel only in request bodies and are redacted from every
message this module produces. Every attempt is logged at INFO (what
`cohort-sync publish --verbose` shows): the endpoint's path, the cohort,
the batch and its counts, the attempt, the answer and the latency; never a
key, which travels only in the body.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from .config import DATA_IMPORT_KEY_VAR, PARTNER_API_KEY_VAR, BrazeSettings

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({423, 429, 500, 502, 503, 504})
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0


class BrazeError(Exception):
    """Braze did not acknowledge a request.

    `attempts`: how many times it was sent (or tried). `maybe_applied`:
    False only when no attempt can have reached Braze's data: each was
    answered with a 4xx (Braze refuses before applying) or failed to
    connect; a 5xx, a timeout or a connection lost after sending may have
    been applied.
    """

    def __init__(
        self, message: str, status: int | None = None, *, attempts: int = 1, maybe_applied: bool = True
    ) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        self.maybe_applied = maybe_applied


class BrazeAuthError(BrazeError):
    """401: a key is wrong; no further request of this run can succeed."""


class BrazeRejectedError(BrazeError):
    """A 4xx other than 401, 423 and 429: the request itself is wrong."""


class BrazeUnavailableError(BrazeError):
    """A transient failure that did not clear within the retry caps."""


@dataclass(frozen=True)
class Ack:
    """Braze's acknowledgement of one request."""

    status: int
    attempts: int

    @property
    def retries(self) -> int:
        return self.attempts - 1


class RateLimiter:
    """Spaces request starts evenly, so that at most `per_hour` start in any hour.

    Braze's default limit for these endpoints is 250,000 requests per hour
    per workspace; pacing under it keeps a large sync off 429s. Shared by
    every thread of a run.
    """

    def __init__(
        self,
        per_hour: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_hour <= 0:
            raise ValueError("per_hour must be positive")
        self.interval = 3600.0 / per_hour
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for this request's slot; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            start = now if self._next is None else max(now, self._next)
            self._next = start + self.interval
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return wait


class BrazeClient:
    """Posts to the cohort name and user cohort endpoints of one workspace."""

    def __init__(
        self,
        settings: BrazeSettings,
        *,
        pool_size: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._sleep = sleep
        self._clock = clock
        self._limiter = RateLimiter(settings.max_requests_per_hour, clock=clock, sleep=sleep)
        self._path = f"/partners/{settings.partner_name}"  # no secret in it: the keys go in the body
        self._base = f"{settings.rest_endpoint}{self._path}"
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.headers.update({"Content-Type": "application/json"})

    def __repr__(self) -> str:
        return f"BrazeClient(endpoint={self._base!r})"

    @property
    def spacing(self) -> float:
        """Seconds between request starts under the rate limit."""
        return self._limiter.interval

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> BrazeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def name_cohort(
        self, cohort_id: str, name: str, created_at: datetime, *, ready: Callable[[], None] | None = None
    ) -> Ack:
        """Create the cohort in Braze, or rename it (`ready`: see update_cohort)."""
        stamp = created_at.astimezone(timezone.utc).isoformat(timespec="seconds")
        return self._post(
            "/cohorts",
            {"cohort_id": cohort_id, "name": name, "created_at": stamp},
            what=f"name of cohort '{cohort_id}'",
            detail="name call",
            ready=ready,
        )

    def update_cohort(
        self,
        cohort_id: str,
        cohort_changes: list[dict[str, Any]] | str,
        *,
        batch: int | None = None,
        adds: int | None = None,
        removes: int | None = None,
        kind: str = "users",
        ready: Callable[[], None] | None = None,
    ) -> Ack:
        """Send one batch of adds and removes (at most 1,000 identifiers).

        `cohort_changes` is the array, or its JSON text as the warehouse
        rendered it; the batch's number and counts are for the log.
        `ready` is called once the rate limiter lets the first attempt go,
        just before it is sent (the publisher notes the request in flight
        then); an exception from it is raised as is, and nothing is sent.
        """
        encoded = cohort_changes if isinstance(cohort_changes, str) else json.dumps(cohort_changes)
        detail = " ".join(
            f"{name}={value}" for name, value in
            ((("resync_batch" if kind == "resync" else "batch"), batch), ("adds", adds), ("removes", removes))
            if value is not None
        )
        return self._post(
            "/cohorts/users",
            {"cohort_id": cohort_id},
            what=f"batch for cohort '{cohort_id}'",
            encoded={"cohort_changes": encoded},
            detail=detail or "batch",
            ready=ready,
        )

    def _post(
        self,
        path: str,
        fields: dict[str, Any],
        *,
        what: str,
        encoded: dict[str, str] | None = None,
        detail: str = "",
        ready: Callable[[], None] | None = None,
    ) -> Ack:
        body = json.dumps(
            {
                "partner_api_key": self._settings.partner_api_key,
                "client_secret": self._settings.data_import_key,
                **fields,
            },
            separators=(",", ":"),
        )
        for key, text in (encoded or {}).items():
            body = f"{body[:-1]},{json.dumps(key)}:{text}}}"
        url = self._base + path
        timeout = self._settings.timeout_seconds
        started = self._clock()
        cohort_id = fields["cohort_id"]
        maybe_applied = False  # an attempt may have reached Braze's data
        for attempt in range(1, self._settings.max_attempts + 1):
            retry_after: float | None = None
            self._limiter.acquire()
            if attempt == 1 and ready is not None:
                ready()
            sent = time.perf_counter()
            try:
                response = self._session.post(url, data=body, timeout=(min(10.0, timeout), timeout))
            except (requests.ConnectionError, requests.Timeout) as exc:
                self._log_attempt(path, cohort_id, detail, attempt, type(exc).__name__, sent)
                maybe_applied = maybe_applied or not never_sent(exc)
                reason = f"{type(exc).__name__}: {self._redact(str(exc))}"
            else:
                status = response.status_code
                self._log_attempt(path, cohort_id, detail, attempt, f"HTTP {status}", sent)
                if 200 <= status < 300:
                    return Ack(status=status, attempts=attempt)
                maybe_applied = maybe_applied or status >= 500
                message = self._redact(server_message(response))
                if status == 401:
                    raise BrazeAuthError(auth_advice(message), status, attempts=attempt, maybe_applied=maybe_applied)
                if status not in RETRYABLE_STATUSES:
                    raise BrazeRejectedError(
                        f"Braze rejected the {what} with HTTP {status}: {message}", status,
                        attempts=attempt, maybe_applied=maybe_applied,
                    )
                reason = f"HTTP {status}: {message}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))

            delay = retry_after if retry_after is not None else backoff(attempt)
            elapsed = self._clock() - started
            if attempt == self._settings.max_attempts or elapsed + delay > self._settings.max_retry_seconds:
                raise BrazeUnavailableError(
                    f"gave up on the {what} after {attempt} attempt(s) in {elapsed:.1f}s: {reason}",
                    attempts=attempt, maybe_applied=maybe_applied,
                )
            log.warning(
                "retrying the %s in %.2fs (attempt %d of %d failed): %s",
                what, delay, attempt, self._settings.max_attempts, reason,
            )
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _log_attempt(self, path: str, cohort_id: str, detail: str, attempt: int, answer: str, sent: float) -> None:
        """One line per attempt, for `--verbose`: no key (they travel in the body), no host."""
        log.info(
            "POST %s%s cohort=%s %s attempt=%d: %s in %d ms",
            self._path, path, cohort_id, detail, attempt, answer, round((time.perf_counter() - sent) * 1000),
        )

    def _redact(self, text: str) -> str:
        for secret in self._settings.secrets:
            if secret:
                text = text.replace(secret, "[redacted]")
        return text


def never_sent(exc: requests.RequestException) -> bool:
    """True when the request failed before it was sent: no connection was made
    (refused, unreachable, name not resolved, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    return isinstance(getattr(reason, "reason", reason), NewConnectionError)


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, capped."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


_TAGS = re.compile(r"<[^>]+>")


def server_message(response: requests.Response) -> str:
    """A readable one-line message from any response body, JSON or not."""
    text = response.text or ""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        parts = [str(payload[key]) for key in ("message", "errors", "error") if payload.get(key)]
        if parts:
            return "; ".join(parts)[:500]
    if not text.strip():
        return f"empty response body ({response.reason or 'no reason given'})"
    kind = response.headers.get("Content-Type", "unknown content type").split(";")[0]
    flat = " ".join(_TAGS.sub(" ", text).split())
    return f"non-JSON response ({kind}): {flat[:300]}"


def auth_advice(message: str) -> str:
    """Which key a 401 most likely points at, without echoing either key."""
    lowered = message.lower()
    if "client secret" in lowered or "client_secret" in lowered:
        suspect = f"{DATA_IMPORT_KEY_VAR} (the workspace's data import key) is likely wrong or rotated"
    elif "partner" in lowered and "key" in lowered:
        suspect = f"{PARTNER_API_KEY_VAR} is likely wrong (or for another region)"
    else:
        suspect = (
            f"check {DATA_IMPORT_KEY_VAR} (the workspace's data import key) "
            f"and {PARTNER_API_KEY_VAR}"
        )
    return f"Braze answered 401 ({message}): {suspect}; the run was stopped"
