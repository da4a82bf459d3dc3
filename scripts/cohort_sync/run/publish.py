"""The publish loop: one code path behind `dbt run` and `cohort-sync publish`,
for every kind of request (payload.py).

For each cohort of cohort_sync_cohorts to publish: record it as not_due
if its schedule does not call for this run (unless triggered by hand:
--cohort/--now, or var cohort_sync_publish_now); skip it if its guard
blocks it (unless allowed for this run); then send its partner cohort
import requests (the name call if Braze does not know the cohort under its
name, then its pending batches). The attribute changes of every cohort
published in the run go out after, together, as /users/track requests that
each carry one object per member with every cohort attribute of the member
that changed. Every request, of either kind, goes through _send: noted in
flight before it is sent, its acknowledgement recorded before the next
ones. A cohort that fails is recorded as failed and the others still run;
a 401 stops the run, and the cohorts it did not attempt are recorded as
skipped (or not_due). One run at a time holds the target's publisher lock.
Each cohort's history row is written with the notifications its outcome
owes; once every cohort is done, and before the lock is released, those
are sent (see notify.py).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ..braze.client import BrazeAuthError, BrazeClient, BrazeError
from ..braze.payload import PlannedRequest, name_request
from ..config import BrazeSettings, ConfigError
from ..ops.notify import NOTIFY_CATCH_UP, NotificationRecord, Notifier, Recipient, owed
from ..warehouse.ledger import CohortPlan, Ledger, rejected_counts, rejected_objects
from .history import SYNCED, HistoryRow

log = logging.getLogger(__name__)

ENTRY_POINTS = ("dbt", "cli")
LOCK_TTL_VAR = "COHORT_SYNC_LOCK_TTL_SECONDS"
CONCURRENCY_VAR = "COHORT_SYNC_CONCURRENCY"
TRACK_CONCURRENCY_VAR = "COHORT_SYNC_TRACK_CONCURRENCY"


def utc_now() -> datetime:
    """Naive UTC timestamp, as stored in the warehouse."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class PublishOptions:
    """What one run is asked to do beyond publishing the plan."""

    dry_run: bool = False
    full_resync: bool = False
    allow_removals: frozenset[str] = frozenset()
    only: frozenset[str] = frozenset()  # publish these cohorts only (all when empty)
    now: bool = False  # publish regardless of schedules (the manual trigger)
    lock_ttl_seconds: float = 900.0
    concurrency: int = 16  # partner cohort import requests in flight at once
    track_concurrency: int = 256  # /users/track requests in flight at once (see docs/decisions/0016, 0018)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options) -> PublishOptions:
        env = os.environ if environ is None else environ
        for name, key, kind in ((LOCK_TTL_VAR, "lock_ttl_seconds", float), (CONCURRENCY_VAR, "concurrency", int),
                                (TRACK_CONCURRENCY_VAR, "track_concurrency", int)):
            raw = env.get(name, "").strip()
            if not raw:
                continue
            try:
                value = kind(raw)
            except ValueError:
                value = 0
            if value <= 0:
                raise ConfigError(f"{name} must be a positive {'whole ' if kind is int else ''}number")
            options[key] = value
        if "concurrency" in options and not env.get(TRACK_CONCURRENCY_VAR, "").strip():
            options.setdefault("track_concurrency", options["concurrency"])  # one setting for both, unless split
        for key in ("allow_removals", "only"):
            if key in options:
                options[key] = frozenset(options[key] or ())
        return cls(**options)


