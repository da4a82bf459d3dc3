"""The engine layer: Spark literals survive a round trip; event-log names."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from cohort_sync.warehouse.engines import pyformat, spark_literal, spark_sql
from cohort_sync.warehouse.ledger import Relations
from cohort_sync.warehouse.target import redact_credentials

NASTY = ["plain", "it's", "back\\slash", "\\'", "new\nline", "'; drop table x; --", "ünïcødé", ""]


def relations(**names: str) -> Relations:
    defaults = {name: name for name in Relations.__dataclass_fields__}
    return Relations(**{**defaults, **names})


@pytest.mark.parametrize(
    ("name", "events"),
    [
        ("analytics.cohort_sync_lock", "analytics.cohort_sync_lock_events"),
        ("`analytics`.`cohort_sync_lock`", "`analytics`.`cohort_sync_lock_events`"),
        ('"db"."main"."cohort_sync_lock"', '"db"."main"."cohort_sync_lock_events"'),
    ],
)
def test_event_log_name_keeps_the_quoting(name, events):
    assert relations(lock=name).events("lock") == events


def test_spark_literals_of_each_type():
    assert spark_literal(None) == "null"
    assert spark_literal(True) == "true"
    assert spark_literal(12) == "12"
    assert spark_literal(datetime(2026, 11, 22, 8, 5, 3, 120)) == "timestamp'2026-11-22 08:05:03.000120'"
    assert spark_literal("it's") == "'it\\'s'"


@pytest.mark.parametrize("value", [b"bytes", float("nan"), object(), datetime(2026, 1, 1, tzinfo=timezone.utc)])
def test_spark_literal_refuses_what_it_cannot_render_exactly(value):
    with pytest.raises(TypeError):
        spark_literal(value)


def test_spark_statements_need_one_value_per_placeholder():
    assert spark_sql("select ? where a = ?", ["it's", 2]) == "select 'it\\'s' where a = 2"
    with pytest.raises(TypeError, match="2 placeholders for 1 parameters"):
        spark_sql("select ? where a = ?", ["x"])


def test_connection_errors_mask_the_profile_secrets():
    credentials = SimpleNamespace(password="s3cr3t-pw", token=None)
    assert redact_credentials("login failed for s3cr3t-pw@db", credentials) == "login failed for ****@db"


def test_postgres_placeholders_refuse_a_literal_percent():
    assert pyformat("select ? where a = ?") == "select %s where a = %s"
    with pytest.raises(ValueError, match="literal %"):
        pyformat("select '100%'")


@pytest.mark.dbt
def test_spark_literals_round_trip_through_spark(spark_session):
    for value in NASTY:
        assert spark_session.session.sql(f"select {spark_literal(value)}").collect()[0][0] == value
    moment = datetime(2026, 11, 22, 8, 5, 3, 120)
    assert spark_session.session.sql(f"select {spark_literal(moment)}").collect()[0][0] == moment
