"""Ledger.check_schema on DuckDB relations made from what the publisher expects:
one query when they match; when they do not, what to do, naming only what is
stale; any other error is the engine's own."""

import duckdb
import pytest

from cohort_sync.warehouse.engines import DuckDBEngine
from cohort_sync.warehouse.ledger import EXPECTED_COLUMNS, Ledger, Relations, StaleSchemaError


class Counting(DuckDBEngine):
    def __init__(self, connection):
        super().__init__(connection)
        self.queries = 0

    def query(self, sql, params=()):
        self.queries += 1
        return super().query(sql, params)


@pytest.fixture
def ledger():
    connection = duckdb.connect(":memory:")
    for key, columns in EXPECTED_COLUMNS.items():
        connection.execute(f"create table {key} ({', '.join(f'{c} varchar' for c in columns) or 'x varchar'})")
    ledger = Ledger(Counting(connection), Relations(**{key: key for key in EXPECTED_COLUMNS}))
    yield ledger
    ledger.engine.connection.close()


def test_matching_relations_pass_with_one_query(ledger):
    ledger.check_schema()
    assert ledger.engine.queries == 1


def test_a_stale_model_and_a_missing_state_table_say_to_run_dbt(ledger):
    ledger.engine.connection.execute("alter table cohorts drop column notify")
    ledger.engine.connection.execute("drop table notification_log")
    with pytest.raises(StaleSchemaError) as raised:
        ledger.check_schema()
    message = str(raised.value)
    assert 'cohorts (Binder Error: Referenced column "notify" not found' in message
    assert "notification_log (Catalog Error: Table with name notification_log does not exist!)" in message
    assert "Run `dbt deps` and `dbt run`" in message and "alter table" not in message
    assert "run_history" not in message and "changes" not in message


def test_a_state_table_lacking_columns_names_them_and_says_to_add_them(ledger):
    ledger.engine.connection.execute("alter table run_history drop column resent_batches")
    ledger.engine.connection.execute("alter table run_history drop column retries")
    with pytest.raises(StaleSchemaError) as raised:
        ledger.check_schema()
    message = str(raised.value)
    assert "run_history lacks retries, resent_batches. `dbt run` creates missing state tables" in message
    assert "delete the rows of the steps that add them" in message
    assert "add these columns with the types macros/state_tables.sql gives them" in message
    assert "dbt deps" not in message


def test_an_error_that_is_not_a_missing_relation_is_the_engines_own(ledger):
    ledger.engine.connection.close()
    with pytest.raises(duckdb.ConnectionException):
        ledger.check_schema()
