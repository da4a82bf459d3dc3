"""The /users/track bodies of event syncs (braze/payload.py, event_request
and event_time): one object per event or purchase, in the plan's order,
with the user's identifier, `_update_existing_only`, its time in ISO 8601
UTC, its name or purchase fields and its typed properties; at most 75
objects and one sync per request; and which objects Braze's errors name
(warehouse/ledger.py, rejected_objects), counted within the request's
own array."""

from __future__ import annotations

import json

import pytest

from cohort_sync.braze.client import Ack, ObjectError
from cohort_sync.braze.payload import (
    MAX_TRACK_OBJECTS,
    EventChange,
    RequestPart,
    TrackObject,
    attribute_value,
    event_request,
    event_time,
)
from cohort_sync.warehouse.ledger import rejected_counts, rejected_objects

T0 = 1_767_323_045_678  # 2026-01-02T03:04:05.678Z


def alias_key(name: str, label: str) -> str:
    """A member key as cohort_sync_audience_rows builds it for an alias."""
    return f"alias:{len(name)}:{name}:{label}"


def header(event_id: str, member_key: str = "external_id:u1", *, time_ms: int = T0, name: str | None = "app_open",
           sync: str = "app_events", points: int = 1, batch: int = 1, product_id: str | None = None,
           currency: str | None = None, price: str | None = None, quantity: str | None = None) -> EventChange:
    """An event's first row of the plan (property_number 0)."""
    return EventChange(batch, sync, event_id, member_key, time_ms, name, product_id, currency, price, quantity,
                       f"hash-{event_id}", points, 0, None, None, None)


def purchase(event_id: str, member_key: str = "external_id:u1", *, product_id: str = "shirt", currency: str = "USD",
             price: str = "12.5", quantity: str | None = "2", **kwargs) -> EventChange:
    return header(event_id, member_key, name=None, sync=kwargs.pop("sync", "orders"), product_id=product_id,
                  currency=currency, price=price, quantity=quantity, **kwargs)


def prop(head: EventChange, number: int, name: str, value_type: str, text: str) -> EventChange:
    """A property row of the event `head` (the plan repeats the header's columns)."""
    return head._replace(property_number=number, property_name=name, value_type=value_type, value_text=text)


def objects(request, array: str = "events") -> list[dict]:
    body = json.loads(request.body)
    assert list(body) == [array]  # one array: an event sync's request carries nothing else
    return body[array]


# event_time


