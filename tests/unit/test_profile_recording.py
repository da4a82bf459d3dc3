"""Recording an attribute sync's requests rendered in the warehouse
(warehouse/ledger.py), on an in-memory DuckDB plan: the objects Braze
rejects are completed from the plan, and the batch filter names each
batch the recording applies."""

from __future__ import annotations

import duckdb
import pytest

from cohort_sync.braze.client import Ack, ObjectError
from cohort_sync.braze.payload import (
    UNREAD_OBJECT,
    ProfileChange,
    TrackObject,
    profile_request,
    rendered_profile_request,
)
from cohort_sync.warehouse.engines import DuckDBEngine
from cohort_sync.warehouse.ledger import Ledger, Relations, _batches_condition

PLAN = "plan-1"
PLAN_ROWS = [  # plan_id, sync_id, batch, change number (the user's), member, attribute, should_remove, value_hash,
    # data_points
    (PLAN, "facts", 1, 1, "external_id:u1", "plan", False, "h-plan-1", 1),
    (PLAN, "facts", 1, 1, "external_id:u1", "email_subscribe", False, "h-sub-1", 0),
    (PLAN, "facts", 1, 3, "external_id:u2", "plan", True, None, 1),
    (PLAN, "facts", 1, 2, "external_id:u3", "plan", False, "h-plan-3", 1),
    (PLAN, "facts", 2, 4, "external_id:u2", "plan", False, "other batch", 1),
    ("older-plan", "facts", 1, 1, "external_id:u2", "plan", False, "another plan", 1),
]


@pytest.fixture
def ledger():
    connection = duckdb.connect()
    connection.execute("""create table plan (plan_id varchar, sync_id varchar, batch_number integer,
        change_number integer, member_key varchar, attribute_name varchar, should_remove boolean, value_hash varchar,
        data_points integer)""")
    connection.executemany("insert into plan values (?, ?, ?, ?, ?, ?, ?, ?, ?)", PLAN_ROWS)
    names = {name: name for name in Relations.__dataclass_fields__}
    yield Ledger(DuckDBEngine(connection), Relations(**{**names, "attribute_changes": "plan"}))
    connection.close()


def changes(batch: int) -> list[ProfileChange]:
    """The batch's values, in the body's order (by change number, then attribute)."""
    rows = sorted((row for row in PLAN_ROWS if row[0] == PLAN and row[2] == batch), key=lambda row: (row[3], row[5]))
    return [ProfileChange(number, sync, member, name, remove, None if remove else "string", None if remove else "x",
                          digest, points)
            for _, sync, number, _, member, name, remove, digest, points in rows]


def warehouse_request(batch: int):
    """The batch as the page query hands it over (its objects unread), and as
    profile_request renders it (objects in the same order)."""
    python = profile_request("profile", batch, changes(batch), "update")
    numbers = {row[4]: row[3] for row in PLAN_ROWS if row[0] == PLAN and row[2] == batch}
    python = python._replace(objects=tuple(sorted(python.objects, key=lambda obj: numbers[obj.member_key])))
    row = (batch, len(python.objects), python.adds, python.removes, sum(python.points), '{"plan":"x"}')
    return rendered_profile_request("profile", "facts", row), python


def rejecting(*indexes: int) -> Ack:
    return Ack(status=201, attempts=1, errors=tuple(ObjectError("attributes", i, "invalid") for i in indexes))


def test_rejected_objects_are_completed_from_this_plan_only(ledger):
    request, python = warehouse_request(1)
    completed = ledger.with_rejected_changes(PLAN, request, rejecting(2, 0))  # u1 and u2 (change numbers 1, 3)
    assert completed.objects[0] == python.objects[0] == TrackObject(
        "external_id:u1", ("external_id", "u1", None),
        (("facts", "email_subscribe", False), ("facts", "plan", False)), ("h-sub-1", "h-plan-1"), (0, 1))
    assert completed.objects[2] == python.objects[2]  # u2's unset, not the other batch's or plan's value
    assert completed.objects[2].changes == (("facts", "plan", True),)
    assert completed.objects[1] == TrackObject("external_id:u3", ("external_id", "u3", None), ())  # not rejected
    assert request.objects == (UNREAD_OBJECT,) * 3
    assert completed.data_points([0, 2]) == python.data_points([0, 2]) == {"facts": 1}
    assert (completed.body, completed.parts) == (request.body, request.parts)


def test_a_request_nothing_of_which_is_rejected_reads_nothing(ledger):
    request, _ = warehouse_request(1)
    ledger.engine.connection.execute("drop table plan")  # a query would fail
    assert ledger.with_rejected_changes(PLAN, request, rejecting()) is request


def test_a_rejected_user_the_plan_no_longer_holds_stops_the_run(ledger):
    request, _ = warehouse_request(1)
    with pytest.raises(RuntimeError, match="the plan changed while it was being published"):
        ledger.with_rejected_changes("newer-plan", request, rejecting(2))


def test_an_answer_naming_an_object_the_request_lacks_is_refused(ledger):
    request, _ = warehouse_request(2)
    with pytest.raises(ValueError, match="does not have"):
        ledger.with_rejected_changes(PLAN, request, rejecting(5))


def test_the_batch_filter_lists_whole_batches_and_leaves_out_rejected_users(ledger):
    condition, params = _batches_condition(PLAN, [("facts", 1, ["external_id:u1"]), ("facts", 2, []),
                                                   ("other", 4, []), ("facts", 7, [])])
    assert condition == ("plan_id = ? and ((sync_id = ? and batch_number = 1 and member_key not in (?)) "
                         "or (sync_id = ? and batch_number in (2, 7)) or (sync_id = ? and batch_number in (4)))")
    assert params == [PLAN, "facts", "external_id:u1", "facts", "other"]
    rows = ledger.engine.query(f"select batch_number, member_key from plan where {condition} order by 1, 2", params)
    assert rows == [(1, "external_id:u2"), (1, "external_id:u3"), (2, "external_id:u2")]