@dataclass
class RunSummary:
    """What one publish run did, one history row per cohort."""

    run_id: str
    entry_point: str
    dry_run: bool
    rows: list[HistoryRow] = field(default_factory=list)
    stopped: str | None = None
    notifications: list[NotificationRecord] = field(default_factory=list)
    #: Rows this run recorded for a run that died before recording them (status 'interrupted').
    interrupted: list[HistoryRow] = field(default_factory=list)
    #: Audience rows never sent (cohort_sync_rejects), per cohort of the run: (reason, rows).
    rejects: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Exit status 0: no cohort failed, was blocked, or had changes Braze rejected (partial)."""
        return self.stopped is None and all(row.status in ("success", "dry_run", "not_due") for row in self.rows)

    @property
    def requests(self) -> int:
        return sum(row.requests for row in self.rows)


def publish_run(
    open_ledger: Callable[[], Ledger], *, entry_point: str, options: PublishOptions
) -> RunSummary:
    """Read the Braze settings, then open the warehouse, publish, and close both.

    The endpoint and every Braze variable that is set are validated first,
    before the warehouse is opened; relations older than this version
    (StaleSchemaError) stop the run before the lock is taken; then the
    settings the plan's deliveries need
    (the partner variables for cohort import, the REST API key for
    /users/track): a missing or malformed one stops the run before any
    request and before any warehouse write.
    """
    if not options.dry_run:
        BrazeSettings.from_env(families=())  # the endpoint, and every variable set, before the warehouse
    ledger = open_ledger()
    client = None
    try:
        ledger.check_schema()
        settings = None if options.dry_run else BrazeSettings.from_env(families=ledger.endpoint_families(options.only))
        client = BrazeClient(settings, pool_size=max(options.concurrency, options.track_concurrency)) if settings else None
        return publish(ledger, client, entry_point=entry_point, options=options)
    finally:
        if client:
            client.close()
        ledger.close()


def publish(
    ledger: Ledger,
    client: BrazeClient | None,
    *,
    entry_point: str,
    options: PublishOptions | None = None,
    run_id: str | None = None,
    clock: Callable[[], datetime] = utc_now,
    notifier: Notifier | None = None,
) -> RunSummary:
    """Publish every cohort's pending changes (or plan them, if dry_run), then notify."""
    options = options or PublishOptions()
    if entry_point not in ENTRY_POINTS:
        raise ValueError(f"entry_point must be one of {ENTRY_POINTS}")
    if client is None and not options.dry_run:
        raise ValueError("a Braze client is required unless dry_run")
    summary = RunSummary(
        run_id=run_id or uuid.uuid4().hex, entry_point=entry_point, dry_run=options.dry_run
    )
    lock = _RunLock(ledger, summary.run_id, options.lock_ttl_seconds, clock)
    not_due: list[HistoryRow] = []
    cohorts: list[CohortPlan] = []
    queue: list[CohortPlan] = []  # the cohorts this run considers, in order
    reached = 0  # how many of them it got to
    stopped_after: str | None = None  # what stopped the run before the end of the queue
    members: dict[str, int] | None = None
    deferred: list[_Deferred] = []  # cohorts whose attribute changes go out together, after the others
    tracking = False  # sending them

    def member_count(cohort: CohortPlan) -> int:
        if cohort.is_event_sync:  # events delivered so far (its ledger keeps only recent ids)
            return ledger.events_delivered(cohort.cohort_id)
        nonlocal members
        members = ledger.member_counts() if members is None else members
        return members.get(cohort.cohort_id, 0)

    if not options.dry_run:
        summary.interrupted = lock.acquire(entry_point)
    try:
        cohorts = ledger.cohorts()
        unknown = sorted(options.only - {cohort.cohort_id for cohort in cohorts})
        if unknown:
            raise ConfigError(
                f"no cohort {', '.join(map(repr, unknown))} in cohort_sync_cohorts "
                f"(known: {', '.join(c.cohort_id for c in cohorts) or 'none'})"
            )
        # The manual trigger: --cohort (and --now), or var cohort_sync_publish_now in the plan.
        only = options.only or {cohort.cohort_id for cohort in cohorts if cohort.publish_now}
        queue = [cohort for cohort in cohorts if not only or cohort.cohort_id in only]
        summary.rejects = {cohort_id: reasons for cohort_id, reasons in ledger.rejects().items()
                           if cohort_id in {cohort.cohort_id for cohort in queue}}
        tracked = ledger.track_cohorts({cohort.delivery for cohort in queue})
        for cohort in queue:
            reached += 1
            if cohort.action == "keep":
                log.warning(
                    "cohort '%s' is no longer declared: its Braze members are kept; to remove them, "
                    "list it in var cohort_sync_clear_cohorts",
                    cohort.cohort_id,
                )
                continue
            if not _due(cohort, options, clock):
                not_due.append(_not_due(cohort, summary, member_count(cohort), clock))
                continue
            if not _run_cohort(ledger, client, cohort, summary, options, lock, clock, deferred, tracked):
                stopped_after = f"a 401 on cohort '{cohort.cohort_id}'"
                break
        if deferred and not stopped_after:
            tracking = True
            if not _run_track(ledger, client, deferred, summary, options, lock, clock):
                stopped_after = "a 401 or 403 on /users/track"
    except BaseException:
        if tracking:
            stopped_after = stopped_after or "a publisher error during /users/track"
        elif reached:
            stopped_after = stopped_after or f"a publisher error on cohort '{queue[reached - 1].cohort_id}'"
        raise
    finally:
        for waiting in deferred:  # their /users/track requests were never sent
            if waiting.row.status == "running":
                waiting.row.status = "skipped" if stopped_after else "failed"
                waiting.row.error = (f"its attribute changes were not sent: the run stopped after {stopped_after}"
                                     if stopped_after else "publisher error (see the traceback)")
                try:
                    _finish(ledger, waiting.cohort, waiting.row, waiting.resends, options, clock)
                except Exception as exc:  # noqa: BLE001 - the lock must still be released below
                    log.error("cohort '%s': could not record its history row: %s", waiting.cohort.cohort_id, exc)
        skipped = []
        for cohort in queue[reached:] if stopped_after else ():
            if cohort.action == "keep":
                continue
            if not _due(cohort, options, clock):
                not_due.append(_not_due(cohort, summary, member_count(cohort), clock))
            else:
                skipped.append(_skipped(cohort, summary, member_count(cohort), clock, stopped_after))
        try:
            ledger.write_history(*not_due, *skipped)  # in one statement: most ticks of a frequent scheduler
        finally:
            if not options.dry_run:
                try:
                    # Before the lock is released: a run holding it knows that no
                    # other run is sending the notifications it finds queued.
                    if any(cohort.notify for cohort in cohorts):
                        summary.notifications = _notify(ledger, notifier or Notifier(), lock, clock)
                finally:
                    lock.release()
    return summary


def _queue_notifications(
    ledger: Ledger, cohort: CohortPlan, row: HistoryRow, clock: Callable[[], datetime]
) -> list[NotificationRecord]:
    """The notifications the cohort's outcome owes (see notify.owed), as
    pending records written with its history row. Never fails the sync."""
    if not cohort.notify or row.status not in ("success", "partial", "failed", "blocked"):
        return []
    try:
        streak = ledger.streak(cohort.cohort_id, cohort.last_success, row.run_id)
        now = clock()
        return [
            NotificationRecord(
                run_id=row.run_id, cohort_id=row.cohort_id, outcome=outcome, channel=recipient.channel,
                recipient=recipient.label, status="pending", error=None, sent_at=now,
            )
            for recipient, outcome in owed(cohort.notify, row, streak, now)
        ]
    except Exception as exc:  # noqa: BLE001 - the sync matters more than its notifications
        log.error("cohort '%s': could not decide whom to notify (%s); no notification for this run", row.cohort_id, exc)
        return []


