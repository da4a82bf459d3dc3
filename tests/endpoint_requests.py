"""What the local Braze-compatible endpoint received, read the way the
delivery tests compare it with the history (GET /_local/requests)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any


def users_applied(requests: list[dict[str, Any]]) -> list[str]:
    """Digests of the batches the endpoint applied, in order (a digest names a batch's identifiers)."""
    return [r["digest"] for r in requests if r.get("endpoint") == "users" and 200 <= r.get("status", 0) < 300]


def track_applied(requests: list[dict[str, Any]]) -> list[str]:
    """Digests of the /users/track requests the endpoint applied objects of, in
    order (a digest names the objects it applied; one that applied none, every
    object ignored or rejected, names nothing and is left out)."""
    return [r["digest"] for r in requests
            if r.get("endpoint") == "track" and 200 <= r.get("status", 0) < 300 and r.get("applied")]


def track_objects_applied(requests: list[dict[str, Any]]) -> list[str]:
    """Digests of every /users/track object the endpoint applied, in order (the
    same object sent twice has the same digest)."""
    return [digest for r in requests
            if r.get("endpoint") == "track" and 200 <= r.get("status", 0) < 300
            for digest in r.get("object_digests", ())]


def attributes_object_digest(obj: dict[str, Any]) -> str:
    """The digest the endpoint gives an attributes object it applied (in a
    request's object_digests): the same fields and values, the same digest,
    so a test can tell which user's object was applied, and how often."""
    return hashlib.sha1(f"attributes\n{json.dumps(obj, sort_keys=True)}".encode()).hexdigest()[:16]


def received_twice(
    braze, starts: list[int], applied: Callable[[list[dict[str, Any]]], list[str]] = users_applied
) -> list[int]:
    """Per run (each starting at its index in the endpoint's requests): the
    batches it delivered that an earlier run had delivered already (`applied`:
    users_applied for the partner cohort import, track_applied for /users/track)."""
    requests = braze.requests()
    seen: set[str] = set()
    twice = []
    for start, end in zip(starts, [*starts[1:], len(requests)], strict=True):
        delivered = set(applied(requests[start:end]))
        twice.append(len(delivered & seen))
        seen |= delivered
    return twice
