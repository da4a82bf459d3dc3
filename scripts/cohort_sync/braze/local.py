"""A local Braze-compatible endpoint for the demo and the tests.

A real HTTP server on 127.0.0.1 implementing the partner cohort import
endpoints as ../shared/braze/cohort-import-api.md describes them: the keys
in the body (401 when wrong), Braze's 400 validations, cohort names and
membership. It also serves `POST /users/track` as users-track-api.md
describes it: the REST API key as a Bearer token, at most 75 objects per
request, exactly one identifier per object, users created only as Braze
would, per-object errors in a 201 (those objects are not applied, the
others are), and Braze's 3-second fixed rate-limit window with its
X-RateLimit-* headers. It lets tests and the demo read the cohorts and
profiles back and inject faults (status codes, Retry-After, latency,
dropped connections, rejected objects):

    GET    /_local/cohorts        names and members of every cohort
    GET    /_local/profiles       every user profile: identifiers, attributes,
                                  events, purchases
    GET    /_local/requests       every request received, with its outcome (and, for
                                  a change or a track request, a digest of what it
                                  applied: the same batch sent twice has the same digest;
                                  for a track request, the attributes of each attributes
                                  object and the data points Braze would bill)
    POST   /_local/profiles       {"profiles": [...]} holds users as if they existed
    POST   /_local/track_rejects  {"identifiers": [...], "type": "..."}: objects for
                                  these users get a per-object error of that type
    POST   /_local/faults         {"faults": [...]} replaces the fault rules
    POST   /_local/reset          forgets cohorts, profiles, requests, faults and rejects

With rate_limit_per_hour set, the cohort endpoints answer 429 (with
Retry-After) to requests beyond that rate, enforced over a sliding
10-second window, as Braze's hourly limit would.

A fault rule: {"endpoint": "users"|"cohorts"|"track"|"any", "times": N (or
"probability": p), "status": 503, "retry_after": 1, "headers": {...},
"body": "...", "latency_ms": 100, "drop": "before"|"after",
"answer_after_ms": 2000}. "drop": "after" applies the request and then
closes the connection without answering (a lost ack); "answer_after_ms"
applies it and answers only after that delay (a client's timeout loses
the ack).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

MAX_IDENTIFIERS = 1000
RATE_WINDOW_SECONDS = 10.0
_PATH = re.compile(r"^/partners/(?P<partner>[^/]+)/cohorts(?P<users>/users)?/?$")
_CHANGE_KEYS = {"user_ids", "device_ids", "aliases", "should_remove"}

TRACK_PATH = "/users/track"
TRACK_ARRAYS = ("attributes", "events", "purchases")
IDENTIFIERS = ("external_id", "user_alias", "braze_id", "email", "phone")
_PRIMARY = ("external_id", "user_alias", "braze_id")  # two of these in one object: an error
MAX_STRING = 255
MAX_ARRAY = 25  # Braze's default array attribute length; extra elements are dropped silently
#: Keys of an attributes object that are not attributes Braze bills for.
NOT_ATTRIBUTES = (*IDENTIFIERS, "_update_existing_only", "_merge_objects")
FREE_ATTRIBUTES = ("email_subscribe", "push_subscribe", "subscription_groups")  # subscription states
NO_DATA = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
IDENTIFIER_REQUIRED = "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"
INJECTED_REJECTION = "injected rejection"
_PHONE = re.compile(r"^\+[1-9]\d{1,14}$")  # E.164, as Braze requires of a phone identifier
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class _Server(ThreadingHTTPServer):
    """A thread per connection, and a listen backlog for a publisher's burst of
    new connections (up to COHORT_SYNC_TRACK_CONCURRENCY at once, again after each
    dropped one): with socketserver's default of 5 the kernel drops the
    excess, and connections stall a second or fail before reaching the
    handler, which no fault rule asked for."""

    daemon_threads = True
    request_queue_size = 512  # above COHORT_SYNC_TRACK_CONCURRENCY (default 256)


class _Reject(Exception):
    def __init__(self, status: int, message: str, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


class _ObjectError(Exception):
    """One /users/track object is invalid: it is named in the answer's errors, not applied."""