def _notify(ledger: Ledger, notifier: Notifier, lock: _RunLock, clock: Callable[[], datetime]) -> list[NotificationRecord]:
    """Send the notifications queued and not sent yet: this run's, and those a
    run that died queued within NOTIFY_CATCH_UP. Each attempt is recorded
    (sent or failed) right after it, so a crash repeats at most the one
    notification it interrupted.

    Nothing here fails the run: the sync is recorded before, and a
    notification or its record that fails is logged.
    """
    try:
        queued = ledger.owed_notifications(clock() - NOTIFY_CATCH_UP)
    except Exception as exc:  # noqa: BLE001 - the sync is already recorded
        log.error("could not read the notifications to send from cohort_sync_notification_log: %s", exc)
        return []
    records = []
    for pending, row in queued:
        if row.run_id != lock.run_id:
            log.warning(
                "cohort '%s': sending the %s notification to %s that run %s queued and did not send (it died)",
                row.cohort_id, pending.outcome, pending.recipient, row.run_id,
            )
        record = notifier.deliver(Recipient.from_label(pending.channel, pending.recipient), row, pending.outcome, clock())
        records.append(record)
        try:
            ledger.write_notifications(record)
            lock.keep_alive()
        except Exception as exc:  # noqa: BLE001 - the sync is already recorded
            log.error("could not record a notification in cohort_sync_notification_log: %s", exc)
    return records


def _due(cohort: CohortPlan, options: PublishOptions, clock: Callable[[], datetime]) -> bool:
    """Whether the cohort publishes in this run: its schedule calls for it, or the manual trigger."""
    return options.now or cohort.publish_now or cohort.schedule.is_due(cohort.last_success, clock())


def _skipped(
    cohort: CohortPlan, summary: RunSummary, members: int, clock: Callable[[], datetime], stopped_after: str
) -> HistoryRow:
    """The history row of a cohort due in this run that the run stopped before attempting."""
    now = clock()
    row = HistoryRow(
        run_id=summary.run_id, cohort_id=cohort.cohort_id, cohort_name=cohort.cohort_name,
        entry_point=summary.entry_point, started_at=now, finished_at=now, status="skipped",
        members_after=members, error=f"not attempted: the run stopped after {stopped_after}",
    )
    summary.rows.append(row)
    log.error("cohort '%s' skipped: %s", cohort.cohort_id, row.error)
    return row


def _not_due(cohort: CohortPlan, summary: RunSummary, members: int, clock: Callable[[], datetime]) -> HistoryRow:
    """The history row of a cohort whose schedule did not call for this run."""
    now = clock()
    row = HistoryRow(
        run_id=summary.run_id, cohort_id=cohort.cohort_id, cohort_name=cohort.cohort_name,
        entry_point=summary.entry_point, started_at=now, finished_at=now, status="not_due",
        members_after=members,
    )
    summary.rows.append(row)
    log.info(
        "cohort '%s' is not due (%s; last synced %s)", cohort.cohort_id, cohort.schedule.describe(),
        f"{cohort.last_success:%Y-%m-%d %H:%M} UTC" if cohort.last_success else "never",
    )
    return row


@dataclass
class _Deferred:
    """A cohort (or attribute sync) whose changes wait for the run's /users/track requests."""

    cohort: CohortPlan
    row: HistoryRow
    resends: _Resends
    resync: bool = False  # its full resync goes out after the plan's requests


def _full_resync(cohort: CohortPlan, options: PublishOptions, clock: Callable[[], datetime]) -> bool:
    """Whether the run re-sends everything of the cohort: --full-resync, or its full_resync_every is due."""
    return options.full_resync or cohort.resync_due(clock())


