"""An event sync's run reads what is new, not the model's history (DuckDB).

After a sync, the next plan reads the model only from twice the lookback
behind the newest acknowledged event (decision 0015): the bound is a
literal condition on the time column in the compiled model, which the
engine pushes down to the model's storage, and the rows read grow with the
new events whatever the history holds.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

pytestmark = pytest.mark.dbt

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def write_events(project, count: int, newest: datetime, step: timedelta) -> None:
    """`count` events, the newest at `newest`, each `step` before the next."""
    times = [newest - step * n for n in range(count)]
    project.warehouse.load("raw_events", {
        "event_id": [f"e{n}" for n in range(count)],
        "external_id": [f"u{n % 40}" for n in range(count)],
        "occurred_at": [t.strftime("%Y-%m-%d %H:%M:%S") for t in times],
    }, {})
    (project.root / "models" / "app_events.sql").write_text(
        "select event_id, external_id, cast(occurred_at as timestamp) as occurred_at "
        f"from {project.warehouse.raw_schema}.raw_events\n")


def test_the_next_run_reads_only_the_window_and_its_late_band(make_project, braze):
    project = make_project()
    project.declare([], cohort_sync_event_syncs=[{
        "model": "app_events", "kind": "event", "event_id": "event_id", "name": "app_open",
        "time": "occurred_at", "backfill": True, "lookback": "1d", "create_users": True,
        "max_events": 1_000_000}])
    newest = START + timedelta(days=200)
    write_events(project, 4000, newest, timedelta(hours=1))  # about 166 days of history
    assert project.run().success
    assert project.query("select count(distinct event_id) from cohort_sync_event_rows") == [(4000,)]
    assert sum(len(p["events"]) for p in braze.profiles()) == 4000

    # 24 new events in the next day; the history stays where it is
    later = [(f"n{n}", f"u{n}", newest + timedelta(hours=n + 1)) for n in range(24)]
    project.warehouse.load("raw_new", {
        "event_id": [e for e, _, _ in later], "external_id": [u for _, u, _ in later],
        "occurred_at": [t.strftime("%Y-%m-%d %H:%M:%S") for _, _, t in later]}, {})
    (project.root / "models" / "app_events.sql").write_text(
        "select event_id, external_id, cast(occurred_at as timestamp) as occurred_at "
        f"from {project.warehouse.raw_schema}.raw_events union all "
        "select event_id, external_id, cast(occurred_at as timestamp) as occurred_at "
        f"from {project.warehouse.raw_schema}.raw_new\n")
    assert project.run().success
    # the window (a day behind the first run's watermark, `newest`) and its late band (another day): the 49
    # hourly events from newest - 48 h to newest, then the 24 new ones; not the 166 days before
    [(read,)] = project.query("select count(distinct event_id) from cohort_sync_event_rows")
    assert read == 49 + 24
    compiled = next((project.root / "target" / "compiled").rglob("cohort_sync_event_rows.sql")).read_text()
    assert "\"occurred_at\" >= cast('" in compiled  # the bound the engine pushes down to the model's storage
    assert sum(len(p["events"]) for p in braze.profiles()) == 4024
    # the ledger keeps the ids of the window and its late band only
    [(held, oldest)] = project.query("select count(*), min(event_time_ms) from cohort_sync_event_state")
    watermark = newest + timedelta(hours=24)
    assert oldest >= (watermark - timedelta(days=2)).timestamp() * 1000
    assert held == 25 + 24  # from the new watermark less 2 days (newest - 24 h): 25 old hourly events, and the new
