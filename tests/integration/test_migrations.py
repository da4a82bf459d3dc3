"""State tables migrate themselves: a warehouse of the earliest released
schema (0.1.0 as its first landing, f02badd, left it: six state tables,
plain tables on Spark, no notification log, no schema record), with
published members and history, is brought to this version by `dbt run`
alone on DuckDB, PostgreSQL and Spark, or by any `cohort-sync` command;
every row is kept, and the next publish sends only the delta. Two other
0.1.0 states are upgraded too: the first commit's (no plan ids, no resent
counts), and a Spark warehouse on which a later 0.1.0's hook had created
an empty event log before refusing the plain table. And the schema of the
releases before it, 0.2.0, 0.3.0 and 0.4.0, each with rows in it, is
brought to this one on every engine.
"""

from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
import yaml

from cohort_sync import __version__
from cohort_sync.cli import main as cli_main
from cohort_sync.warehouse.migrations import STATE_SCHEMA_STEP
from tests.sync_project import BIN, REPO, SyncProject
from tests.warehouses import PostgresWarehouse, SparkWarehouse

pytestmark = pytest.mark.dbt

CHURN = {"model": "churn_audience", "name": "Churn risk"}
STEPS = [
    "0001_state_tables", "0002_plan_ids_and_resent_counts", "0003_spark_event_logs", "0004_notification_log",
    "0005_run_history_package_version", "0006_users_track_delivery", "0007_attribute_syncs", "0008_event_syncs",
]
STEPS_0_2_0 = STEPS[:5]
STEPS_0_3_0 = STEPS[:6]
STEPS_0_4_0 = STEPS[:7]
#: The state-table macros of 0.2.0 as released, installed as the cohort_sync dbt package.
PACKAGE_0_2_0 = Path(__file__).resolve().parents[1] / "fixtures" / "cohort_sync_0_2_0"
PACKAGE_0_3_0 = Path(__file__).resolve().parents[1] / "fixtures" / "cohort_sync_0_3_0"
PACKAGE_0_4_0 = Path(__file__).resolve().parents[1] / "fixtures" / "cohort_sync_0_4_0"
AT = datetime(2026, 11, 20, 6, 0, 0)
OLD_RUN = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f"

#: The state tables of 0.1.0, column by column ('s' string, 't' timestamp, 'b' bigint),
#: as its create_state_tables made them.
SCHEMA_0_1_0 = {
    "cohort_sync_published_state": "cohort_id s, member_key s, identifier_type s, external_id s, alias_name s, "
                                   "alias_label s, device_id s, run_id s, acknowledged_at t",
    "cohort_sync_published_cohorts": "cohort_id s, cohort_name s, created_at t, run_id s, acknowledged_at t",
    "cohort_sync_delivery_log": "run_id s, plan_id s, cohort_id s, request_kind s, batch_number b, added b, "
                                "removed b, http_status b, acknowledged_at t",
    "cohort_sync_run_history": "run_id s, cohort_id s, cohort_name s, entry_point s, started_at t, finished_at t, "
                               "status s, added b, removed b, requests b, retries b, resent_batches b, "
                               "members_after b, error s",
    "cohort_sync_inflight": "run_id s, cohort_id s, request_kind s, batch_number b, identifiers b, sent_at t",
    "cohort_sync_lock": "lock_name s, run_id s, owner s, entry_point s, acquired_at t, expires_at t",
}
TYPES = {
    "duckdb": {"s": "varchar", "t": "timestamp", "b": "bigint"},
    "postgres": {"s": "text", "t": "timestamp", "b": "bigint"},
    "spark": {"s": "string", "t": "timestamp", "b": "bigint"},
}
OLD_MEMBERS = [f"u{n:03d}" for n in range(100)]


def ids(start: int, stop: int) -> list[str]:
    return [f"u{n:03d}" for n in range(start, stop)]


def execute(warehouse, statements: list[str]) -> None:
    """Run DDL and inserts in the project's schema, as the old version would have."""
    if isinstance(warehouse, SparkWarehouse):
        session = warehouse.spark.session
        session.sql(f"create database if not exists {warehouse.schema}")
        for sql in statements:
            session.sql(sql.replace("{schema}", warehouse.schema))
    elif isinstance(warehouse, PostgresWarehouse):
        connection = warehouse.server.connect(warehouse.dbname)
        with connection.cursor() as cursor:
            cursor.execute(f"create schema if not exists {warehouse.schema}")
            for sql in statements:
                cursor.execute(sql.replace("{schema}", warehouse.schema))
        connection.close()
    else:
        with duckdb.connect(str(warehouse.database)) as con:
            for sql in statements:
                con.execute(sql.replace("{schema}", warehouse.schema))