def _run_cohort(ledger, client, cohort, summary, options, lock, clock, deferred, tracked) -> bool:
    """Publish (or plan) one cohort and write its history row; False stops the run.

    A cohort with attribute changes (or an attribute cohort in a full
    resync) sends its partner cohort import requests, if any, here, and is
    deferred: its row is written once the run's /users/track requests are
    done. So is an attribute sync with changes or a full resync.
    """
    row = HistoryRow(
        run_id=summary.run_id,
        cohort_id=cohort.cohort_id,
        cohort_name=cohort.cohort_name,
        entry_point=summary.entry_point,
        started_at=clock(),
    )
    summary.rows.append(row)
    allowed = cohort.cohort_id in options.allow_removals
    blocked = cohort.guard_status == "blocked" and not allowed
    resends: _Resends | None = None
    waits = False
    # an event sync never re-sends: Braze would count every event again
    row.full_resync = resync = _full_resync(cohort, options, clock) and not blocked and not cohort.is_event_sync
    resync_points = ledger.resync_data_points(cohort) if resync else 0
    if resync and cohort.max_data_points is not None and not allowed \
            and cohort.planned_data_points + resync_points > cohort.max_data_points:
        # The plan still goes out; the resync waits until it fits, or is allowed once.
        row.error = (
            f"full resync not done: with it the run would write {cohort.planned_data_points + resync_points} data "
            f"points ({cohort.planned_data_points} planned, {resync_points} for the resync), more than the sync's "
            f"max_data_points of {cohort.max_data_points}; to do it anyway, run `cohort-sync publish "
            f"--allow-removals {cohort.cohort_id}` or set var cohort_sync_allow_removals: ['{cohort.cohort_id}']")
        log.warning("attribute sync '%s': %s", cohort.cohort_id, row.error)
        row.full_resync = resync = False
        resync_points = 0
    try:
        if options.dry_run:
            _plan_cohort(ledger, cohort, row, blocked, resync_points)
        elif blocked:
            row.status = "blocked"
            row.error = (
                f"{cohort.guard_reason}; not published. To publish it anyway, run "
                f"`cohort-sync publish --allow-removals {cohort.cohort_id}` or set var "
                f"cohort_sync_allow_removals: ['{cohort.cohort_id}'] for one run"
            )
            log.error("cohort '%s' blocked: %s", cohort.cohort_id, row.error)
        else:
            resends = _Resends(ledger.unconfirmed(cohort.cohort_id, row.run_id))
            if cohort.is_sync or cohort.is_event_sync:
                row.status = "success"
            else:
                _publish_cohort(ledger, client, cohort, row, options, lock, clock, resends, resync)
            if cohort.cohort_id in tracked or (resync and cohort.tracked):
                row.status, waits = "running", True
                deferred.append(_Deferred(cohort, row, resends, resync and cohort.tracked))
    except BrazeAuthError as exc:
        row.status, row.error = "failed", str(exc)
        summary.stopped = str(exc)
    except (BrazeError, ValueError) as exc:
        row.status, row.error = "failed", str(exc)
        log.error("cohort '%s' failed: %s", cohort.cohort_id, exc)
    finally:
        if not waits:
            _finish(ledger, cohort, row, resends, options, clock)
    if summary.stopped:
        log.error("run stopped: %s", summary.stopped)
        return False
    return True


def _finish(ledger, cohort, row, resends, options, clock) -> None:
    """Write the cohort's history row, with the notifications it owes."""
    if cohort.is_event_sync:
        _finish_events(ledger, cohort, row, options, clock)
    row.finished_at = clock()
    row.members_after = ledger.members(cohort.cohort_id) if not cohort.is_event_sync else (
        ledger.events_delivered(cohort.cohort_id) + (0 if options.dry_run else row.added))
    if row.status == "running":  # an unexpected error: record it, then let it propagate
        row.status, row.error = "failed", "publisher error (see the traceback)"
    # The notes of earlier runs are settled with the row: once the cohort is
    # in step with the plan, all of them; else those this run sent again.
    ledger.record_outcome(
        row, forget=resends.again if resends else None,
        forget_all=resends is not None and row.status in SYNCED,
        notifications=[] if options.dry_run else _queue_notifications(ledger, cohort, row, clock),
    )


def _finish_events(ledger: Ledger, cohort: CohortPlan, row: HistoryRow, options: PublishOptions,
                   clock: Callable[[], datetime]) -> None:
    """An event sync's row: its late events, and once it synced, its watermark
    (the next window starts a lookback behind it) and the ledger pruned up to
    its horizon (no window reaches behind it)."""
    row.late_events = cohort.late_events
    if cohort.late_events:
        note = (f"{cohort.late_events} event(s) older than the sync's window (a lookback of "
                f"{cohort.lookback_minutes} minutes behind its newest event) were never acknowledged: reported, "
                "not sent (late_outside_window in cohort_sync_rejects)")
        log.warning("event sync '%s': %s", cohort.cohort_id, note)
        row.error = f"{row.error}; {note}" if row.error else note
    if row.status in SYNCED and not options.dry_run:
        row.event_watermark = ledger.event_watermark(cohort.cohort_id, clock())
        row.event_horizon = ledger.prune_events(cohort, row.event_watermark)