@pytest.mark.parametrize(("millis", "expected"), [
    (0, "1970-01-01T00:00:00.000Z"),
    (T0, "2026-01-02T03:04:05.678Z"),
    (1_767_323_045_000, "2026-01-02T03:04:05.000Z"),
    (951_782_400_999, "2000-02-29T00:00:00.999Z"),
    (-1, "1969-12-31T23:59:59.999Z"),
    (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    (-62_135_596_800_000, "0001-01-01T00:00:00.000Z"),
])
def test_event_time_is_iso_8601_in_utc_to_the_millisecond(millis, expected):
    assert event_time(millis) == expected
    assert event_time(millis) == attribute_value("time", str(millis))  # as a time attribute is sent


# events


def test_an_event_object_has_its_identifier_name_time_and_properties():
    e1 = header("e1", name="ecommerce.order_placed")
    request = event_request(4, [
        e1,
        prop(e1, 1, "order_total", "number", "120.5"),
        prop(e1, 2, "items", "number", "3"),
        prop(e1, 3, "coupon", "string", "SPRING"),
        prop(e1, 4, "gift", "boolean", "false"),
        prop(e1, 5, "delivered_at", "time", "1767398400000"),
        prop(e1, 6, "ship_on", "date", "2026-01-05"),
        prop(e1, 7, "address", "json", '{"city":"Springfield","lines":["Main St"]}'),
    ], "event", create_users=False)
    [obj] = objects(request)
    assert obj == {
        "external_id": "u1",
        "_update_existing_only": True,
        "name": "ecommerce.order_placed",
        "time": "2026-01-02T03:04:05.678Z",
        "properties": {"order_total": 120.5, "items": 3, "coupon": "SPRING", "gift": False,
                       "delivered_at": "2026-01-03T00:00:00.000Z", "ship_on": "2026-01-05",
                       "address": {"city": "Springfield", "lines": ["Main St"]}},
    }
    assert type(obj["properties"]["items"]) is int
    assert (request.kind, request.batch_number, request.array, request.track, request.family) == (
        "event", 4, "events", True, "users_track")
    assert request.parts == (RequestPart("app_events", 1, 0),)
    assert request.describe() == "batch=4 adds=1 removes=0 objects=1 cohorts=app_events"


def test_an_event_without_properties_has_no_properties_field():
    [obj] = objects(event_request(1, [header("e1")], "event", create_users=False))
    assert obj == {"external_id": "u1", "_update_existing_only": True, "name": "app_open",
                   "time": "2026-01-02T03:04:05.678Z"}


def test_the_body_is_compact_json_in_the_plans_order():
    request = event_request(1, [header("e2", "external_id:u2", name="b"), header("e1", "external_id:u1", name="a")],
                            "event", create_users=True)
    assert request.body == (
        '{"events":[{"external_id":"u2","_update_existing_only":false,"name":"b","time":"2026-01-02T03:04:05.678Z"},'
        '{"external_id":"u1","_update_existing_only":false,"name":"a","time":"2026-01-02T03:04:05.678Z"}]}')
    assert [obj.changes for obj in request.objects] == [(("app_events", "e2", False),), (("app_events", "e1", False),)]


@pytest.mark.parametrize(("member_key", "identifier"), [
    ("external_id:u1", {"external_id": "u1"}),
    ("external_id:a:b", {"external_id": "a:b"}),
    (alias_key("lead:1", "crm"), {"user_alias": {"alias_name": "lead:1", "alias_label": "crm"}}),
    ("email:ann@example.com", {"email": "ann@example.com"}),
    ("braze_id:5f0c1e", {"braze_id": "5f0c1e"}),
    ("phone:+14155550100", {"phone": "+14155550100"}),
])
@pytest.mark.parametrize("create_users", [False, True])
def test_each_identifier_kind_with_update_existing_only_from_create_users(member_key, identifier, create_users):
    [obj] = objects(event_request(1, [header("e1", member_key)], "event", create_users=create_users))
    assert obj == {**identifier, "_update_existing_only": not create_users, "name": "app_open",
                   "time": "2026-01-02T03:04:05.678Z"}
    assert list(obj)[:2] == [*identifier, "_update_existing_only"]  # exactly one identifier


def test_a_key_without_an_identifier_users_track_can_address_is_refused():
    with pytest.raises(ValueError, match="has no identifier /users/track can address"):
        event_request(1, [header("e1", "device_id:d1")], "event", create_users=True)


def test_the_json_column_is_merged_into_the_properties():
    e1 = header("e1")
    [obj] = objects(event_request(1, [
        e1, prop(e1, 1, "$properties", "json", '{"plan":"pro","seats":3,"tags":["a","b"],"meta":{"ab":"b"}}'),
    ], "event", create_users=False))
    assert obj["properties"] == {"plan": "pro", "seats": 3, "tags": ["a", "b"], "meta": {"ab": "b"}}
    assert "$properties" not in json.dumps(obj)


def test_rows_of_one_event_are_one_object_and_other_events_keep_their_own_properties():
    e1, e2 = header("e1"), header("e2", "external_id:u2", time_ms=T0 + 1)
    request = event_request(1, [e1, prop(e1, 1, "screen", "string", "home"), e2,
                                prop(e2, 1, "screen", "string", "cart"), prop(e2, 2, "step", "number", "2")],
                            "event", create_users=False)
    assert [(o["external_id"], o["time"], o["properties"]) for o in objects(request)] == [
        ("u1", "2026-01-02T03:04:05.678Z", {"screen": "home"}),
        ("u2", "2026-01-02T03:04:05.679Z", {"screen": "cart", "step": 2}),
    ]
    assert request.parts == (RequestPart("app_events", 2, 0),)


# purchases


def test_a_purchase_object_has_product_currency_price_quantity_and_no_name():
    p1 = purchase("o1", points=3)
    request = event_request(2, [p1, prop(p1, 1, "order_id", "number", "1001"), prop(p1, 2, "gift", "boolean", "true")],
                            "purchase", create_users=True)
    [obj] = objects(request, "purchases")
    assert obj == {"external_id": "u1", "_update_existing_only": False, "product_id": "shirt", "currency": "USD",
                   "price": 12.5, "quantity": 2, "time": "2026-01-02T03:04:05.678Z",
                   "properties": {"order_id": 1001, "gift": True}}
    assert type(obj["quantity"]) is int
    assert (request.array, request.parts) == ("purchases", (RequestPart("orders", 1, 0),))


def test_a_purchase_without_quantity_leaves_it_to_braze_and_a_whole_price_is_an_integer():
    [obj] = objects(event_request(1, [purchase("o1", alias_key("guest", "web"), price="7", quantity=None,
                                               currency="EUR")], "purchase", create_users=False), "purchases")
    assert obj == {"user_alias": {"alias_name": "guest", "alias_label": "web"}, "_update_existing_only": True,
                   "product_id": "shirt", "currency": "EUR", "price": 7, "time": "2026-01-02T03:04:05.678Z"}
    assert "quantity" not in obj and type(obj["price"]) is int


def test_a_purchase_takes_its_properties_from_the_json_column_too():
    p1 = purchase("o1", "email:ann@example.com")
    [obj] = objects(event_request(1, [p1, prop(p1, 1, "$properties", "json", '{"coupon":"X","lines":2}')],
                                  "purchase", create_users=False), "purchases")
    assert obj["email"] == "ann@example.com" and obj["properties"] == {"coupon": "X", "lines": 2}


# the request


def test_each_object_carries_its_sync_event_id_content_hash_points_and_time():
    p1, p2 = purchase("o1", points=3), purchase("o2", alias_key("guest", "web"), points=1, time_ms=T0 + 5)
    request = event_request(1, [p1, prop(p1, 1, "a", "string", "x"), prop(p1, 2, "b", "string", "y"), p2],
                            "purchase", create_users=False, at_most_once=True)
    assert request.objects == (
        TrackObject("external_id:u1", ("external_id", "u1", None), (("orders", "o1", False),), ("hash-o1",), (3,), T0),
        TrackObject(alias_key("guest", "web"), ("alias", "guest", "web"), (("orders", "o2", False),), ("hash-o2",),
                    (1,), T0 + 5),
    )
    assert request.at_most_once is True
    assert event_request(1, [p1], "purchase", create_users=False).at_most_once is False


def test_data_points_are_the_plans_per_object_and_skip_rejected_objects():
    """An event is one data point; a purchase one plus one per property (as the plan computes them)."""
    request = event_request(1, [purchase("o1", points=3), purchase("o2", points=1), purchase("o3", points=2)],
                            "purchase", create_users=False)
    assert [obj.data_points for obj in request.objects] == [3, 1, 2]
    assert request.data_points() == {"orders": 6}
    assert request.data_points(rejected=[0]) == {"orders": 3}
    assert request.data_points(rejected=[0, 1, 2]) == {"orders": 0}
    events = event_request(1, [header(f"e{n}") for n in range(4)], "event", create_users=False)
    assert events.data_points() == {"app_events": 4}


def test_at_most_75_events_per_request_however_many_properties():
    rows = []
    for n in range(MAX_TRACK_OBJECTS):
        head = header(f"e{n:02d}", f"external_id:u{n}")
        rows += [head, prop(head, 1, "a", "string", "x"), prop(head, 2, "b", "number", str(n))]
    request = event_request(1, rows, "event", create_users=False)
    assert len(request.objects) == len(objects(request)) == MAX_TRACK_OBJECTS
    assert request.parts == (RequestPart("app_events", MAX_TRACK_OBJECTS, 0),)
    with pytest.raises(ValueError, match="at most 75 objects, got 76"):
        event_request(1, [*rows, header("e99")], "event", create_users=False)


def test_one_sync_per_request():
    with pytest.raises(ValueError, match="an event request carries one sync's events, got app_events, opens"):
        event_request(1, [header("e1"), header("e2", sync="opens")], "event", create_users=False)


# rejected_objects


def ack(*errors: ObjectError) -> Ack:
    return Ack(status=201, attempts=1, errors=errors)


def test_rejected_objects_of_an_event_request_are_named_by_their_index_in_its_array():
    request = event_request(1, [header("e0"), header("e1", "external_id:u2"), header("e2", "external_id:u3")],
                            "event", create_users=False)
    assert rejected_objects(request, ack()) == {}
    found = rejected_objects(request, ack(ObjectError("events", 2, "'time' is not valid"),
                                          ObjectError("events", 0, "'name' is required")))
    assert found == {2: "'time' is not valid", 0: "'name' is required"}
    assert rejected_counts(request, found) == {"app_events": (2, 0)}
    assert request.data_points(found) == {"app_events": 1}


def test_rejected_objects_of_a_purchase_request_count_within_purchases():
    request = event_request(1, [purchase("o0"), purchase("o1")], "purchase", create_users=False)
    assert rejected_objects(request, ack(ObjectError("purchases", 1, "'currency' is not valid"))) == {
        1: "'currency' is not valid"}


@pytest.mark.parametrize(("kind", "error", "named"), [
    ("event", ObjectError("purchases", 0, "x"), "purchases[0], which the request (of 2 events objects)"),
    ("event", ObjectError("attributes", 1, "x"), "attributes[1], which the request (of 2 events objects)"),
    ("purchase", ObjectError("events", 0, "x"), "events[0], which the request (of 2 purchases objects)"),
    ("event", ObjectError("events", 2, "x"), "events[2], which the request (of 2 events objects)"),
    ("event", ObjectError("events", -1, "x"), "events[-1], which the request"),
])
def test_an_error_naming_another_array_or_no_object_of_the_request_records_nothing(kind, error, named):
    rows = [header("e0"), header("e1")] if kind == "event" else [purchase("o0"), purchase("o1")]
    request = event_request(3, rows, kind, create_users=False)
    with pytest.raises(ValueError, match="does not have; nothing of it was recorded") as problem:
        rejected_objects(request, ack(error))
    assert f"Braze's answer to event batch 3 names object {named}" in str(problem.value)
