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


def pytest_itemcollected(item: pytest.Item) -> None:
    """Under `make test`'s workers (pytest-xdist, --dist loadgroup): the engines
    of one scenario run on one worker, in order, so each is compared with the
    DuckDB run before it (test_engines.py); every other test goes wherever a
    worker is free."""
    if "warehouse" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.xdist_group(f"{item.path.name}::{item.originalname}"))


#: The longest tests (minutes each): started first, so that under `make test`
#: the two workers finish close together instead of one of them starting a
#: long test near the end.
LONGEST_FIRST = (
    "test_spark_cli.py::test_a_million_members_sync_through_the_cli_from_spark",
    "test_schedules.py::test_two_months_of_ticks_fire_each_schedule_exactly_when_due",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not any(name in item.nodeid for name in LONGEST_FIRST))