def _run_track(ledger, client, deferred: list[_Deferred], summary, options, lock, clock) -> bool:
    """Send the attribute changes of the deferred cohorts, together, through
    /users/track, then write their history rows; False stops the run (a 401
    or 403).

    The batches of members who only leave go first, every one acknowledged
    before the others start (see `phased` in cohort_sync_changes). A cohort
    whose changes Braze rejected in part is 'partial' (the rest is
    delivered). When a request fails, the cohorts with changes still to send
    (or whose full resync did not finish) fail; the others succeed. An
    unexpected error fails every cohort still waiting, then propagates.
    """
    stream = _Stream({d.cohort.cohort_id: d.row for d in deferred}, {d.cohort.cohort_id: d.resends for d in deferred})
    plan_id, sync_plan_id, event_plan_id = ledger.plan_id(), ledger.plan_id(syncs=True), ledger.plan_id(events=True)
    cohort_ids = {d.cohort.cohort_id for d in deferred if not d.cohort.is_sync and not d.cohort.is_event_sync}
    syncs = [d.cohort for d in deferred if d.cohort.is_sync]
    event_syncs = [d for d in deferred if d.cohort.is_event_sync]
    resyncing = {d.cohort.cohort_id for d in deferred if d.resync}
    failure: BaseException | None = None
    unexpected = False
    try:
        for leaving in (True, False):
            _send(ledger, client, stream, plan_id, ledger.pending_track_requests(plan_id, cohort_ids, leaving),
                  options.track_concurrency, lock, clock)
        for leaving in (True, False):  # as for cohorts: batches that only unset go first (see `phased`)
            _send(ledger, client, stream, sync_plan_id, ledger.pending_profile_requests(sync_plan_id, syncs, leaving),
                  options.track_concurrency, lock, clock)
        skip = {}
        for waiting in event_syncs:  # what a crash left uncertain, settled before anything is sent again
            duplicated, lost, skip[waiting.cohort.cohort_id] = ledger.resolve_uncertain_events(
                waiting.cohort, summary.run_id, clock())
            waiting.row.possibly_duplicated += duplicated
            waiting.row.possibly_lost += lost
        _send(ledger, client, stream, event_plan_id,
              ledger.pending_event_requests(event_plan_id, [d.cohort for d in event_syncs], skip),
              options.track_concurrency, lock, clock)
        for waiting in deferred:
            if waiting.cohort.cohort_id in resyncing:
                cohort = waiting.cohort
                requests = (ledger.profile_resync_requests(cohort, summary.run_id) if cohort.is_sync
                            else ledger.track_resync_requests(cohort, summary.run_id))
                _send(ledger, client, stream, None, requests, options.track_concurrency, lock, clock)
                resyncing.discard(cohort.cohort_id)
                log.info("%s '%s': full resync sent %s again", "attribute sync" if cohort.is_sync else "cohort",
                         cohort.cohort_id, "every current value" if cohort.is_sync else "its attribute to every current member")
    except BrazeAuthError as exc:
        failure, summary.stopped = exc, str(exc)
    except (BrazeError, ValueError) as exc:
        failure = exc
        log.error("/users/track failed: %s", exc)
    except BaseException as exc:
        failure, unexpected = exc, True
    for waiting in deferred:
        row = waiting.row
        if unexpected:
            row.status, row.error = "failed", f"publisher error during /users/track (see the traceback): {failure}"
        elif failure is not None and (summary.stopped or row.cohort_id in resyncing
                                      or sum(ledger.pending_of(waiting.cohort)[:2])):
            row.status, row.error = "failed", f"/users/track: {failure}"
        else:
            row.status = "partial" if row.rejected else "success"
            row.error = stream.rejections(row.cohort_id) or row.error  # or why its full resync waits
            if row.rejected:
                log.error("cohort '%s': %s", row.cohort_id, row.error)
        _finish(ledger, waiting.cohort, row, waiting.resends, options, clock)
    if unexpected:
        raise failure
    if summary.stopped:
        log.error("run stopped: %s", summary.stopped)
        return False
    return True


def _plan_cohort(ledger: Ledger, cohort: CohortPlan, row: HistoryRow, blocked: bool, resync_points: int) -> None:
    """The dry run's row: what the plan would send, and its data points (with
    those of the full resync the run would do)."""
    adds, removes, batches, points = ledger.pending_of(cohort)
    row.added, row.removed, row.data_points = adds, removes, points + resync_points
    row.requests = batches + (1 if cohort.needs_name else 0)
    row.status = "dry_run"
    if blocked:
        row.error = f"would be blocked: {cohort.guard_reason}"
    elif row.full_resync:
        row.error = f"would also re-send everything Braze holds (full resync): {resync_points} data point(s)"
    if cohort.is_event_sync:
        log.info("dry run: event sync '%s' would send %d %s(s) in %d request(s): %d data point(s)%s",
                 cohort.cohort_id, adds, cohort.event_kind or "event", row.requests, row.data_points,
                 f"; {cohort.late_events} late event(s) outside its window would not be sent" if cohort.late_events else "")
        return
    if cohort.is_sync:
        log.info("dry run: attribute sync '%s' would write %d value(s) and unset %d in %d request(s): %d data point(s)%s",
                 cohort.cohort_id, adds, removes, row.requests, row.data_points,
                 " (with a full resync)" if row.full_resync else "")
        return
    log.info(
        "dry run: cohort '%s' would send %d add(s) and %d remove(s) in %d request(s): %d data point(s)%s%s",
        cohort.cohort_id, adds, removes, row.requests, row.data_points,
        " (including the name call)" if cohort.needs_name else "",
        " (with a full resync)" if row.full_resync else "",
    )


class _NotSent(Exception):
    """A request whose turn came after the run stopped sending: it was never sent
    (`noted`: after its in-flight note was written, which must then be cleared)."""

    def __init__(self, noted: bool = False) -> None:
        super().__init__()
        self.noted = noted


@dataclass
class _Resends:
    """A cohort's requests that earlier runs may have delivered (sent, and no
    acknowledgement on record), by (kind, batch number); and those this run
    sent again: acknowledged, or failed in a way Braze may have applied."""

    earlier: set[tuple[str, int | None]]
    again: set[tuple[str, int | None]] = field(default_factory=set)

    def sent(self, request: PlannedRequest, row: HistoryRow) -> None:
        key = (request.kind, request.batch_number)
        if key in self.earlier and key not in self.again:
            self.again.add(key)
            row.resent_batches += 1


