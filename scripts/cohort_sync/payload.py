"""Request bodies for the user cohort endpoint, built from planned changes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

MAX_IDENTIFIERS_PER_REQUEST = 1000
IDENTIFIER_KEYS = ("user_ids", "aliases", "device_ids")


class PlannedRequest(NamedTuple):
    """One request to send: its batch number, counts, and `cohort_changes` as JSON text."""

    kind: str  # 'name', 'users' (a batch of the plan) or 'resync'
    batch_number: int | None  # None for the name call
    adds: int
    removes: int
    cohort_changes: str

    @property
    def identifiers(self) -> int:
        return self.adds + self.removes


def compose_cohort_changes(
    removes: Sequence[str | None], adds: Sequence[str | None]
) -> str:
    """The `cohort_changes` array from JSON arrays (user_ids, aliases, device_ids) per side.

    The warehouse renders each identifier list as a JSON array; empty lists
    (None, or `[]` where the engine renders them) are left out. The removes
    object comes first.
    """
    objects = []
    for fragments, should_remove in ((removes, True), (adds, False)):
        fields = [f'"{key}":{fragment}' for key, fragment in zip(IDENTIFIER_KEYS, fragments, strict=True)
                  if fragment and fragment != "[]"]
        if fields:
            if should_remove:
                fields.append('"should_remove":true')
            objects.append("{" + ",".join(fields) + "}")
    return "[" + ",".join(objects) + "]"


class Change(NamedTuple):
    """One row of the cohort_sync_changes model, as the publisher reads it."""

    batch_number: int
    should_remove: bool
    member_key: str
    identifier_type: str
    external_id: str | None
    alias_name: str | None
    alias_label: str | None
    device_id: str | None


def build_cohort_changes(changes: Iterable[Change]) -> list[dict[str, Any]]:
    """The `cohort_changes` array for one request.

    At most two objects: the removes (should_remove true) first, then the
    adds; each holds user_ids, aliases and device_ids, empty lists omitted.
    """
    groups: dict[bool, dict[str, list[Any]]] = {}
    total = 0
    for change in changes:
        group = groups.setdefault(
            bool(change.should_remove), {"user_ids": [], "aliases": [], "device_ids": []}
        )
        if change.identifier_type == "external_id" and change.external_id:
            group["user_ids"].append(change.external_id)
        elif change.identifier_type == "alias" and change.alias_name and change.alias_label:
            group["aliases"].append(
                {"alias_name": change.alias_name, "alias_label": change.alias_label}
            )
        elif change.identifier_type == "device_id" and change.device_id:
            group["device_ids"].append(change.device_id)
        else:
            raise ValueError(
                f"change {change.member_key!r} has no usable {change.identifier_type!r} identifier"
            )
        total += 1
    if total > MAX_IDENTIFIERS_PER_REQUEST:
        raise ValueError(
            f"a request may hold at most {MAX_IDENTIFIERS_PER_REQUEST} identifiers, got {total}"
        )

    objects: list[dict[str, Any]] = []
    for should_remove in (True, False):
        group = groups.get(should_remove)
        if not group:
            continue
        obj: dict[str, Any] = {key: ids for key, ids in group.items() if ids}
        if should_remove:
            obj["should_remove"] = True
        objects.append(obj)
    return objects


def count_changes(changes: Iterable[Change]) -> tuple[int, int]:
    """(adds, removes) among the changes."""
    adds = removes = 0
    for change in changes:
        if change.should_remove:
            removes += 1
        else:
            adds += 1
    return adds, removes


NAME_REQUEST = PlannedRequest("name", None, 0, 0, "")


def request_for(kind: str, number: int, changes: Sequence[Change]) -> PlannedRequest:
    """A request built in Python from change rows (the full resync path)."""
    adds, removes = count_changes(changes)
    return PlannedRequest(kind, number, adds, removes, json.dumps(build_cohort_changes(changes)))
