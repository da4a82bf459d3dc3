"""The publisher's view of the warehouse: the planned changes it reads and
the acknowledged state it writes.

Reads are of the dbt models (cohort_sync_cohorts, cohort_sync_changes), in
pages of batches, so memory stays flat however large the plan. Each
acknowledged batch is recorded in the published state and the delivery log
(with the plan's id) in one transaction; a batch already acknowledged for
the plan (by an earlier run, or before a crash) is never read again.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from .payload import (
    MAX_IDENTIFIERS_PER_REQUEST,
    NAME_REQUEST,
    Change,
    PlannedRequest,
    compose_cohort_changes,
    request_for,
)

log = logging.getLogger(__name__)

STATE_TABLES = (
    "published_state",
    "published_cohorts",
    "delivery_log",
    "run_history",
    "inflight",
    "lock",
)
LOCK_NAME = "publisher"


class LockHeldError(RuntimeError):
    """Another publish run holds the lock on this target."""


@dataclass(frozen=True)
class Relations:
    """Rendered relation names of the models and state tables, as dbt resolved them."""

    changes: str
    cohorts: str
    membership: str
    published_state: str
    published_cohorts: str
    delivery_log: str
    run_history: str
    inflight: str
    lock: str


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

    @property
    def needs_name(self) -> bool:
        """New or renamed cohorts go through the name endpoint first."""
        return self.braze_cohort_name != self.cohort_name


@dataclass
class HistoryRow:
    """One row of cohort_sync_run_history: one cohort in one run."""

    run_id: str
    cohort_id: str
    cohort_name: str
    entry_point: str
    started_at: datetime
    finished_at: datetime | None = None
    status: str = "running"
    added: int = 0
    removed: int = 0
    requests: int = 0
    retries: int = 0
    resent_batches: int = 0
    members_after: int | None = None
    error: str | None = None


HISTORY_COLUMNS = tuple(f.name for f in fields(HistoryRow))
CHANGE_COLUMNS = Change._fields


class DuckDBLedger:
    """Ledger on a DuckDB connection (the embedded default)."""

    def __init__(self, connection: Any, relations: Relations, page_batches: int = 50) -> None:
        self._reader = connection.cursor()
        self._writer = connection.cursor()
        self.relations = relations
        self._page_batches = page_batches

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    def cohorts(self) -> list[CohortPlan]:
        r = self.relations
        rows = self._reader.execute(
            f"""
            select c.cohort_id, c.cohort_name, c.action, c.guard_status, c.guard_reason,
                   p.cohort_name, p.created_at
            from {r.cohorts} as c
            left join {r.published_cohorts} as p on p.cohort_id = c.cohort_id
            order by c.cohort_id
            """
        ).fetchall()
        return [CohortPlan(*row) for row in rows]

    def plan_id(self) -> str | None:
        """The id of the plan in cohort_sync_changes (None when it is empty)."""
        rows = self._reader.execute(f"select plan_id from {self.relations.changes} limit 1").fetchall()
        return rows[0][0] if rows else None

    def acknowledged_batches(self, plan_id: str | None, cohort_id: str) -> set[int]:
        """Batch numbers of the plan already acknowledged for the cohort."""
        if plan_id is None:
            return set()
        rows = self._reader.execute(
            f"""select batch_number from {self.relations.delivery_log}
                where plan_id = ? and cohort_id = ? and request_kind = 'users'""",
            [plan_id, cohort_id],
        ).fetchall()
        return {row[0] for row in rows}

    def pending_requests(self, plan_id: str | None, cohort_id: str) -> Iterator[PlannedRequest]:
        """The cohort's batches not yet acknowledged for the plan, as requests, a page at a time.

        DuckDB renders each batch's identifier lists as JSON, so no member
        row crosses into Python.
        """
        done = self.acknowledged_batches(plan_id, cohort_id)
        last = self._reader.execute(
            f"select max(batch_number) from {self.relations.changes} where cohort_id = ?", [cohort_id]
        ).fetchall()[0][0]
        lists = ", ".join(
            f"to_json(list({value}) filter (where {'' if remove else 'not '}should_remove "
            f"and identifier_type = '{kind}'))"
            for remove in (True, False)
            for kind, value in (
                ("external_id", "external_id"),
                ("alias", "{'alias_name': alias_name, 'alias_label': alias_label}"),
                ("device_id", "device_id"),
            )
        )
        for first in range(1, (last or 0) + 1, self._page_batches):
            numbers = [n for n in range(first, first + self._page_batches) if n not in done]
            if not numbers:
                continue
            rows = self._reader.execute(
                f"""select batch_number,
                        count(*) filter (where not should_remove),
                        count(*) filter (where should_remove),
                        {lists}
                    from {self.relations.changes}
                    where cohort_id = ? and batch_number between ? and ?
                    group by batch_number
                    order by batch_number""",
                [cohort_id, numbers[0], numbers[-1]],
            ).fetchall()
            for number, adds, removes, *fragments in rows:
                if number in done:
                    continue
                if adds + removes > MAX_IDENTIFIERS_PER_REQUEST:
                    raise ValueError(f"batch {number} of cohort '{cohort_id}' holds {adds + removes} identifiers")
                yield PlannedRequest(
                    "users", number, adds, removes, compose_cohort_changes(fragments[:3], fragments[3:])
                )

    def pending_summary(self, plan_id: str | None, cohort_id: str) -> tuple[int, int, int]:
        """(adds, removes, batches) of the plan not yet acknowledged for the cohort."""
        done = sorted(self.acknowledged_batches(plan_id, cohort_id))
        row = self._reader.execute(
            f"""
            select
                coalesce(sum(case when not should_remove then 1 else 0 end), 0),
                coalesce(sum(case when should_remove then 1 else 0 end), 0),
                count(distinct batch_number)
            from {self.relations.changes}
            where cohort_id = ? and batch_number not in (select unnest(?::bigint[]))
            """,
            [cohort_id, done],
        ).fetchall()[0]
        return int(row[0]), int(row[1]), int(row[2])

    def record_name(
        self, run_id: str, cohort: CohortPlan, created_at: datetime, status: int, at: datetime
    ) -> None:
        r = self.relations
        with self._transaction():
            self._writer.execute(f"delete from {r.published_cohorts} where cohort_id = ?", [cohort.cohort_id])
            self._writer.execute(
                f"""insert into {r.published_cohorts}
                    (cohort_id, cohort_name, created_at, run_id, acknowledged_at)
                    values (?, ?, ?, ?, ?)""",
                [cohort.cohort_id, cohort.cohort_name, created_at, run_id, at],
            )
            acknowledged = [(NAME_REQUEST, status)]
            self._log_acknowledged(run_id, None, cohort.cohort_id, acknowledged, at)
            self._clear_inflight(run_id, cohort.cohort_id, acknowledged)

    def settle(
        self,
        run_id: str,
        plan_id: str | None,
        cohort_id: str,
        acknowledged: list[tuple[PlannedRequest, int]],
        sending: list[PlannedRequest],
        at: datetime,
    ) -> None:
        """In one transaction: apply the acknowledged requests, log them, clear
        their in-flight notes, and note the requests about to be sent.

        A batch of the plan is applied from the plan itself (by plan id and
        batch number); if the plan no longer holds what was sent, nothing is
        recorded and the run stops.
        """
        r = self.relations
        batches = [request for request, _ in acknowledged if request.kind == "users"]
        with self._transaction():
            if batches:
                numbers = sorted(request.batch_number for request in batches)
                where = (
                    "cohort_id = ? and plan_id = ? and batch_number between ? and ? "
                    "and batch_number in (select unnest(?::bigint[]))"
                )
                params = [cohort_id, plan_id, numbers[0], numbers[-1], numbers]
                removes = sum(request.removes for request in batches)
                adds = sum(request.adds for request in batches)
                removed = added = 0
                if removes:
                    removed = self._writer.execute(
                        f"""delete from {r.published_state} where cohort_id = ? and member_key in (
                                select member_key from {r.changes} where should_remove and {where})""",
                        [cohort_id, *params],
                    ).fetchall()[0][0]
                if adds:
                    added = self._writer.execute(
                        f"""insert into {r.published_state}
                            (cohort_id, member_key, identifier_type, external_id, alias_name, alias_label,
                             device_id, run_id, acknowledged_at)
                            select cohort_id, member_key, identifier_type, external_id, alias_name,
                                   alias_label, device_id, ?, ?
                            from {r.changes} where not should_remove and {where}""",
                        [run_id, at, *params],
                    ).fetchall()[0][0]
                if (added, removed) != (adds, removes):
                    raise RuntimeError(
                        f"cohort '{cohort_id}': the plan changed while it was being published "
                        f"(expected {adds} adds and {removes} removes, found {added} and {removed}); "
                        "run dbt again"
                    )
            if acknowledged:
                self._log_acknowledged(run_id, plan_id if batches else None, cohort_id, acknowledged, at)
                self._clear_inflight(run_id, cohort_id, acknowledged)
            if sending:
                self._insert_inflight(run_id, cohort_id, sending, at)

    def resync_requests(self, cohort_id: str, run_id: str) -> Iterator[PlannedRequest]:
        """Every member Braze should hold (not added by this run), as add requests."""
        for number, chunk in enumerate(self.current_members(cohort_id, run_id, MAX_IDENTIFIERS_PER_REQUEST), 1):
            yield request_for("resync", number, chunk)

    def current_members(self, cohort_id: str, run_id: str, size: int) -> Iterator[list[Change]]:
        """Members Braze should hold (not added by this run), in requests of `size`, streamed."""
        columns = ", ".join(
            "0" if name == "batch_number" else "false" if name == "should_remove" else name
            for name in CHANGE_COLUMNS
        )
        cursor = self._reader.execute(
            f"""select {columns} from {self.relations.published_state}
                where cohort_id = ? and run_id <> ? order by member_key""",
            [cohort_id, run_id],
        )
        while True:
            rows = cursor.fetchmany(size)
            if not rows:
                break
            yield [Change(*row) for row in rows]

    # -- the outbox of requests in flight -------------------------------------

    def note_sending(self, run_id: str, cohort_id: str, requests: list[PlannedRequest], at: datetime) -> None:
        """Note requests about to be sent; their acknowledgement clears the notes."""
        with self._transaction():
            self._insert_inflight(run_id, cohort_id, requests, at)

    def take_unconfirmed(self, cohort_id: str, run_id: str) -> int:
        """Requests of other (dead) runs never acknowledged: count and forget them."""
        with self._transaction():
            return int(self._writer.execute(
                f"delete from {self.relations.inflight} where cohort_id = ? and run_id <> ?", [cohort_id, run_id]
            ).fetchall()[0][0])

    def _insert_inflight(self, run_id, cohort_id, requests: list[PlannedRequest], at) -> None:
        self._writer.execute(
            f"""insert into {self.relations.inflight}
                (run_id, cohort_id, request_kind, batch_number, identifiers, sent_at)
                select ?, ?, unnest(?::varchar[]), unnest(?::bigint[]), unnest(?::bigint[]), ?""",
            [run_id, cohort_id, [q.kind for q in requests], [q.batch_number for q in requests],
             [q.identifiers for q in requests], at],
        )

    def _clear_inflight(self, run_id, cohort_id, acknowledged: list[tuple[PlannedRequest, int]]) -> None:
        """Clear the in-flight notes of acknowledged requests (null-safe: a name call has no batch)."""
        for kind in {q.kind for q, _ in acknowledged}:
            self._writer.execute(
                f"""delete from {self.relations.inflight}
                    where run_id = ? and cohort_id = ? and request_kind = ?
                    and coalesce(batch_number, -1) in (
                        select coalesce(b, -1) from unnest(?::bigint[]) as t(b))""",
                [run_id, cohort_id, kind, [q.batch_number for q, _ in acknowledged if q.kind == kind]],
            )

    def _log_acknowledged(self, run_id, plan_id, cohort_id, acknowledged: list[tuple[PlannedRequest, int]], at) -> None:
        self._writer.execute(
            f"""insert into {self.relations.delivery_log}
                (run_id, plan_id, cohort_id, request_kind, batch_number, added, removed,
                 http_status, acknowledged_at)
                select ?, ?, ?, unnest(?::varchar[]), unnest(?::bigint[]), unnest(?::bigint[]),
                       unnest(?::bigint[]), unnest(?::bigint[]), ?""",
            [run_id, plan_id, cohort_id,
             *map(list, zip(*[(q.kind, q.batch_number, q.adds, q.removes, status)
                              for q, status in acknowledged], strict=True)), at],
        )

    # -- the run lock -------------------------------------------------------------

    def acquire_lock(self, run_id: str, entry_point: str, now: datetime, expires_at: datetime) -> None:
        """Take the publisher lock, or raise LockHeldError naming the holder.

        A lock whose run is gone (expired, or its process on this host has
        exited) is reclaimed with a warning.
        """
        r = self.relations
        with self._transaction():
            rows = self._writer.execute(
                f"select run_id, owner, entry_point, acquired_at, expires_at from {r.lock} where lock_name = ?",
                [LOCK_NAME],
            ).fetchall()
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
            self._writer.execute(f"delete from {r.lock} where lock_name = ?", [LOCK_NAME])
            self._writer.execute(
                f"""insert into {r.lock} (lock_name, run_id, owner, entry_point, acquired_at, expires_at)
                    values (?, ?, ?, ?, ?, ?)""",
                [LOCK_NAME, run_id, lock_owner(), entry_point, now, expires_at],
            )

    def refresh_lock(self, run_id: str, expires_at: datetime) -> None:
        with self._transaction():
            self._writer.execute(
                f"update {self.relations.lock} set expires_at = ? where lock_name = ? and run_id = ?",
                [expires_at, LOCK_NAME, run_id],
            )

    def release_lock(self, run_id: str) -> None:
        with self._transaction():
            self._writer.execute(
                f"delete from {self.relations.lock} where lock_name = ? and run_id = ?", [LOCK_NAME, run_id]
            )

    def members(self, cohort_id: str) -> int:
        return int(
            self._writer.execute(
                f"select count(*) from {self.relations.published_state} where cohort_id = ?",
                [cohort_id],
            ).fetchall()[0][0]
        )

    def write_history(self, row: HistoryRow) -> None:
        placeholders = ", ".join("?" for _ in HISTORY_COLUMNS)
        with self._transaction():
            self._writer.execute(
                f"insert into {self.relations.run_history} ({', '.join(HISTORY_COLUMNS)}) values ({placeholders})",
                [getattr(row, name) for name in HISTORY_COLUMNS],
            )

    def history(self, limit: int = 20, run_id: str | None = None) -> list[HistoryRow]:
        """Recent history rows, newest first (or all rows of one run)."""
        where, params = ("where run_id = ?", [run_id]) if run_id else ("", [])
        rows = self._writer.execute(
            f"""select {', '.join(HISTORY_COLUMNS)} from {self.relations.run_history} {where}
                order by started_at desc, cohort_id limit {int(limit)}""",
            params,
        ).fetchall()
        return [HistoryRow(*row) for row in rows]

    def _transaction(self):
        return _Transaction(self._writer)


class _Transaction:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def __enter__(self) -> None:
        self._cursor.execute("begin transaction")

    def __exit__(self, exc_type, exc, tb) -> None:
        self._cursor.execute("rollback" if exc_type else "commit")


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