def _is_iso8601(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return bool(re.match(r"^\d{4}-\d{2}-\d{2}", value))


def _index_key(kind: str, value: Any) -> tuple[str, Any]:
    """How a profile is looked up: aliases by name and label, emails case-insensitively."""
    if kind == "user_alias":
        return kind, (value["alias_name"], value["alias_label"])
    return kind, value.lower() if kind == "email" else value


class _Profiles:
    """User profiles and their identifier indexes.

    external_id, user_alias and braze_id name one profile each; several
    profiles may share an email or phone, which then finds the one that
    took it last (Braze picks the most recently updated).
    """

    def __init__(self) -> None:
        self.all: list[dict[str, Any]] = []
        self._index: dict[tuple[str, Any], dict[str, Any]] = {}
        self._generated = 0

    def find(self, kind: str, value: Any) -> dict[str, Any] | None:
        return self._index.get(_index_key(kind, value))

    def create(self, identifiers: dict[str, Any], attributes: dict[str, Any] | None = None) -> dict[str, Any]:
        """A new profile, with a generated braze_id when none is given (the caller
        has checked that no profile holds its external_id, alias or braze_id)."""
        profile: dict[str, Any] = {kind: None for kind in IDENTIFIERS}
        profile.update(attributes=dict(attributes or {}), events=[], purchases=[])
        if identifiers.get("braze_id") is None:
            identifiers = {**identifiers, "braze_id": self._new_braze_id()}
        for kind, value in identifiers.items():
            self.set_identifier(profile, kind, value)
        self.all.append(profile)
        return profile

    def set_identifier(self, profile: dict[str, Any], kind: str, value: Any) -> None:
        old = profile[kind]
        if old is not None and self._index.get(_index_key(kind, old)) is profile:
            del self._index[_index_key(kind, old)]
        profile[kind] = value
        if value is not None:
            self._index[_index_key(kind, value)] = profile

    def _new_braze_id(self) -> str:
        while True:  # 24 hex digits, as Braze's; skips any a seeded profile holds
            self._generated += 1
            braze_id = f"{self._generated:024x}"
            if self.find("braze_id", braze_id) is None:
                return braze_id

    def snapshot(self) -> list[dict[str, Any]]:
        def order(profile: dict[str, Any]) -> tuple[Any, ...]:
            alias = profile["user_alias"] or {}
            values = (profile["external_id"], alias.get("alias_name"), alias.get("alias_label"),
                      profile["email"], profile["phone"], profile["braze_id"])
            return tuple((value is None, value or "") for value in values)

        return copy.deepcopy(sorted(self.all, key=order))


def _identifier_problem(kind: str, value: Any) -> str | None:
    """Why an identifier is malformed, or None."""
    if kind == "user_alias":
        valid = (
            isinstance(value, dict) and set(value) == {"alias_name", "alias_label"}
            and all(isinstance(v, str) and v for v in value.values())
        )
    elif kind == "email":
        valid = isinstance(value, str) and value.count("@") == 1 and not any(ch.isspace() for ch in value)
    elif kind == "phone":
        valid = isinstance(value, str) and bool(_PHONE.match(value))
    else:
        valid = isinstance(value, str) and bool(value)
    return None if valid else f"'{kind}' is not valid"


def _identify(obj: dict[str, Any]) -> tuple[str, Any]:
    """The identifier an object addresses: external_id, user_alias or braze_id
    (at most one of them), else email (which wins over phone), else phone."""
    primary = [kind for kind in _PRIMARY if kind in obj]
    if len(primary) > 1:
        raise _ObjectError(f"only one of {', '.join(repr(k) for k in primary)} may be given")
    given = primary or [kind for kind in ("email", "phone") if kind in obj]
    if not given:
        raise _ObjectError(IDENTIFIER_REQUIRED)
    kind = given[0]
    problem = _identifier_problem(kind, obj[kind])
    if problem:
        raise _ObjectError(problem)
    return kind, obj[kind]


def _check_keys(mapping: dict[str, Any], what: str, *, allowed: tuple[str, ...] = ()) -> None:
    """Names Braze accepts: at most 255 characters, no leading `$` (unless allowed)."""
    for key in mapping:
        if len(key) > MAX_STRING or (key.startswith("$") and key not in allowed):
            raise _ObjectError(f"'{key[:50]}' is not a valid {what}")


def _check_value(name: str, value: Any) -> None:
    """String values (nested ones too) at most 255 characters; nested keys without `.`, spaces or `$`."""
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise _ObjectError(f"'{name}' is not valid: strings are at most {MAX_STRING} characters")
    if isinstance(value, list):
        for item in value:
            _check_value(name, item)
    if isinstance(value, dict):
        _check_keys(value, "nested attribute key", allowed=("$time",))
        if any("." in key or " " in key for key in value):
            raise _ObjectError(f"'{name}' is not valid: nested keys have no '.' or spaces")
        for item in value.values():
            _check_value(name, item)


def _as_set(items: list[Any]) -> list[Any]:
    """An array attribute: each element once, in order, at most MAX_ARRAY of them."""
    seen: set[str] = set()
    kept = []
    for item in items:
        key = json.dumps(item, sort_keys=True)
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept[:MAX_ARRAY]


def _merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both else value
    return merged


def _updated_attributes(
    current: dict[str, Any], fields: dict[str, Any], merge_objects: bool
) -> dict[str, Any]:
    """The profile's attributes once `fields` are applied (current is left as is)."""
    _check_keys(fields, "attribute name")
    updated = copy.deepcopy(current)
    for name, value in fields.items():
        if value is None:
            updated.pop(name, None)
            continue
        _check_value(name, value)
        operators = set(value) if isinstance(value, dict) else set()
        if operators == {"inc"}:
            if not isinstance(value["inc"], int) or isinstance(value["inc"], bool):
                raise _ObjectError(f"'{name}' is not valid: inc takes an integer")
            old = updated.get(name, 0)
            if not isinstance(old, int) or isinstance(old, bool):
                raise _ObjectError(f"'{name}' is not an integer attribute")
            updated[name] = old + value["inc"]
        elif operators and operators <= {"add", "remove"} and all(isinstance(v, list) for v in value.values()):
            old = updated.get(name, [])
            if not isinstance(old, list):
                raise _ObjectError(f"'{name}' is not an array attribute")
            removed = {json.dumps(item, sort_keys=True) for item in value.get("remove", [])}
            kept = [item for item in old + value.get("add", []) if json.dumps(item, sort_keys=True) not in removed]
            updated[name] = _as_set(kept)
        elif isinstance(value, list):
            updated[name] = _as_set(value)
        elif isinstance(value, dict) and merge_objects and isinstance(updated.get(name), dict):
            updated[name] = _merged(updated[name], value)
        else:
            updated[name] = value
    return updated


def _properties(record: dict[str, Any]) -> None:
    properties = record.get("properties", {})
    if not isinstance(properties, dict):
        raise _ObjectError("'properties' is not valid")
    _check_keys(properties, "property name")
    for name, value in properties.items():
        _check_value(name, value)


def _timed(record: dict[str, Any], required: tuple[str, ...]) -> None:
    """The fields every event and purchase needs, present, and a valid time."""
    for name in required:
        if name not in record:
            raise _ObjectError(f"'{name}' is required")
    if not isinstance(record["time"], str) or not _is_iso8601(record["time"]):
        raise _ObjectError("'time' is not valid")
    if "app_id" in record and not isinstance(record["app_id"], str):
        raise _ObjectError("'app_id' is not valid")
    _properties(record)


def _checked_event(record: dict[str, Any]) -> dict[str, Any]:
    _timed(record, ("name", "time"))
    if not isinstance(record["name"], str) or not record["name"]:
        raise _ObjectError("'name' is not valid")
    return record


def _checked_purchase(record: dict[str, Any]) -> dict[str, Any]:
    _timed(record, ("product_id", "currency", "price", "time"))
    product_id, price = record["product_id"], record["price"]
    if not isinstance(product_id, str) or not product_id or len(product_id) > MAX_STRING:
        raise _ObjectError("'product_id' is not valid")
    if not isinstance(record["currency"], str) or not _CURRENCY.match(record["currency"]):
        raise _ObjectError("'currency' is not valid")
    if not isinstance(price, (int, float)) or isinstance(price, bool):
        raise _ObjectError("'price' is not valid")
    quantity = record.setdefault("quantity", 1)
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= 100:
        raise _ObjectError("'quantity' is not valid")
    return record


def _data_points(array: str, obj: dict[str, Any]) -> int:
    """What Braze bills for a processed object: each attribute written or
    unset (subscription states free), an event, a purchase and each of its
    properties."""
    if array == "attributes":
        return len([k for k in obj if k not in NOT_ATTRIBUTES and k not in FREE_ATTRIBUTES])
    if array == "purchases":
        return 1 + len(obj.get("properties") or {})
    return 1


def _object_digest(array: str, obj: Any) -> str:
    return hashlib.sha1(f"{array}\n{json.dumps(obj, sort_keys=True)}".encode()).hexdigest()[:16]


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
        rest_api_key: str | None = None,
        track_rate_limit: tuple[int, float] | None = (3000, 3.0),
        max_track_objects: int = 75,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`rest_api_key`: the key /users/track accepts (None: every call is a 401).
        `track_rate_limit`: (requests, seconds) of its fixed window (None: no
        limit and no X-RateLimit-* headers). `clock`: the epoch time the
        window follows (tests pass a fake one)."""
        self.partner_name = partner_name
        self.latency_ms = latency_ms
        self.max_track_objects = max_track_objects
        self._window_limit = rate_limit_per_hour / 360 if rate_limit_per_hour else None
        self._window: deque[float] = deque()
        self._keys = (partner_api_key, data_import_key)
        self._rest_api_key = rest_api_key
        self._track_limit = track_rate_limit
        self._track_window = (0.0, 0)  # the window's start, requests in it
        self._clock = clock
        self._lock = threading.Lock()
        self._cohorts: dict[str, dict[str, Any]] = {}
        self._profiles = _Profiles()
        self._received = 0  # the sequence number of the last event or purchase recorded
        self._track_rejects: dict[str, str] = {}
        self._requests: list[dict[str, Any]] = []
        self._faults: list[dict[str, Any]] = []
        self._random = random.Random(7)
        self._server = _Server((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalBraze:
        # stop() waits for the serving loop to look up: every 50 ms, not the default 500
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
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

    def profiles(self) -> list[dict[str, Any]]:
        """Every profile (its five identifiers, None when unset, attributes,
        events, purchases), ordered by external_id, alias, email, phone, braze_id."""
        with self._lock:
            return self._profiles.snapshot()

    def seed_profiles(self, profiles: list[dict[str, Any]]) -> None:
        """Hold users as if they existed in Braze: each dict has one or more
        identifiers and, optionally, "attributes". ValueError, and none held,
        when one is malformed or an external_id, alias or braze_id is taken."""
        checked = []
        for seed in profiles:
            identifiers = {kind: seed[kind] for kind in IDENTIFIERS if seed.get(kind) is not None}
            unknown = set(seed) - {*IDENTIFIERS, "attributes"}
            problems = [p for kind, value in identifiers.items() if (p := _identifier_problem(kind, value))]
            if unknown or problems or not identifiers or not isinstance(seed.get("attributes", {}), dict):
                raise ValueError(f"not a profile: {seed!r} (needs at least one valid identifier among {IDENTIFIERS})")
            checked.append((identifiers, seed.get("attributes")))
        with self._lock:
            taken: set[tuple[str, Any]] = set()
            for identifiers, _ in checked:
                for kind in _PRIMARY:
                    if kind in identifiers:
                        key = _index_key(kind, identifiers[kind])
                        if key in taken or self._profiles.find(kind, identifiers[kind]) is not None:
                            raise ValueError(f"a profile with {kind} {identifiers[kind]!r} exists already")
                        taken.add(key)
            for identifiers, attributes in checked:
                self._profiles.create(identifiers, attributes)

    def set_track_rejects(self, identifiers: list[str], type: str = INJECTED_REJECTION) -> None:  # noqa: A002
        """From now on, every /users/track object whose identifier value (external_id,
        braze_id, email, phone or alias_name) is listed gets a per-object error of
        this `type`; replaces the previous list (an empty one clears it)."""
        with self._lock:
            self._track_rejects = {value: type for value in identifiers}

    def set_faults(self, faults: list[dict[str, Any]]) -> None:
        with self._lock:
            self._faults = [dict(f) for f in faults]

    def reset(self) -> None:
        with self._lock:
            self._cohorts.clear()
            self._profiles = _Profiles()
            self._received = 0
            self._track_rejects.clear()
            self._track_window = (0.0, 0)
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
            body = _json_object(raw)
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

    # -- POST /users/track -------------------------------------------------

    def _track_rate(self) -> tuple[bool, dict[str, str]]:
        """Counts a /users/track request in its fixed window (aligned to
        multiples of the window's length in epoch time, as Braze's):
        (whether it is over the limit, the X-RateLimit-* headers to answer with)."""
        if self._track_limit is None:
            return False, {}
        limit, seconds = self._track_limit
        now = self._clock()
        start = math.floor(now / seconds) * seconds
        with self._lock:
            count = self._track_window[1] + 1 if self._track_window[0] == start else 1
            self._track_window = (start, count)
            if count > limit:
                self._requests.append({"endpoint": "track", "at": time.time(), "status": 429, "rate_limited": True})
        end = start + seconds
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - count)),
            "X-RateLimit-Reset": str(math.ceil(end)),
        }
        if count > limit:
            headers["Retry-After"] = str(max(1, math.ceil(end - now)))
        return count > limit, headers

    def handle_track(self, raw: bytes, authorization: str | None) -> tuple[int, dict[str, Any]]:
        entry: dict[str, Any] = {"endpoint": "track", "at": time.time()}
        try:
            scheme, _, key = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                raise _Reject(401, "Missing API key: send the header Authorization: Bearer <REST API key>")
            if key.strip() != self._rest_api_key:
                raise _Reject(401, "Invalid API key")
            arrays = _track_arrays(raw, self.max_track_objects)
            with self._lock:
                outcome = self._track(arrays)
            processed = outcome.pop("processed")
            entry.update(status=201, **outcome)
            payload: dict[str, Any] = {"message": "success"}
            payload.update({f"{array}_processed": n for array, n in processed.items()})
            if outcome["errors"]:
                payload["errors"] = outcome["errors"]
            return 201, payload
        except _Reject as reject:
            entry["status"] = reject.status
            entry["error"] = reject.message
            payload = {"message": reject.message}
            if reject.errors is not None:
                payload["errors"] = reject.errors
            return reject.status, payload
        finally:
            with self._lock:
                self._requests.append(entry)

    def _track(self, arrays: dict[str, list[Any]]) -> dict[str, Any]:
        """Applies every valid object: attributes, then events, then purchases, as Braze does."""
        errors: list[dict[str, Any]] = []
        digests: list[str] = []
        processed = dict.fromkeys(arrays, 0)
        ignored = created = data_points = 0
        for array in TRACK_ARRAYS:
            for index, obj in enumerate(arrays.get(array, [])):
                try:
                    outcome = self._track_object(array, obj)
                except _ObjectError as error:
                    errors.append({"type": str(error), "input_array": array, "index": index})
                    continue
                processed[array] += 1
                data_points += _data_points(array, obj)  # Braze bills what it processed, applied or ignored
                if outcome == "ignored":
                    ignored += 1
                    continue
                created += outcome == "created"
                digests.append(_object_digest(array, obj))
        return {
            "objects": sum(map(len, arrays.values())), "errors": errors, "applied": len(digests),
            "attribute_counts": [len([k for k in obj if k not in NOT_ATTRIBUTES]) if isinstance(obj, dict) else 0
                                 for obj in arrays.get("attributes", [])],
            "data_points": data_points,
            "ignored": ignored, "created": created, "processed": processed,
            "digest": hashlib.sha1("\n".join(sorted(digests)).encode()).hexdigest()[:16],
            "object_digests": digests,
        }

    def _track_object(self, array: str, obj: Any) -> str:
        """Applies one object: "updated", "created" (a new profile) or "ignored"
        (an unknown user it may not create); _ObjectError, and nothing applied,
        when it is invalid."""
        if not isinstance(obj, dict):
            raise _ObjectError(f"'{array}' items must be objects")
        kind, value = _identify(obj)
        update_existing_only = obj.get("_update_existing_only", kind == "user_alias")
        if not isinstance(update_existing_only, bool):
            raise _ObjectError("'_update_existing_only' is not valid")
        rejection = self._injected_rejection(kind, value)
        if rejection:
            raise _ObjectError(rejection)
        fields = {k: v for k, v in obj.items() if k not in (kind, "_update_existing_only")}
        profile = self._profiles.find(kind, value)
        if array == "attributes":
            merge_objects = fields.pop("_merge_objects", False)
            if not isinstance(merge_objects, bool):
                raise _ObjectError("'_merge_objects' is not valid")
            # email and phone beside the identifier are the profile's standard fields
            contact = {k: fields.pop(k) for k in ("email", "phone") if k in fields}
            for name, given in contact.items():
                problem = given is not None and _identifier_problem(name, given)
                if problem:
                    raise _ObjectError(problem)
            attributes = _updated_attributes(profile["attributes"] if profile else {}, fields, merge_objects)
        else:
            record = {k: v for k, v in fields.items() if k not in IDENTIFIERS}
            record = _checked_event(record) if array == "events" else _checked_purchase(record)
        outcome = "updated"
        if profile is None:
            if update_existing_only or kind == "braze_id":  # a braze_id never creates a user
                return "ignored"
            profile = self._profiles.create({kind: value})
            outcome = "created"
        if array == "attributes":
            profile["attributes"] = attributes
            for name, given in contact.items():
                self._profiles.set_identifier(profile, name, given)
        else:
            self._received += 1
            profile[array].append({"sequence": self._received, **record})
        return outcome

    def _injected_rejection(self, kind: str, value: Any) -> str | None:
        """The error type set_track_rejects gave this object's user, if any."""
        if kind == "user_alias":
            value = value["alias_name"]
        if kind == "email":
            return next((t for v, t in self._track_rejects.items() if v.lower() == value.lower()), None)
        return self._track_rejects.get(value)


def _json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; _Reject(400) otherwise."""
    try:
        body = json.loads(raw or b"")
    except ValueError:
        raise _Reject(400, "request body must be JSON") from None
    if not isinstance(body, dict):
        raise _Reject(400, "request body must be a JSON object")
    return body


def _track_arrays(raw: bytes, limit: int) -> dict[str, list[Any]]:
    """The arrays of a /users/track body; _Reject(400), nothing applied, when
    the request as a whole is malformed, empty or holds too many objects."""
    body = _json_object(raw)
    problems = [f"unknown field '{key}'" for key in body if key not in TRACK_ARRAYS]
    problems += [f"'{key}' must be an array" for key in TRACK_ARRAYS if key in body and not isinstance(body[key], list)]
    if problems:
        raise _Reject(400, "Invalid request body", problems)
    arrays = {key: body[key] for key in TRACK_ARRAYS if key in body}
    total = sum(map(len, arrays.values()))
    if total == 0:
        raise _Reject(400, NO_DATA, [])
    if total > limit:
        raise _Reject(
            400, f"Too many objects: at most {limit} attributes, events and purchases together per request",
            [f"the request holds {total} objects"],
        )
    return arrays


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
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timed out, or was killed)
                self.close_connection = True

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/_local/cohorts":
                self._send(200, braze.cohorts())
            elif self.path == "/_local/profiles":
                self._send(200, braze.profiles())
            elif self.path == "/_local/requests":
                self._send(200, braze.requests())
            else:
                self._send(404, {"message": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.startswith("/_local/"):
                self._control(raw)
                return
            path = self.path.split("?")[0].rstrip("/")
            if path == TRACK_PATH:
                endpoint = "track"
            else:
                endpoint = "users" if path.endswith("/users") else "cohorts"
            if braze.latency_ms:
                time.sleep(braze.latency_ms / 1000)
            headers: dict[str, str] = {}
            if endpoint == "track":
                limited, headers = braze._track_rate()
                if limited:
                    self._send(429, {"message": "API rate limit exceeded"}, headers)
                    return
            elif braze._over_rate_limit():
                self._send(429, {"message": "rate limited"}, {"Retry-After": str(int(RATE_WINDOW_SECONDS))})
                return
            fault = braze._take_fault(endpoint)
            if fault and fault.get("latency_ms"):
                time.sleep(fault["latency_ms"] / 1000)
            if fault and fault.get("drop") == "before":
                self._drop()
                return
            if fault and fault.get("status"):
                if fault.get("retry_after") is not None:
                    headers["Retry-After"] = str(fault["retry_after"])
                headers.update(fault.get("headers", {}))
                body = fault.get("body")
                if body is not None:
                    self._send(fault["status"], None, headers, raw=body.encode(), content_type="text/html")
                else:
                    self._send(fault["status"], {"message": f"injected {fault['status']}"}, headers)
                return
            if endpoint == "track":
                status, payload = braze.handle_track(raw, self.headers.get("Authorization"))
            else:
                status, payload = braze.handle(self.path, raw)
            if fault and fault.get("drop") == "after":
                self._drop()
                return
            if fault and fault.get("answer_after_ms"):
                time.sleep(fault["answer_after_ms"] / 1000)
            self._send(status, payload, headers)

        def _control(self, raw: bytes) -> None:
            """The /_local/ endpoints that set the server up (they answer 404 when unknown)."""
            body = json.loads(raw or b"{}")
            if self.path == "/_local/faults":
                braze.set_faults(body.get("faults", []))
            elif self.path == "/_local/reset":
                braze.reset()
            elif self.path == "/_local/profiles":
                try:
                    braze.seed_profiles(body.get("profiles", []))
                except ValueError as error:
                    self._send(400, {"message": str(error)})
                    return
            elif self.path == "/_local/track_rejects":
                braze.set_track_rejects(body.get("identifiers", []), body.get("type", INJECTED_REJECTION))
            else:
                self._send(404, {"message": "not found"})
                return
            self._send(200, {"message": "ok"})

    return Handler