def literal(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, datetime):
        return f"cast('{value:%Y-%m-%d %H:%M:%S}' as timestamp)"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def insert(table: str, rows: list[tuple]) -> str:
    values = ", ".join("(" + ", ".join(literal(v) for v in row) + ")" for row in rows)
    return f"insert into {{schema}}.{table} values {values}"


#: Columns the first commit's state tables lacked (added before the first landing).
FIRST_COMMIT_LACKS = {"cohort_sync_delivery_log": "plan_id", "cohort_sync_run_history": "resent_batches"}


def build_0_1_0_state(warehouse, flavour: str = "first_landing") -> None:
    """The state a 0.1.0 publisher left: 100 members published, the name known, one run in history.

    flavour: 'first_landing' (f02badd), 'first_commit' (without the columns of
    FIRST_COMMIT_LACKS), or 'spark_log_started' (first_landing, plus the empty
    event log that a later 0.1.0's hook created on Spark before refusing the table).
    """
    types = TYPES[warehouse.name]
    lacks = FIRST_COMMIT_LACKS if flavour == "first_commit" else {}
    statements = []
    for table, spec in SCHEMA_0_1_0.items():
        pairs = [c.split() for c in spec.split(", ") if c.split()[0] != lacks.get(table)]
        statements.append(f"create table {{schema}}.{table} ({', '.join(f'{n} {types[k]}' for n, k in pairs)})")
    if flavour == "spark_log_started":
        spec = SCHEMA_0_1_0["cohort_sync_published_state"] + ", is_live boolean, event_seq b"
        pairs = [c.split() for c in spec.split(", ")]
        statements.append("create table {schema}.cohort_sync_published_state_events ("
                          + ", ".join(f"{n} {types.get(k, k)}" for n, k in pairs) + ")")
    delivery = [(OLD_RUN, None, "churn_audience", "name", None, 0, 0, 201, AT),
                (OLD_RUN, "oldplan", "churn_audience", "users", 1, 100, 0, 201, AT)]
    history = [(OLD_RUN, "churn_audience", "Churn risk", "cli", AT, AT, "success", 100, 0, 2, 0, 0, 100, None)]
    if lacks:
        delivery = [row[:1] + row[2:] for row in delivery]
        history = [row[:11] + row[12:] for row in history]
    statements += [
        insert("cohort_sync_published_state", [
            ("churn_audience", f"external_id:{m}", "external_id", m, None, None, None, OLD_RUN, AT)
            for m in OLD_MEMBERS
        ]),
        insert("cohort_sync_published_cohorts", [("churn_audience", "Churn risk", AT, OLD_RUN, AT)]),
        insert("cohort_sync_delivery_log", delivery),
        insert("cohort_sync_run_history", history),
    ]
    execute(warehouse, statements)


def old_project(make_engine_project, flavour: str = "first_landing") -> SyncProject:
    project = make_engine_project([CHURN])
    build_0_1_0_state(project.warehouse, flavour)
    # Today's audience: three of the published members left, five joined.
    project.set_audience("churn_audience", {"external_id": ids(3, 105)})
    return project


def applied_steps(project: SyncProject) -> list[tuple[str, str]]:
    return sorted(project.query("select step, package_version from cohort_sync_schema_migrations"))


