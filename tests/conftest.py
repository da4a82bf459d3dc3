from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cohort_sync.braze.local import LocalBraze
from tests.receivers import MailServer, WebhookReceiver
from tests.sync_project import SyncProject
from tests.warehouses import (
    ENGINES,
    PostgresServer,
    PostgresWarehouse,
    SparkSessionHome,
    SparkWarehouse,
    Warehouse,
)

PARTNER_NAME = "cohort_sync_test"


@pytest.fixture
def keys() -> dict[str, str]:
    """Distinctive fake keys, so a leak is easy to find."""
    return {
        "partner_api_key": "PARTNERKEY-" + secrets.token_hex(12),
        "data_import_key": "IMPORTKEY-" + secrets.token_hex(12),
        "rest_api_key": "RESTKEY-" + secrets.token_hex(12),
    }


@pytest.fixture
def braze(keys: dict[str, str]) -> Iterator[LocalBraze]:
    with LocalBraze(partner_name=PARTNER_NAME, **keys) as server:
        yield server


@pytest.fixture
def braze_env(braze: LocalBraze, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "BRAZE_REST_ENDPOINT": braze.url,
        "BRAZE_PARTNER_NAME": PARTNER_NAME,
        "BRAZE_PARTNER_API_KEY": keys["partner_api_key"],
        "BRAZE_DATA_IMPORT_KEY": keys["data_import_key"],
        "BRAZE_REST_API_KEY": keys["rest_api_key"],
        "COHORT_SYNC_MAX_RETRY_SECONDS": "20",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return env


@pytest.fixture
def mail_server(tmp_path: Path) -> Iterator[MailServer]:
    """A local SMTP server demanding STARTTLS and a login, with a CA to trust."""
    server = MailServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def make_project(tmp_path: Path, braze_env: dict[str, str]):
    """A throwaway dbt project with cohort_sync installed via `local:`."""

    def make(cohorts=None, name: str = "project") -> SyncProject:
        return SyncProject(tmp_path / name, cohorts)

    return make


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1 for the test session."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def spark_session() -> Iterator[SparkSessionHome]:
    """Local Spark in this process (one JVM), shared with the in-process dbt runs."""
    spark = SparkSessionHome().start()
    yield spark
    spark.stop()


@pytest.fixture(params=ENGINES)
def warehouse(request: pytest.FixtureRequest) -> Callable[[Path], Warehouse]:
    """Each engine in turn: how a project makes its warehouse."""
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        return lambda root: PostgresWarehouse(root, server)
    if request.param == "spark":
        spark = request.getfixturevalue("spark_session")
        return lambda root: SparkWarehouse(root, spark)
    return Warehouse


@pytest.fixture
def make_engine_project(tmp_path: Path, braze_env: dict[str, str], warehouse):
    """A throwaway dbt project with cohort_sync installed, on the engine of the `warehouse` param."""

    def make(cohorts=None, name: str = "project") -> SyncProject:
        return SyncProject(tmp_path / name, cohorts, warehouse)

    return make


#: The Spark scenarios `make test` runs: one for each part of the package's
#: SQL and of the ledger on the engine without transactions (the cohort diff
#: and its batches, identifier casts and trimming, the /users/track cohort
#: path, a crash while recording, attribute and event syncs, a migration).
#: Local Spark costs one to four minutes a scenario, so the other Spark
#: scenarios, which repeat those paths with other data, and the long runs
#: are marked `full`: CI runs them after `make test`, with `make test-full`
#: (decision 0017).
SPARK_IN_MAKE_TEST = frozenset({
    "test_first_sync_then_five_leave_and_five_join",
    "test_each_identifier_type_precedence_and_cast",
    "test_surrounding_whitespace_of_every_kind_is_trimmed_and_whitespace_only_ids_are_rejected",
    "test_attribute_cohorts_through_users_track",
    "test_a_crash_between_applying_and_logging_a_batch_is_repaired",
    "test_first_run_then_three_changes_then_nothing_then_other_representations",
    "test_purchases_and_events_are_sent_once",
    "test_the_0_4_0_schema_with_rows_in_it_is_upgraded_by_dbt_run_and_then_sends_only_the_delta",
})

#: The xdist groups of the Spark scenarios (see pytest_collection_modifyitems).
SPARK_GROUP, SPARK_FULL_GROUP = "spark-make-test", "spark-make-test-full"

#: Long runs (minutes each), also `full`.
LONG_RUNS = (
    "test_spark_cli.py::test_a_million_members_sync_through_the_cli_from_spark",
    "test_bench_smoke.py::test_benchmark_smoke_run_writes_every_section",
)

#: Started first among the tests of no group (xdist starts the groups with
#: the most tests first: the Spark ones), so that the two workers finish
#: close together instead of one of them starting a long test near the end.
LONGEST_FIRST = (*LONG_RUNS, "test_schedules.py::test_two_months_of_ticks_fire_each_schedule_exactly_when_due")


def engine_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec and (callspec.params.get("warehouse") or callspec.params.get("engine"))


@pytest.hookimpl(tryfirst=True)  # before xdist names the groups and `-m` selects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks what `make test` leaves to `make test-full`, and groups the tests
    for the workers (pytest-xdist, --dist loadgroup): the engines of one
    scenario run on one worker, in order, so each is compared with the
    DuckDB run before it (test_engines.py); every other test goes wherever a
    worker is free. The scenarios with a Spark run are two groups, those of
    SPARK_IN_MAKE_TEST (with the tests that use the Spark session directly)
    and the others, so that under either command one worker runs every
    Spark scenario: one JVM, warmed up once (about 100 s on its first
    scenario), instead of two JVMs contending for the two cores."""
    with_spark = {scenario_of(item) for item in items if engine_of(item) == "spark"}
    for item in items:
        left_to_ci = item.originalname not in SPARK_IN_MAKE_TEST
        if any(name in item.nodeid for name in LONG_RUNS) or (engine_of(item) == "spark" and left_to_ci):
            item.add_marker(pytest.mark.full)
        elif engine_of(item) == "duckdb" and left_to_ci and "scenario" in getattr(item, "fixturenames", ()):
            # test_engines.py compares each engine's run with DuckDB's, from
            # the same session: `make test-full` runs the DuckDB run again.
            item.add_marker(pytest.mark.engine_baseline)
        if "spark_session" in getattr(item, "fixturenames", ()) or (engine_of(item) and not left_to_ci):
            item.add_marker(pytest.mark.xdist_group(SPARK_GROUP))
        elif scenario_of(item) in with_spark:
            item.add_marker(pytest.mark.xdist_group(SPARK_FULL_GROUP))
        elif engine_of(item):
            item.add_marker(pytest.mark.xdist_group(scenario_of(item)))
    items.sort(key=lambda item: not any(name in item.nodeid for name in LONGEST_FIRST))


def scenario_of(item: pytest.Item) -> str:
    return f"{item.path.name}::{item.originalname}"
