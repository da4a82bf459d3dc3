"""End to end as a user runs it: a fresh dbt project written by hand, the
package installed with `local:`, `dbt` and `cohort-sync` as commands."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from cohort_sync.warehouse.migrations import STATE_SCHEMA_STEP, StateBehindError, open_current_ledger
from cohort_sync.warehouse.target import resolve_target
from tests.conftest import PARTNER_NAME
from tests.sync_project import REPO

pytestmark = pytest.mark.dbt

BIN = Path(sys.executable).parent

PROJECT = """\
name: my_shop
version: "1.0.0"
config-version: 2
profile: my_shop
vars:
  cohort_sync_publish_on_run: {publish_on_run}
  cohort_sync_cohorts:
    - model: loyal_customers
      name: "Loyal customers"
      cohort_id: loyal
"""
PROFILES = """\
my_shop:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: shop.duckdb
"""
AUDIENCE = """\
-- customers with an id below var('loyal_below') are loyal
select 'customer-' || cast(i as varchar) as external_id, i as orders
from range(1, {{ var('loyal_below', 8) }}) as t(i)
"""


def write_project(root: Path, publish_on_run: bool) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text(PROJECT.format(publish_on_run=str(publish_on_run).lower()))
    (root / "profiles.yml").write_text(PROFILES)
    (root / "packages.yml").write_text(f"packages:\n  - local: {REPO}\n")
    (root / "models" / "loyal_customers.sql").write_text(AUDIENCE)
    return root


def run(root: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=root, capture_output=True, text=True, timeout=300
    )


def published(root: Path) -> set[str]:
    with duckdb.connect(str(root / "shop.duckdb")) as con:
        return {r[0] for r in con.execute("select member_key from cohort_sync_published_state").fetchall()}


@pytest.fixture
def shop(tmp_path, braze_env) -> Path:
    root = write_project(tmp_path / "my_shop", publish_on_run=False)
    deps = run(root, "dbt", "deps")
    assert deps.returncode == 0, deps.stdout + deps.stderr
    built = run(root, "dbt", "run")
    assert built.returncode == 0, built.stdout + built.stderr
    return root


def test_fresh_project_syncs_through_the_cli(shop, braze):
    assert (shop / "dbt_packages" / "cohort_sync").exists()
    assert braze.requests() == []  # publishing in dbt run is off in this project

    result = run(shop, "cohort-sync", "publish")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loyal" in result.stdout and "success" in result.stdout
    held = braze.cohorts()["loyal"]
    assert held["name"] == "Loyal customers"
    assert held["user_ids"] == sorted(f"customer-{i}" for i in range(1, 8))
    assert published(shop) == {f"external_id:customer-{i}" for i in range(1, 8)}

    again = run(shop, "cohort-sync", "publish")
    assert again.returncode == 0
    assert len(braze.requests()) == 2  # the name call and one batch; the second run sent nothing

    assert run(shop, "dbt", "run", "--vars", "{loyal_below: 5}").returncode == 0
    assert run(shop, "cohort-sync", "publish").returncode == 0
    assert braze.cohorts()["loyal"]["user_ids"] == sorted(f"customer-{i}" for i in range(1, 5))
    last = braze.requests()[-1]
    assert (last["adds"], last["removes"]) == (0, 3)

    status = run(shop, "cohort-sync", "status")
    assert status.returncode == 0
    lines = [line for line in status.stdout.splitlines() if " loyal " in line]
    assert len(lines) == 3 and all("cli" in line for line in lines)


def test_verbose_logs_every_attempt_of_every_request_without_a_key(shop, braze, keys):
    braze.set_faults([
        {"endpoint": "users", "times": 1, "status": 503, "retry_after": 0},
        {"endpoint": "users", "times": 1, "drop": "before"},
    ])
    result = run(shop, "cohort-sync", "publish", "--verbose")
    assert result.returncode == 0, result.stdout + result.stderr
    line = re.compile(
        r"INFO cohort_sync\.braze\.client: POST (?P<path>\S+) cohort=(?P<cohort>\S+) (?P<what>.+?) "
        r"attempt=(?P<attempt>\d+): (?P<answer>.+) in (?P<ms>\d+) ms$"
    )
    logged = [m.groupdict() for m in map(line.search, result.stderr.splitlines()) if m]
    assert [(r["path"], r["cohort"], r["what"], r["attempt"], r["answer"]) for r in logged] == [
        (f"/partners/{PARTNER_NAME}/cohorts", "loyal", "name call", "1", "HTTP 201"),
        (f"/partners/{PARTNER_NAME}/cohorts/users", "loyal", "batch=1 adds=7 removes=0", "1", "HTTP 503"),
        (f"/partners/{PARTNER_NAME}/cohorts/users", "loyal", "batch=1 adds=7 removes=0", "2", "ConnectionError"),
        (f"/partners/{PARTNER_NAME}/cohorts/users", "loyal", "batch=1 adds=7 removes=0", "3", "HTTP 201"),
    ]
    assert len([r for r in braze.requests() if "fault" in r or "status" in r]) == 4  # one line per attempt
    said = result.stdout + result.stderr
    assert keys["partner_api_key"] not in said and keys["data_import_key"] not in said
    assert braze.url not in said  # the path only: no host, no URL


def test_rejected_rows_are_counted_per_cohort_and_reason_by_the_cli_and_in_dbt_run(make_project, braze):
    project = make_project([{"model": "churn_audience", "name": "Churn"}, {"model": "clean_audience", "name": "Clean"}])
    project.set_audience("churn_audience", {
        "external_id": ["u1", "", None, None, "x" * 600],
        "alias_name": [None, None, "lonely", None, None],
        "alias_label": [None, None, None, None, None],
    })
    project.set_audience("clean_audience", {"external_id": ["c1"]})
    expected = [
        "rejected audience rows, attribute values and events (never sent; each is in cohort_sync_rejects with "
        "its values):",
        "  churn_audience: 4 (alias_name_without_alias_label 1, identifier_too_long 1, no_identifier 2)",
    ]
    built = project.cli("dbt", "run", "--vars", "{cohort_sync_publish_on_run: false}")
    assert built.returncode == 0, built.stdout
    published = project.cli("cohort-sync", "publish")
    assert published.returncode == 0, published.stdout + published.stderr
    lines = published.stdout.splitlines()
    start = lines.index(expected[0])
    assert lines[start:start + 2] == expected
    assert not [line for line in lines if line.startswith("  clean_audience:")]  # the clean cohort has none
    in_dbt = project.cli("dbt", "run")  # the summary of the publish inside dbt run says the same
    assert in_dbt.returncode == 0, in_dbt.stdout
    assert "\n".join(expected) in in_dbt.stdout
    assert project.query("select cohort_id, status, rejected_rows from cohort_sync_publish order by cohort_id") == [
        ("churn_audience", "success", 4), ("clean_audience", "success", 0)]
    assert braze.cohorts()["churn_audience"]["user_ids"] == ["u1"]


def test_dry_run_prints_the_plan_and_sends_and_records_nothing(shop, braze):
    result = run(shop, "cohort-sync", "publish", "--dry-run")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("loyal"))
    assert row.split()[:5] == ["loyal", "dry_run", "7", "0", "2"]
    assert braze.requests() == []
    assert published(shop) == set()


def test_missing_key_exits_2_naming_it_before_any_request_or_write(shop, braze, monkeypatch):
    monkeypatch.delenv("BRAZE_DATA_IMPORT_KEY")
    result = run(shop, "cohort-sync", "publish")
    assert result.returncode == 2
    assert "BRAZE_DATA_IMPORT_KEY is not set" in result.stderr
    assert braze.requests() == []
    with duckdb.connect(str(shop / "shop.duckdb")) as con:
        assert con.execute("select count(*) from cohort_sync_run_history").fetchall() == [(0,)]


def test_a_failed_cohort_exits_1_and_is_recorded(shop, braze):
    braze.set_faults([{"endpoint": "users", "times": 1, "status": 400, "body": "{\"message\": \"bad cohort\"}"}])
    result = run(shop, "cohort-sync", "publish")
    assert result.returncode == 1
    assert "failed" in result.stdout
    with duckdb.connect(str(shop / "shop.duckdb")) as con:
        status, error, requests = con.execute(
            "select status, error, requests from cohort_sync_run_history"
        ).fetchall()[0]
    assert status == "failed" and "HTTP 400" in error and requests == 2  # the name call, and the refused batch
    assert published(shop) == set()
    assert run(shop, "cohort-sync", "publish").returncode == 0
    assert len(braze.cohorts()["loyal"]["user_ids"]) == 7


def test_dbt_run_publishes_in_process_then_cli_has_nothing_left(tmp_path, braze_env, braze):
    root = write_project(tmp_path / "shop2", publish_on_run=True)
    assert run(root, "dbt", "deps").returncode == 0
    built = run(root, "dbt", "run")
    assert built.returncode == 0, built.stdout + built.stderr
    assert "cohort_sync publish run" in built.stdout
    assert len(braze.cohorts()["loyal"]["user_ids"]) == 7
    sent = len(braze.requests())
    assert run(root, "cohort-sync", "publish").returncode == 0
    assert len(braze.requests()) == sent


def test_relations_older_than_this_version_exit_2_saying_to_run_dbt_and_nothing_is_sent(shop, braze):
    # As a project built by an earlier version leaves them: no notify column, no notification log.
    with duckdb.connect(str(shop / "shop.duckdb")) as con:
        con.execute("alter table cohort_sync_cohorts drop column notify")
        con.execute("drop table cohort_sync_notification_log")
    for command in (("publish",), ("publish", "--dry-run"), ("status",), ("report", "-o", "r.html")):
        result = run(shop, "cohort-sync", *command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        message = result.stderr
        # status and report read the state tables only; publish reads the plan too
        plan_named = "cohort_sync_cohorts" in message and "notify" in message
        assert plan_named == (command[0] == "publish"), message
        assert "cohort_sync_notification_log" in message, message
        assert "cohort_sync_run_history" not in message  # only what is stale is named
        assert "Run `dbt deps` and `dbt run`" in message
    assert braze.requests() == []
    with duckdb.connect(str(shop / "shop.duckdb")) as con:
        assert con.execute("select count(*) from cohort_sync_run_history").fetchall() == [(0,)]
        assert con.execute("select count(*) from cohort_sync_lock").fetchall() == [(0,)]
    assert run(shop, "dbt", "run").returncode == 0
    assert run(shop, "cohort-sync", "publish").returncode == 0
    assert len(braze.cohorts()["loyal"]["user_ids"]) == 7


def test_a_manifest_from_before_an_upgrade_is_read_again_and_the_publish_goes_on(shop, braze):
    manifest = shop / "target" / "manifest.json"
    nodes = json.loads(manifest.read_text())
    nodes["sources"] = {k: v for k, v in nodes["sources"].items() if not k.endswith(".notification_log")}
    manifest.write_text(json.dumps(nodes))
    result = run(shop, "cohort-sync", "publish")
    assert result.returncode == 0, result.stderr
    assert "the project's manifest predated this cohort-sync" in result.stderr
    assert any(k.endswith(".notification_log") for k in json.loads(manifest.read_text())["sources"])
    assert len(braze.cohorts()["loyal"]["user_ids"]) == 7


def test_a_dbt_package_older_than_the_cli_exits_2_saying_to_run_dbt_deps(shop, braze):
    with duckdb.connect(str(shop / "shop.duckdb")) as con:  # as an older package's migrations leave it
        con.execute("delete from cohort_sync_schema_migrations where step = ?", [STATE_SCHEMA_STEP])
    target = resolve_target(shop, shop)
    with pytest.raises(StateBehindError) as raised:
        open_current_ledger(target, migrate=lambda target: None)  # that package's migrations: nothing more
    assert f"this cohort-sync needs {STATE_SCHEMA_STEP}: run `dbt deps`" in str(raised.value)
    assert "0007_attribute_syncs" in str(raised.value)  # how far the warehouse is (the step before the last)
    assert braze.requests() == []


def test_unknown_project_dir_is_a_clear_error(tmp_path, braze_env):
    result = run(tmp_path, "cohort-sync", "status", "--project-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "no dbt_project.yml" in result.stderr


def test_partner_name_matches_fixture():
    assert PARTNER_NAME == "cohort_sync_test"