@pytest.mark.parametrize(("warehouse", "flavour"), [
    ("duckdb", "first_landing"), ("postgres", "first_landing"), ("spark", "first_landing"),
    ("duckdb", "first_commit"),  # the first commit ran on DuckDB only
    ("spark", "spark_log_started"),  # a state that existed on Spark only
], indirect=["warehouse"])
def test_dbt_run_alone_upgrades_the_earliest_schema_keeps_every_row_and_then_sends_only_the_delta(
    make_engine_project, braze, flavour
):
    project = old_project(make_engine_project, flavour)
    assert project.run().success, "dbt run on the 0.1.0 state"
    assert applied_steps(project) == [(step, __version__) for step in STEPS]  # dbt run alone migrated
    if not project.warehouse.publishes_in_dbt:
        assert cli_main(["publish", "--project-dir", str(project.root), "--profiles-dir", str(project.root)]) == 0
    # Every row kept; the old history row has the new column's default.
    history = project.history()
    # Spark adds a column without a default (rows before it read null); the others fill it in.
    old_version = None if project.warehouse.name == "spark" else "0.1.0"
    assert [(h["run_id"], h["status"], h["added"], h["package_version"]) for h in history] == [
        (OLD_RUN, "success", 100, old_version), (history[1]["run_id"], "success", 5, __version__),
    ]
    assert history[0]["resent_batches"] == 0
    ledger = project.ledger()
    try:  # what the publisher reads: the defaults, on every engine
        assert [(r.package_version, r.resent_batches) for r in ledger.history()][-1] == ("0.1.0", 0)
    finally:
        ledger.close()
    assert project.query("select count(*) from cohort_sync_delivery_log where run_id = ?", [OLD_RUN]) == [(2,)]
    assert project.query("select cohort_name, created_at from cohort_sync_published_cohorts") == [("Churn risk", AT)]
    # The next publish sent only the delta: no name call, one batch of 5 adds and 3 removes.
    [request] = [r for r in braze.requests() if "fault" not in r]
    assert (request["endpoint"], request["adds"], request["removes"]) == ("users", 5, 3)
    assert project.published("churn_audience") == {f"external_id:{m}" for m in ids(3, 105)}
    assert braze.cohorts()["churn_audience"]["user_ids"] == ids(100, 105)  # what this endpoint was sent
    if project.warehouse.name == "spark":
        # The mutable tables became event logs behind views, their rows kept.
        session = project.warehouse.spark.session
        schema = project.warehouse.schema
        views = {row.viewName for row in session.sql(f"show views in {schema}").collect()}
        tables = {row.tableName for row in session.sql(f"show tables in {schema}").collect()} - views
        logs = {"cohort_sync_published_state", "cohort_sync_published_cohorts", "cohort_sync_inflight",
                "cohort_sync_lock"}
        assert logs <= views and {f"{name}_events" for name in logs} <= tables
        assert project.query(
            "select count(*) from cohort_sync_published_state_events where run_id = ? and event_seq = 1", [OLD_RUN]
        ) == [(100,)]

    # A second dbt run finds nothing to migrate: no step applied again.
    recorded = project.query("select step, applied_at from cohort_sync_schema_migrations order by step")
    assert project.sync()
    assert project.query("select step, applied_at from cohort_sync_schema_migrations order by step") == recorded
    assert len(project.history()) == 3


