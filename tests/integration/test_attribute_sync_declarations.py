"""Attribute sync declarations (var cohort_sync_attribute_syncs) on DuckDB:
a malformed one fails compilation with a message naming the sync and the
field, and a valid one compiles, plans, and its dry run prints the data
points it would consume.

One small project serves every case: its models are built once, and each
case is one `dbt compile` of cohort_sync_attribute_rows (which reads the
declarations when dbt parses the project, and the model's columns when it
compiles), so the checks of declared columns and their types run too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sync_project import SyncProject, failure_text

pytestmark = [pytest.mark.dbt, pytest.mark.xdist_group("attribute_sync_declarations")]

FACTS_SQL = """
select * from (values
    ('u1', 'ann@example.com', 'pro', 120.50, timestamp '2024-01-02 03:04:05.678', ['vip', 'early'], true, 'opted_in'),
    ('u2', 'bob@example.com', 'free', 0, null, [], false, 'unsubscribed'),
    ('u3', null, null, 3, null, null, null, null)
) as facts(external_id, email, plan, lifetime_value, signed_up_at, tags, beta, email_subscribe)
"""

# Columns of types no attribute kind fits, and one that does (plan).
ODD_FACTS_SQL = """
select
    'u1' as external_id,
    'pro' as plan,
    {'street': 'Main St', 'city': 'Springfield'} as address,
    interval 3 day as tenure,
    [{'sku': 'a1'}] as baskets
