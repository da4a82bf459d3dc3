"""Schedules, the manual trigger and the import history, with real dbt and
the real publisher: two months of 15-minute scheduler ticks on a simulated
clock, judged from the history the publisher writes."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from html.parser import HTMLParser

import duckdb
import pytest

from cohort_sync.braze.client import BrazeClient
from cohort_sync.config import BrazeSettings
from cohort_sync.run.publish import PublishOptions, publish
from cohort_sync.warehouse.engines import DuckDBEngine
from cohort_sync.warehouse.ledger import Ledger
from cohort_sync.warehouse.target import relations_from_manifest
from tests.sync_project import failure_text

pytestmark = pytest.mark.dbt

START = datetime(2026, 1, 1)
TICK = timedelta(minutes=15)
TICKS = 4 * 24 * (31 + 28)  # January and February
TRIGGER = datetime(2026, 1, 20, 10, 5)  # a manual `--cohort frozen --now`, between ticks

SCHEDULES = {
    "each_run": "every_run",
    "hourly": {"every": "hourly", "at": ":30"},
    "daily_paris": {"every": "daily", "at": "06:00", "timezone": "Europe/Paris"},
    "weekly": {"every": "weekly", "at": "07:45", "weekday": "monday"},
    "monthly": {"every": "monthly", "at": "23:00", "day": 31},
    "frozen": "once",
}


def every(first: datetime, step: timedelta, until: datetime) -> list[datetime]:
    moments = []
    while first < until:
        moments.append(first)
        first += step
    return moments


END = START + TICKS * TICK
EXPECTED = {  # when each cohort publishes: the first tick (never synced), then its slots
    "each_run": every(START, TICK, END),
    "hourly": [START, *every(datetime(2026, 1, 1, 0, 30), timedelta(hours=1), END)],
    "daily_paris": [START, *every(datetime(2026, 1, 1, 5), timedelta(days=1), END)],  # 06:00 CET
    "weekly": [START, *every(datetime(2026, 1, 5, 7, 45), timedelta(weeks=1), END)],
    "monthly": [START, datetime(2026, 1, 31, 23), datetime(2026, 2, 28, 23)],
    "frozen": [START, TRIGGER],  # once, then only by hand
}


def test_two_months_of_ticks_fire_each_schedule_exactly_when_due(make_project, braze):
    project = make_project([
        {"model": "audience", "name": f"Cohort {cohort_id}", "cohort_id": cohort_id, "schedule": schedule}
        for cohort_id, schedule in SCHEDULES.items()
    ])
    project.set_audience("audience", {"external_id": ["u1", "u2"]})
    built = project.run(vars={"cohort_sync_publish_on_run": False})
    assert built.success, failure_text(built)

    relations = relations_from_manifest(project.root)
    client = BrazeClient(BrazeSettings.from_env())
    with duckdb.connect(str(project.warehouse.database)) as con:
        ledger = Ledger(DuckDBEngine(con, owns_connection=False), relations)
        for n in range(TICKS):
            now = START + n * TICK
            if now - TICK < TRIGGER <= now:
                manual = publish(ledger, client, entry_point="cli", clock=lambda: TRIGGER,
                                 options=PublishOptions(only=frozenset({"frozen"}), now=True))
                assert [(r.cohort_id, r.status) for r in manual.rows] == [("frozen", "success")]
            summary = publish(ledger, client, entry_point="cli", clock=lambda now=now: now)
            assert summary.ok, summary.rows
        rows = con.execute(
            f"select cohort_id, status, started_at from {relations.run_history} order by started_at"
        ).fetchall()
    client.close()

    fired: dict[str, list[datetime]] = defaultdict(list)
    not_due: dict[str, int] = defaultdict(int)
    for cohort_id, status, started_at in rows:
        if status == "success":
            fired[cohort_id].append(started_at)
        else:
            assert status == "not_due"
            not_due[cohort_id] += 1
    for cohort_id, expected in EXPECTED.items():
        assert fired[cohort_id] == expected, cohort_id
        fired_at_ticks = [moment for moment in expected if moment != TRIGGER]  # the trigger is no tick
        assert not_due[cohort_id] == TICKS - len(fired_at_ticks), cohort_id
    # Braze got each cohort once: later syncs found nothing left to send.
    assert {r["cohort_id"] for r in braze.requests() if r["endpoint"] == "users"} == set(SCHEDULES)
    assert len([r for r in braze.requests() if r["endpoint"] == "users"]) == len(SCHEDULES)

    # The import history model reads the same rows, for BI tools.
    history = project.dbt("run", "--select", "cohort_sync_import_history",
                          vars={"cohort_sync_publish_on_run": False})
    assert history.success, failure_text(history)
    counts = dict(project.query(
        "select status, count(*) from cohort_sync_import_history where cohort_id = 'weekly' group by 1"
    ))
    assert counts == {"success": 9, "not_due": TICKS - 9}


def test_manual_trigger_and_history_through_dbt_and_the_cli(make_project, braze):
    once = {"model": "audience", "name": "Once", "cohort_id": "once", "schedule": "once"}
    always = {"model": "audience", "name": "Always", "cohort_id": "always"}
    project = make_project([once, always])
    project.set_audience("audience", {"external_id": ["u1"]})

    # dbt runs as its own process, as a scheduler runs it (and leaves the DuckDB file free)
    assert project.cli("dbt", "run").returncode == 0  # both publish: first sync
    assert project.cli("dbt", "run").returncode == 0  # `once` is frozen now: not_due
    forced = project.cli("dbt", "run", "--vars", "{cohort_sync_publish_now: [once]}")  # the dbt trigger
    assert forced.returncode == 0, forced.stdout[-3000:]
    cli = project.cli("cohort-sync", "publish", "--cohort", "once", "--now")
    assert cli.returncode == 0, cli.stderr
    assert "once" in cli.stdout and "success" in cli.stdout
    unknown = project.cli("cohort-sync", "publish", "--cohort", "nope", "--now")
    assert unknown.returncode == 2 and "no cohort 'nope' in cohort_sync_cohorts" in unknown.stderr
    bad_var = project.cli("dbt", "run", "--vars", "{cohort_sync_publish_now: [nope]}")
    assert "var 'cohort_sync_publish_now' names 'nope', which is not declared" in bad_var.stdout

    assert project.cli("dbt", "run", "--select", "cohort_sync_import_history").returncode == 0
    history = project.query(
        "select cohort_id, status, entry_point from cohort_sync_import_history order by started_at, cohort_id"
    )
    assert history == [
        ("always", "success", "dbt"), ("once", "success", "dbt"),  # first run
        ("always", "success", "dbt"), ("once", "not_due", "dbt"),  # second run
        ("once", "success", "dbt"),  # the var: only the listed cohort runs
        ("once", "success", "cli"),  # --cohort once --now
    ]
    status = project.cli("cohort-sync", "status")
    assert "not_due" in status.stdout

    # The report: one chart per cohort (a point per successful sync), the recent runs.
    written = project.cli("cohort-sync", "report", "--output", str(project.root / "report.html"))
    assert written.returncode == 0, written.stderr
    page = ReportPage((project.root / "report.html").read_text())
    assert page.points == {"always": 2, "once": 3}
    assert page.sizes == {"always": ["1", "1"], "once": ["1", "1", "1"]}
    assert page.statuses == ["success", "success", "success", "not_due", "success", "success"][::-1]
    assert page.external == [] and page.scripts == 0


class ReportPage(HTMLParser):
    """What the report shows: points per cohort's chart, run rows, anything external."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.points: dict[str, int] = defaultdict(int)
        self.sizes: dict[str, list[str]] = defaultdict(list)
        self.statuses: list[str] = []
        self.external: list[str] = []
        self.scripts = 0
        self._cohort: str | None = None
        self._in: str | None = None
        self.feed(html)
        self.points, self.sizes = dict(self.points), dict(self.sizes)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.external += [v for k, v in attrs.items() if k in ("src", "href") and v]
        self.scripts += tag == "script"
        if tag == "section":
            self._cohort = attrs.get("data-cohort")
        elif tag == "circle" and self._cohort:
            self.points[self._cohort] += 1
        elif tag in ("title", "td"):
            self._in = tag if tag == "title" else attrs.get("class")

    def handle_data(self, data):
        if self._in == "title" and self._cohort:
            self.sizes[self._cohort].append(data.rsplit(": ", 1)[-1])
        elif self._in in ("success", "not_due", "failed", "blocked", "dry_run"):
            self.statuses.append(data)
        self._in = None
