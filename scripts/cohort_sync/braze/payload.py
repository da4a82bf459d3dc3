"""Requests to Braze, built from planned changes, one kind per endpoint:

- the partner cohort import: 'name' (the cohort's name), 'users' (a batch
  of the plan: the `cohort_changes` array, rendered in the warehouse) and
  'resync' (every member again);
- /users/track: 'track' (a batch of the plan: one attribute object per
  member, carrying each cohort attribute of the member that changed) and
  'track_resync'.

Every request names the cohorts it carries, with their counts (its parts),
which is all the publish loop and the ledger need to know of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

MAX_IDENTIFIERS_PER_REQUEST = 1000
MAX_TRACK_OBJECTS = 75
IDENTIFIER_KEYS = ("user_ids", "aliases", "device_ids")
TRACK_KINDS = ("track", "track_resync")


class RequestPart(NamedTuple):
    """What one request carries for one cohort."""

    cohort_id: str
    adds: int
    removes: int


class TrackObject(NamedTuple):
    """One object of a /users/track request: a member and its cohort changes,
    (cohort_id, attribute_name, should_remove) each. Braze names rejected
    objects by their index in the request."""

    member_key: str
    identifier: tuple[str, str | None, str | None]  # (identifier_type, value, alias label)
    changes: tuple[tuple[str, str, bool], ...]


class PlannedRequest(NamedTuple):
    """One request to send: its kind, batch number, the cohorts it carries,
    and its body as JSON text (for 'users' and 'resync', the `cohort_changes`
    array; for /users/track, the whole body)."""

    kind: str
    batch_number: int | None  # None for the name call
    parts: tuple[RequestPart, ...]
    body: str
    objects: tuple[TrackObject, ...] = ()  # /users/track: in the body's order

    @property
    def adds(self) -> int:
        return sum(part.adds for part in self.parts)

    @property
    def removes(self) -> int:
        return sum(part.removes for part in self.parts)

    @property
    def identifiers(self) -> int:
        return self.adds + self.removes

    @property
    def cohort_ids(self) -> tuple[str, ...]:
        return tuple(part.cohort_id for part in self.parts)

    @property
    def track(self) -> bool:
        return self.kind in TRACK_KINDS

    @property
    def family(self) -> str:
        """The endpoint family, whose rate limit the request is under."""
        return "users_track" if self.track else "cohort_import"

    def describe(self) -> str:
        """For the per-attempt log line: the batch and its counts (never an identifier)."""
        if self.kind == "name":
            return "name call"
        label = "resync_batch" if self.kind.endswith("resync") else "batch"
        counts = f"{label}={self.batch_number} adds={self.adds} removes={self.removes}"
        if self.track:
            return f"{counts} objects={len(self.objects)} cohorts={','.join(self.cohort_ids)}"
        return counts


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


def name_request(cohort_id: str) -> PlannedRequest:
    """The cohort's name call (it changes no member)."""
    return PlannedRequest("name", None, (RequestPart(cohort_id, 0, 0),), "")


def request_for(kind: str, number: int, cohort_id: str, changes: Sequence[Change]) -> PlannedRequest:
    """A request built in Python from change rows (the full resync path)."""
    adds, removes = count_changes(changes)
    return PlannedRequest(kind, number, (RequestPart(cohort_id, adds, removes),),
                          json.dumps(build_cohort_changes(changes)))


class TrackChange(NamedTuple):
    """One attribute change of the plan (or of a resync), as the publisher reads it."""

    batch_number: int
    cohort_id: str
    attribute_name: str
    should_remove: bool
    member_key: str
    identifier_type: str
    external_id: str | None
    alias_name: str | None
    alias_label: str | None
    braze_id: str | None
    email: str | None
    phone: str | None


TRACK_CHANGE_COLUMNS = TrackChange._fields


def identifier_value(change: TrackChange) -> str | None:
    """The value of the member's identifier (for an alias, its name)."""
    return {"external_id": change.external_id, "alias": change.alias_name, "braze_id": change.braze_id,
            "email": change.email, "phone": change.phone}.get(change.identifier_type)


def track_identifier(change: TrackChange) -> dict[str, Any]:
    """The member's identifier in a /users/track object."""
    kind = change.identifier_type
    if kind == "alias" and change.alias_name and change.alias_label:
        return {"user_alias": {"alias_name": change.alias_name, "alias_label": change.alias_label}}
    value = identifier_value(change) if kind != "alias" else None
    if not value:
        raise ValueError(f"change {change.member_key!r} has no usable {kind!r} identifier for /users/track")
    return {kind: value}


def track_request(kind: str, number: int, changes: Iterable[TrackChange]) -> PlannedRequest:
    """A /users/track request: one attributes object per member, in member key
    order, each carrying `"_update_existing_only": true` (cohort membership
    never creates a user) and each cohort attribute that changed: true for an
    add, null (which removes it) for a remove. Should one attribute be both
    (a cohort's old attribute is another cohort's new one), true wins.
    """
    members: dict[str, list[TrackChange]] = {}
    for change in changes:
        members.setdefault(change.member_key, []).append(change)
    if len(members) > MAX_TRACK_OBJECTS:
        raise ValueError(f"a /users/track request may hold at most {MAX_TRACK_OBJECTS} objects, got {len(members)}")
    bodies, objects = [], []
    counts: dict[str, list[int]] = {}
    for member_key in sorted(members):
        rows = members[member_key]
        body = {**track_identifier(rows[0]), "_update_existing_only": True}
        for row in rows:
            if body.get(row.attribute_name) is not True:
                body[row.attribute_name] = None if row.should_remove else True
            counts.setdefault(row.cohort_id, [0, 0])[1 if row.should_remove else 0] += 1
        first = rows[0]
        objects.append(TrackObject(
            member_key,
            (first.identifier_type, identifier_value(first),
             first.alias_label if first.identifier_type == "alias" else None),
            tuple((row.cohort_id, row.attribute_name, bool(row.should_remove)) for row in rows),
        ))
        bodies.append(body)
    parts = tuple(RequestPart(cohort_id, adds, removes) for cohort_id, (adds, removes) in sorted(counts.items()))
    return PlannedRequest(kind, number, parts, json.dumps({"attributes": bodies}, separators=(",", ":")),
                          tuple(objects))
