"""Event sync declarations (var cohort_sync_event_syncs) on DuckDB: a
malformed one fails compilation with a message naming the sync and the
field, and says what to write instead; a first sync that says neither
where to start nor to backfill fails before anything runs.

One small project serves every case: its models are built once, and each
case is one `dbt compile` of cohort_sync_event_rows (which reads the
declarations when dbt parses the project, and the model's columns when it
compiles), so the checks of declared columns and their types run too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sync_project import SyncProject, failure_text

pytestmark = [pytest.mark.dbt, pytest.mark.xdist_group("event_sync_declarations")]

APP_EVENTS_SQL = """
select * from (values
    ('e1', 'u1', 'app_open', timestamp '2026-01-02 03:04:05.678', 'home', json '{"plan": "pro"}', 1767323045, true,
     '2026-01-02T03:04:05Z', interval 3 day),
    ('e2', 'u2', 'ecommerce.order_placed', timestamp '2026-01-03 00:00:00', null, null, 1767398400, false,
     '2026-01-03T00:00:00Z', interval 1 day)
) as app_events(event_key, external_id, event_name, occurred_at, screen, extra, epoch_seconds, flag, occurred_text,
                tenure)
"""

ORDERS_SQL = """
select * from (values
    ('o1', 'u1', timestamp '2026-01-02 03:04:05', 'shirt', 'USD', 12.5, 2, '12.5'),
    ('o2', 'u2', timestamp '2026-01-03 00:00:00', 'hat', 'eur', 7.0, null, '7')
) as orders(order_key, external_id, ordered_at, product_id, currency, price, quantity, price_text)
"""

EVENT = {"model": "app_events", "kind": "event", "event_id": "event_key", "name_column": "event_name",
         "time": "occurred_at", "backfill": True}
PURCHASE = {"model": "orders", "kind": "purchase", "event_id": "order_key", "time": "ordered_at",
            "start_at": "2026-01-01"}
SYNC = "event sync 'app_events' (cohort_sync_event_syncs[0]): "
ORDERS = "event sync 'orders' (cohort_sync_event_syncs[0]): "


def without(declaration: dict, *fields: str) -> dict:
    return {k: v for k, v in declaration.items() if k not in fields}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncProject]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        project = SyncProject(tmp_path_factory.mktemp("event_declarations") / "project")
        (project.root / "models" / "app_events.sql").write_text(APP_EVENTS_SQL)
        (project.root / "models" / "orders.sql").write_text(ORDERS_SQL)
        # the models, and the state tables (the on-run-start hook): the event window reads run_history
        built = project.dbt("run", "-s", "app_events", "orders")
        assert built.success, failure_text(built)
        yield project


def compile_rows(project: SyncProject, syncs, cohorts=(), **extra_vars):
    project.declare(list(cohorts), cohort_sync_event_syncs=syncs, **extra_vars)
    return project.dbt("compile", "-s", "cohort_sync_event_rows")


def test_valid_declarations_of_both_kinds_compile(project):
    """The control for every failure below: these declarations are sound."""
    result = compile_rows(project, [
        EVENT,
        PURCHASE,
        {**without(EVENT, "name_column"), "sync_id": "opens", "name": "app_open", "properties": {"where": "screen"},
         "lookback": "12h", "max_events": 500, "guarantee": "at_most_once", "create_users": True},
        {**without(EVENT, "name_column", "time"), "sync_id": "placed", "name": "ecommerce.order_placed",
         "time": "occurred_text", "properties_json": "extra", "start_at": "2024-02-29 06:00", "backfill": False},
        {**PURCHASE, "sync_id": "orders_q", "quantity": "quantity", "properties": ["product_id"]},
    ])
    assert result.success, failure_text(result)


def test_a_first_sync_without_start_at_or_backfill_fails_saying_how_to_fix_it(project):
    project.declare([], cohort_sync_event_syncs=[without(EVENT, "backfill")])
    result = project.dbt("run")  # it fails as dbt parses the project, before it builds or sends anything
    assert not result.success
    text = failure_text(result)
    assert SYNC + "says neither where to start nor to backfill: the first sync would send every event the model " \
                  "holds, perhaps years of them" in text
    assert "Set start_at: '<YYYY-MM-DD or YYYY-MM-DD HH:MM:SS, UTC>' to send events from then on, or backfill: " \
           "true to send the whole history" in text
    # backfill: false says the same: it is not a choice of where to start
    result = compile_rows(project, [{**EVENT, "backfill": False}])
    assert not result.success
    assert SYNC + "says neither where to start nor to backfill" in failure_text(result)


@pytest.mark.parametrize(("syncs", "message"), [
    # the declaration itself, checked when dbt parses the project
    ([without(EVENT, "model")], "cohort_sync_event_syncs[0]: field 'model' is required (the model's name)"),
    ([{**EVENT, "start_at": "2026-01-01"}], SYNC + "set start_at or backfill: true, not both"),
    ([without(EVENT, "kind")], SYNC + "field 'kind' is required: event (a custom event, such as "
                                      "ecommerce.order_placed) or purchase, got: None"),
    ([without(EVENT, "event_id")], SYNC + "field 'event_id' is required: the column that holds an id unique per "
                                          "event (Braze does not deduplicate events: the sync keys on it)"),
    ([without(EVENT, "time")], SYNC + "field 'time' is required: the column that holds when the event happened"),
    ([without(EVENT, "name_column")], SYNC + "an event needs exactly one of 'name' (a constant, such as "
                                             "ecommerce.order_placed) and 'name_column' (the column holding each "
                                             "event's name)"),
    ([{**EVENT, "name": "app_open"}], SYNC + "an event needs exactly one of 'name'"),
    ([{**without(EVENT, "name_column"), "name": "$open"}],
     SYNC + "field 'name' must be an event name of 1 to 255 characters, not starting with '$', got: $open"),
    ([{**PURCHASE, "name": "order"}], ORDERS + "a purchase has no name (Braze names it by its product_id): leave "
                                               "out 'name' and 'name_column', or declare kind: event"),
    ([{**EVENT, "price": "price"}], SYNC + "field 'price' belongs to purchases; for an event, send it as a property"),
    ([{**EVENT, "guarantee": "exactly_once"}],
     SYNC + "field 'guarantee' must be at_least_once (a request whose acknowledgement was lost is sent again: its "
            "events may arrive twice) or at_most_once (it is not: its events may be lost), got: exactly_once"),
    ([{**EVENT, "max_events": 0}], SYNC + "field 'max_events' must be a whole number of at least 1, got: 0"),
    ([{**EVENT, "max_events": True}], SYNC + "field 'max_events' must be a whole number of at least 1, got: True"),
    ([{**EVENT, "lookback": "3 days"}],
     SYNC + "field 'lookback' must be a period such as 12h or 7d (minutes, hours or days), got: 3 days"),
    ([{**without(EVENT, "backfill"), "start_at": "last year"}],
     SYNC + "field 'start_at' must be a UTC date or time such as '2026-11-01' or '2026-11-01 06:00:00', "
            "got: last year"),
    # dates that do not exist: refused with the same message, not Python's strptime error
    ([{**without(EVENT, "backfill"), "start_at": "2026-13-01"}], SYNC + "field 'start_at' must be a UTC date or "
                                                                        "time such as '2026-11-01'"),
    ([{**without(EVENT, "backfill"), "start_at": "2026-02-29"}], SYNC + "field 'start_at' must be a UTC date"),
    ([{**EVENT, "properties": ["screen"], "properties_json": "extra"}],
     SYNC + "set 'properties' (columns) or 'properties_json' (one JSON column), not both"),
    ([{**EVENT, "create_users": "yes"}], SYNC + "field 'create_users' must be true (an event for a user Braze does "
                                                "not have creates the user) or false (Braze ignores it), got: yes"),
    ([{**EVENT, "guarante": "at_most_once"}], SYNC + "unknown setting 'guarante'; allowed settings are model, sync_id"),
    # dbt's own parse error: it names the missing model
    ([{**EVENT, "model": "no_such_model"}], "depends on a node named 'no_such_model'"),
    # the model's columns, checked when the rows model compiles
    ([{**EVENT, "time": "happened_at"}], "event sync 'app_events': field 'time': model 'app_events' has no column "
                                         "'happened_at'"),
    ([{**EVENT, "properties": ["screen", "device"]}],
     "event sync 'app_events': field 'properties': model 'app_events' has no column 'device'"),
    ([{**EVENT, "time": "epoch_seconds"}],
     "event sync 'app_events': field 'time': column 'epoch_seconds' is of type INTEGER; it must be time or date or "
     "string: cast it in the model"),
    ([{**PURCHASE, "price": "price_text"}],
     "event sync 'orders': field 'price': column 'price_text' is of type VARCHAR; it must be number: cast it in the "
     "model"),
    ([{**EVENT, "properties": ["tenure"]}],
     "event sync 'app_events': field 'properties': column 'tenure' is of type INTERVAL, which cohort_sync does not "
     "send as an event property (string, number, boolean, date, timestamp, JSON): cast it in the model"),
], ids=lambda case: case[:60] if isinstance(case, str) else None)
def test_a_malformed_declaration_fails_naming_the_sync_and_the_field(project, syncs, message):
    result = compile_rows(project, syncs)
    assert not result.success
    assert message in failure_text(result)


@pytest.mark.parametrize(("cohorts", "attribute_syncs", "events", "message"), [
    ([{"model": "app_events", "name": "Active users"}], [], [EVENT],
     SYNC + "field 'sync_id' is also a cohort_id in cohort_sync_cohorts"),
    ([], [{"model": "app_events", "mode": "update"}], [EVENT],
     SYNC + "field 'sync_id' is also an attribute sync in cohort_sync_attribute_syncs"),
    ([], [], [EVENT, {**PURCHASE, "sync_id": "app_events"}],
     "event sync 'app_events' (cohort_sync_event_syncs[1]): field 'sync_id' is also declared at "
     "cohort_sync_event_syncs[0]"),
], ids=["cohort", "attribute_sync", "event_sync"])
def test_a_sync_id_may_not_be_taken_by_a_cohort_or_another_sync(project, cohorts, attribute_syncs, events, message):
    result = compile_rows(project, events, cohorts, cohort_sync_attribute_syncs=attribute_syncs)
    assert not result.success
    assert (message + "; cohorts and syncs share one namespace (history, schedules, notifications): choose another "
            "id") in failure_text(result)