def test_a_cohort_sync_command_before_dbt_run_migrates_the_state_first(make_engine_project, braze, capsys, caplog):
    project = old_project(make_engine_project)
    assert project.dbt("parse").success  # a manifest of this version; nothing built, nothing migrated
    code = cli_main(["status", "--project-dir", str(project.root), "--profiles-dir", str(project.root)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"migrated the state tables of target 'dev': {', '.join(STEPS)}" in caplog.text
    assert f"{OLD_RUN[:8]}  cli  churn_audience  success" in out  # the 0.1.0 history, read after the upgrade
    assert applied_steps(project) == [(step, __version__) for step in STEPS]
    # Then the scheduler's usual job: dbt run and publish send only the delta.
    assert project.sync()
    [request] = [r for r in braze.requests() if "fault" not in r]
    assert (request["endpoint"], request["adds"], request["removes"]) == ("users", 5, 3)


def test_two_migrations_that_start_at_once_both_succeed_and_keep_every_row(
    tmp_path, braze_env, postgres_server
):
    project = SyncProject(tmp_path / "project", [CHURN], lambda root: PostgresWarehouse(root, postgres_server))
    build_0_1_0_state(project.warehouse)
    project.set_audience("churn_audience", {"external_id": ids(3, 105)})
    assert project.dbt("parse").success
    command = project.command("dbt", "run-operation", "cohort_sync.migrate_state_tables")
    runs = [subprocess.Popen(command, cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert sum("state tables migrated" in output for output in outputs) == 1, outputs  # one did the work
    assert sorted({step for step, _ in applied_steps(project)}) == STEPS
    assert project.query("select count(*) from cohort_sync_published_state") == [(100,)]
    assert project.query("select package_version from cohort_sync_run_history") == [("0.1.0",)]


def test_the_python_side_expects_the_last_step_and_every_version_agrees():
    macros = (REPO / "macros" / "migrations.sql").read_text()
    names = [line.split("'")[3] for line in macros.splitlines() if line.strip().startswith("{'name':")]
    assert names == STEPS and names[-1] == STATE_SCHEMA_STEP
    assert f"{{{{ return('{__version__}') }}}}" in macros  # package_version()
    assert yaml.safe_load((REPO / "dbt_project.yml").read_text())["version"] == __version__
    assert f"## {__version__}" in (REPO / "CHANGELOG.md").read_text()
    assert Path(REPO / "pyproject.toml").read_text().count('version = {attr = "cohort_sync.__version__"}') == 1


def test_a_dbt_package_from_before_migrations_exits_2_saying_to_run_dbt_deps(tmp_path, braze_env):
    """The CLI is 0.2.0, the project still installs a 0.1.0 dbt package (no migrate macro)."""
    old = tmp_path / "cohort_sync_0_1_0"
    (old / "macros").mkdir(parents=True)
    (old / "dbt_project.yml").write_text(yaml.safe_dump({"name": "cohort_sync", "version": "0.1.0",
                                                        "config-version": 2, "macro-paths": ["macros"]}))
    root = tmp_path / "project"
    root.mkdir()
    (root / "dbt_project.yml").write_text(yaml.safe_dump({"name": "shop", "version": "1.0.0",
                                                         "config-version": 2, "profile": "shop"}))
    (root / "packages.yml").write_text(yaml.safe_dump({"packages": [{"local": str(old)}]}))
    (root / "profiles.yml").write_text(yaml.safe_dump({"shop": {"target": "dev", "outputs": {
        "dev": {"type": "duckdb", "path": str(root / "shop.duckdb")}}}}))

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / command[0]), *command[1:]], cwd=root, capture_output=True, text=True)

    assert run("dbt", "deps").returncode == 0 and run("dbt", "parse").returncode == 0
    status = run("cohort-sync", "status")
    assert status.returncode == 2, status.stderr
    assert "cohort_sync dbt package has no cohort_sync.migrate_state_tables" in status.stderr
    assert "Run `dbt deps`" in status.stderr and "Traceback" not in status.stderr


def install_package(project: SyncProject, path: Path) -> None:
    project.root.joinpath("packages.yml").write_text(yaml.safe_dump({"packages": [{"local": str(path)}]}))
    assert project.dbt("deps").success


@pytest.mark.parametrize("warehouse", ["duckdb", "postgres", "spark"], indirect=True)
def test_the_0_2_0_schema_with_rows_in_it_is_upgraded_by_dbt_run_and_then_sends_only_the_delta(
    make_engine_project, braze
):
    """0.2.0's own migration builds its schema over a warehouse with members,
    history and a notification; this version's `dbt run` adds step 0006: the
    members are held as partner cohort members, every row is kept."""
    project = old_project(make_engine_project)
    install_package(project, PACKAGE_0_2_0)
    assert project.dbt("run-operation", "cohort_sync.migrate_state_tables").success
    assert applied_steps(project) == [(step, "0.2.0") for step in STEPS_0_2_0]
    execute(project.warehouse, [insert("cohort_sync_notification_log", [
        (OLD_RUN, "churn_audience", "success", "email", "team@example.com", "sent", None, AT)])])

    install_package(project, REPO)
    assert project.sync(), "dbt run and publish on the 0.2.0 state"
    assert applied_steps(project) == sorted([(step, "0.2.0") for step in STEPS_0_2_0]
                                            + [(step, __version__) for step in STEPS[5:]])
    # Every row kept; the members read as partner cohort members.
    assert project.query(
        "select delivery, attribute_name, count(*) from cohort_sync_published_state group by delivery, attribute_name"
    ) == [("cohort_import", None, 102)]
    assert project.query("select count(*) from cohort_sync_notification_log") == [(1,)]
    history = project.history()
    assert [(h["run_id"], h["status"]) for h in history] == [(OLD_RUN, "success"), (history[1]["run_id"], "success")]
    ledger = project.ledger()
    try:  # the new counter reads 0 in rows from before it, on every engine
        assert [row.rejected for row in ledger.history()] == [0, 0]
    finally:
        ledger.close()
    [request] = [r for r in braze.requests() if "fault" not in r]
    assert (request["endpoint"], request["adds"], request["removes"]) == ("users", 5, 3)
    assert project.published("churn_audience") == {f"external_id:{m}" for m in ids(3, 105)}


# Spark runs the upgrade from the previous release (0.4.0, below), whose step 0008 and Spark event
# logs are those this one ends with; a Spark case here would cost two minutes for no other path.
@pytest.mark.parametrize("warehouse", ["duckdb", "postgres"], indirect=True)
def test_the_0_3_0_schema_with_rows_in_it_is_upgraded_by_dbt_run_and_an_attribute_sync_publishes(
    make_engine_project, braze
):
    """0.3.0's own migration builds its schema over a warehouse with members,
    history and a change Braze rejected; this version's `dbt run` adds step
    0007 (the attribute state, the history's data points and full resync,
    the rejected changes' value hash): every row is kept and reads its
    default, and a newly declared attribute sync publishes beside the cohort."""
    project = old_project(make_engine_project)
    install_package(project, PACKAGE_0_3_0)
    assert project.dbt("run-operation", "cohort_sync.migrate_state_tables").success
    assert applied_steps(project) == [(step, "0.3.0") for step in STEPS_0_3_0]
    execute(project.warehouse, [insert("cohort_sync_rejected_changes", [
        (OLD_RUN, "plan-0", "churn_audience", "attribute", "cohort_churn_audience", "external_id:u00001", True,
         "external_id", "u00001", None, None, None, None, None, 1, "invalid external_id", AT)])])

    install_package(project, REPO)
    braze.seed_profiles([{"external_id": m} for m in ids(3, 105)])
    project.declare([CHURN], cohort_sync_attribute_syncs=[{"model": "facts", "mode": "update"}])
    project.set_audience("facts", {"external_id": ids(3, 8), "plan": ["gold", "silver", "gold", "bronze", "gold"]})
    assert project.sync(), "dbt run and publish on the 0.3.0 state"
    assert applied_steps(project) == sorted([(step, "0.3.0") for step in STEPS_0_3_0]
                                            + [(step, __version__) for step in STEPS[6:]])
    assert project.query("select count(*) from cohort_sync_rejected_changes where value_hash is null") == [(1,)]
    ledger = project.ledger()
    try:  # the new counters read their defaults in rows from before them, on every engine
        old = [row for row in ledger.history() if row.run_id == OLD_RUN]
        assert [(row.data_points, row.full_resync) for row in old] == [(0, False)]
    finally:
        ledger.close()
    history = {row["cohort_id"]: row for row in project.history() if row["run_id"] != OLD_RUN}
    assert (history["churn_audience"]["added"], history["churn_audience"]["removed"]) == (5, 3)
    assert (history["facts"]["status"], history["facts"]["added"], history["facts"]["data_points"]) == ("success", 5, 5)
    assert project.query("select count(*) from cohort_sync_attribute_state where sync_id = 'facts'") == [(5,)]
    plans = {p["external_id"]: p["attributes"].get("plan") for p in braze.profiles() if p.get("external_id")}
    assert [plans[m] for m in ids(3, 8)] == ["gold", "silver", "gold", "bronze", "gold"]


ATTRIBUTE_RUN = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
AT_0_4_0 = datetime(2026, 11, 21, 6, 0, 0)
#: What 0.4.0 acknowledged for the attribute sync 'facts': each member's plan.
PLANS_0_4_0 = {"u003": "gold", "u004": "silver", "u005": "gold", "u006": "bronze", "u007": "gold"}


def insert_columns(table: str, columns: tuple[str, ...], rows: list[tuple]) -> str:
    return insert(table, rows).replace(" values ", f" ({', '.join(columns)}) values ", 1)


def value_hash(kind: str, value: str) -> str:
    """A value's hash as cohort_sync_attribute_rows computes it (md5 of kind and canonical text)."""
    return hashlib.md5(f"{kind}:{value}".encode()).hexdigest()


def build_0_4_0_attribute_sync(warehouse) -> None:
    """The rows a 0.4.0 publisher left for an attribute sync 'facts' beside the
    cohort: the values Braze acknowledged (on Spark, in the state's event log),
    a run in history, its delivery log entry, and a value Braze rejected."""
    state = [("facts", f"external_id:{m}", "plan", value_hash("string", v), ATTRIBUTE_RUN, AT_0_4_0)
             for m, v in PLANS_0_4_0.items()]
    state_columns = ("sync_id", "member_key", "attribute_name", "value_hash", "run_id", "acknowledged_at")
    if warehouse.name == "spark":
        state_table = "cohort_sync_attribute_state_events"
        state_columns += ("is_live", "event_seq")
        state = [(*row, True, n) for n, row in enumerate(state, start=1)]
    else:
        state_table = "cohort_sync_attribute_state"
    execute(warehouse, [
        insert_columns(state_table, state_columns, state),
        insert_columns("cohort_sync_run_history", (
            "run_id", "cohort_id", "cohort_name", "entry_point", "started_at", "finished_at", "status", "added",
            "removed", "requests", "retries", "resent_batches", "members_after", "error", "package_version",
            "rejected", "data_points", "full_resync",
        ), [(ATTRIBUTE_RUN, "facts", "facts", "cli", AT_0_4_0, AT_0_4_0, "partial", 5, 0, 1, 0, 0, 5,
             "Braze rejected 1 change(s)", "0.4.0", 1, 5, False)]),
        insert_columns("cohort_sync_delivery_log", (
            "run_id", "plan_id", "cohort_id", "request_kind", "batch_number", "added", "removed", "http_status",
            "acknowledged_at", "data_points",
        ), [(ATTRIBUTE_RUN, "plan-1", "facts", "profile", 1, 6, 0, 201, AT_0_4_0, 5)]),
        insert_columns("cohort_sync_rejected_changes", (
            "run_id", "plan_id", "cohort_id", "delivery", "attribute_name", "member_key", "should_remove",
            "identifier_type", "external_id", "batch_number", "error_type", "rejected_at", "value_hash",
        ), [(ATTRIBUTE_RUN, "plan-1", "facts", "profile", "plan", "external_id:u099", False, "external_id", "u099",
             1, "'plan' is not valid", AT_0_4_0, value_hash("string", "x" * 300))]),
    ])


@pytest.mark.parametrize("warehouse", ["duckdb", "postgres", "spark"], indirect=True)
def test_the_0_4_0_schema_with_rows_in_it_is_upgraded_by_dbt_run_and_then_sends_only_the_delta(
    make_engine_project, braze
):
    """0.4.0's own migration builds its schema over a warehouse with a
    cohort's members and an attribute sync's acknowledged values, history,
    delivery log and rejection; this version's `dbt run` adds step 0008 (the
    event state, in-flight and uncertain tables; the history's event
    watermark, late, possibly duplicated and possibly lost counts): every row
    is kept and reads its defaults, the next publish sends only what changed,
    and an event sync declared beside them publishes through the new tables."""
    project = old_project(make_engine_project)
    install_package(project, PACKAGE_0_4_0)
    assert project.dbt("run-operation", "cohort_sync.migrate_state_tables").success
    assert applied_steps(project) == [(step, "0.4.0") for step in STEPS_0_4_0]
    build_0_4_0_attribute_sync(project.warehouse)

    install_package(project, REPO)
    braze.seed_profiles([{"external_id": m} for m in ids(3, 105)])
    project.declare([CHURN], cohort_sync_attribute_syncs=[{"model": "facts", "mode": "update"}],
                    cohort_sync_event_syncs=[{"model": "app_events", "kind": "event", "event_id": "event_key",
                                              "name_column": "event_name", "time": "occurred_at",
                                              "backfill": True}])
    # Today: u004's plan changed, u008 is new, the other values are as acknowledged.
    project.set_audience("facts", {"external_id": ids(3, 9),
                                   "plan": ["gold", "platinum", "gold", "bronze", "gold", "silver"]})
    project.set_audience("app_events", {
        "event_key": ["e1", "e2", "e3"], "external_id": ["u003", "u004", "u005"],
        "event_name": ["app_open", "ecommerce.order_placed", "app_open"],
        "occurred_at": ["2026-11-22T06:00:00Z", "2026-11-22T07:00:00Z", "2026-11-22T08:00:00.250Z"],
    })
    assert project.sync(), "dbt run and publish on the 0.4.0 state"
    assert applied_steps(project) == sorted([(step, "0.4.0") for step in STEPS_0_4_0]
                                            + [("0008_event_syncs", __version__)])

    # Every old row kept.
    assert project.query(
        "select run_id, data_points from cohort_sync_delivery_log where run_id in (?, ?) order by run_id, batch_number",
        [ATTRIBUTE_RUN, OLD_RUN],
    ) == [(ATTRIBUTE_RUN, 5), (OLD_RUN, None), (OLD_RUN, None)]
    assert project.query("select member_key, value_hash from cohort_sync_rejected_changes") == [
        ("external_id:u099", value_hash("string", "x" * 300))]
    state = dict(project.query(
        "select member_key, run_id from cohort_sync_attribute_state where sync_id = 'facts'"))
    assert sorted(state) == [f"external_id:{m}" for m in ids(3, 9)]
    # the values acknowledged before the upgrade stand as they were: not sent again
    assert {key for key, run in state.items() if run == ATTRIBUTE_RUN} == {
        f"external_id:{m}" for m in ("u003", "u005", "u006", "u007")}
    history = {(h["run_id"], h["cohort_id"]): h for h in project.history()}
    old_rows = [history[(OLD_RUN, "churn_audience")], history[(ATTRIBUTE_RUN, "facts")]]
    assert [(h["status"], h["added"], h["error"]) for h in old_rows] == [
        ("success", 100, None), ("partial", 5, "Braze rejected 1 change(s)")]
    # The new history columns: the defaults where the engine fills them in (Spark adds
    # columns without one), and what the publisher reads on every engine.
    filled = (None, None, None, None) if project.warehouse.name == "spark" else (None, 0, 0, 0)
    new_columns = ("event_watermark", "late_events", "possibly_duplicated", "possibly_lost")
    assert [tuple(h[c] for c in new_columns) for h in old_rows] == [filled, filled]
    ledger = project.ledger()
    try:
        old = [row for row in ledger.history() if row.run_id in (OLD_RUN, ATTRIBUTE_RUN)]
        assert sorted((row.cohort_id, row.rejected, row.data_points, row.event_watermark, row.late_events,
                       row.possibly_duplicated, row.possibly_lost) for row in old) == [
            ("churn_audience", 0, 0, None, 0, 0, 0), ("facts", 1, 5, None, 0, 0, 0)]
    finally:
        ledger.close()

    # The next publish sent only the delta: the cohort's 5 adds and 3 removes, and
    # the attribute sync's changed and new values.
    [cohort_request] = [r for r in braze.requests() if r["endpoint"] == "users" and "fault" not in r]
    assert (cohort_request["adds"], cohort_request["removes"]) == (5, 3)
    plans = {p["external_id"]: p["attributes"].get("plan") for p in braze.profiles() if p.get("external_id")}
    assert {m: plan for m, plan in plans.items() if plan} == {"u004": "platinum", "u008": "silver"}
    new = {h["cohort_id"]: h for h in project.history() if h["run_id"] not in (OLD_RUN, ATTRIBUTE_RUN)}
    assert {c: (h["status"], h["added"], h["removed"]) for c, h in new.items()} == {
        "churn_audience": ("success", 5, 3), "facts": ("success", 2, 0), "app_events": ("success", 3, 0)}

    # The new tables exist and serve the event sync: its events sent once,
    # acknowledged in the ledger, nothing left in flight or uncertain.
    events = sorted((p["external_id"], e["name"], e["time"]) for p in braze.profiles() for e in p.get("events", []))
    assert events == [("u003", "app_open", "2026-11-22T06:00:00.000Z"),
                      ("u004", "ecommerce.order_placed", "2026-11-22T07:00:00.000Z"),
                      ("u005", "app_open", "2026-11-22T08:00:00.250Z")]
    assert project.query(
        "select event_id, outcome from cohort_sync_event_state where sync_id = 'app_events' order by event_id"
    ) == [("e1", "acknowledged"), ("e2", "acknowledged"), ("e3", "acknowledged")]
    assert project.query("select count(*) from cohort_sync_event_inflight") == [(0,)]
    assert project.query("select count(*) from cohort_sync_event_uncertain") == [(0,)]
    assert new["app_events"]["event_watermark"] == 1_795_334_400_250  # 2026-11-22T08:00:00.250Z
    assert (new["app_events"]["possibly_duplicated"], new["app_events"]["possibly_lost"]) == (0, 0)