"""

FACTS = {"model": "facts", "mode": "update"}
ODD = {"model": "odd_facts", "mode": "update"}
SYNC = "attribute sync 'facts' (cohort_sync_attribute_syncs[0]): "


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncProject]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        project = SyncProject(tmp_path_factory.mktemp("declarations") / "project")
        (project.root / "models" / "facts.sql").write_text(FACTS_SQL)
        (project.root / "models" / "odd_facts.sql").write_text(ODD_FACTS_SQL)
        built = project.dbt("run", "-s", "facts", "odd_facts")
        assert built.success, failure_text(built)
        yield project


def compile_rows(project: SyncProject, syncs, cohorts=()):
    project.declare(list(cohorts), cohort_sync_attribute_syncs=syncs)
    return project.dbt("compile", "-s", "cohort_sync_attribute_rows")


@pytest.mark.parametrize(("syncs", "message"), [
    # the declaration itself, checked when dbt parses the project
    ([{"mode": "update"}], "cohort_sync_attribute_syncs[0]: field 'model' is required"),
    ([{"model": "facts"}], SYNC + "field 'mode' is required: update (existing Braze users only) or upsert"),
    ([{**FACTS, "mode": "insert"}], SYNC + "field 'mode' is required: update (existing Braze users only) or upsert "
                                           "(create users Braze does not have), got: insert"),
    ([{**FACTS, "atributes": ["plan"]}], SYNC + "unknown setting 'atributes'; allowed settings are model, sync_id"),
    ([{**FACTS, "nulls": "ignore"}], SYNC + "field 'nulls' must be unset (a SQL null removes the attribute in Braze) "
                                            "or keep (it leaves Braze's value), got: ignore"),
    ([{**FACTS, "on_leave": "delete"}], SYNC + "field 'on_leave' must be keep (a user who leaves the model keeps the "
                                               "attributes) or unset (they are removed), got: delete"),
    ([{**FACTS, "max_data_points": 0}], SYNC + "field 'max_data_points' must be a whole number of at least 1, got: 0"),
    ([{**FACTS, "full_resync_every": "weekly"}],
     SYNC + "field 'full_resync_every' must be a period such as 12h or 7d (minutes, hours or days), got: weekly"),
    ([{**FACTS, "identifiers": ["device_id"]}],
     SYNC + "field 'identifiers' must list identifier columns among external_id, alias, braze_id, email, phone "
            "(device ids cannot be addressed through /users/track), got: device_id"),
    ([{**FACTS, "attributes": {"plan": "plan", "braze_id": "email"}}],
     SYNC + "field 'attributes': 'braze_id' is an identifier or a control field in Braze, not an attribute"),
    ([{**FACTS, "attributes": {"Plan": "plan", "plan": "email"}}], SYNC + "field 'attributes' names the attribute "
                                                                          "'plan' twice"),
    ([FACTS, {**FACTS, "mode": "upsert"}],
     "attribute sync 'facts' (cohort_sync_attribute_syncs[1]): field 'sync_id' duplicates cohort_sync_attribute_syncs[0]"),
    # dbt's own parse error: it names the missing model
    ([{"model": "no_such_model", "mode": "update"}], "depends on a node named 'no_such_model'"),
    # the model's columns, checked when the rows model compiles
    ([{**FACTS, "sync_id": "crm", "attributes": {"plan": "plan_name"}}],
     "attribute sync 'crm': field 'attributes': model 'facts' has no column 'plan_name'"),
    ([{**FACTS, "identifiers": ["braze_id"]}],
     "attribute sync 'facts': model 'facts' has none of the identifier columns braze_id"),
    ([{**FACTS, "attributes": ["plan", "email"]}],
     "attribute sync 'facts': field 'attributes': column 'email' is one of the sync's identifiers; to send it as "
     "an attribute too, list the identifiers in 'identifiers'"),
    ([ODD], "attribute sync 'odd_facts': column 'address' is of type STRUCT(street VARCHAR, city VARCHAR), which "
            "cohort_sync does not send (string, number, boolean, date, timestamp, array of strings, JSON): "
            "cast it in the model"),
], ids=lambda case: case[:60] if isinstance(case, str) else None)
def test_a_malformed_declaration_fails_naming_the_sync_and_the_field(project, syncs, message):
    result = compile_rows(project, syncs)
    assert not result.success
    assert message in failure_text(result)


def test_a_sync_id_may_not_be_a_cohort_id(project):
    cohorts = [{"model": "facts", "name": "Customers with facts"}]  # cohort_id: facts
    result = compile_rows(project, [FACTS], cohorts)
    assert not result.success
    assert (SYNC + "field 'sync_id' is also a cohort_id in cohort_sync_cohorts; syncs and cohorts share one namespace"
            in failure_text(result))


def test_an_array_of_structs_is_refused(project):
    result = compile_rows(project, [{**ODD, "attributes": ["plan", "baskets"]}])
    assert not result.success
    assert "column 'baskets' is of type STRUCT(sku VARCHAR)[], which cohort_sync does not send" in failure_text(result)


def test_a_valid_declaration_plans_and_its_dry_run_prints_the_data_points(make_project, braze):
    # dbt and the CLI run as a scheduler runs them, one process each (an in-process
    # dbt keeps the DuckDB file open): a project of its own
    project = make_project([])
    (project.root / "models" / "facts.sql").write_text(FACTS_SQL)
    project.declare([], cohort_sync_attribute_syncs=[{
        "model": "facts",
        "sync_id": "customer_facts",
        "mode": "update",
        "identifiers": ["external_id"],
        "attributes": {"email": "email", "plan": "plan", "ltv": "lifetime_value", "signed_up_at": "signed_up_at",
                       "tags": "tags", "beta": "beta", "email_subscribe": "email_subscribe"},
        "nulls": "keep",
        "on_leave": "unset",
        "max_data_points": 100,
        "full_resync_every": "7d",
        "schedule": {"every": "daily", "at": "06:00"},
        "description": "facts on each customer's profile",
    }])
    built = project.cli("dbt", "run", "--vars", "{cohort_sync_publish_on_run: false}")
    assert built.returncode == 0, built.stdout
    dry_run = project.cli("cohort-sync", "publish", "--dry-run")
    assert dry_run.returncode == 0, dry_run.stdout + dry_run.stderr
    header, _, row = dry_run.stdout.splitlines()[1:4]
    assert header.split() == ["cohort", "status", "added", "removed", "requests", "retries", "resent", "rejected",
                              "data", "pts", "members", "error"]
    # u1: 7 values, email_subscribe free; u2: 6 values (signed_up_at is null), 5 billed; u3: ltv only
    assert row.split() == ["customer_facts", "dry_run", "14", "0", "1", "0", "0", "0", "12", "0"]
    assert braze.requests() == []
    assert project.query(
        "select delivery, sync_mode, full_resync_minutes, planned_adds, planned_removes, planned_data_points,"
        " planned_batches, guard_status from cohort_sync_cohorts where cohort_id = 'customer_facts'"
    ) == [("profile", "update", 7 * 24 * 60, 14, 0, 12, 1, "ok")]
    assert project.query(
        "select attribute_name, value_type, value_text, data_points from cohort_sync_attribute_changes"
        " where member_key = 'external_id:u1' order by attribute_name"
    ) == [("beta", "boolean", "true", 1), ("email", "string", "ann@example.com", 1),
          ("email_subscribe", "string", "opted_in", 0), ("ltv", "number", "120.5", 1),
          ("plan", "string", "pro", 1), ("signed_up_at", "time", "1704164645678", 1),
          ("tags", "array", '["early","vip"]', 1)]
    [history] = [row for row in project.history() if row["cohort_id"] == "customer_facts"]
    assert (history["status"], history["added"], history["removed"], history["data_points"]) == ("dry_run", 14, 0, 12)
