"""The publisher's view of the warehouse: the planned changes it reads and
the acknowledged state it writes, on any engine of engines.py.

Reads are of the dbt models (cohort_sync_cohorts, cohort_sync_changes), in
pages of batches, so memory stays flat however large the plan. Each
acknowledged batch is recorded in the published state and the delivery log
(with the plan's id): in one transaction where the engine has them, as
idempotent appends where it does not. A batch already acknowledged for the
plan (by an earlier run, or before a crash) is never read again.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from ..braze.payload import (
    EVENT_CHANGE_COLUMNS,
    MAX_IDENTIFIERS_PER_REQUEST,
    MAX_TRACK_OBJECTS,
    PROFILE_CHANGE_COLUMNS,
    PROFILE_KINDS,
    TRACK_CHANGE_COLUMNS,
    Change,
    PlannedRequest,
    ProfileChange,
    RequestPart,
    TrackChange,
    TrackObject,
    compose_cohort_changes,
    identifier_from_key,
    name_request,
    profile_request,
    rendered_profile_request,
    request_for,
    track_request,
)
from ..ops.notify import NotificationRecord, Recipient, Streak, recipients_from_json
from ..run.history import HISTORY_COLUMNS, HISTORY_DEFAULTS, SYNCED, HistoryRow
from ..run.schedule import Schedule
from .engines import Engine, causes
from .event_ledger import EVENT_INFLIGHT_COLUMNS, EVENT_STATE_COLUMNS, EVENT_UNCERTAIN_COLUMNS, EventLedger

log = logging.getLogger(__name__)

STATE_TABLES = (
    "published_state",
    "published_cohorts",
    "delivery_log",
    "run_history",
    "inflight",
    "lock",
    "notification_log",
    "schema_migrations",
    "rejected_changes",
    "attribute_state",
    "event_state",
    "event_inflight",
    "event_uncertain",
)
LOCK_NAME = "publisher"


class LockHeldError(RuntimeError):
    """Another publish run holds the lock on this target."""


class StaleSchemaError(RuntimeError):
    """The warehouse's cohort_sync relations are not the ones this version reads and writes."""


@dataclass(frozen=True)
class Relations:
    """Rendered relation names of the models and state tables, as dbt resolved them."""

    changes: str
    cohorts: str
    membership: str
    rejects: str
    published_state: str
    published_cohorts: str
    delivery_log: str
    run_history: str
    inflight: str
    lock: str
    notification_log: str
    schema_migrations: str
    rejected_changes: str
    attribute_changes: str
    attribute_rows: str
    attribute_state: str
    event_changes: str
    event_rows: str
    event_state: str
    event_inflight: str
    event_uncertain: str

    def events(self, table: str) -> str:
        """The append-only event log behind a state table's view (Spark): `<name>_events`."""
        name = getattr(self, table)
        quote = name[-1] if name[-1] in "`\"" else ""
        return f"{name[:-1]}_events{quote}" if quote else f"{name}_events"


@dataclass(frozen=True)
class CohortPlan:
    """A cohort of cohort_sync_cohorts and what Braze knows of it now."""

    cohort_id: str
    cohort_name: str
    action: str
    guard_status: str
    guard_reason: str | None
    braze_cohort_name: str | None
    braze_created_at: datetime | None
    schedule: Schedule = Schedule()
    last_success: datetime | None = None  # start of the cohort's last successful sync
    publish_now: bool = False  # var cohort_sync_publish_now: the manual trigger in dbt
    notify: tuple[Recipient, ...] = ()  # who hears when an import completes or fails
    delivery: str = "cohort_import"  # or 'attribute': a profile attribute through /users/track
    attribute_name: str | None = None
    track_batch_size: int = MAX_TRACK_OBJECTS  # objects per /users/track request (var cohort_sync_users_track_batch_size)
    sync_mode: str | None = None  # an attribute sync's (delivery 'profile'): update or upsert
    full_resync_minutes: int | None = None  # full_resync_every: re-send everything this often
    last_full_resync: datetime | None = None  # start of the last synced run that did (else of the first sync)
    planned_data_points: int = 0  # what the plan costs in Braze data points
    max_data_points: int | None = None  # an attribute sync's limit per run
    lookback_minutes: int | None = None  # an event sync's: how far behind its newest event a late one is sent
    event_guarantee: str | None = None  # an event sync's: at_least_once or at_most_once
    event_kind: str | None = None  # an event sync's: event or purchase
    late_events: int = 0  # an event sync's events older than its window, never acknowledged

    @property
    def is_sync(self) -> bool:
        """An attribute sync (cohort_sync_attribute_syncs), not a cohort."""
        return self.delivery == "profile"

    @property
    def is_event_sync(self) -> bool:
        """An event sync (cohort_sync_event_syncs)."""
        return self.delivery == "event"

    @property
    def tracked(self) -> bool:
        """Delivered through /users/track (an attribute cohort, an attribute or an event sync)."""
        return self.delivery in ("attribute", "profile", "event")

    def resync_due(self, now: datetime) -> bool:
        """Whether its full_resync_every calls for a full resync now."""
        if not self.full_resync_minutes or self.last_full_resync is None:
            return False
        return (now - self.last_full_resync).total_seconds() >= self.full_resync_minutes * 60

    @property
    def needs_name(self) -> bool:
        """New or renamed cohort import cohorts go through the name endpoint first
        (an attribute cohort has no name in Braze)."""
        return self.delivery == "cohort_import" and self.braze_cohort_name != self.cohort_name


NOTIFICATION_COLUMNS = tuple(f.name for f in fields(NotificationRecord))
CHANGE_COLUMNS = Change._fields
#: What the published state holds of a member, as the plan has it.
MEMBER_COLUMNS = (
    "cohort_id", "member_key", "identifier_type", "external_id", "alias_name", "alias_label",
    "device_id", "delivery", "attribute_name", "braze_id", "email", "phone",
)
STATE_COLUMNS = (*MEMBER_COLUMNS, "run_id", "acknowledged_at")
REJECTED_COLUMNS = (
    "run_id", "plan_id", "cohort_id", "delivery", "attribute_name", "member_key", "should_remove",
    "identifier_type", "external_id", "alias_name", "alias_label", "braze_id", "email", "phone",
    "batch_number", "error_type", "rejected_at", "value_hash",
)
ATTRIBUTE_STATE_COLUMNS = ("sync_id", "member_key", "attribute_name", "value_hash", "run_id", "acknowledged_at")
COHORT_COLUMNS = ("cohort_id", "cohort_name", "created_at", "run_id", "acknowledged_at")
DELIVERY_COLUMNS = (
    "run_id", "plan_id", "cohort_id", "request_kind", "batch_number", "added", "removed",
    "http_status", "acknowledged_at", "data_points",
)
INFLIGHT_COLUMNS = ("run_id", "cohort_id", "request_kind", "batch_number", "identifiers", "sent_at")
LOCK_COLUMNS = ("lock_name", "run_id", "owner", "entry_point", "acquired_at", "expires_at")
#: State tables that are event logs behind views on engines without row deletes
#: (the package's spark__create_state_tables makes the same ones), and their columns.
EVENT_TABLES = {
    "published_state": STATE_COLUMNS,
    "published_cohorts": COHORT_COLUMNS,
    "inflight": INFLIGHT_COLUMNS,
    "lock": LOCK_COLUMNS,
    "attribute_state": ATTRIBUTE_STATE_COLUMNS,
    "event_inflight": EVENT_INFLIGHT_COLUMNS,
}
EVENT_COLUMNS = ("is_live", "event_seq")
PLAN_COLUMNS = (
    "cohort_id", "cohort_name", "action", "guard_status", "guard_reason",
    "schedule_every", "schedule_at", "schedule_weekday", "schedule_day", "schedule_timezone",
    "publish_now", "notify", "delivery", "attribute_name", "users_track_batch_size",
    "planned_data_points", "full_resync_minutes", "sync_mode", "max_data_points",
    "lookback_minutes", "event_guarantee", "event_kind", "late_events",
)
#: What the publisher reads or writes in each relation: what `dbt run` with
#: the same version of the package builds (membership only has to exist).
EXPECTED_COLUMNS: dict[str, tuple[str, ...]] = {
    "changes": ("plan_id", "cohort_id", *CHANGE_COLUMNS, "delivery", "attribute_name", "braze_id", "email", "phone"),
    "cohorts": PLAN_COLUMNS,
    "membership": (),
    "rejects": ("cohort_id", "reject_reason", "source_rows"),
    "published_state": STATE_COLUMNS,
    "published_cohorts": COHORT_COLUMNS,
    "delivery_log": DELIVERY_COLUMNS,
    "run_history": HISTORY_COLUMNS,
    "inflight": INFLIGHT_COLUMNS,
    "lock": LOCK_COLUMNS,
    "notification_log": NOTIFICATION_COLUMNS,
    "schema_migrations": ("step", "package_version", "applied_at"),
    "rejected_changes": REJECTED_COLUMNS,
    "attribute_changes": ("plan_id", *PROFILE_CHANGE_COLUMNS, "change_number", "change_kind", "value_json",
                          "identifier_json"),
    "attribute_rows": ("sync_id", "member_key", "attribute_name", "value_type", "value_text", "value_hash",
                       "data_points", "is_null", "reject_reason"),
    "attribute_state": ATTRIBUTE_STATE_COLUMNS,
    "event_changes": ("plan_id", *EVENT_CHANGE_COLUMNS),
    "event_rows": ("sync_id", "member_key", "event_id", "event_time_ms", "window_status", "content_hash",
                   "reject_reason", "property_number"),
    "event_state": EVENT_STATE_COLUMNS,
    "event_inflight": EVENT_INFLIGHT_COLUMNS,
    "event_uncertain": EVENT_UNCERTAIN_COLUMNS,
}


