"""HTTP client for Braze: the partner cohort import endpoints and /users/track.

A shared pool of keep-alive connections (braze/transport.py) and an explicit timeout on every call.
Each endpoint family has its own rate limiter, as Braze limits them apart:
the cohort import family spaced under its hourly limit, /users/track under
its 3-second window (and an hourly cap where the contract has one), and
kept within the budget Braze's X-RateLimit-* headers announce. Both
families share one retry loop: transient failures (429, 423, 5xx,
connection errors, timeouts) are retried with exponential backoff and
jitter, honouring Retry-After, capped in attempts and in total time; any
other 4xx is fatal and shows the server's message. The partner keys travel
in request bodies, the REST API key in the Authorization header; every key
is redacted from every message this module produces. Every attempt is
logged at INFO (what `cohort-sync publish --verbose` shows): the
endpoint's path, what the request carries (cohort, batch, counts), the
attempt, the answer and the latency; never a key or a header.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

from ..config import (
    COHORT_IMPORT,
    DATA_IMPORT_KEY_VAR,
    PARTNER_API_KEY_VAR,
    REST_API_KEY_VAR,
    USERS_TRACK,
    BrazeSettings,
    ConfigError,
)
from .transport import Response, Transport, TransportError

log = logging.getLogger(__name__)

TRACK_PATH = "/users/track"
TRACK_ARRAYS = ("attributes", "events", "purchases")
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
    """401 (or 403 from /users/track): a key is wrong or lacks a permission;
    no further request of this run can succeed."""


class ObjectError(NamedTuple):
    """One /users/track object Braze rejected: `index` counts within its
    own `input_array` ("attributes", "events" or "purchases")."""

    input_array: str
    index: int
    type: str


class BrazeRejectedError(BrazeError):
    """A 4xx other than 401, 423 and 429 (and 403 from /users/track): the
    request itself is wrong; or a 2xx from /users/track that cannot be read.

    `errors`: the objects the answer names, when it names any.
    """

    def __init__(self, message: str, status: int | None = None, *, errors: tuple[ObjectError, ...] = (),
                 **kwargs: Any) -> None:
        super().__init__(message, status, **kwargs)
        self.errors = errors


class BrazeUnavailableError(BrazeError):
    """A transient failure that did not clear within the retry caps."""


@dataclass(frozen=True)
class Ack:
    """Braze's acknowledgement of one request."""

    status: int
    attempts: int
    errors: tuple[ObjectError, ...] = ()  # from /users/track: the objects rejected, every other one applied
    maybe_duplicated: bool = False  # an earlier attempt may have been applied too (a timeout, a 5xx, a dropped answer)

    @property
    def retries(self) -> int:
        return self.attempts - 1


