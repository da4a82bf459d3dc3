"""One row of cohort_sync_run_history: what a run recorded for a cohort.

The ledger writes and reads these rows; notifications, the summary and the
report are about them. Kept apart from both, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from .. import __version__


@dataclass
class HistoryRow:
    """One row of cohort_sync_run_history: one cohort in one run.

    status: success, partial (delivered, except the changes Braze rejected:
    see rejected), failed, blocked, not_due, dry_run, skipped (the run
    stopped, after a 401 on another cohort, before attempting it), or
    interrupted (the run died before recording the cohort; the next run
    that takes the lock records it, once, from what the dead run left).

    The counters, for the cohort in this run:

    - requests: distinct requests sent (the name call included), each once
      however many attempts it took, whatever became of it: acknowledged,
      refused, or given up after retries. A request that never left (the
      run stopped first) is not one. dry_run: the requests that would be
      sent. interrupted: those acknowledged, plus those in flight when the
      run died.
    - retries: attempts beyond each request's first (interrupted: 0, unknown).
    - resent_batches: requests this run sent again that an earlier run may
      have delivered: that run sent them and no acknowledgement of it is
      on record (it died first, or the request failed in a way Braze may
      have applied: a 5xx, a timeout, a connection lost after sending),
      counted when this run's request is acknowledged or fails in such a
      way too. A request refused with a 4xx, or that never connected, did
      not reach Braze's data and is never counted later; one logged in the
      delivery log was acknowledged and is not either. The same batch
      counts once per run that sends it again. (Batches are matched by
      number: exact while the plan is the one the earlier run published.)
    - added, removed: identifiers of requests Braze acknowledged in this
      run, as the delivery log holds them (dry_run: that would be sent).
    - rejected: changes Braze rejected (objects a /users/track response
      named in its errors), recorded in cohort_sync_rejected_changes.
    - members_after: the cohort's members in the published state after the run
      (an attribute sync's: users with acknowledged values).
    - data_points: what Braze bills for what it took in the run: each
      attribute value written or unset (subscription states are free), each
      membership change (dry_run: what the plan would consume).
    - full_resync: the run re-sent every current member or value
      (--full-resync, or the declaration's full_resync_every).

    An attribute sync's row counts values: added are values written (new or
    changed), removed values unset. An event sync's counts events: added
    are events Braze acknowledged, members_after the events its ledger
    holds, and:

    - event_watermark: the newest event time acknowledged (milliseconds
      since the epoch, UTC), once the sync synced; its next window starts a
      lookback behind the largest on record;
    - event_horizon: how far back the ledger keeps acknowledged ids after
      the run (the watermark less twice the lookback; null on Spark, which
      keeps them all): no later window reaches behind it;
    - late_events: events older than the window and never acknowledged:
      reported (cohort_sync_rejects, late_outside_window), never sent;
    - possibly_duplicated: events this run sent whose earlier sending, or an
      earlier attempt, may have been applied (cohort_sync_event_uncertain);
    - possibly_lost: events left unsent under at_most_once because an
      earlier run's request carrying them may or may not have been applied.
    """

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
    rejected: int = 0
    members_after: int | None = None
    error: str | None = None
    package_version: str = __version__  # the cohort-sync that wrote the row ('0.1.0' before 0.2.0)
    data_points: int = 0
    full_resync: bool = False
    event_watermark: int | None = None
    late_events: int = 0
    possibly_duplicated: int = 0
    possibly_lost: int = 0
    event_horizon: int | None = None


HISTORY_COLUMNS = tuple(f.name for f in fields(HistoryRow))
#: What a history column added by a migration reads as in rows from before it
#: (Spark adds columns without a default; the other engines fill it in).
HISTORY_DEFAULTS = {"package_version": "'0.1.0'", "resent_batches": "0", "rejected": "0", "data_points": "0",
                    "full_resync": "false", "late_events": "0", "possibly_duplicated": "0", "possibly_lost": "0"}
#: Statuses of a cohort that synced (its schedule counts it; partial: Braze
#: rejected some changes, which need their data fixed, not a retry).
SYNCED = ("success", "partial")
