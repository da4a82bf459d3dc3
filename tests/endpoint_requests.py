"""What the local Braze-compatible endpoint received, read the way the
delivery tests compare it with the history (GET /_local/requests)."""

from __future__ import annotations

from typing import Any


def users_applied(requests: list[dict[str, Any]]) -> list[str]:
    """Digests of the batches the endpoint applied, in order (a digest names a batch's identifiers)."""
    return [r["digest"] for r in requests if r.get("endpoint") == "users" and 200 <= r.get("status", 0) < 300]


def received_twice(braze, starts: list[int]) -> list[int]:
    """Per run (each starting at its index in the endpoint's requests): the
    batches it delivered that an earlier run had delivered already."""
    requests = braze.requests()
    seen: set[str] = set()
    twice = []
    for start, end in zip(starts, [*starts[1:], len(requests)], strict=True):
        applied = set(users_applied(requests[start:end]))
        twice.append(len(applied & seen))
        seen |= applied
    return twice
