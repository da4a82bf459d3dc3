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
    # the ledger keeps the ids from the horizon the first run recorded (its watermark less two days) on: the
    # second run's own horizon is pruned to by the next run, once its history row is on record
    [(held, oldest)] = project.query("select count(*), min(event_time_ms) from cohort_sync_event_state")
    assert oldest >= (newest - timedelta(days=2)).timestamp() * 1000
    assert held == 49 + 24
    [(horizon,)] = project.query("select max(event_horizon) from cohort_sync_run_history")
    assert horizon == ((newest + timedelta(hours=24)) - timedelta(days=2)).timestamp() * 1000


def events_model(project, rows: list[tuple[str, str, datetime]]) -> None:
    project.warehouse.load("raw_events", {
        "event_id": [e for e, _, _ in rows], "external_id": [u for _, u, _ in rows],
        "occurred_at": [t.strftime("%Y-%m-%d %H:%M:%S") for _, _, t in rows]}, {})
    (project.root / "models" / "app_events.sql").write_text(
        "select event_id, external_id, cast(occurred_at as timestamp) as occurred_at "
        f"from {project.warehouse.raw_schema}.raw_events\n")


def held_events(braze) -> list[str]:
    return sorted(e["properties"]["event_id"] for p in braze.profiles() for e in p["events"])


def test_a_raised_lookback_never_replans_forgotten_ids_and_a_future_event_does_not_stall_the_window(
        make_project, braze):
    """The ledger forgets ids behind its horizon (the watermark less twice the
    lookback): a lookback raised later must not reach behind it, or those
    events would go to Braze twice. An event dated in the future (Braze
    records it as now) must not move the watermark past the clock, or every
    event still to come would be late."""
    project = make_project()
    declaration = {"model": "app_events", "kind": "event", "event_id": "event_id", "name": "app_open",
                   "time": "occurred_at", "properties": ["event_id"], "backfill": True, "lookback": "1d",
                   "create_users": True}
    project.declare([], cohort_sync_event_syncs=[declaration])
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rows = [(f"e{n}", f"u{n % 9}", now - timedelta(hours=2 + n)) for n in range(240)]  # ten days, hourly
    events_model(project, rows)
    assert project.run().success
    assert len(held_events(braze)) == 240
    # a lookback of five days: the window may not reach behind the ledger's horizon (the first run's
    # watermark, now - 2 h, less two days), which the second run prunes the ledger to
    project.declare([], cohort_sync_event_syncs=[{**declaration, "lookback": "5d"}])
    assert project.run().success
    assert project.query("select count(*) from cohort_sync_event_changes") == [(0,)]
    assert len(held_events(braze)) == 240 == len(set(held_events(braze)))
    [(held,)] = project.query("select count(*) from cohort_sync_event_state")
    assert held == 49  # the rest is forgotten

    # an event dated next year, then one that happened half an hour ago (late, within the lookback)
    rows.append(("future", "u1", now + timedelta(days=200)))
    events_model(project, rows)
    assert project.run().success
    [(watermark,)] = project.query(
        "select event_watermark from cohort_sync_run_history where cohort_id = 'app_events' "
        "order by finished_at desc limit 1")
    assert watermark <= datetime.now(timezone.utc).timestamp() * 1000  # the clock, not next year
    rows.append(("recent", "u2", now - timedelta(minutes=30)))
    events_model(project, rows)
    assert project.run().success
    assert held_events(braze).count("recent") == 1 and held_events(braze).count("future") == 1
    assert len(held_events(braze)) == 242
