"""Requests to Braze, built from planned changes, one kind per endpoint:

- the partner cohort import: 'name' (the cohort's name), 'users' (a batch
  of the plan: the `cohort_changes` array, rendered in the warehouse) and
  'resync' (every member again);
- /users/track: 'track' (a batch of the plan: one attribute object per
  member, carrying each cohort attribute of the member that changed) and
  'track_resync'; 'profile' (a batch of an attribute sync's plan: one
  object per user, carrying each value that changed) and 'profile_resync';
  'event' (a batch of an event sync's plan: one event or purchase object
  per event).

Every request names the cohorts it carries, with their counts (its parts),
which is all the publish loop and the ledger need to know of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

MAX_IDENTIFIERS_PER_REQUEST = 1000
MAX_TRACK_OBJECTS = 75
IDENTIFIER_KEYS = ("user_ids", "aliases", "device_ids")
TRACK_KINDS = ("track", "track_resync", "profile", "profile_resync", "event")
PROFILE_KINDS = ("profile", "profile_resync")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class RequestPart(NamedTuple):
    """What one request carries for one cohort."""

    cohort_id: str
    adds: int
    removes: int


class TrackObject(NamedTuple):
    """One object of a /users/track request: a member and its changes,
    (cohort_id, attribute_name, should_remove) each (for an attribute sync,
    cohort_id is the sync's id), with each change's value hash (attribute
    syncs) and data points. Braze names rejected objects by their index in
    the request."""

    member_key: str
    identifier: tuple[str, str | None, str | None]  # (identifier_type, value, alias label)
    changes: tuple[tuple[str, str, bool], ...]
    hashes: tuple[str | None, ...] = ()  # per change, for attribute syncs (an event's: its content)
    points: tuple[int, ...] = ()  # data points per change (default: one each)
    time_ms: int | None = None  # an event's time (milliseconds since the epoch, UTC)

    @property
    def data_points(self) -> int:
        return sum(self.points) if self.points else len(self.changes)


class PlannedRequest(NamedTuple):
    """One request to send: its kind, batch number, the cohorts it carries,
    and its body as JSON text (for 'users' and 'resync', the `cohort_changes`
    array; for /users/track, the whole body)."""

    kind: str
    batch_number: int | None  # None for the name call
    parts: tuple[RequestPart, ...]
    body: str
    objects: tuple[TrackObject, ...] = ()  # /users/track: in the body's order
    array: str = "attributes"  # /users/track: the array holding the objects (events, purchases)
    at_most_once: bool = False  # an event request: never retried once an attempt may have been applied
    points: tuple[int, ...] = ()  # /users/track: the data points of all its objects, per part (as rendered)

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

    def data_points(self, rejected: Iterable[int] = ()) -> dict[str, int]:
        """Data points Braze bills per cohort (or sync) for what it took of the
        request: every change but those of the `rejected` objects (a cohort
        import change counts one)."""
        if not self.objects:
            return {part.cohort_id: part.adds + part.removes for part in self.parts}
        skipped = set(rejected)
        if self.points:  # the totals, less the points of the rejected objects (rarely any)
            points = dict(zip(self.cohort_ids, self.points, strict=True))
            sign, objects = -1, [self.objects[index] for index in sorted(skipped) if 0 <= index < len(self.objects)]
        else:
            points = {part.cohort_id: 0 for part in self.parts}
            sign, objects = 1, [obj for index, obj in enumerate(self.objects) if index not in skipped]
        for obj in objects:
            for n, (cohort_id, _, _) in enumerate(obj.changes):
                points[cohort_id] += sign * (obj.points[n] if obj.points else 1)
        return points

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


def _by_member(changes: Iterable[Any]) -> dict[str, list[Any]]:
    """Changes grouped by member (one /users/track object each), at most 75 members."""
    members: dict[str, list[Any]] = {}
    for change in changes:
        members.setdefault(change.member_key, []).append(change)
    if len(members) > MAX_TRACK_OBJECTS:
        raise ValueError(f"a /users/track request may hold at most {MAX_TRACK_OBJECTS} objects, got {len(members)}")
    return members


def _attributes_request(kind: str, number: int, counts: dict[str, list[int]], bodies: list[dict[str, Any]],
                        objects: list[TrackObject]) -> PlannedRequest:
    """A request of `attributes` objects; counts: [adds, removes, data points] per cohort (or sync)."""
    ordered = sorted(counts.items())
    parts = tuple(RequestPart(cohort_id, adds, removes) for cohort_id, (adds, removes, _) in ordered)
    return PlannedRequest(kind, number, parts, json.dumps({"attributes": bodies}, separators=(",", ":")),
                          tuple(objects), points=tuple(points for _, (_, _, points) in ordered))


def track_request(kind: str, number: int, changes: Iterable[TrackChange]) -> PlannedRequest:
    """A /users/track request: one attributes object per member, in member key
    order, each carrying `"_update_existing_only": true` (cohort membership
    never creates a user) and each cohort attribute that changed: true for an
    add, null (which removes it) for a remove. Should one attribute be both
    (a cohort's old attribute is another cohort's new one), true wins.
    """
    members = _by_member(changes)
    bodies, objects = [], []
    counts: dict[str, list[int]] = {}
    for member_key in sorted(members):
        rows = members[member_key]
        body = {**track_identifier(rows[0]), "_update_existing_only": True}
        for row in rows:
            if body.get(row.attribute_name) is not True:
                body[row.attribute_name] = None if row.should_remove else True
            tally = counts.setdefault(row.cohort_id, [0, 0, 0])
            tally[1 if row.should_remove else 0] += 1
            tally[2] += 1  # a data point per change
        first = rows[0]
        objects.append(TrackObject(
            member_key,
            (first.identifier_type, identifier_value(first),
             first.alias_label if first.identifier_type == "alias" else None),
            tuple((row.cohort_id, row.attribute_name, bool(row.should_remove)) for row in rows),
        ))
        bodies.append(body)
    return _attributes_request(kind, number, counts, bodies, objects)


class ProfileChange(NamedTuple):
    """One value of an attribute sync's plan (cohort_sync_attribute_changes), or of its resync."""

    batch_number: int
    sync_id: str
    member_key: str
    attribute_name: str
    should_remove: bool
    value_type: str | None
    value_text: str | None
    value_hash: str | None
    data_points: int


PROFILE_CHANGE_COLUMNS = ProfileChange._fields


def identifier_from_key(member_key: str) -> tuple[str, str, str | None]:
    """(identifier_type, value, alias label) of a member key as
    cohort_sync_audience_rows builds it: `external_id:<id>`,
    `alias:<length of the name>:<name>:<label>`, `braze_id:`, `email:`, `phone:`."""
    kind, _, rest = member_key.partition(":")
    if kind == "alias":
        length, _, named = rest.partition(":")
        if not length.isdigit() or len(named) <= int(length) or named[int(length)] != ":":
            raise ValueError(f"member key {member_key!r} is not an alias key")
        return kind, named[:int(length)], named[int(length) + 1:]
    if kind not in ("external_id", "braze_id", "email", "phone") or not rest:
        raise ValueError(f"member key {member_key!r} has no identifier /users/track can address")
    return kind, rest, None


def object_identifier(identifier: tuple[str, str, str | None]) -> dict[str, Any]:
    kind, value, label = identifier
    if kind == "alias":
        return {"user_alias": {"alias_name": value, "alias_label": label}}
    return {kind: value}


def attribute_value(value_type: str | None, value_text: str | None) -> Any:
    """The JSON value of an attribute as cohort_sync_attribute_rows renders it
    (macros/attribute_values.sql): None (unset) when there is no text."""
    if value_text is None:
        return None
    if value_type == "number":
        # (four substring tests: this runs for every number of every request)
        return float(value_text) if ("." in value_text or "e" in value_text or "E" in value_text
                                     or "n" in value_text) else int(value_text)
    if value_type == "boolean":
        return value_text == "true"
    if value_type == "time":  # exact milliseconds, four-digit years, in UTC
        at = EPOCH + timedelta(milliseconds=int(value_text))
        return f"{at.year:04d}-{at:%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z"
    if value_type in ("array", "json"):
        return json.loads(value_text)
    return value_text  # string, date (YYYY-MM-DD: Braze reads it as midnight UTC)


def profile_request(kind: str, number: int, changes: Iterable[ProfileChange], mode: str) -> PlannedRequest:
    """A /users/track request of one attribute sync: one attributes object per
    user, in member key order, carrying each of the user's values that
    changed (null unsets one). `mode` update sends `"_update_existing_only":
    true` (Braze ignores users it does not have); upsert sends false, which
    creates them (for aliases too, whose default is true).

    `changes` may be ProfileChange tuples or plain rows in PROFILE_CHANGE_COLUMNS
    order (as the plan's page query returns them): this runs once per request
    at up to Braze's 1,000 requests a second, so it reads fields by position."""
    members: dict[str, list[Any]] = {}
    for row in changes:
        members.setdefault(row[2], []).append(row)
    if len(members) > MAX_TRACK_OBJECTS:
        raise ValueError(f"a /users/track request may hold at most {MAX_TRACK_OBJECTS} objects, got {len(members)}")
    update_only = mode != "upsert"
    bodies, objects = [], []
    counts: dict[str, list[int]] = {}
    for member_key in sorted(members):
        rows = members[member_key]
        identifier = identifier_from_key(member_key)
        body = object_identifier(identifier)
        body["_update_existing_only"] = update_only
        points = []
        for row in rows:
            tally = counts.get(row[1])
            if tally is None:
                tally = counts[row[1]] = [0, 0, 0]
            points.append(int(row[8]))
            tally[2] += points[-1]
            if row[4]:
                body[row[3]] = None
                tally[1] += 1
            else:
                value_type, text = row[5], row[6]
                body[row[3]] = text if value_type in _TEXT_TYPES else attribute_value(value_type, text)
                tally[0] += 1
        objects.append(TrackObject(
            member_key, identifier,
            tuple([(row[1], row[3], bool(row[4])) for row in rows]),
            tuple([row[7] for row in rows]),
            tuple(points),
        ))
        bodies.append(body)
    return _attributes_request(kind, number, counts, bodies, objects)


_TEXT_TYPES = frozenset({"string", "date"})  # sent as their text (see attribute_value)
class ProfileBatch(NamedTuple):
    """One batch of an attribute sync's plan as the page query renders it in
    the warehouse (Ledger.pending_profile_requests): its users' objects as
    JSON text (`{...},{...}`, in change number order, each opened by its
    identifier: cohort_sync_attribute_changes.identifier_json), with counts."""

    batch_number: int
    users: int
    adds: int
    removes: int
    data_points: int
    objects: str


PROFILE_BATCH_COLUMNS = ProfileBatch._fields

#: An object of a request rendered whole in the warehouse, until Braze rejects one (Ledger.with_rejected_changes).
UNREAD_OBJECT = TrackObject("", ("", None, None), ())


def rendered_profile_request(kind: str, sync_id: str, batch: ProfileBatch | tuple) -> PlannedRequest:
    """The /users/track request of a batch rendered whole in the warehouse
    (ProfileBatch, or a row in PROFILE_BATCH_COLUMNS order), as
    profile_request would build it from its values: this runs for every
    request at up to 1,000 a second, so neither a value nor a user crosses
    into Python. Its objects are UNREAD_OBJECT (how many there are): the
    users of a request whose objects Braze rejects are read from the plan
    (Ledger.with_rejected_changes)."""
    number, users, adds, removes, points, objects = batch
    if users > MAX_TRACK_OBJECTS:
        raise ValueError(f"a /users/track request may hold at most {MAX_TRACK_OBJECTS} objects, got {users}")
    return PlannedRequest(kind, int(number), (RequestPart(sync_id, int(adds), int(removes)),),
                          '{"attributes":[' + objects + "]}", (UNREAD_OBJECT,) * int(users), points=(int(points),))


class EventChange(NamedTuple):
    """One row of an event sync's plan (cohort_sync_event_changes): an event's
    header (property_number 0) or one of its properties."""

    batch_number: int
    sync_id: str
    event_id: str
    member_key: str
    event_time_ms: int
    event_name: str | None
    product_id: str | None
    currency: str | None
    price_text: str | None
    quantity_text: str | None
    content_hash: str
    data_points: int
    property_number: int
    property_name: str | None
    value_type: str | None
    value_text: str | None


EVENT_CHANGE_COLUMNS = EventChange._fields


def event_time(milliseconds: int) -> str:
    """ISO 8601 in UTC, to the millisecond, as Braze reads an event's `time`."""
    return attribute_value("time", str(int(milliseconds)))


def event_request(number: int, rows: Iterable[EventChange], kind: str, create_users: bool,
                  at_most_once: bool = False) -> PlannedRequest:
    """A /users/track request of one event sync's batch: one object per event
    in `events` (kind event) or `purchases` (kind purchase), in the plan's
    order, each with the user's identifier, `_update_existing_only` (false
    when the sync creates users), its time, name or purchase fields, and
    its properties (the JSON column's keys merged in)."""
    events: dict[str, list[EventChange]] = {}
    for row in rows:
        events.setdefault(row.event_id, []).append(row)
    if len(events) > MAX_TRACK_OBJECTS:
        raise ValueError(f"a /users/track request may hold at most {MAX_TRACK_OBJECTS} objects, got {len(events)}")
    bodies, objects, sync_ids = [], [], set()
    for event_id, fields in events.items():
        head = fields[0]
        sync_ids.add(head.sync_id)
        identifier = identifier_from_key(head.member_key)
        body: dict[str, Any] = {**object_identifier(identifier), "_update_existing_only": not create_users}
        if kind == "purchase":
            body.update(product_id=head.product_id, currency=head.currency,
                        price=attribute_value("number", head.price_text))
            if head.quantity_text is not None:
                body["quantity"] = int(head.quantity_text)
        else:
            body["name"] = head.event_name
        body["time"] = event_time(head.event_time_ms)
        properties: dict[str, Any] = {}
        for row in fields:
            if row.property_name == "$properties":
                properties.update(json.loads(row.value_text))
            elif row.property_name is not None:
                properties[row.property_name] = attribute_value(row.value_type, row.value_text)
        if properties:
            body["properties"] = properties
        bodies.append(body)
        objects.append(TrackObject(head.member_key, identifier, ((head.sync_id, event_id, False),),
                                   (head.content_hash,), (int(head.data_points),), int(head.event_time_ms)))
    if len(sync_ids) > 1:
        raise ValueError(f"an event request carries one sync's events, got {', '.join(sorted(sync_ids))}")
    array = "purchases" if kind == "purchase" else "events"
    parts = tuple(RequestPart(sync_id, len(objects), 0) for sync_id in sync_ids)
    return PlannedRequest("event", number, parts, json.dumps({array: bodies}, separators=(",", ":")),
                          tuple(objects), array, at_most_once)
