"""The event syncs' part of the ledger: their plan read as requests, the
acknowledgement ledger, the ids of requests in flight, and what a crash
left uncertain (decision 0015).

Braze does not deduplicate events, so an event's delivery is recorded by
its id: cohort_sync_event_state holds each event Braze acknowledged (the
plan never sends an id it holds), cohort_sync_event_inflight the ids of
each request sent and not yet acknowledged, and
cohort_sync_event_uncertain every event that may be in Braze twice, or
never, with the run whose request's outcome is unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..braze.payload import EVENT_CHANGE_COLUMNS, EventChange, PlannedRequest, event_request

if TYPE_CHECKING:
    from .ledger import CohortPlan

log = logging.getLogger(__name__)

EVENT_STATE_COLUMNS = ("sync_id", "event_id", "member_key", "event_time_ms", "outcome", "run_id", "acknowledged_at")
EVENT_INFLIGHT_COLUMNS = ("run_id", "sync_id", "batch_number", "event_id", "member_key", "event_time_ms", "sent_at")
EVENT_UNCERTAIN_COLUMNS = ("sync_id", "event_id", "member_key", "event_time_ms", "outcome", "sent_by_run",
                           "recorded_by_run", "recorded_at")


class EventLedger:
    """Mixed into Ledger: needs its engine, relations and write helpers."""

    def pending_event_requests(
        self, plan_id: str | None, syncs: list[CohortPlan], skip: Mapping[str, set[str]] | None = None,
    ) -> Iterator[PlannedRequest]:
        """The event syncs' planned events not yet acknowledged for the plan,
        as /users/track requests, one per batch of a sync, read a page of
        batches at a time; less the events of `skip` (per sync: ids an
        at_most_once sync does not send again) and those that became known
        since the plan was built: held by the ledger (skipped by an earlier
        run, which died before sending the rest of their batch; or, on
        Spark, acknowledged by a run that died between the ledger's append
        and the delivery log's: Braze has them), rejected by Braze with the
        same content, or behind the ledger's horizon on record (it may have
        forgotten them: only events already sent or skipped are there).

        Each page is read for this plan id: a plan rebuilt while the run
        publishes (its batches numbered anew) stops the run, rather than
        send what it numbers differently."""
        r = self.relations
        skip = skip or {}
        for sync in syncs:
            done = self.acknowledged_batches(plan_id, sync.cohort_id, "event")
            left_out = skip.get(sync.cohort_id, set()) | {row[0] for row in self.engine.query(
                f"""select held.event_id from {r.event_state} as held
                    inner join {r.event_changes} as planned
                        on planned.sync_id = held.sync_id and planned.event_id = held.event_id
                    where held.sync_id = ?
                    union
                    select planned.event_id from {r.rejected_changes} as rejected
                    inner join {r.event_changes} as planned
                        on planned.sync_id = rejected.cohort_id and planned.event_id = rejected.attribute_name
                        and planned.content_hash = rejected.value_hash
                    where rejected.cohort_id = ? and rejected.delivery = 'event'""",
                [sync.cohort_id, sync.cohort_id])}
            horizon = self.event_horizon(sync.cohort_id)
            for first, last in self.pending_pages(r.event_changes, sync.cohort_id, done):
                rows = self.engine.query(
                    f"""select {', '.join(EVENT_CHANGE_COLUMNS)} from {r.event_changes}
                        where sync_id = ? and plan_id = ? and batch_number between ? and ?
                        order by batch_number, change_number, property_number""",
                    [sync.cohort_id, plan_id or "", first, last],
                )
                if not rows and self.plan_id(events=True) != plan_id:
                    raise ValueError(
                        f"event sync '{sync.cohort_id}': the plan changed while it was being published (dbt "
                        "rebuilt cohort_sync_event_changes); nothing of the new plan was sent: publish again")
                batches: dict[int, list[EventChange]] = {}
                for row in rows:
                    change = EventChange(int(row[0]), *row[1:])
                    if change.batch_number not in done and change.event_id not in left_out \
                            and (horizon is None or change.event_time_ms >= horizon):
                        batches.setdefault(change.batch_number, []).append(change)
                for number in sorted(batches):
                    yield event_request(number, batches[number], sync.event_kind or "event",
                                        create_users=sync.sync_mode == "upsert",
                                        at_most_once=sync.event_guarantee == "at_most_once")

    def _apply_event_batches(self, run_id: str, batches: list[tuple[PlannedRequest, Any, dict[int, str]]],
                             at: datetime) -> None:
        """Record the events Braze acknowledged (all of each request's but those
        its errors name), and, when an earlier attempt of the request may
        have been applied too, each of them as possibly duplicated."""
        acknowledged, doubtful = [], []
        for request, ack, objects in batches:
            for index, obj in enumerate(request.objects):
                if index in objects:
                    continue
                sync_id, event_id, _ = obj.changes[0]
                acknowledged.append((sync_id, event_id, obj.member_key, obj.time_ms, "acknowledged", run_id, at))
                if getattr(ack, "maybe_duplicated", False):
                    doubtful.append((sync_id, event_id, obj.member_key, obj.time_ms, "possibly_duplicated",
                                     run_id, run_id, at))
        # the doubt first: on Spark (appends, no transaction) a crash between the
        # two must not leave acknowledged ids whose possible duplicate has no record
        if doubtful:
            self._insert_rows("event_uncertain", EVENT_UNCERTAIN_COLUMNS, doubtful)
        if acknowledged:
            self._insert_rows("event_state", EVENT_STATE_COLUMNS, acknowledged)

    def resolve_uncertain_events(self, sync: CohortPlan, run_id: str, at: datetime) -> tuple[int, int, set[str]]:
        """Settle the event ids that other runs noted in flight and never saw
        acknowledged on record: their request may or may not have reached
        Braze. Under at_least_once they are sent again (the plan holds
        them): each is recorded possibly_duplicated (unconfirmed when the
        plan no longer holds it). Under at_most_once they are not: each is
        recorded possibly_lost, and held in the ledger as skipped so no plan
        sends it. Returns (possibly duplicated, possibly lost, ids not to
        send in this run)."""
        r, sync_id = self.relations, sync.cohort_id
        notes = self.engine.query(
            f"select run_id, batch_number, event_id, member_key, event_time_ms from {r.event_inflight} "
            "where sync_id = ? and run_id <> ?",
            [sync_id, run_id],
        )
        if not notes:
            return 0, 0, set()
        runs = sorted({note[0] for note in notes})
        marks = ", ".join("?" for _ in runs)
        logged = {(run, int(number)) for run, number in self.engine.query(
            f"select run_id, batch_number from {r.delivery_log} "
            f"where cohort_id = ? and request_kind = 'event' and run_id in ({marks})",
            [sync_id, *runs],
        )}
        uncertain: dict[str, tuple] = {}
        for run, number, event_id, member_key, time_ms in notes:
            if (run, int(number)) not in logged:  # logged: acknowledged (Spark: a crash before the note's tombstone)
                uncertain.setdefault(event_id, (run, member_key, time_ms))
        held = self._among(r.event_state, sync_id, list(uncertain))
        for event_id in held:
            uncertain.pop(event_id)
        at_most_once = sync.event_guarantee == "at_most_once"
        planned = set() if at_most_once else self._among(r.event_changes, sync_id, list(uncertain))
        records, skipped = [], []
        for event_id, (run, member_key, time_ms) in sorted(uncertain.items()):
            outcome = ("possibly_lost" if at_most_once else
                       "possibly_duplicated" if event_id in planned else "unconfirmed")
            records.append((sync_id, event_id, member_key, time_ms, outcome, run, run_id, at))
            if at_most_once:
                skipped.append((sync_id, event_id, member_key, time_ms, "skipped", run_id, at))
        with self.engine.transaction():
            if records:
                self._insert_rows("event_uncertain", EVENT_UNCERTAIN_COLUMNS, records)
            if skipped:
                self._insert_rows("event_state", EVENT_STATE_COLUMNS, skipped)
            self._delete("event_inflight", "sync_id = ? and run_id <> ?", [sync_id, run_id])
        duplicated = sum(1 for record in records if record[4] == "possibly_duplicated")
        if records:
            log.warning(
                "event sync '%s': %d event(s) were in flight in run(s) %s without an acknowledgement on record: %s "
                "(cohort_sync_event_uncertain)", sync_id, len(records), ", ".join(runs),
                f"{len(records)} not sent again, possibly lost (at_most_once)" if at_most_once else
                f"{duplicated} sent again, possibly duplicated in Braze"
                + (f"; {len(records) - duplicated} no longer planned" if len(records) > duplicated else ""),
            )
        return duplicated, len(skipped), {record[1] for record in skipped}

    def _among(self, relation: str, sync_id: str, event_ids: list[str]) -> set[str]:
        """Which of the sync's `event_ids` the relation holds."""
        found: set[str] = set()
        for start in range(0, len(event_ids), 500):
            chunk = event_ids[start:start + 500]
            found |= {row[0] for row in self.engine.query(
                f"select distinct event_id from {relation} where sync_id = ? "
                f"and event_id in ({', '.join('?' for _ in chunk)})",
                [sync_id, *chunk],
            )}
        return found

    def event_watermark(self, sync_id: str, now: datetime) -> int | None:
        """The newest event time the ledger holds for the sync (ms since the
        epoch), but never after `now`: an event dated in the future (which
        Braze records as now) must not move the window past the events that
        are still to come."""
        value = self.engine.query(
            f"select max(event_time_ms) from {self.relations.event_state} where sync_id = ?", [sync_id],
        )[0][0]
        clock = now if now.tzinfo else now.replace(tzinfo=timezone.utc)  # the publisher's clock is naive UTC
        return min(int(value), int(clock.timestamp() * 1000)) if value is not None else None

    def events_delivered(self, sync_id: str) -> int:
        """Events Braze acknowledged for the sync before this run, as its last
        history row counts them (the ledger itself keeps only recent ids)."""
        rows = self.engine.query(
            f"select members_after from {self.relations.run_history} "
            "where cohort_id = ? and members_after is not null and status <> 'dry_run' "
            "order by finished_at desc limit 1",
            [sync_id],
        )
        return int(rows[0][0]) if rows else 0

    def uncertain_recorded(self, sync_id: str, run_id: str) -> dict[str, int]:
        """The sync's events the run recorded possibly duplicated and possibly
        lost (for the history row of a run that died before writing its own)."""
        recorded = dict(self.engine.query(
            f"select outcome, count(*) from {self.relations.event_uncertain} "
            "where sync_id = ? and recorded_by_run = ? group by outcome", [sync_id, run_id]))
        return {outcome: int(recorded.get(outcome, 0)) for outcome in ("possibly_duplicated", "possibly_lost")}

    def event_horizon(self, sync_id: str) -> int | None:
        """How far back the ledger keeps the sync's ids: the largest horizon a
        completed run recorded (None: it keeps them all)."""
        value = self.engine.query(
            f"select max(event_horizon) from {self.relations.run_history} where cohort_id = ?", [sync_id],
        )[0][0]
        return int(value) if value is not None else None

    def prune_events(self, sync: CohortPlan, watermark: int | None) -> int | None:
        """Keep the ledger compact. Returns this run's horizon, for its history
        row: the watermark less twice the lookback, which no later plan reads
        behind (event_window in macros/event_values.sql, even with a longer
        lookback). The ids are deleted only up to the horizon already on
        record, written by an earlier run: a run that dies before its own row
        is written must leave every id the next window can reach. Spark's
        plain tables take no deletes: there the ids stay (None)."""
        if watermark is None or not sync.lookback_minutes or not self.engine.transactional:
            return None
        recorded = self.event_horizon(sync.cohort_id)
        if recorded is not None:
            with self.engine.transaction():
                pruned = self._delete("event_state", "sync_id = ? and event_time_ms < ?", [sync.cohort_id, recorded])
            if pruned:
                log.info("event sync '%s': %d acknowledged id(s) older than the ledger keeps were forgotten",
                         sync.cohort_id, pruned)
        return watermark - 2 * sync.lookback_minutes * 60_000
