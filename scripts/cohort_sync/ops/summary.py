"""Plain-text tables of history rows, for the CLI and the dbt entry point."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..run.history import HistoryRow
from .notify import NotificationRecord

if TYPE_CHECKING:
    from ..run.publish import RunSummary

_COLUMNS = (
    ("cohort", lambda r: r.cohort_id),
    ("status", lambda r: r.status),
    ("added", lambda r: r.added),
    ("removed", lambda r: r.removed),
    ("requests", lambda r: r.requests),
    ("retries", lambda r: r.retries),
    ("resent", lambda r: r.resent_batches),
    ("rejected", lambda r: r.rejected),
    ("data pts", lambda r: r.data_points),
    ("members", lambda r: "" if r.members_after is None else r.members_after),
    ("error", lambda r: first_line(r.error)[:60] + ("..." if len(first_line(r.error)) > 60 else "")),
)
_HISTORY_COLUMNS = (
    ("started (UTC)", lambda r: r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else ""),
    ("run", lambda r: r.run_id[:8]),
    ("via", lambda r: r.entry_point),
) + _COLUMNS


def format_table(rows: Sequence[HistoryRow], *, history: bool = False) -> str:
    """A fixed-width table, one line per row; numbers right-aligned."""
    columns = _HISTORY_COLUMNS if history else _COLUMNS
    cells = [[str(get(row)) for _, get in columns] for row in rows]
    widths = [
        max([len(title)] + [len(line[i]) for line in cells]) for i, (title, _) in enumerate(columns)
    ]
    numeric = {"added", "removed", "requests", "retries", "resent", "rejected", "data pts", "members"}

    def render(values: Sequence[str]) -> str:
        parts = [
            value.rjust(width) if title in numeric else value.ljust(width)
            for value, width, (title, _) in zip(values, widths, columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [render([title for title, _ in columns]), render(["-" * w for w in widths])]
    lines += [render(line) for line in cells]
    if not rows:
        lines.append("(no cohorts)")
    return "\n".join(lines)


def first_line(text: str | None) -> str:
    """The first line of an error, for tables (empty for none)."""
    return text.splitlines()[0] if text else ""


def format_errors(rows: Sequence[HistoryRow]) -> str:
    """The full error of every cohort that has one, one paragraph each."""
    return "\n".join(f"{row.cohort_id} ({row.status}): {row.error}" for row in rows if row.error)


def format_uncertain(rows: Sequence[HistoryRow]) -> str:
    """Per event sync, the events whose delivery is uncertain: where their ids are."""
    lines = [
        f"{row.cohort_id}: " + " and ".join(part for part in (
            f"{row.possibly_duplicated:,} event(s) possibly duplicated in Braze" if row.possibly_duplicated else "",
            f"{row.possibly_lost:,} event(s) possibly lost (at_most_once: not sent again)" if row.possibly_lost else "",
        ) if part) + "; their ids are in cohort_sync_event_uncertain"
        for row in rows if row.possibly_duplicated or row.possibly_lost
    ]
    return "\n".join(lines)


def format_notifications(
    records: Sequence[NotificationRecord], *, history: bool = False, run_id: str | None = None
) -> str:
    """How many notifications went out, and why each failed one did not
    (with history, across runs: each failure with its time and run, and those
    still queued). With run_id: those sent for an earlier run that died
    before sending them."""
    failed = [record for record in records if record.status == "failed"]
    pending = [record for record in records if record.status == "pending"]
    lines = [
        f"notifications{' in these runs' if history else ''}: {len(records) - len(failed) - len(pending)} sent, "
        f"{len(failed)} failed" + (f", {len(pending)} queued, not sent yet" if pending else "")
        + (" (recorded in cohort_sync_notification_log)" if failed else "")
    ]
    owed = sorted({record.run_id[:8] for record in records if run_id and record.run_id != run_id})
    if owed:
        count = sum(1 for record in records if record.run_id != run_id)
        lines.append(f"  {count} of them owed by run {', '.join(owed)}, which died before sending them")
    lines += [
        "  " + (f"{r.sent_at:%Y-%m-%d %H:%M:%S} {r.run_id[:8]} " if history else "")
        + f"{r.cohort_id} -> {r.recipient} ({r.channel}): {r.error}"
        for r in failed
    ]
    lines += [
        f"  {r.sent_at:%Y-%m-%d %H:%M:%S} {r.run_id[:8]} {r.cohort_id} -> {r.recipient} ({r.channel}): "
        f"{r.outcome}, queued; the next run sends it"
        for r in pending
    ]
    return "\n".join(lines)


def format_summary(summary: RunSummary) -> str:
    """What a publish run prints (the CLI and the dbt model): see format_run."""
    return format_run(summary.rows, summary.notifications, summary.interrupted, summary.rejects, summary.run_id)


def format_rejects(rejects: Mapping[str, Sequence[tuple[str, int]]]) -> str:
    """The audience rows never sent, per cohort and reason."""
    lines = ["rejected audience rows, attribute values and events (never sent; each is in cohort_sync_rejects with "
             "its values):"]
    for cohort_id, reasons in sorted(rejects.items()):
        total = sum(count for _, count in reasons)
        lines.append(f"  {cohort_id}: {total:,} ({', '.join(f'{reason} {count:,}' for reason, count in reasons)})")
    return "\n".join(lines)


def format_run(
    rows: Sequence[HistoryRow],
    notifications: Sequence[NotificationRecord] = (),
    interrupted: Sequence[HistoryRow] = (),
    rejects: Mapping[str, Sequence[tuple[str, int]]] | None = None,
    run_id: str | None = None,
) -> str:
    """The summary table, followed by each cohort's full error, the audience rows
    rejected, the notifications sent, and the rows recorded for a run that died
    before recording them."""
    errors = format_errors(rows)
    uncertain = format_uncertain(rows)
    parts = [format_table(rows)]
    if errors:
        parts.append(errors)
    if uncertain:
        parts.append(uncertain)
    if rejects:
        parts.append(format_rejects(rejects))
    if notifications:
        parts.append(format_notifications(notifications, run_id=run_id))
    if interrupted:
        runs = ", ".join(sorted({row.run_id[:8] for row in interrupted}))
        parts.append(
            f"recorded for run {runs}, which died before recording these cohorts (from what Braze "
            f"acknowledged and what was in flight):\n{format_table(interrupted, history=True)}"
        )
    return "\n\n".join(parts)
