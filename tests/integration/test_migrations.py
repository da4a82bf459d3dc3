"""State tables migrate themselves: a warehouse of the earliest released
schema (0.1.0 as its first landing, f02badd, left it: six state tables,
plain tables on Spark, no notification log, no schema record), with
published members and history, is brought to this version by `dbt run`
alone on DuckDB, PostgreSQL and Spark, or by any `cohort-sync` command;
every row is kept, and the next publish sends only the delta. Two other
0.1.0 states are upgraded too: the first commit's (no plan ids, no resent
counts), and a Spark warehouse on which a later 0.1.0's hook had created
an empty event log before refusing the plain table. And the schema of the
previous release, 0.2.0, with rows in it, is brought to this one on every
engine.
"""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
import yaml

from cohort_sync import __version__
from cohort_sync.cli import main as cli_main
from cohort_sync.warehouse.engines import DuckDBEngine
from cohort_sync.warehouse.ledger import Ledger
from cohort_sync.warehouse.migrations import STATE_SCHEMA_STEP
from cohort_sync.warehouse.target import open_ledger, relations_from_manifest, resolve_target
from tests.sync_project import BIN, REPO, SyncProject
from tests.warehouses import PostgresWarehouse, SparkWarehouse

pytestmark = pytest.mark.dbt

CHURN = {"model": "churn_audience", "name": "Churn risk"}
STEPS = [
    "0001_state_tables", "0002_plan_ids_and_resent_counts", "0003_spark_event_logs", "0004_notification_log",
    "0005_run_history_package_version", "0006_users_track_delivery", "0007_attribute_syncs",
]
STEPS_0_2_0 = STEPS[:5]
STEPS_0_3_0 = STEPS[:6]
#: The state-table macros of 0.2.0 as released, installed as the cohort_sync dbt package.
PACKAGE_0_2_0 = Path(__file__).resolve().parents[1] / "fixtures" / "cohort_sync_0_2_0"
PACKAGE_0_3_0 = Path(__file__).resolve().parents[1] / "fixtures" / "cohort_sync_0_3_0"
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


def ledger_of(project: SyncProject) -> Ledger:
    """The publisher's ledger on the project's warehouse (on DuckDB, a connection of
    the test process, as the in-process dbt runs keep theirs open)."""
    if project.warehouse.name == "duckdb":
        engine = DuckDBEngine(duckdb.connect(str(project.warehouse.database)))
        return Ledger(engine, relations_from_manifest(project.root))
    return open_ledger(resolve_target(project.root, project.root))


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
    ledger = ledger_of(project)
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
    ledger = ledger_of(project)
    try:  # the new counter reads 0 in rows from before it, on every engine
        assert [row.rejected for row in ledger.history()] == [0, 0]
    finally:
        ledger.close()
    [request] = [r for r in braze.requests() if "fault" not in r]
    assert (request["endpoint"], request["adds"], request["removes"]) == ("users", 5, 3)
    assert project.published("churn_audience") == {f"external_id:{m}" for m in ids(3, 105)}


@pytest.mark.parametrize("warehouse", ["duckdb", "postgres", "spark"], indirect=True)
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
                                            + [("0007_attribute_syncs", __version__)])
    assert project.query("select count(*) from cohort_sync_rejected_changes where value_hash is null") == [(1,)]
    ledger = ledger_of(project)
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