class RateLimiter:
    """Spaces request starts evenly, so that at most `per_hour` start in any hour.

    Braze's default limit for the cohort endpoints is 250,000 requests per
    hour per workspace; pacing under it keeps a large sync off 429s. Where
    the server announces its budget (observe), the limiter also starts no
    more requests than it allows before its window resets. Shared by every
    thread of a run.
    """

    def __init__(
        self,
        per_hour: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if per_hour <= 0:
            raise ValueError("per_hour must be positive")
        self.interval = 3600.0 / per_hour
        self._clock = clock
        self._sleep = sleep
        self._wall = wall  # epoch seconds: what the server's reset times are in
        self._next: float | None = None
        self._budget: int | None = None  # starts left before _budget_until, as the server last said
        self._budget_until = 0.0  # on clock()
        self._budget_reset = 0.0  # the same instant in epoch seconds, as the server gave it
        self._lock = threading.Lock()

    @classmethod
    def from_limits(
        cls,
        limits: Iterable[tuple[float, float]],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
    ) -> RateLimiter:
        """At most `count` starts in any `seconds`, for each (count, seconds):
        starts spaced evenly at the strictest rate satisfy every limit."""
        limits = list(limits)
        if not limits or any(count <= 0 or seconds <= 0 for count, seconds in limits):
            raise ValueError("limits must be (count, seconds) pairs of positive numbers")
        return cls(min(count * 3600.0 / seconds for count, seconds in limits), clock=clock, sleep=sleep, wall=wall)

    def observe(self, remaining: int, reset_at: float) -> None:
        """The server's budget: at most `remaining` more requests until
        `reset_at` (epoch seconds). An answer from an earlier window, arriving
        late, is ignored; within one window the smaller budget holds."""
        with self._lock:
            if reset_at < self._budget_reset:
                return
            now = self._clock()
            until = now + reset_at - self._wall()
            if until <= now:
                return
            if reset_at == self._budget_reset and self._budget is not None:
                remaining = min(remaining, self._budget)
            self._budget, self._budget_until, self._budget_reset = max(0, remaining), until, reset_at

    def acquire(self) -> float:
        """Wait for this request's slot; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            start = now if self._next is None else max(now, self._next)
            if self._budget is not None:
                if start >= self._budget_until:
                    self._budget = None  # the announced window is over
                elif self._budget == 0:
                    start = self._budget_until  # none left: the first start of the next window
                    self._budget = None
                else:
                    self._budget -= 1
            self._next = start + self.interval
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return wait


class BrazeClient:
    """Posts to one workspace: the cohort name and user cohort endpoints, and /users/track."""

    def __init__(
        self,
        settings: BrazeSettings,
        *,
        pool_size: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._sleep = sleep
        self._clock = clock
        track_limits = [(settings.users_track_requests_per_window, settings.users_track_window_seconds)]
        if settings.users_track_requests_per_hour is not None:
            track_limits.append((settings.users_track_requests_per_hour, 3600.0))
        self._limiters = {
            COHORT_IMPORT: RateLimiter(settings.max_requests_per_hour, clock=clock, sleep=sleep, wall=wall),
            USERS_TRACK: RateLimiter.from_limits(track_limits, clock=clock, sleep=sleep, wall=wall),
        }
        self._partner_path = f"/partners/{settings.partner_name}"  # no secret in it: the keys go in the body
        self._transport = Transport(settings.rest_endpoint, pool_size=pool_size)

    def __repr__(self) -> str:
        return f"BrazeClient(endpoint={self._settings.rest_endpoint!r})"

    @property
    def spacing(self) -> float:
        """Seconds between request starts under the cohort import family's rate limit."""
        return self.spacing_for(COHORT_IMPORT)

    def spacing_for(self, family: str) -> float:
        """Seconds between request starts under this endpoint family's rate limit."""
        if family not in self._limiters:
            raise ValueError(f"unknown endpoint family {family!r}: expected one of {sorted(self._limiters)}")
        return self._limiters[family].interval

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> BrazeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def name_cohort(
        self, cohort_id: str, name: str, created_at: datetime, *, ready: Callable[[], None] | None = None
    ) -> Ack:
        """Create the cohort in Braze, or rename it (`ready`: see update_cohort)."""
        stamp = created_at.astimezone(timezone.utc).isoformat(timespec="seconds")
        return self._cohort_post(
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
        return self._cohort_post(
            "/cohorts/users",
            {"cohort_id": cohort_id},
            what=f"batch for cohort '{cohort_id}'",
            encoded={"cohort_changes": encoded},
            detail=detail or "batch",
            ready=ready,
        )

    def track(self, body: str, *, detail: str = "", ready: Callable[[], None] | None = None,
              retry_uncertain: bool = True) -> Ack:
        """Send one /users/track request.

        `body` is its JSON text as rendered ({"attributes": [...], "events":
        [...], "purchases": [...]}); `detail` says what it carries, for the
        log and the errors (such as "batch=3 objects=75 cohorts=a,b");
        `ready`: see update_cohort. The Ack's errors name the objects Braze
        rejected, every other object having been applied: a rejected object
        needs its data fixed, not a resend. Its maybe_duplicated says an
        earlier attempt may have been applied as well. `retry_uncertain`
        False (events sent at most once) gives up, with maybe_applied, rather
        than retry after an attempt Braze may have applied.
        """
        self._require(USERS_TRACK)
        what = f"/users/track request ({detail})" if detail else "/users/track request"
        response, attempts, maybe_duplicated = self._post(
            USERS_TRACK, TRACK_PATH, body, what=what, detail=detail, ready=ready,
            headers={"Authorization": f"Bearer {self._settings.rest_api_key}"}, retry_uncertain=retry_uncertain,
        )
        try:
            errors = object_errors(response, body)
        except ValueError as problem:
            raise BrazeRejectedError(
                f"Braze answered the {what} with HTTP {response.status_code}, but {self._redact(str(problem))}; "
                "it may have applied some of the objects", response.status_code,
                attempts=attempts, maybe_applied=True,
            ) from None
        return Ack(status=response.status_code, attempts=attempts, errors=errors, maybe_duplicated=maybe_duplicated)

    def _require(self, family: str) -> None:
        """Refuse, before any request, a family whose keys the settings lack."""
        missing = self._settings.missing(family)
        if missing:
            raise ConfigError(
                f"Braze configuration: {', '.join(missing)} not set, which the {family} "
                "endpoints need (the settings were read without that family)"
            )

    def _cohort_post(
        self,
        path: str,
        fields: dict[str, Any],
        *,
        what: str,
        encoded: dict[str, str] | None = None,
        detail: str,
        ready: Callable[[], None] | None,
    ) -> Ack:
        """A cohort import request: the keys and fields in the body, then any pre-encoded JSON fields."""
        self._require(COHORT_IMPORT)
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
        response, attempts, maybe_duplicated = self._post(
            COHORT_IMPORT, self._partner_path + path, body, what=what,
            detail=f"cohort={fields['cohort_id']} {detail}", ready=ready,
        )
        return Ack(status=response.status_code, attempts=attempts, maybe_duplicated=maybe_duplicated)

    def _post(
        self,
        family: str,
        path: str,
        body: str,
        *,
        what: str,
        detail: str,
        ready: Callable[[], None] | None,
        headers: Mapping[str, str] | None = None,
        retry_uncertain: bool = True,
    ) -> tuple[Response, int, bool]:
        """Send under the family's rate limit, retrying what can succeed later:
        the 2xx answer, the attempts it took and whether an earlier attempt
        may have been applied too; or a BrazeError. Without `retry_uncertain`,
        an attempt that may have been applied is not retried."""
        limiter = self._limiters[family]
        timeout = self._settings.timeout_seconds
        started = self._clock()
        maybe_applied = False  # an attempt may have reached Braze's data
        for attempt in range(1, self._settings.max_attempts + 1):
            retry_after: float | None = None
            limiter.acquire()
            if attempt == 1 and ready is not None:
                ready()
            sent = time.perf_counter()
            try:
                response = self._transport.post(path, body, headers or {}, (min(10.0, timeout), timeout))
            except TransportError as exc:
                self._log_attempt(path, detail, attempt, str(exc).split(":", 1)[0], sent)
                maybe_applied = maybe_applied or not exc.never_sent
                reason = self._redact(str(exc))
            else:
                status = response.status_code
                self._log_attempt(path, detail, attempt, f"HTTP {status}", sent)
                if family == USERS_TRACK:
                    observe_rate_headers(limiter, response.headers)
                if 200 <= status < 300:
                    return response, attempt, maybe_applied
                maybe_applied = maybe_applied or status >= 500
                message = self._redact(server_message(response))
                advice = rest_auth_advice(status, message) if family == USERS_TRACK else (
                    auth_advice(message) if status == 401 else None
                )
                if advice:
                    raise BrazeAuthError(advice, status, attempts=attempt, maybe_applied=maybe_applied)
                if status not in RETRYABLE_STATUSES:
                    raise BrazeRejectedError(
                        f"Braze rejected the {what} with HTTP {status}: {message}", status,
                        errors=readable_object_errors(response), attempts=attempt, maybe_applied=maybe_applied,
                    )
                reason = f"HTTP {status}: {message}"
                retry_after = parse_retry_after(
                    response.headers.get("Retry-After") or response.headers.get("X-Ratelimit-Retry-After")
                )

            if maybe_applied and not retry_uncertain:
                raise BrazeUnavailableError(
                    f"gave up on the {what} after attempt {attempt}, which Braze may have applied ({reason}): "
                    "sent at most once, it is not retried", attempts=attempt, maybe_applied=True,
                )
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

    def _log_attempt(self, path: str, detail: str, attempt: int, answer: str, sent: float) -> None:
        """One line per attempt, for `--verbose`: no key, no header, no host."""
        log.info(
            "POST %s %sattempt=%d: %s in %d ms",
            path, f"{detail} " if detail else "", attempt, answer, round((time.perf_counter() - sent) * 1000),
        )

    def _redact(self, text: str) -> str:
        for secret in self._settings.secrets:
            text = text.replace(secret, "[redacted]")
        return text


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


def observe_rate_headers(limiter: RateLimiter, headers: Mapping[str, str]) -> None:
    """Keep to the budget X-RateLimit-Remaining and X-RateLimit-Reset (epoch
    seconds) announce, when an answer carries both (requests' headers are
    case-insensitive, as HTTP/2's lowercase ones need)."""
    try:
        remaining = int(float(headers["X-RateLimit-Remaining"]))
        reset_at = float(headers["X-RateLimit-Reset"])
    except (KeyError, TypeError, ValueError):
        return
    limiter.observe(remaining, reset_at)


def _object_error(item: Any) -> ObjectError | None:
    """An item of a /users/track answer's errors, when it names its object."""
    if not isinstance(item, dict) or item.get("input_array") not in TRACK_ARRAYS:
        return None
    index = item.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        return None
    return ObjectError(item["input_array"], index, str(item.get("type") or "no reason given"))


def object_errors(response: Response, body: str) -> tuple[ObjectError, ...]:
    """The objects a 2xx /users/track answer names as rejected; ValueError
    when the answer cannot be read, or names an object the request (its
    JSON `body`) does not hold: then nobody knows which objects were applied."""
    try:
        payload = response.json()
    except ValueError:
        raise ValueError(f"the answer cannot be read: {server_message(response)}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"the answer is not a JSON object: {response.text[:200]}")
    items = payload.get("errors") or []
    if not isinstance(items, list):
        raise ValueError(f"the answer's errors are not a list: {str(items)[:200]}")
    errors = []
    for item in items:
        error = _object_error(item)
        if error is None:
            raise ValueError(f"one of its errors names no object (input_array and index): {str(item)[:200]}")
        errors.append(error)
    if errors:
        sent = json.loads(body)
        for error in errors:
            if error.index >= len(sent.get(error.input_array) or []):
                raise ValueError(f"an error names {error.input_array}[{error.index}], which the request does not hold")
    return tuple(errors)


def readable_object_errors(response: Response) -> tuple[ObjectError, ...]:
    """The objects a rejected request's answer names, those it names readably."""
    try:
        payload = response.json()
    except ValueError:
        return ()
    items = payload.get("errors") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return ()
    return tuple(error for error in map(_object_error, items) if error is not None)


_TAGS = re.compile(r"<[^>]+>")


def _describe(errors: Any) -> str:
    """Braze's errors as text: each item's type, and which object it names."""
    if not isinstance(errors, list):
        return str(errors)
    described = []
    for item in errors:
        error = _object_error(item)
        described.append(f"{error.type} ({error.input_array}[{error.index}])" if error else str(item))
    return "; ".join(described)


def server_message(response: Response) -> str:
    """A readable one-line message from any response body, JSON or not."""
    text = response.text or ""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        parts = [
            _describe(payload[key]) if key == "errors" else str(payload[key])
            for key in ("message", "errors", "error") if payload.get(key)
        ]
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


def rest_auth_advice(status: int, message: str) -> str | None:
    """What a 401 or 403 from /users/track means (None for any other status),
    without echoing the key."""
    if status == 401:
        suspect = f"{REST_API_KEY_VAR} is likely wrong (or for another workspace, or another region's endpoint)"
    elif status == 403:
        suspect = f"the REST API key in {REST_API_KEY_VAR} lacks the users.track permission"
    else:
        return None
    return f"Braze answered {status} ({message}): {suspect}; the run was stopped"
