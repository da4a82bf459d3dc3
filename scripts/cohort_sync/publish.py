"""The publish loop: one code path behind `dbt run` and `cohort-sync publish`.

For each declared cohort: call the name endpoint if Braze does not know the
cohort under its declared name, then send the cohort's pending batches,
recording each acknowledged request before sending the next. A cohort that
fails is recorded as failed and the others still run; a 401 stops the run.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .client import BrazeAuthError, BrazeClient, BrazeError
from .ledger import CohortPlan, DuckDBLedger, HistoryRow
from .payload import build_cohort_changes, count_changes

log = logging.getLogger(__name__)

ENTRY_POINTS = ("dbt", "cli")


def utc_now() -> datetime:
    """Naive UTC timestamp, as stored in the warehouse."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass
class RunSummary:
    """What one publish run did, one history row per cohort."""

    run_id: str
    entry_point: str
    dry_run: bool
    rows: list[HistoryRow] = field(default_factory=list)
    stopped: str | None = None

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(row.status in ("success", "dry_run") for row in self.rows)

    @property
    def requests(self) -> int:
        return sum(row.requests for row in self.rows)


def publish(
    ledger: DuckDBLedger,
    client: BrazeClient | None,
    *,
    entry_point: str,
    dry_run: bool = False,
    run_id: str | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> RunSummary:
    """Publish every declared cohort's pending changes (or plan them, if dry_run)."""
    if entry_point not in ENTRY_POINTS:
        raise ValueError(f"entry_point must be one of {ENTRY_POINTS}")
    if client is None and not dry_run:
        raise ValueError("a Braze client is required unless dry_run")
    summary = RunSummary(run_id=run_id or uuid.uuid4().hex, entry_point=entry_point, dry_run=dry_run)

    for cohort in ledger.cohorts():
        row = HistoryRow(
            run_id=summary.run_id,
            cohort_id=cohort.cohort_id,
            cohort_name=cohort.cohort_name,
            entry_point=entry_point,
            started_at=clock(),
        )
        summary.rows.append(row)
        try:
            if dry_run:
                _plan_cohort(ledger, cohort, row)
            else:
                _publish_cohort(ledger, client, cohort, row, summary.run_id, clock)
        except BrazeAuthError as exc:
            row.status, row.error = "failed", str(exc)
            summary.stopped = str(exc)
        except (BrazeError, ValueError) as exc:
            row.status, row.error = "failed", str(exc)
            log.error("cohort '%s' failed: %s", cohort.cohort_id, exc)
        finally:
            row.finished_at = clock()
            row.members_after = ledger.members(cohort.cohort_id)
            if row.status == "running":  # an unexpected error: record it, then let it propagate
                row.status, row.error = "failed", "publisher error (see the traceback)"
            ledger.write_history(row)
        if summary.stopped:
            log.error("run stopped: %s", summary.stopped)
            break
    return summary


def _plan_cohort(ledger: DuckDBLedger, cohort: CohortPlan, row: HistoryRow) -> None:
    adds, removes, batches = ledger.pending_summary(cohort.cohort_id)
    row.added, row.removed = adds, removes
    row.requests = batches + (1 if cohort.needs_name else 0)
    row.status = "dry_run"
    log.info(
        "dry run: cohort '%s' would send %d add(s) and %d remove(s) in %d request(s)%s",
        cohort.cohort_id, adds, removes, row.requests,
        " (including the name call)" if cohort.needs_name else "",
    )


def _publish_cohort(
    ledger: DuckDBLedger,
    client: BrazeClient,
    cohort: CohortPlan,
    row: HistoryRow,
    run_id: str,
    clock: Callable[[], datetime],
) -> None:
    if cohort.needs_name:
        created_at = cohort.braze_created_at or clock()
        ack = client.name_cohort(cohort.cohort_id, cohort.cohort_name, created_at.replace(tzinfo=timezone.utc))
        ledger.record_name(run_id, cohort, created_at, ack.status, clock())
        row.requests += 1
        row.retries += ack.retries
        log.info("cohort '%s' named '%s' in Braze", cohort.cohort_id, cohort.cohort_name)

    for batch in ledger.pending_batches(cohort.cohort_id):
        ack = client.update_cohort(cohort.cohort_id, build_cohort_changes(batch))
        ledger.record_batch(run_id, cohort.cohort_id, batch, ack.status, clock())
        adds, removes = count_changes(batch)
        row.added += adds
        row.removed += removes
        row.requests += 1
        row.retries += ack.retries
        log.info(
            "cohort '%s' batch %d acknowledged: %d add(s), %d remove(s)",
            cohort.cohort_id, batch[0].batch_number, adds, removes,
        )
    row.status = "success"
