"""The publisher inside `dbt run` on DuckDB: called by the package's
cohort_sync_publish Python model, in the dbt process."""

from __future__ import annotations

import logging
from typing import Any

from ..ops.summary import format_summary
from ..warehouse.engines import DuckDBEngine
from ..warehouse.ledger import Ledger, Relations
from .publish import PublishOptions, publish_run

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = (
    "run_id", "cohort_id", "cohort_name", "status", "added", "removed",
    "requests", "retries", "resent_batches", "rejected", "members_after", "error",
)  # and rejected_rows, from cohort_sync_rejects


def as_bool(value: Any) -> bool:
    """dbt may render a config var as a bool or as its text."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def publish_in_dbt(
    session: Any, relations: Relations, *, dry_run: bool = False, full_resync: bool = False
) -> Any:
    """Publish, print the summary, and return it as a DuckDB relation.

    A failed or blocked cohort fails the model (so `dbt run` exits non-zero)
    after its history row is written. Removals are allowed per run with the
    var cohort_sync_allow_removals, applied in cohort_sync_cohorts.
    """
    options = PublishOptions.from_env(dry_run=dry_run, full_resync=full_resync)
    summary = publish_run(lambda: Ledger(DuckDBEngine(session, owns_connection=False), relations), entry_point="dbt", options=options)
    table = format_summary(summary)
    print(f"\ncohort_sync publish run {summary.run_id}{' (dry run)' if dry_run else ''}:\n{table}\n", flush=True)
    if not summary.ok:
        raise RuntimeError(
            f"cohort_sync: publish run {summary.run_id} did not complete"
            f"{': ' + summary.stopped if summary.stopped else ''}\n{table}"
        )
    columns = ", ".join(f"h.{name}" for name in SUMMARY_COLUMNS)
    return session.sql(
        f"""select {columns}, coalesce(r.rejected_rows, 0) as rejected_rows
            from {relations.run_history} as h
            left join (
                select cohort_id, sum(source_rows) as rejected_rows from {relations.rejects} group by cohort_id
            ) as r on r.cohort_id = h.cohort_id
            where h.run_id = '{summary.run_id}'
            order by h.cohort_id"""
    )