@dataclass
class _Stream:
    """The cohorts one _send serves: each one's history row (its counters) and
    resends; a request counts for every cohort it carries."""

    rows: dict[str, HistoryRow]
    resends: dict[str, _Resends]
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)  # Braze's rejections per cohort

    @property
    def run_id(self) -> str:
        return next(iter(self.rows.values())).run_id

    def failed(self, request: PlannedRequest, exc: BrazeError) -> None:
        for cohort_id in request.cohort_ids:
            row = self.rows[cohort_id]
            row.requests += 1
            row.retries += exc.attempts - 1
            if exc.maybe_applied:
                self.resends[cohort_id].sent(request, row)

    def acknowledged(self, request: PlannedRequest, ack) -> None:
        objects = rejected_objects(request, ack)
        rejected = rejected_counts(request, objects)
        points = request.data_points(objects)
        for index, reason in objects.items():
            for cohort_id in {change[0] for change in request.objects[index].changes}:
                tally = self.reasons.setdefault(cohort_id, {})
                tally[reason] = tally.get(reason, 0) + 1
        for part in request.parts:
            row = self.rows[part.cohort_id]
            rejected_adds, rejected_removes = rejected.get(part.cohort_id, (0, 0))
            row.requests += 1
            row.retries += ack.retries
            row.added += part.adds - rejected_adds
            row.removed += part.removes - rejected_removes
            row.rejected += rejected_adds + rejected_removes
            row.data_points += points.get(part.cohort_id, 0)
            if request.kind == "event" and ack.maybe_duplicated:  # an earlier attempt may have been applied too
                row.possibly_duplicated += part.adds - rejected_adds
            self.resends[part.cohort_id].sent(request, row)

    def rejections(self, cohort_id: str) -> str | None:
        """Braze's reasons for the cohort's rejected changes, for its history row."""
        tally = self.reasons.get(cohort_id)
        if not tally:
            return None
        reasons = ", ".join(f"{reason} ({count})" for reason, count in sorted(tally.items()))
        return (f"Braze rejected {self.rows[cohort_id].rejected} change(s), not delivered and not retried "
                f"(cohort_sync_rejected_changes): {reasons}")


def _publish_cohort(
    ledger: Ledger,
    client: BrazeClient,
    cohort: CohortPlan,
    row: HistoryRow,
    options: PublishOptions,
    lock: _RunLock,
    clock: Callable[[], datetime],
    resends: _Resends,
    resync: bool,
) -> None:
    """The cohort's partner cohort import requests: its name call, its batches, and its full resync."""
    run_id, cohort_id = row.run_id, cohort.cohort_id
    if resends.earlier:
        log.warning(
            "cohort '%s': %d request(s) of an earlier run were sent without an acknowledgement on record; "
            "those still pending are sent again (harmless) and counted in resent_batches",
            cohort_id, len(resends.earlier),
        )

    if cohort.needs_name:
        created_at = cohort.braze_created_at or clock()
        request = name_request(cohort_id)
        try:
            ack = client.name_cohort(
                cohort_id, cohort.cohort_name, created_at.replace(tzinfo=timezone.utc),
                ready=lambda: ledger.note_sending(run_id, [request], clock()),
            )
        except BrazeError as exc:
            row.requests += 1
            row.retries += exc.attempts - 1
            if exc.maybe_applied:
                resends.sent(request, row)
            else:  # Braze did not apply it: no later run counts it as sent again
                ledger.clear_notes(run_id, [request])
            raise
        ledger.record_name(run_id, cohort, created_at, ack.status, clock())
        row.requests += 1
        row.retries += ack.retries
        resends.sent(request, row)
        log.info("cohort '%s' named '%s' in Braze", cohort_id, cohort.cohort_name)

    stream = _Stream({cohort_id: row}, {cohort_id: resends})
    plan_id = ledger.plan_id()
    _send(ledger, client, stream, plan_id, ledger.pending_requests(plan_id, cohort_id),
          options.concurrency, lock, clock)
    if resync and cohort.delivery == "cohort_import":
        _send(ledger, client, stream, None, ledger.resync_requests(cohort_id, run_id),
              options.concurrency, lock, clock)
        log.info("cohort '%s': full resync re-sent every current member", cohort_id)
    row.status = "success"


def _transmit(client: BrazeClient, request: PlannedRequest, ready: Callable[[], None]):
    """Send one request to its endpoint (in a worker thread)."""
    if request.track:
        return client.track(request.body, detail=request.describe(), ready=ready,
                            retry_uncertain=not request.at_most_once)
    part = request.parts[0]
    return client.update_cohort(
        part.cohort_id, request.body, batch=request.batch_number, adds=request.adds,
        removes=request.removes, kind=request.kind, ready=ready,
    )


class _Gate:
    """Holds a worker's request between the rate limiter's go-ahead and its
    sending, until the main thread has noted it in flight (or cancelled it).
    The go-ahead is reported on the run's queue of events."""

    def __init__(self, events: queue.SimpleQueue, sequence: int, request: PlannedRequest) -> None:
        self.sequence = sequence  # the request's place in the plan's order
        self.request = request
        self.reported = False  # (main thread) its go-ahead was taken from the queue
        self._events = events
        self._go = threading.Event()
        self._halt = threading.Event()
        self._cancelled = False
        self._delay = 0.0

    def __call__(self) -> None:  # in the worker thread, just before the first attempt
        self._events.put((_READY, self))
        self._go.wait()
        if self._cancelled:
            raise _NotSent
        if self._delay and self._halt.wait(self._delay):
            raise _NotSent(noted=True)  # the run stopped sending while it waited for its departure

    def open(self, cancel: bool = False, delay: float = 0.0) -> None:
        """Let the request go (after `delay` seconds), or (cancel) return without sending it; once."""
        if not self._go.is_set():
            self._cancelled, self._delay = cancel, delay
            self._go.set()

    def halt(self) -> None:
        """Cancel the request if it is still waiting for its departure (let go, not yet sent)."""
        self._halt.set()