class Ledger(EventLedger):
    """The publisher's reads and writes, in SQL every engine runs (see engines.py).

    On transactional engines each write is one transaction. On Spark each
    mutable state table is an append-only event log behind a view of its
    live rows: an insert appends live rows, a delete appends tombstones of
    the rows the view shows, and repeating either after a crash changes
    nothing the view shows.
    """

    def __init__(self, engine: Engine, relations: Relations) -> None:
        self.engine = engine
        self.relations = relations
        self._sequence = 0
        #: per (plan, attribute sync): the batches holding a value that replaces an acknowledged one
        self._replacing: dict[tuple[str, str], set[int]] = {}

    def close(self) -> None:
        self.engine.close()

    def recorder(self) -> Ledger | None:
        """This ledger on a connection of its own, to record (settle) from another
        thread while this one reads the plan; None where the engine has one
        connection, whose transaction both would share (PostgreSQL's) or none."""
        engine = self.engine.concurrent()
        if engine is None:
            return None
        other = Ledger(engine, self.relations)
        other._replacing = self._replacing  # filled as the plan is read, before a request of it is recorded
        return other

    def check_schema(self, state_only: bool = False) -> None:
        """Fail with what to do, before any lock or request, when the models or
        state tables lack what this version reads and writes: say the Python
        package was upgraded and `dbt deps` and `dbt run` have not run since.
        One query when all is well; an error that is not a missing relation or
        column (a lost connection, a permission) is raised as the engine's own.
        `state_only`: the state tables only (what status and report read)."""
        probes = {key: self._probe(key, columns) for key, columns in EXPECTED_COLUMNS.items()
                  if key in STATE_TABLES or not state_only}
        try:
            self.engine.query(" union all ".join(probes.values()))
            return
        except Exception:  # find which relations, one query each
            pass
        rebuild, alter = [], []
        for key, sql in probes.items():
            kind, reason = self._missing(sql)
            relation = getattr(self.relations, key)
            if kind == "column" and key in STATE_TABLES:
                absent = [c for c in EXPECTED_COLUMNS[key] if self._missing(self._probe(key, (c,)))[0]]
                alter.append(f"{relation} lacks {', '.join(absent)}")
            elif kind:
                rebuild.append(f"{relation} ({reason})")
        advice = []
        if rebuild:
            advice.append(
                f"{'; '.join(rebuild)}. Run `dbt deps` and `dbt run` in the project, with the same "
                "version of the cohort_sync dbt package, to build them"
            )
        if alter:
            advice.append(
                f"{'; '.join(alter)}. `dbt run` creates missing state tables and applies the migration "
                "steps cohort_sync_schema_migrations does not record, but these steps are recorded (was "
                "the table altered by hand?): add these columns with the types macros/state_tables.sql "
                "gives them (`alter table ... add column ...`; on Spark, to the table's `_events` table, "
                "then drop the view and `dbt run` recreates it), or delete the rows of the steps that "
                "add them (macros/migrations.sql) from cohort_sync_schema_migrations and run `dbt run`"
            )
        if advice:
            raise StaleSchemaError(
                "cohort_sync's relations in this warehouse lack what this cohort-sync reads and writes: "
                + ". ".join(advice)
            )

    def applied_steps(self) -> set[str]:
        """The migration steps recorded in cohort_sync_schema_migrations (none
        when the table does not exist: a warehouse from before 0.2.0)."""
        try:
            rows = self.engine.query(f"select distinct step from {self.relations.schema_migrations}")
        except Exception as exc:
            if self.engine.missing(exc) is None:
                raise
            return set()
        return {row[0] for row in rows}

    def _probe(self, key: str, columns: tuple[str, ...]) -> str:
        return (f"select count(*) from (select {', '.join(columns) or '1 as present'} "
                f"from {getattr(self.relations, key)} where 1 = 0) as probe")

    def _missing(self, probe: str) -> tuple[str | None, str]:
        """(None, '') if the probe runs; ('relation' or 'column', the engine's reason) if
        it names something that does not exist; any other error is raised."""
        try:
            self.engine.query(probe)
            return None, ""
        except Exception as exc:
            kind = self.engine.missing(exc)
            if kind is None:
                raise
            reason = next((line for line in str(causes(exc)[-1]).splitlines() if line.strip()), "")
            return kind, " ".join(reason.split())[:200]

    def cohorts(self) -> list[CohortPlan]:
        """The plan's cohorts and attribute syncs, with what Braze knows of them
        and when each last synced (and last had a full resync: else its first sync)."""
        r = self.relations
        plan = ", ".join(f"c.{name}" for name in PLAN_COLUMNS)
        synced = ", ".join(f"'{status}'" for status in SYNCED)
        rows = self.engine.query(
            f"""
            select {plan}, p.cohort_name, p.created_at, h.last_success, h.last_full_resync
            from {r.cohorts} as c
            left join {r.published_cohorts} as p on p.cohort_id = c.cohort_id
            left join (
                select
                    cohort_id,
                    max(started_at) as last_success,
                    coalesce(max(case when full_resync then started_at end), min(started_at)) as last_full_resync
                from {r.run_history}
                where status in ({synced})
                group by cohort_id
            ) as h on h.cohort_id = c.cohort_id
            order by c.cohort_id
            """
        )
        plans = []
        for row in rows:  # PLAN_COLUMNS, then Braze's name and creation time, the last success and full resync
            c = dict(zip(PLAN_COLUMNS, row, strict=False))
            plans.append(CohortPlan(
                c["cohort_id"], c["cohort_name"], c["action"], c["guard_status"], c["guard_reason"],
                braze_cohort_name=row[-4], braze_created_at=row[-3], last_success=row[-2],
                schedule=Schedule.from_columns(*(c[f"schedule_{n}"] for n in ("every", "at", "weekday", "day", "timezone"))),
                publish_now=bool(c["publish_now"]), notify=_recipients(c["cohort_id"], c["notify"]),
                delivery=c["delivery"] or "cohort_import", attribute_name=c["attribute_name"],
                track_batch_size=int(c["users_track_batch_size"] or MAX_TRACK_OBJECTS),
                sync_mode=c["sync_mode"],
                full_resync_minutes=int(c["full_resync_minutes"]) if c["full_resync_minutes"] else None,
                last_full_resync=row[-1], planned_data_points=int(c["planned_data_points"] or 0),
                max_data_points=int(c["max_data_points"]) if c["max_data_points"] is not None else None,
                lookback_minutes=int(c["lookback_minutes"]) if c["lookback_minutes"] is not None else None,
                event_guarantee=c["event_guarantee"], event_kind=c["event_kind"],
                late_events=int(c["late_events"] or 0),
            ))
        return plans

    def endpoint_families(self, only: frozenset[str] = frozenset()) -> set[str]:
        """The Braze endpoint families the plan needs: 'cohort_import' (partner
        keys) and 'users_track' (the REST API key), from the deliveries of the
        cohorts and syncs to publish and of the changes planned (of those in
        `only`, when given: `--cohort`)."""
        r = self.relations
        among = f" and cohort_id in ({', '.join('?' for _ in only)})" if only else ""
        rows = self.engine.query(
            f"select distinct delivery from {r.cohorts} where action <> 'keep'{among} "
            f"union select distinct delivery from {r.changes} where 1 = 1{among}",
            [*sorted(only), *sorted(only)],
        )
        return {"cohort_import" if row[0] == "cohort_import" else "users_track" for row in rows if row[0]}

    def rejects(self) -> dict[str, list[tuple[str, int]]]:
        """Audience rows cohort_sync_rejects holds (never sent), per cohort and reason."""
        rows = self.engine.query(
            f"select cohort_id, reject_reason, sum(source_rows) from {self.relations.rejects} "
            "group by cohort_id, reject_reason order by cohort_id, reject_reason"
        )
        rejected: dict[str, list[tuple[str, int]]] = {}
        for cohort_id, reason, count in rows:
            rejected.setdefault(cohort_id, []).append((reason, int(count)))
        return rejected

    def plan_id(self, syncs: bool = False, events: bool = False) -> str | None:
        """The id of the plan in cohort_sync_changes, or with `syncs` in
        cohort_sync_attribute_changes, or with `events` in
        cohort_sync_event_changes (None when it is empty). They are apart:
        `dbt run -s` may build one and not the others."""
        r = self.relations
        relation = r.event_changes if events else r.attribute_changes if syncs else r.changes
        rows = self.engine.query(f"select plan_id from {relation} limit 1")
        return rows[0][0] if rows else None

    def acknowledged_batches(self, plan_id: str | None, cohort_id: str, kind: str = "users") -> set[int]:
        """Batch numbers of the plan already acknowledged for the cohort, in requests of `kind`."""
        if plan_id is None:
            return set()
        rows = self.engine.query(
            f"""select batch_number from {self.relations.delivery_log}
                where plan_id = ? and cohort_id = ? and request_kind = ?""",
            [plan_id, cohort_id, kind],
        )
        return {int(row[0]) for row in rows}

    def pending_requests(self, plan_id: str | None, cohort_id: str) -> Iterator[PlannedRequest]:
        """The cohort's partner cohort import batches not yet acknowledged for
        the plan, as requests, a page at a time.

        The warehouse renders each batch's identifier lists as JSON, so no
        member row crosses into Python.
        """
        done = self.acknowledged_batches(plan_id, cohort_id)
        last = self.engine.query(
            f"select max(batch_number) from {self.relations.changes} where cohort_id = ? and delivery = 'cohort_import'",
            [cohort_id],
        )[0][0]
        alias = self.engine.json_object({"alias_name": "alias_name", "alias_label": "alias_label"})
        lists = ", ".join(
            self.engine.json_array(value, f"{'' if remove else 'not '}should_remove and identifier_type = '{kind}'")
            for remove in (True, False)
            for kind, value in (("external_id", "external_id"), ("alias", alias), ("device_id", "device_id"))
        )
        page = self.engine.page_batches
        for first in range(1, int(last or 0) + 1, page):
            numbers = [n for n in range(first, first + page) if n not in done]
            if not numbers:
                continue
            rows = self.engine.query(
                f"""select batch_number,
                        sum(case when should_remove then 0 else 1 end),
                        sum(case when should_remove then 1 else 0 end),
                        {lists}
                    from {self.relations.changes}
                    where cohort_id = ? and delivery = 'cohort_import' and batch_number between ? and ?
                    group by batch_number
                    order by batch_number""",
                [cohort_id, numbers[0], numbers[-1]],
            )
            for number, adds, removes, *fragments in rows:
                if number in done:
                    continue
                adds, removes = int(adds), int(removes)
                if adds + removes > MAX_IDENTIFIERS_PER_REQUEST:
                    raise ValueError(f"batch {number} of cohort '{cohort_id}' holds {adds + removes} identifiers")
                yield PlannedRequest(
                    "users", int(number), (RequestPart(cohort_id, adds, removes),),
                    compose_cohort_changes(fragments[:3], fragments[3:]),
                )

    def track_cohorts(self, deliveries: set[str]) -> set[str]:
        """The cohorts with attribute changes in the plan (attribute cohorts, and
        cohorts moving from an attribute to another form), and the attribute
        and event syncs with changes: the syncs' plans read only when
        `deliveries` (those of the cohorts to publish) holds their kind, 'profile'
        or 'event' (with none declared the plan is an empty view, but reading
        it still costs a query plan: most of a scheduler tick's time)."""
        r = self.relations
        parts = [f"select distinct cohort_id from {r.changes} where delivery = 'attribute'"]
        if "profile" in deliveries:
            parts.append(f"select distinct sync_id from {r.attribute_changes}")
        if "event" in deliveries:
            parts.append(f"select distinct sync_id from {r.event_changes}")
        return {row[0] for row in self.engine.query(" union ".join(parts))}

    def pending_pages(self, relation: str, sync_id: str, done: set[int],
                      only: set[int] | None = None) -> Iterator[tuple[int, int]]:
        """(first, last) batch numbers of each page of a sync's plan in `relation`
        that holds a batch not in `done` (and, given `only`, in `only`):
        `page_batches` batches a page."""
        last = self.engine.query(f"select max(batch_number) from {relation} where sync_id = ?", [sync_id])[0][0]
        page = self.engine.page_batches
        for first in range(1, int(last or 0) + 1, page):
            if any(n not in done and (only is None or n in only) for n in range(first, first + page)):
                yield first, first + page - 1

    def leaving_batches(self, relation: str, condition: str, params: list[Any]) -> set[int]:
        """The batches of a plan whose changes all remove (or unset): the first
        phase's, found by one aggregate, so that phase reads only their pages."""
        return {int(number) for (number,) in self.engine.query(
            f"""select batch_number from {relation} where {condition} group by batch_number
                having min(case when should_remove then 1 else 0 end) = 1""",
            params,
        )}

    def pending_profile_requests(self, plan_id: str | None, syncs: list[CohortPlan],
                                 leaving: bool | None = None) -> Iterator[PlannedRequest]:
        """The attribute syncs' planned values not yet acknowledged for the
        plan, as /users/track requests: one per batch of a sync (a user's
        values share a batch), read a page of batches at a time. `leaving`
        True: only the batches that only unset; False: only the others
        (each phase renders only its own requests)."""
        r = self.relations
        for sync in syncs:
            done = self.acknowledged_batches(plan_id, sync.cohort_id, "profile")
            if self.engine.transactional and plan_id is not None and (plan_id, sync.cohort_id) not in self._replacing:
                self._replacing[(plan_id, sync.cohort_id)] = {int(number) for (number,) in self.engine.query(
                    f"""select distinct batch_number from {r.attribute_changes}
                        where plan_id = ? and sync_id = ? and change_kind <> 'new'""",
                    [plan_id, sync.cohort_id],
                )}
            only = self.leaving_batches(r.attribute_changes, "sync_id = ?", [sync.cohort_id]) if leaving else None
            if only is not None and not only - done:
                continue
            update_only = "false" if sync.sync_mode == "upsert" else "true"
            # (a plan rebuilt while this one is published is not mixed in: its batches are recorded by plan id)
            plan_filter, plan = (" and plan_id = ?", [plan_id]) if plan_id is not None else ("", [])
            for first, last in self.pending_pages(r.attribute_changes, sync.cohort_id, done, only):
                # each batch's objects joined here, in change number (member key) order: a request
                # is one row of text, whose users are read only if Braze rejects some (with_rejected_changes)
                rows = sorted(self.engine.query(
                    f"""with users as (
                            select batch_number, min(change_number) as change_number,
                                count(*) - sum(case when should_remove then 1 else 0 end) as adds,
                                sum(case when should_remove then 1 else 0 end) as removes,
                                sum(data_points) as data_points,
                                concat('{{', min(identifier_json), '"_update_existing_only":{update_only},',
                                    {self.engine.joined('value_json')}, '}}') as object_json
                            from {r.attribute_changes}
                            where sync_id = ? and batch_number between ? and ?{plan_filter}
                            group by batch_number, member_key
                        )
                        select batch_number, count(*), sum(adds), sum(removes), sum(data_points),
                            {self.engine.ordered_joined('object_json', 'change_number')}
                        from users
                        group by batch_number""",
                    [sync.cohort_id, first, last, *plan],
                ))
                for row in rows:  # in PROFILE_BATCH_COLUMNS order; a batch that only unsets writes nothing
                    if int(row[0]) not in done and (leaving is None or (not row[2]) == leaving):
                        yield rendered_profile_request("profile", sync.cohort_id, row)

    def with_rejected_changes(self, plan_id: str | None, request: PlannedRequest, ack: Any) -> PlannedRequest:
        """The request, its objects that Braze's answer rejects completed with
        their changes from the plan (a request rendered in the warehouse carries
        none): what recording a rejection needs, read only when there is one."""
        if request.kind != "profile":
            return request
        missing = sorted(index for index in rejected_objects(request, ack) if not request.objects[index].changes)
        if not missing:
            return request
        [part] = request.parts
        if any(not request.objects[index].member_key for index in missing):
            request = request._replace(objects=self._batch_users(plan_id, part.cohort_id, request))
        keys = [request.objects[index].member_key for index in missing]
        values: dict[str, list[tuple]] = {}
        for member_key, name, should_remove, digest, points in self.engine.query(
            f"""select member_key, attribute_name, should_remove, value_hash, data_points
                from {self.relations.attribute_changes}
                where plan_id = ? and sync_id = ? and batch_number = ?
                    and member_key in ({', '.join('?' for _ in keys)})
                order by member_key, attribute_name""",
            [plan_id, part.cohort_id, request.batch_number, *keys],
        ):
            values.setdefault(member_key, []).append((name, bool(should_remove), digest, int(points)))
        completed = list(request.objects)
        for index in missing:
            obj = completed[index]
            rows = values.get(obj.member_key)
            if not rows:
                raise RuntimeError(f"attribute sync {part.cohort_id}: the plan changed while it was being published "
                                   f"(batch {request.batch_number} no longer holds a rejected user); run dbt again")
            completed[index] = obj._replace(changes=tuple((part.cohort_id, name, remove) for name, remove, _, _ in rows),
                                            hashes=tuple(row[2] for row in rows), points=tuple(row[3] for row in rows))
        return request._replace(objects=tuple(completed))

    def _batch_users(self, plan_id: str | None, sync_id: str, request: PlannedRequest) -> tuple[TrackObject, ...]:
        """The objects of a profile request rendered whole in the warehouse, in its
        body's order (change number): who each is for, read from the plan."""
        numbers = dict(self.engine.query(
            f"""select member_key, min(change_number) from {self.relations.attribute_changes}
                where plan_id = ? and sync_id = ? and batch_number = ?
                group by member_key""",
            [plan_id, sync_id, request.batch_number],
        ))
        keys = sorted(numbers, key=numbers.get)
        if len(keys) != len(request.objects):
            raise RuntimeError(f"attribute sync {sync_id}: the plan changed while it was being published "
                               f"(batch {request.batch_number} holds {len(keys)} users, "
                               f"{len(request.objects)} were sent); run dbt again")
        return tuple(TrackObject(key, identifier_from_key(key), ()) for key in keys)

    def resync_data_points(self, cohort: CohortPlan) -> int:
        """What a full resync of the cohort would cost in data points: a point per
        member, or for an attribute sync each acknowledged value the model still has."""
        if not cohort.is_sync:
            return self.members(cohort.cohort_id)
        r = self.relations
        return int(self.engine.query(
            f"""select coalesce(sum(v.data_points), 0) from (
                    select distinct sync_id, member_key, attribute_name, value_hash, data_points
                    from {r.attribute_rows}
                    where sync_id = ? and reject_reason is null and not is_null
                ) as v
                inner join {r.attribute_state} as s
                    on s.sync_id = v.sync_id and s.member_key = v.member_key
                    and s.attribute_name = v.attribute_name and s.value_hash = v.value_hash""",
            [cohort.cohort_id],
        )[0][0])

    def profile_resync_requests(self, sync: CohortPlan, run_id: str) -> Iterator[PlannedRequest]:
        """Every value Braze should hold for the sync's users, as the model has
        it now (the state keeps hashes only), except those this run wrote, as
        /users/track requests of the sync's batch size, by member key: two
        queries per page of `page_batches` requests."""
        r = self.relations
        size = int(sync.track_batch_size)
        page = size * self.engine.page_batches
        number, after = 0, ""
        while True:
            keys = [row[0] for row in self.engine.query(
                f"""select distinct member_key from {r.attribute_state}
                    where sync_id = ? and run_id <> ? and member_key > ?
                    order by member_key limit {page}""",
                [sync.cohort_id, run_id, after],
            )]
            if not keys:
                break
            rows = self.engine.query(
                f"""select v.member_key, v.attribute_name, v.value_type, min(v.value_text), v.value_hash,
                        max(v.data_points)
                    from {r.attribute_rows} as v
                    inner join {r.attribute_state} as s
                        on s.sync_id = v.sync_id and s.member_key = v.member_key
                        and s.attribute_name = v.attribute_name and s.value_hash = v.value_hash
                    where v.sync_id = ? and v.reject_reason is null and not v.is_null and s.run_id <> ?
                        and v.member_key > ? and v.member_key <= ?
                    group by v.member_key, v.attribute_name, v.value_type, v.value_hash
                    order by v.member_key, v.attribute_name""",
                [sync.cohort_id, run_id, after, keys[-1]],
            )
            users: dict[str, list[tuple]] = {}
            for row in rows:
                users.setdefault(row[0], []).append(row)
            for start in range(0, len(keys), size):
                chunk = [row for key in keys[start:start + size] for row in users.get(key, ())]
                if chunk:
                    number += 1
                    yield profile_request(
                        "profile_resync", number,
                        [ProfileChange(number, sync.cohort_id, key, name, False, kind, text, digest, points)
                         for key, name, kind, text, digest, points in chunk],
                        sync.sync_mode or "update")
            if len(keys) < page:
                break
            after = keys[-1]

    def pending_track_requests(self, plan_id: str | None, cohort_ids: set[str],
                               leaving: bool | None = None) -> Iterator[PlannedRequest]:
        """The attribute changes of these cohorts not yet acknowledged for the
        plan, as /users/track requests: one per batch of the plan (a member's
        changes share a batch), holding the changes of every cohort of
        `cohort_ids` whose part of the batch Braze has not acknowledged, read a
        page of batches at a time. `leaving`: as for pending_profile_requests."""
        if not cohort_ids:
            return
        ids = sorted(cohort_ids)
        marks = ", ".join("?" for _ in ids)
        done = set()
        if plan_id is not None:
            done = {(cohort_id, int(number)) for cohort_id, number in self.engine.query(
                f"""select cohort_id, batch_number from {self.relations.delivery_log}
                    where plan_id = ? and request_kind = 'track' and cohort_id in ({marks})""",
                [plan_id, *ids],
            )}
        last = self.engine.query(
            f"select max(batch_number) from {self.relations.changes} where delivery = 'attribute' and cohort_id in ({marks})",
            ids,
        )[0][0]
        page = self.engine.page_batches
        # One rule for both phases: a batch whose rows all remove (every cohort's
        # part, acknowledged or not) is the first phase's, any other the second's.
        only = None
        if leaving is not None:
            only = self.leaving_batches(self.relations.changes, f"delivery = 'attribute' and cohort_id in ({marks})", ids)
        for first in range(1, int(last or 0) + 1, page):
            if leaving and not any(n in only for n in range(first, first + page)):
                continue
            rows = self.engine.query(
                f"""select {', '.join(TRACK_CHANGE_COLUMNS)} from {self.relations.changes}
                    where delivery = 'attribute' and cohort_id in ({marks}) and batch_number between ? and ?
                    order by batch_number, member_key, cohort_id""",
                [*ids, first, first + page - 1],
            )
            batches: dict[int, list[TrackChange]] = {}
            for row in rows:
                change = TrackChange(int(row[0]), *row[1:])
                if (change.cohort_id, change.batch_number) not in done:
                    batches.setdefault(change.batch_number, []).append(change)
            for number in sorted(batches):
                if only is None or (number in only) == leaving:
                    yield track_request("track", number, batches[number])

    def pending_of(self, cohort: CohortPlan) -> tuple[int, int, int, int]:
        """pending_summary of the cohort or sync, in its own plan."""
        events = cohort.is_event_sync
        return self.pending_summary(self.plan_id(syncs=cohort.is_sync, events=events), cohort.cohort_id,
                                    cohort.is_sync, events)

    def pending_summary(self, plan_id: str | None, cohort_id: str, sync: bool = False,
                        events: bool = False) -> tuple[int, int, int, int]:
        """(adds, removes, batches, data points) of the plan not yet acknowledged
        for the cohort (for an attribute sync: values written, values unset;
        for an event sync: events, 0)."""
        r = self.relations
        if events:
            row = self.engine.query(
                f"""
                select count(distinct c.event_id), count(distinct c.batch_number),
                    coalesce(sum(case when c.property_number = 0 then c.data_points else 0 end), 0)
                from {r.event_changes} as c
                left join (
                    select distinct batch_number from {r.delivery_log}
                    where plan_id = ? and cohort_id = ? and request_kind = 'event'
                ) as d on d.batch_number = c.batch_number
                where c.sync_id = ? and d.batch_number is null
                """,
                [plan_id or "", cohort_id, cohort_id],
            )[0]
            return int(row[0]), 0, int(row[1]), int(row[2])
        if sync:
            row = self.engine.query(
                f"""
                select
                    coalesce(sum(case when c.should_remove then 0 else 1 end), 0),
                    coalesce(sum(case when c.should_remove then 1 else 0 end), 0),
                    count(distinct c.batch_number),
                    coalesce(sum(c.data_points), 0)
                from {r.attribute_changes} as c
                left join (
                    select distinct batch_number from {r.delivery_log}
                    where plan_id = ? and cohort_id = ? and request_kind = 'profile'
                ) as d on d.batch_number = c.batch_number
                where c.sync_id = ? and d.batch_number is null
                """,
                [plan_id or "", cohort_id, cohort_id],
            )[0]
            return int(row[0]), int(row[1]), int(row[2]), int(row[3])
        row = self.engine.query(
            f"""
            select
                coalesce(sum(case when c.should_remove then 0 else 1 end), 0),
                coalesce(sum(case when c.should_remove then 1 else 0 end), 0),
                count(distinct case when c.delivery = 'attribute' then c.batch_number end),
                count(distinct case when c.delivery <> 'attribute' then c.batch_number end)
            from {r.changes} as c
            left join (
                select distinct batch_number, request_kind from {r.delivery_log}
                where plan_id = ? and cohort_id = ?
            ) as d
                on d.batch_number = c.batch_number
                and d.request_kind = case when c.delivery = 'attribute' then 'track' else 'users' end
            where c.cohort_id = ? and d.batch_number is null
            """,
            [plan_id or "", cohort_id, cohort_id],
        )[0]
        return int(row[0]), int(row[1]), int(row[2]) + int(row[3]), int(row[0]) + int(row[1])

    def record_name(
        self, run_id: str, cohort: CohortPlan, created_at: datetime, status: int, at: datetime
    ) -> None:
        request = name_request(cohort.cohort_id)
        with self.engine.transaction():
            self._delete("published_cohorts", "cohort_id = ?", [cohort.cohort_id])
            self._insert_rows(
                "published_cohorts", COHORT_COLUMNS,
                [(cohort.cohort_id, cohort.cohort_name, created_at, run_id, at)],
            )
            self._log_acknowledged(run_id, None, [(request, status, {})], at)
            self._clear_inflight(run_id, [request])

    def settle(
        self,
        run_id: str,
        plan_id: str | None,
        acknowledged: list[tuple[PlannedRequest, Any]],
        sending: list[PlannedRequest],
        at: datetime,
        abandoned: list[PlannedRequest] | tuple = (),
    ) -> None:
        """Apply the acknowledged requests, log them, clear their in-flight
        notes and those of the `abandoned` requests (failed before Braze
        could apply them), and note the requests about to be sent: in one
        transaction, or on Spark as appends in that order (a crash between
        two repeats the batch, which changes nothing).

        `acknowledged` holds (request, ack) pairs: the ack's status, and for
        /users/track its `errors`, the objects Braze rejected. Those objects'
        changes are recorded in cohort_sync_rejected_changes with Braze's
        reason and not applied; every other change of the request is.

        A batch of the plan is applied from the plan itself (by plan id,
        cohort and batch number); if the plan no longer holds what was sent,
        the run stops without logging the batch (transactional engines also
        record nothing of it; on Spark its removals may already be appended,
        which the next plan, built from that state, accounts for).
        """
        rejected = [rejected_objects(q, ack) for q, ack in acknowledged]
        with self.engine.transaction():
            for delivery, kind in (("cohort_import", "users"), ("attribute", "track")):
                batches = [(q, objects) for (q, _), objects in zip(acknowledged, rejected, strict=True) if q.kind == kind]
                if batches:
                    self._apply_batches(run_id, plan_id, delivery, batches, at)
            batches = [(q, objects) for (q, _), objects in zip(acknowledged, rejected, strict=True) if q.kind == "profile"]
            if batches:
                self._apply_profile_batches(run_id, plan_id, batches, at)
            batches = [(q, ack, objects) for (q, ack), objects in zip(acknowledged, rejected, strict=True)
                       if q.kind == "event"]
            if batches:
                self._apply_event_batches(run_id, batches, at)
            rows = [row for (q, _), objects in zip(acknowledged, rejected, strict=True)
                    for row in _rejected_rows(run_id, plan_id if q.kind in ("track", "profile", "event") else None,
                                              q, objects, at)]
            if rows:
                self._insert_rows("rejected_changes", REJECTED_COLUMNS, rows)
            if acknowledged:
                self._log_acknowledged(
                    run_id, plan_id,
                    [(q, ack.status, objects) for (q, ack), objects in zip(acknowledged, rejected, strict=True)], at,
                )
                self._clear_inflight(run_id, [q for q, _ in acknowledged])
            if abandoned:
                self._clear_inflight(run_id, list(abandoned))
            if sending:
                self._insert_inflight(run_id, sending, at)

    def _apply_batches(
        self, run_id: str, plan_id: str | None, delivery: str,
        batches: list[tuple[PlannedRequest, dict[int, str]]], at: datetime,
    ) -> None:
        """Apply acknowledged batches of the plan to the published state, less
        the objects Braze rejected (by index: {index: reason})."""
        pairs: dict[str, set[int]] = {}
        excluded: dict[int, list[str]] = {}
        adds = removes = 0
        for request, objects in batches:
            for part in request.parts:
                pairs.setdefault(part.cohort_id, set()).add(int(request.batch_number))
            counts = rejected_counts(request, objects)
            adds += request.adds - sum(a for a, _ in counts.values())
            removes += request.removes - sum(r for _, r in counts.values())
            if objects:
                excluded[int(request.batch_number)] = sorted({request.objects[i].member_key for i in objects})
        clauses = " or ".join(
            f"(cohort_id = ? and batch_number in ({', '.join(str(n) for n in sorted(numbers))}))"
            for _, numbers in sorted(pairs.items())
        )
        where = f"plan_id = ? and delivery = ? and ({clauses})"
        params: list[Any] = [plan_id, delivery, *sorted(pairs)]
        for number, keys in sorted(excluded.items()):
            where += f" and not (batch_number = {number} and member_key in ({', '.join('?' for _ in keys)}))"
            params += keys
        r = self.relations
        plan = f"select {{}} from {r.changes} where {{}}should_remove and {where}"
        member = ", ".join(MEMBER_COLUMNS)
        removed = added = 0
        if removes and self.engine.transactional:
            # A join with the batches' removes, not `exists`: DuckDB answers an
            # `exists` correlated on expressions of the state (the coalesces)
            # with the distinct keys of the whole state, past the CLI's
            # buffer pool at 10M members.
            removed = self.engine.execute(
                f"""delete from {r.published_state} as held using (
                        select distinct cohort_id, member_key, delivery, coalesce(attribute_name, '') as attribute_key
                        from {r.changes}
                        where should_remove and {where}
                    ) as c
                    where c.cohort_id = held.cohort_id and c.member_key = held.member_key
                        and c.delivery = coalesce(held.delivery, 'cohort_import')
                        and c.attribute_key = coalesce(held.attribute_name, '')""",
                params,
            )
        elif removes:
            # Tombstones from the plan itself, live or not: after a crash
            # between these appends and the log, repeating them is harmless.
            removed = self._insert_select(
                "published_state", STATE_COLUMNS, plan.format(f"{member}, ?, ?", ""),
                [run_id, at, *params], live=False,
            )
        if adds:
            added = self._insert_select(
                "published_state", STATE_COLUMNS, plan.format(f"{member}, ?, ?", "not "), [run_id, at, *params],
            )
        if (added, removed) != (adds, removes):
            raise RuntimeError(
                f"cohorts {', '.join(sorted(pairs))}: the plan changed while it was being published "
                f"(expected {adds} adds and {removes} removes, found {added} and {removed}); run dbt again"
            )

    def _apply_profile_batches(
        self, run_id: str, plan_id: str | None, batches: list[tuple[PlannedRequest, dict[int, str]]], at: datetime,
    ) -> None:
        """Apply acknowledged batches of attribute syncs to the attribute state,
        less the objects Braze rejected: each value written replaces the
        user's acknowledged one, each unset removes it (on Spark: live rows
        and tombstones, which repeated after a crash change nothing)."""
        chosen, replacing, expected = [], [], 0  # (sync, batch, rejected users): all, and those that replace
        for request, objects in batches:
            [part] = request.parts  # a sync's batch is its own request
            batch = (part.cohort_id, int(request.batch_number), sorted({request.objects[i].member_key for i in objects}))
            chosen.append(batch)
            expected += part.adds - sum(a for a, _ in rejected_counts(request, objects).values())
            known = self._replacing.get((plan_id, part.cohort_id))
            if known is None or batch[1] in known:
                replacing.append(batch)
        where, params = _batches_condition(plan_id, chosen)
        r = self.relations
        values = "sync_id, member_key, attribute_name, value_hash, ?, ?"
        if self.engine.transactional and replacing:
            condition, arguments = _batches_condition(plan_id, replacing)
            # A 'new' value has nothing held to replace (the plan was built from
            # this state, and only this plan's batches change it): leaving those
            # out, and batches of new values only (known when the plan is read),
            # spares a join with the whole state per cycle on a first sync.
            self.engine.execute(
                f"""delete from {r.attribute_state} as held where exists (
                        select 1 from {r.attribute_changes} as c
                        where c.change_kind <> 'new' and {condition}
                            and c.sync_id = held.sync_id and c.member_key = held.member_key
                            and c.attribute_name = held.attribute_name)""",
                arguments,
            )
        elif not self.engine.transactional:
            self._insert_select(
                "attribute_state", ATTRIBUTE_STATE_COLUMNS,
                f"select {values} from {r.attribute_changes} where should_remove and {where}",
                [run_id, at, *params], live=False,
            )
        written = self._insert_select(
            "attribute_state", ATTRIBUTE_STATE_COLUMNS,
            f"select {values} from {r.attribute_changes} where not should_remove and {where}",
            [run_id, at, *params],
        )
        if written != expected:
            raise RuntimeError(
                f"attribute syncs {', '.join(sorted({q.parts[0].cohort_id for q, _ in batches}))}: the plan changed "
                f"while it was being published (expected {expected} values written, found {written}); run dbt again"
            )

    def resync_requests(self, cohort_id: str, run_id: str) -> Iterator[PlannedRequest]:
        """Every member Braze should hold in the cohort import (not added by this run), as add requests."""
        for number, chunk in enumerate(self.current_members(cohort_id, run_id, MAX_IDENTIFIERS_PER_REQUEST), 1):
            yield request_for("resync", number, cohort_id, chunk)

    def track_resync_requests(self, cohort: CohortPlan, run_id: str) -> Iterator[PlannedRequest]:
        """Every member whose attribute Braze should hold true (not set by this
        run), as /users/track requests of the cohort's batch size."""
        columns = ", ".join("0" if name == "batch_number" else "false" if name == "should_remove" else name
                            for name in TRACK_CHANGE_COLUMNS)
        number, after = 0, ""
        while True:
            rows = self.engine.query(
                f"""select {columns} from {self.relations.published_state}
                    where cohort_id = ? and delivery = 'attribute' and attribute_name = ? and run_id <> ?
                        and member_key > ?
                    order by member_key limit {int(cohort.track_batch_size)}""",
                [cohort.cohort_id, cohort.attribute_name, run_id, after],
            )
            if rows:
                number += 1
                yield track_request("track_resync", number, [TrackChange(number, *row[1:]) for row in rows])
            if len(rows) < cohort.track_batch_size:
                break
            after = rows[-1][4]

    def current_members(self, cohort_id: str, run_id: str, size: int) -> Iterator[list[Change]]:
        """Members Braze should hold in the cohort import (not added by this run),
        in lists of `size`, read by member key a page of `page_batches` lists at a time."""
        columns = ", ".join(
            "0" if name == "batch_number" else "false" if name == "should_remove" else name
            for name in CHANGE_COLUMNS
        )
        page = size * self.engine.page_batches
        after = ""
        while True:
            rows = self.engine.query(
                f"""select {columns} from {self.relations.published_state}
                    where cohort_id = ? and coalesce(delivery, 'cohort_import') = 'cohort_import'
                        and run_id <> ? and member_key > ?
                    order by member_key limit {int(page)}""",
                [cohort_id, run_id, after],
            )
            for start in range(0, len(rows), size):
                yield [Change(*row) for row in rows[start:start + size]]
            if len(rows) < page:
                break
            after = rows[-1][2]

    # -- the outbox of requests in flight -------------------------------------

    def note_sending(self, run_id: str, requests: list[PlannedRequest], at: datetime) -> None:
        """Note requests about to be sent; their acknowledgement clears the notes."""
        with self.engine.transaction():
            self._insert_inflight(run_id, requests, at)

    def clear_notes(self, run_id: str, requests: list[PlannedRequest]) -> None:
        """Clear the notes of requests that failed before Braze could apply them."""
        with self.engine.transaction():
            self._clear_inflight(run_id, requests)

    def unconfirmed(self, cohort_id: str, run_id: str) -> set[tuple[str, int | None]]:
        """(kind, batch number) of the cohort's requests that other runs noted in
        flight and never saw acknowledged on record: what they may have
        delivered. A note whose request its run logged as acknowledged (on
        Spark, a crash between the log's append and the note's tombstone)
        does not count."""
        notes = self.engine.query(
            f"select run_id, request_kind, batch_number from {self.relations.inflight} "
            "where cohort_id = ? and run_id <> ?",
            [cohort_id, run_id],
        )
        if not notes:
            return set()
        runs = sorted({row[0] for row in notes})
        logged = {
            (run, kind, _batch(number)) for run, kind, number in self.engine.query(
                f"select run_id, request_kind, batch_number from {self.relations.delivery_log} "
                f"where cohort_id = ? and run_id in ({', '.join('?' for _ in runs)})",
                [cohort_id, *runs],
            )
        }
        return {(kind, _batch(number)) for run, kind, number in notes if (run, kind, _batch(number)) not in logged}

    def _insert_inflight(self, run_id, requests: list[PlannedRequest], at) -> None:
        """A note per cohort each request carries (a /users/track request may carry several),
        and the ids of the events an event request carries."""
        self._insert_rows(
            "inflight", INFLIGHT_COLUMNS,
            [(run_id, part.cohort_id, q.kind, q.batch_number, part.adds + part.removes, at)
             for q in requests for part in q.parts],
        )
        events = [(run_id, obj.changes[0][0], q.batch_number, obj.changes[0][1], obj.member_key, obj.time_ms, at)
                  for q in requests if q.kind == "event" for obj in q.objects]
        if events:
            self._insert_rows("event_inflight", EVENT_INFLIGHT_COLUMNS, events)

    def _clear_inflight(self, run_id: str | None, requests: list[PlannedRequest]) -> None:
        """Clear the in-flight notes of these requests (null-safe: a name call has no batch)."""
        keys: dict[str, set[tuple[str, int | None]]] = {}
        for q in requests:
            for cohort_id in q.cohort_ids:
                keys.setdefault(cohort_id, set()).add((q.kind, q.batch_number))
        for cohort_id, cohort_keys in sorted(keys.items()):
            self._delete_notes("run_id = ?", [run_id], cohort_id, cohort_keys)
        events: dict[str, set[int]] = {}
        for q in requests:
            if q.kind == "event":
                events.setdefault(q.parts[0].cohort_id, set()).add(int(q.batch_number))
        for sync_id, numbers in sorted(events.items()):
            self._delete("event_inflight",
                         f"run_id = ? and sync_id = ? and batch_number in ({', '.join(str(n) for n in sorted(numbers))})",
                         [run_id, sync_id])

    def _delete_notes(self, runs: str, params: list[Any], cohort_id: str, keys: set[tuple[str, int | None]]) -> None:
        """Delete the cohort's notes of the runs `runs` matches whose (kind, batch) is in `keys`."""
        for kind in sorted({kind for kind, _ in keys}):
            numbers = ", ".join(str(-1 if n is None else int(n)) for k, n in sorted(keys, key=str) if k == kind)
            self._delete(
                "inflight",
                f"{runs} and cohort_id = ? and request_kind = ? and coalesce(batch_number, -1) in ({numbers})",
                [*params, cohort_id, kind],
            )

    def _log_acknowledged(
        self, run_id, plan_id, acknowledged: list[tuple[PlannedRequest, int, dict[int, str]]], at
    ) -> None:
        """A delivery log row per cohort each request carries, with what Braze
        took of it (its changes, and their data points, less those of the
        objects it rejected: {index: reason}). Only batches of the plan
        ('users', 'track', 'profile') carry the plan's id."""
        rows = []
        for q, status, objects in acknowledged:
            rejected, points = rejected_counts(q, objects), q.data_points(objects)
            rows += [(run_id, plan_id if q.kind in ("users", "track", "profile", "event") else None, part.cohort_id, q.kind,
                      q.batch_number, part.adds - rejected.get(part.cohort_id, (0, 0))[0],
                      part.removes - rejected.get(part.cohort_id, (0, 0))[1], status, at,
                      points.get(part.cohort_id, 0)) for part in q.parts]
        self._insert_rows("delivery_log", DELIVERY_COLUMNS, rows)

    # -- the run lock -------------------------------------------------------------

    def acquire_lock(self, run_id: str, entry_point: str, now: datetime, expires_at: datetime) -> list[HistoryRow]:
        """Take the publisher lock, or raise LockHeldError naming the holder.

        A lock whose run is gone (expired, or its process on this host has
        exited) is reclaimed with a warning, and that run's cohorts without a
        history row are recorded as interrupted, in the same transaction (on
        Spark, before the lock changes hands: a crash between the two repeats
        it, and only the cohorts still without a row are recorded).
        Returns the rows recorded.
        """
        r = self.relations
        with self.engine.transaction():
            self.engine.lock_table(r.lock)
            rows = self.engine.query(
                f"select run_id, owner, entry_point, acquired_at, expires_at from {r.lock} where lock_name = ?",
                [LOCK_NAME],
            )
            for held_run, owner, held_by, acquired_at, held_until in rows:
                if held_until > now and _owner_alive(owner):
                    raise LockHeldError(
                        f"another publish run is in progress on this target: run {held_run} "
                        f"(via {held_by}, process {owner}) since {acquired_at:%Y-%m-%d %H:%M:%S} UTC; "
                        f"its lock expires at {held_until:%Y-%m-%d %H:%M:%S} UTC if that run died"
                    )
                log.warning(
                    "reclaiming the lock of run %s (process %s), which %s",
                    held_run, owner, "expired" if held_until <= now else "is no longer running",
                )
            interrupted = [
                row for held_run, _, held_by, acquired_at, _ in rows
                for row in self._interrupted(held_run, held_by, acquired_at, run_id)
            ]
            if interrupted:
                self._insert_rows("run_history", HISTORY_COLUMNS,
                                  [tuple(getattr(row, n) for n in HISTORY_COLUMNS) for row in interrupted])
            self._delete("lock", "lock_name = ?", [LOCK_NAME])
            self._insert_rows(
                "lock", LOCK_COLUMNS, [(LOCK_NAME, run_id, lock_owner(), entry_point, now, expires_at)]
            )
        return interrupted

    def _interrupted(self, dead: str, entry_point: str, acquired_at: datetime, by_run: str) -> list[HistoryRow]:
        """History rows for the cohorts a dead run worked on and never recorded,
        from what it left: its acknowledged requests (the delivery log) and
        its notes of requests in flight. Its retries are unknown (0)."""
        r = self.relations
        recorded = {row[0] for row in self.engine.query(
            f"select cohort_id from {r.run_history} where run_id = ?", [dead])}
        logged = self.engine.query(
            f"select cohort_id, request_kind, batch_number, added, removed, coalesce(data_points, added + removed), "
            f"acknowledged_at from {r.delivery_log} where run_id = ?", [dead])
        notes = self.engine.query(
            f"select cohort_id, request_kind, batch_number, sent_at from {r.inflight} where run_id = ?", [dead])
        cohorts = sorted(({row[0] for row in logged} | {row[0] for row in notes}) - recorded)
        if not cohorts:
            return []
        names = dict(self.engine.query(f"select cohort_id, cohort_name from {r.published_cohorts}"))
        names.update(self.engine.query(f"select cohort_id, cohort_name from {r.cohorts}"))
        rows = []
        for cohort_id in cohorts:
            acked = [(kind, _batch(number), int(added or 0), int(removed or 0), int(points or 0), at)
                     for cohort, kind, number, added, removed, points, at in logged if cohort == cohort_id]
            acked_keys = {(kind, number) for kind, number, *_ in acked}
            flying = {(kind, _batch(number)): at for cohort, kind, number, at in notes
                      if cohort == cohort_id and (kind, _batch(number)) not in acked_keys}
            times = [row[-1] for row in acked] + list(flying.values())
            events = any(kind == "event" for kind, *_ in acked) or any(kind == "event" for kind, _ in flying)
            added = sum(row[2] for row in acked)
            rows.append(HistoryRow(
                run_id=dead, cohort_id=cohort_id, cohort_name=names.get(cohort_id) or cohort_id,
                entry_point=entry_point, started_at=min(times, default=acquired_at),
                finished_at=max(times, default=acquired_at), status="interrupted",
                added=added, removed=sum(row[3] for row in acked),
                data_points=sum(row[4] for row in acked), requests=len(acked) + len(flying),
                resent_batches=len(self.unconfirmed(cohort_id, dead) & (acked_keys | set(flying))),
                # an event sync's: events delivered so far (its ledger keeps only recent ids)
                members_after=self.events_delivered(cohort_id) + added if events else self.members(cohort_id),
                # and the events it recorded uncertain (cohort_sync_event_uncertain) before it died
                **(self.uncertain_recorded(cohort_id, dead) if events else {}),
                error=(
                    f"the run died before recording this cohort's outcome; recorded by run {by_run} from what "
                    f"it left: {len(acked)} acknowledged request(s) and {len(flying)} in flight"
                ),
            ))
        return rows

    def refresh_lock(self, run_id: str, expires_at: datetime) -> None:
        r = self.relations
        with self.engine.transaction():
            held = self.engine.query(
                f"select {', '.join(LOCK_COLUMNS[:-1])} from {r.lock} where lock_name = ? and run_id = ?",
                [LOCK_NAME, run_id],
            )
            if held:
                self._delete("lock", "lock_name = ? and run_id = ?", [LOCK_NAME, run_id])
                self._insert_rows("lock", LOCK_COLUMNS, [(*held[0], expires_at)])

    def release_lock(self, run_id: str) -> None:
        with self.engine.transaction():
            self._delete("lock", "lock_name = ? and run_id = ?", [LOCK_NAME, run_id])

    def members(self, cohort_id: str) -> int:
        """Published members of a cohort (for an attribute sync: users with acknowledged values)."""
        r = self.relations
        return int(self.engine.query(
            f"""select (select count(*) from {r.published_state} where cohort_id = ?)
                    + (select count(distinct member_key) from {r.attribute_state} where sync_id = ?)
                    + (select count(*) from {r.event_state} where sync_id = ?)""",
            [cohort_id, cohort_id, cohort_id],
        )[0][0])

    def member_counts(self) -> dict[str, int]:
        """Published members per cohort (per attribute sync: users with acknowledged values)."""
        r = self.relations
        rows = self.engine.query(
            f"select cohort_id, count(*) from {r.published_state} group by cohort_id "
            f"union all select sync_id, count(distinct member_key) from {r.attribute_state} group by sync_id "
            f"union all select sync_id, count(*) from {r.event_state} group by sync_id"
        )
        counts: dict[str, int] = {}
        for cohort_id, count in rows:
            counts[cohort_id] = counts.get(cohort_id, 0) + int(count)
        return counts

    def write_history(self, *rows: HistoryRow) -> None:
        self._append("run_history", HISTORY_COLUMNS, rows)

    def record_outcome(
        self,
        row: HistoryRow,
        *,
        forget: set[tuple[str, int | None]] | None = None,
        forget_all: bool = False,
        notifications: list[NotificationRecord] | tuple = (),
    ) -> None:
        """Write a cohort's history row with the notifications it owes (as
        'pending' records, sent once the run's cohorts are done), and forget
        the notes of earlier runs it settled: all of them (`forget_all`: the
        cohort is in step with the plan, nothing of theirs is left to send)
        or those it sent again (`forget`), which it counted; the others stay
        for the run that sends them. In one transaction (on Spark, appends
        in that order: a crash after the row loses its notifications)."""
        with self.engine.transaction():
            self._insert_rows("run_history", HISTORY_COLUMNS, [tuple(getattr(row, n) for n in HISTORY_COLUMNS)])
            if notifications:
                self._insert_rows("notification_log", NOTIFICATION_COLUMNS,
                                  [tuple(getattr(r, n) for n in NOTIFICATION_COLUMNS) for r in notifications])
            if forget_all:
                self._delete("inflight", "cohort_id = ? and run_id <> ?", [row.cohort_id, row.run_id])
            elif forget:
                self._delete_notes("run_id <> ?", [row.run_id], row.cohort_id, forget)

    def write_notifications(self, *records: NotificationRecord) -> None:
        self._append("notification_log", NOTIFICATION_COLUMNS, records)

    def _append(self, table: str, columns: tuple[str, ...], rows: tuple[Any, ...]) -> None:
        """Dataclass rows appended to a log table in one statement."""
        if rows:
            with self.engine.transaction():
                self._insert_rows(table, columns, [tuple(getattr(row, n) for n in columns) for row in rows])

    def successful_syncs(self) -> list[HistoryRow]:
        """Every sync (success, or partial), per cohort in time order: the cohorts' sizes over time."""
        synced = ", ".join(f"'{status}'" for status in SYNCED)
        return self._history_rows(f"where status in ({synced}) order by cohort_id, started_at")

    def history(self, limit: int = 20, run_id: str | None = None) -> list[HistoryRow]:
        """Recent history rows, newest first (or all rows of one run)."""
        where, params = ("where run_id = ?", [run_id]) if run_id else ("", [])
        return self._history_rows(f"{where} order by started_at desc, cohort_id limit {int(limit)}", params)

    def notifications(self, run_ids: set[str]) -> list[NotificationRecord]:
        """The notifications of these runs, oldest first: each attempt (sent or
        failed), and each queued one no attempt settled yet (pending)."""
        if not run_ids:
            return []
        rows = self.engine.query(
            f"select {', '.join(NOTIFICATION_COLUMNS)} from {self.relations.notification_log} "
            f"where run_id in ({', '.join('?' for _ in run_ids)}) order by sent_at, cohort_id, channel",
            sorted(run_ids),
        )
        records = [NotificationRecord(*row) for row in rows]
        settled = {_notification_key(r) for r in records if r.status != "pending"}
        return [r for r in records if r.status != "pending" or _notification_key(r) not in settled]

    def owed_notifications(self, since: datetime) -> list[tuple[NotificationRecord, HistoryRow]]:
        """The notifications queued since `since` that no attempt settled, oldest
        first, with the history row each is about: this run's, and those of a
        run that died before sending them (a run that holds the lock knows no
        other run is sending them)."""
        r = self.relations
        key = ("run_id", "cohort_id", "outcome", "channel", "recipient")
        history = ", ".join(
            f"coalesce(h.{name}, {HISTORY_DEFAULTS[name]})" if name in HISTORY_DEFAULTS else f"h.{name}"
            for name in HISTORY_COLUMNS
        )
        rows = self.engine.query(
            f"""select {', '.join(f'p.{name}' for name in NOTIFICATION_COLUMNS)}, {history}
                from {r.notification_log} as p
                join {r.run_history} as h on h.run_id = p.run_id and h.cohort_id = p.cohort_id
                left join (
                    select distinct {', '.join(key)} from {r.notification_log}
                    where status <> 'pending' and sent_at >= ?
                ) as s on {' and '.join(f's.{name} = p.{name}' for name in key)}
                where p.status = 'pending' and p.sent_at >= ? and s.run_id is null
                order by p.sent_at, p.cohort_id, p.channel, p.recipient""",
            [since, since],
        )
        width = len(NOTIFICATION_COLUMNS)
        return [(NotificationRecord(*row[:width]), HistoryRow(*row[width:])) for row in rows]

    def streak(self, cohort_id: str, last_success: datetime | None, run_id: str) -> Streak:
        """The cohort's failing streak before this run: the statuses of its failed
        or blocked rows since its last success, and when each recipient was last
        notified of a failure since (sent, or queued and not settled)."""
        params = [last_success] if last_success else []
        statuses = frozenset(row[0] for row in self.engine.query(
            f"select distinct status from {self.relations.run_history} "
            f"where cohort_id = ? and run_id <> ? and status in ('failed', 'blocked')"
            f"{' and started_at > ?' if last_success else ''}",
            [cohort_id, run_id, *params],
        ))
        if not statuses:
            return Streak()
        records = [NotificationRecord(*row) for row in self.engine.query(
            f"select {', '.join(NOTIFICATION_COLUMNS)} from {self.relations.notification_log} "
            f"where cohort_id = ? and outcome in ('failed', 'blocked')"
            f"{' and sent_at > ?' if last_success else ''}",
            [cohort_id, *params],
        )]
        settled = {_notification_key(r) for r in records if r.status != "pending"}
        notified: dict[tuple[str, str], datetime] = {}
        for record in records:
            if record.status == "sent" or (record.status == "pending" and _notification_key(record) not in settled):
                who = (record.channel, record.recipient)
                notified[who] = max(record.sent_at, notified.get(who, record.sent_at))
        return Streak(statuses, notified)

    def _history_rows(self, clauses: str, params: list[Any] | None = None) -> list[HistoryRow]:
        columns = ", ".join(
            f"coalesce({name}, {HISTORY_DEFAULTS[name]}) as {name}" if name in HISTORY_DEFAULTS else name
            for name in HISTORY_COLUMNS
        )
        rows = self.engine.query(f"select {columns} from {self.relations.run_history} {clauses}", params or [])
        return [HistoryRow(*row) for row in rows]

    # -- writes: transactional, or appends to an event log ------------------------

    def _event_sequence(self) -> int:
        """Orders events: microseconds since the epoch, strictly increasing in this
        process and above every event already logged (a host whose clock is
        behind still writes later events)."""
        if self._sequence == 0:
            self._sequence = max(
                int(self.engine.query(f"select coalesce(max(event_seq), 0) from {self.relations.events(t)}")[0][0])
                for t in EVENT_TABLES
            )
        self._sequence = max(self._sequence + 1, time.time_ns() // 1000)
        return self._sequence

    def _insert_rows(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        relation = getattr(self.relations, table)
        if not self.engine.transactional and table in EVENT_TABLES:
            relation, columns = self.relations.events(table), (*columns, *EVENT_COLUMNS)
            rows = [(*row, True, self._event_sequence()) for row in rows]
        self.engine.insert_rows(relation, columns, rows)

    def _insert_select(
        self, table: str, columns: tuple[str, ...], select: str, params: list[Any], live: bool = True
    ) -> int:
        """Insert the rows of `select` (on Spark: as live rows, or as tombstones);
        how many (counted first where the engine does not say)."""
        relation = getattr(self.relations, table)
        if self.engine.transactional:
            return self.engine.execute(f"insert into {relation} ({', '.join(columns)}) {select}", params)
        count = int(self.engine.query(f"select count(*) from ({select}) as planned", params)[0][0])
        if count:
            self.engine.execute(
                f"""insert into {self.relations.events(table)} ({', '.join(columns)}, {', '.join(EVENT_COLUMNS)})
                    select *, {'true' if live else 'false'}, {self._event_sequence()} from ({select}) as planned""",
                params,
            )
        return count

    def _delete(self, table: str, where: str, params: list[Any]) -> int:
        """Delete the rows matching `where`; how many. On Spark: append their tombstones."""
        relation = getattr(self.relations, table)
        if self.engine.transactional:
            return self.engine.execute(f"delete from {relation} where {where}", params)
        count = int(self.engine.query(f"select count(*) from {relation} where {where}", params)[0][0])
        if count:
            columns = ", ".join(EVENT_TABLES[table])
            self.engine.execute(
                f"""insert into {self.relations.events(table)} ({columns}, {', '.join(EVENT_COLUMNS)})
                    select {columns}, false, {self._event_sequence()} from {relation} where {where}""",
                params,
            )
        return count


def rejected_objects(request: PlannedRequest, ack: Any) -> dict[int, str]:
    """The objects of a /users/track request that Braze's response named in its
    `errors` (index: Braze's reason): not delivered, the others were."""
    errors = getattr(ack, "errors", None) or ()
    found: dict[int, str] = {}
    for error in errors:
        if error.input_array != request.array or not 0 <= error.index < len(request.objects):
            raise ValueError(
                f"Braze's answer to {request.kind} batch {request.batch_number} names object "
                f"{error.input_array}[{error.index}], which the request (of {len(request.objects)} "
                f"{request.array} objects) does not have; nothing of it was recorded"
            )
        found[error.index] = str(error.type or "rejected by Braze")
    return found


def rejected_counts(request: PlannedRequest, objects: dict[int, str]) -> dict[str, tuple[int, int]]:
    """Per cohort, the (adds, removes) of the request's rejected objects."""
    counts: dict[str, list[int]] = {}
    for index in objects:
        for cohort_id, _, should_remove in request.objects[index].changes:
            counts.setdefault(cohort_id, [0, 0])[1 if should_remove else 0] += 1
    return {cohort_id: (adds, removes) for cohort_id, (adds, removes) in counts.items()}


def _rejected_rows(run_id, plan_id, request: PlannedRequest, objects: dict[int, str], at) -> list[tuple]:
    """cohort_sync_rejected_changes rows: one per change of each rejected object
    (for an attribute sync, per value, with its hash: the same value is not
    planned again)."""
    delivery = "profile" if request.kind in PROFILE_KINDS else "event" if request.kind == "event" else "attribute"
    rows = []
    for index, reason in sorted(objects.items()):
        obj = request.objects[index]
        kind, value, label = obj.identifier
        identifiers = {name: None for name in ("external_id", "alias_name", "alias_label", "braze_id", "email", "phone")}
        identifiers["alias_name" if kind == "alias" else kind] = value
        if kind == "alias":
            identifiers["alias_label"] = label
        for n, (cohort_id, attribute_name, should_remove) in enumerate(obj.changes):
            rows.append((run_id, plan_id, cohort_id, delivery, attribute_name, obj.member_key, should_remove,
                         kind, *identifiers.values(), request.batch_number, reason, at,
                         obj.hashes[n] if obj.hashes else None))
    return rows


def _notification_key(record: NotificationRecord) -> tuple[str, str, str, str, str]:
    """What a sent or failed record shares with the pending record it settles."""
    return (record.run_id, record.cohort_id, record.outcome, record.channel, record.recipient)


def _batches_condition(plan_id: str | None, batches: list[tuple[str, int, list[str]]]) -> tuple[str, list[Any]]:
    """The condition on a sync plan's rows of `batches` ((sync, batch number,
    users left out) each) and its parameters: a sync's batches that leave no
    one out in one `in` list (DuckDB prunes by it; an `or` per batch it scans)."""
    clauses, params = [], []
    whole: dict[str, list[int]] = {}
    for sync_id, number, keys in batches:
        if keys:
            clauses.append(f"(sync_id = ? and batch_number = {number} and member_key not in ({', '.join('?' for _ in keys)}))")
            params += [sync_id, *keys]
        else:
            whole.setdefault(sync_id, []).append(number)
    for sync_id, numbers in sorted(whole.items()):
        clauses.append(f"(sync_id = ? and batch_number in ({', '.join(str(n) for n in sorted(numbers))}))")
        params.append(sync_id)
    return f"plan_id = ? and ({' or '.join(clauses)})", [plan_id, *params]


def _batch(number: Any) -> int | None:
    """A batch number as read from any engine (None for a name call)."""
    return None if number is None else int(number)


def _recipients(cohort_id: str, text: str | None) -> tuple[Recipient, ...]:
    """A cohort's recipients; unreadable ones are logged, and never stop the sync."""
    try:
        return recipients_from_json(text)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.error("cohort '%s': its notify column is not readable (%s); it notifies no one in this run", cohort_id, exc)
        return ()


def lock_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str) -> bool:
    """False only when the owner is a process of this host that has exited."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