_READY, _DONE = "ready", "done"  # what a worker reports: its request let go by the rate limiter; finished
_RECORDED = "recorded"  # what the recorder thread reports: a recording is done


def _send(
    ledger: Ledger,
    client: BrazeClient,
    stream: _Stream,
    plan_id: str | None,
    requests: Iterable[PlannedRequest],
    concurrency: int,
    lock: _RunLock,
    clock: Callable[[], datetime],
) -> None:
    """Send requests of any kind with up to `concurrency` in flight.

    Worker threads only talk HTTP. Each waits for the rate limiter, then
    for this thread to note its request in flight, then sends it: a note is
    written only for a request about to leave, so a run that dies leaves
    notes only for requests that may have reached Braze. This thread reads
    the plan and, once per cycle, records in one transaction the requests
    Braze acknowledged since the last cycle, clears the notes of those that
    failed before Braze could apply them (a 4xx, no connection), and notes
    the ones about to be sent; after the first event of a cycle it waits
    for more up to half the time the last recording took. Where the engine
    has a second connection (DuckDB), a recorder thread does that recording
    instead, one at a time, while this thread goes on (decision 0019). Workers report
    both events (let go, finished) on one queue, so an event costs this
    thread the same at any concurrency (/users/track runs 256 at once). A
    member has one change per plan, so batches of a cohort can go in any
    order. When a request fails, no other is sent; those in flight are
    awaited and those acknowledged are recorded before the error propagates.
    """
    upcoming = iter(requests)
    tasks: dict[Future, tuple[PlannedRequest, _Gate]] = {}
    events: queue.SimpleQueue = queue.SimpleQueue()
    held: list[_Gate] = []  # let go by the rate limiter, waiting at their gate
    finished: list[Future] = []
    acknowledged: list[tuple[PlannedRequest, object]] = []
    abandoned: list[PlannedRequest] = []  # failed, and Braze did not apply them
    failure: BaseException | None = None
    sequence = 0

    def take(timeout: float | None = 0.0) -> bool:
        """Move the workers' reports into `held` and `finished`, waiting up to
        `timeout` seconds (None: until one comes) for the first; False if none came."""
        try:
            item = events.get(timeout=timeout) if timeout != 0.0 else events.get_nowait()
        except queue.Empty:
            return False
        while True:
            kind, subject = item
            if kind == _READY:
                subject.reported = True
                held.append(subject)
            elif kind == _DONE:
                finished.append(subject)
            try:
                item = events.get_nowait()
            except queue.Empty:
                return True

    def take_until(done: Callable[[], bool], seconds: float) -> None:
        """Take reports until `done()` or `seconds` have passed."""
        deadline = time.perf_counter() + seconds
        while not done():
            left = deadline - time.perf_counter()
            if left <= 0 or not take(left):
                return

    def collect(futures: Iterable[Future]) -> None:
        nonlocal failure
        for future in futures:
            request, _ = tasks.pop(future)
            try:
                ack = future.result()
            except _NotSent as exc:
                if exc.noted:
                    abandoned.append(request)
                continue
            except BrazeError as exc:  # raised once the others are recorded
                failure = failure or exc
                stream.failed(request, exc)
                if not exc.maybe_applied:
                    abandoned.append(request)
                continue
            except BaseException as exc:  # noqa: BLE001 - raised once the others are recorded
                failure = failure or exc
                continue
            try:
                request = ledger.with_rejected_changes(plan_id, request, ack)  # (read only when Braze rejected some)
                stream.acknowledged(request, ack)
            except Exception as exc:  # noqa: BLE001 - an answer that does not fit the request, or a plan
                # that changed: nothing of it is recorded, the others are, then the error propagates
                failure = failure or exc
                continue
            acknowledged.append((request, ack))

    settle_seconds = 0.0

    def settle(sending: list[PlannedRequest]) -> None:
        nonlocal settle_seconds
        if acknowledged or sending or abandoned:
            started = time.perf_counter()
            ledger.settle(stream.run_id, plan_id, acknowledged, sending, clock(), abandoned)
            settle_seconds = time.perf_counter() - started
            acknowledged.clear()
            abandoned.clear()

    departures: dict[str, float] = {}  # per endpoint family: when the next request may leave (perf_counter)

    def let_go(leaving: list[_Gate]) -> None:
        # Requests held together (while a recording ran) leave in batch order,
        # spaced as the rate limiter spaced them, and after those let go before
        # them: however long each was held, no more leave in a window than it allows.
        now = time.perf_counter()
        for gate in leaving:
            family = gate.request.family
            at = max(now, departures.get(family, now))
            gate.open(delay=at - now)
            departures[family] = at + client.spacing_for(family)

    # Where the engine has a second connection (DuckDB), a thread of its own
    # records each cycle while this one reads the plan and collects answers:
    # one recording at a time, the requests it notes let go once it commits.
    recorder = ledger.recorder()
    recording: Future | None = None
    recorded: tuple[list, list, list[_Gate]] = ([], [], [])  # what the recording holds: acks, abandoned, noted

    def start_recording(leaving: list[_Gate]) -> None:
        nonlocal recording, recorded
        parts = (list(acknowledged), list(abandoned), leaving)
        recording = recording_pool.submit(recorder.settle, stream.run_id, plan_id, parts[0],
                                          [gate.request for gate in leaving], clock(), parts[1])
        recorded = parts
        acknowledged.clear()
        abandoned.clear()
        recording.add_done_callback(lambda future: events.put((_RECORDED, future)))

    def finish_recording(cancel: bool = False) -> None:
        """Once the recording is done: let go the requests it noted, or, after a
        failure (or `cancel`), keep them (their notes are cleared by the next
        recording); a recording that failed leaves its acknowledgements to the
        next (the final one, on this thread, raises its error if it fails again)."""
        nonlocal recording, failure
        if recording is None:
            return
        wait([recording])
        done, (acks, dropped, leaving) = recording, recorded
        recording = None
        try:
            done.result()
        except BaseException as exc:  # noqa: BLE001 - raised once the others are recorded
            failure = failure or exc
            acknowledged[:0], abandoned[:0] = acks, dropped
            cancel = True
        if cancel or failure is not None:
            for gate in leaving:
                gate.open(cancel=True)
            abandoned.extend(gate.request for gate in leaving)
        else:
            let_go(leaving)

    def report_done(future: Future) -> None:
        events.put((_DONE, future))

    with (ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="cohort-sync") as pool,
          ThreadPoolExecutor(max_workers=1, thread_name_prefix="cohort-sync-recorder") as recording_pool):

        def refill() -> list[tuple[Future, _Gate]]:
            """Start requests (they wait for the rate limiter) up to `concurrency`."""
            nonlocal sequence
            started = []
            while failure is None and len(tasks) < concurrency:
                request = next(upcoming, None)
                if request is None:
                    break
                sequence += 1
                gate = _Gate(events, sequence, request)
                future = pool.submit(_transmit, client, request, gate)
                tasks[future] = (request, gate)
                future.add_done_callback(report_done)
                started.append((future, gate))
            return started

        def in_flight() -> int:
            """Requests neither finished nor held at their gate (reports taken so far)."""
            return len(tasks) - len(finished) - len(held)

        def ready() -> list[_Gate]:
            """The requests let go by the rate limiter, in plan order (none once one failed:
            those still waiting for their departure are halted too)."""
            nonlocal halted
            gates = sorted(held, key=lambda gate: gate.sequence)
            held.clear()
            if failure is not None:
                for gate in gates:
                    gate.open(cancel=True)
                if not halted:
                    for _, gate in tasks.values():
                        gate.halt()
                    halted = True
                return []
            return gates

        def collect_finished() -> None:
            collect(sorted(finished, key=lambda future: tasks[future][1].sequence))
            finished.clear()

        halted = False

        try:
            while True:
                refill()
                if not tasks and recording is None:
                    break
                take()
                if recorder is not None:
                    if recording is not None and recording.done():
                        collect_finished()  # (a failure among them stops what the recording noted)
                        finish_recording()
                        continue  # (which may have been the last thing to wait for)
                    if not finished and (recording is not None or not held):
                        take(None)  # an answer, a go-ahead, or the recording done
                    collect_finished()
                    refill()
                    if recording is None:
                        leaving = ready()
                        if leaving or acknowledged or abandoned:
                            start_recording(leaving)
                    lock.keep_alive()
                    continue
                if not held and not finished:
                    take(None)  # the first event of the cycle
                    if failure is None:
                        # Where recording is slow (Spark: seconds per cycle), let the
                        # other requests finish for a while, so one cycle records many.
                        take_until(lambda: not in_flight(), settle_seconds / 2)
                collect_finished()
                started = refill()
                if started and failure is None:
                    # And let the requests started in their place reach the rate
                    # limiter's go-ahead, so one recording also notes them.
                    take_until(lambda started=started: all(gate.reported or future.done() for future, gate in started),
                               settle_seconds / 2)
                    collect_finished()  # (a failure among those that finished meanwhile stops the others)
                leaving = ready()
                settle([gate.request for gate in leaving])
                let_go(leaving)
                lock.keep_alive()
        finally:
            for _, gate in tasks.values():
                gate.open(cancel=True)  # those not let go yet are not sent
                gate.halt()  # nor those waiting for their departure
            try:
                finish_recording(cancel=True)
                wait(tasks)
                collect(list(tasks))
                settle([])
            finally:
                if recorder is not None:
                    recorder.engine.close()
    if failure is not None:
        raise failure


class _RunLock:
    """The target's publisher lock for one run, kept alive while it works."""

    def __init__(self, ledger, run_id, ttl_seconds, clock) -> None:
        self._ledger = ledger
        self.run_id = run_id
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock
        self._refreshed: datetime | None = None

    def acquire(self, entry_point: str) -> list[HistoryRow]:
        """Take the lock; the history rows recorded for a run that died holding it."""
        now = self._clock()
        interrupted = self._ledger.acquire_lock(self.run_id, entry_point, now, now + self._ttl)
        self._refreshed = now
        for row in interrupted:
            log.warning(
                "run %s died before recording cohort '%s'; recorded it as interrupted, from what Braze "
                "acknowledged (%d request(s), %d added, %d removed)",
                row.run_id, row.cohort_id, row.requests, row.added, row.removed,
            )
        return interrupted

    def keep_alive(self) -> None:
        now = self._clock()
        if self._refreshed is not None and now - self._refreshed > self._ttl / 3:
            self._ledger.refresh_lock(self.run_id, now + self._ttl)
            self._refreshed = now

    def release(self) -> None:
        if self._refreshed is not None:
            self._ledger.release_lock(self.run_id)
