"""The /users/track bodies of attribute syncs (braze/payload.py): the
identifier read back from a member key, each value kind turned into JSON,
and one object per user carrying only what changed."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from cohort_sync.braze.payload import (
    MAX_TRACK_OBJECTS,
    UNREAD_OBJECT,
    ProfileBatch,
    ProfileChange,
    RequestPart,
    TrackObject,
    attribute_value,
    identifier_from_key,
    profile_request,
    rendered_profile_request,
)


def alias_key(name: str, label: str) -> str:
    """A member key as cohort_sync_audience_rows builds it for an alias."""
    return f"alias:{len(name)}:{name}:{label}"


def value(member_key: str, name: str, text: str | None, kind: str = "string", *, sync: str = "facts",
          remove: bool = False, points: int = 1, batch: int = 1) -> ProfileChange:
    return ProfileChange(batch, sync, member_key, name, remove, kind, None if remove else text,
                         None if remove else f"hash-{name}-{text}", points)


def body(request) -> list[dict]:
    return json.loads(request.body)["attributes"]


# identifier_from_key


@pytest.mark.parametrize(("member_key", "identifier"), [
    ("external_id:u1", ("external_id", "u1", None)),
    ("external_id:a:b", ("external_id", "a:b", None)),  # everything after the first ':'
    (alias_key("lead-1", "crm"), ("alias", "lead-1", "crm")),
    (alias_key("a:b:c", "x:y"), ("alias", "a:b:c", "x:y")),  # ':' in the name and the label
    (alias_key("n", ""), ("alias", "n", "")),
    ("braze_id:5f0c1e", ("braze_id", "5f0c1e", None)),
    ("email:ann@example.com", ("email", "ann@example.com", None)),
    ("phone:+14155550100", ("phone", "+14155550100", None)),
])
def test_identifier_from_key_reads_every_key_the_audience_rows_build(member_key, identifier):
    assert identifier_from_key(member_key) == identifier


@pytest.mark.parametrize("member_key", [
    "alias:x:lead:crm",    # no length
    "alias:9:lead:crm",    # the length runs past the key
    "alias:2:lead:crm",    # the name is not followed by ':'
    "alias:4:lead",        # no label
])
def test_a_malformed_alias_key_is_refused(member_key):
    with pytest.raises(ValueError, match=f"member key '{member_key}' is not an alias key"):
        identifier_from_key(member_key)


@pytest.mark.parametrize("member_key", ["external_id:", "device_id:d1", "user_id:u1", "u1", ""])
def test_a_key_users_track_cannot_address_is_refused(member_key):
    with pytest.raises(ValueError, match="has no identifier /users/track can address"):
        identifier_from_key(member_key)


# attribute_value


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("42", 42), ("-7", -7), ("12345678901234", 12345678901234),
    ("2.5", 2.5), ("-0.125", -0.125), ("1e+20", 1e20), ("1.5e-07", 1.5e-07),
])
def test_numbers_are_ints_when_integral_else_floats(text, expected):
    sent = attribute_value("number", text)
    assert sent == expected
    assert type(sent) is type(expected)


def test_a_large_number_in_exponent_form_stays_a_float_in_json():
    assert json.dumps(attribute_value("number", "1e+20")) == "1e+20"


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("false", False)])
def test_booleans(text, expected):
    assert attribute_value("boolean", text) is expected


@pytest.mark.parametrize(("millis", "expected"), [
    ("0", "1970-01-01T00:00:00.000Z"),
    ("1700000000123", "2023-11-14T22:13:20.123Z"),
    ("1700000000000", "2023-11-14T22:13:20.000Z"),
    ("951782400999", "2000-02-29T00:00:00.999Z"),
    ("-1", "1969-12-31T23:59:59.999Z"),
])
def test_times_are_iso_8601_in_utc_with_milliseconds(millis, expected):
    assert attribute_value("time", millis) == expected


def expected_iso(millis: int) -> str:
    """The instant `millis` after the epoch, in integer arithmetic, as ISO 8601 UTC with milliseconds."""
    at = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=millis)
    return f"{at.year:04d}-" + at.strftime("%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def test_every_millisecond_survives_the_conversion():
    """No millisecond is lost (two seconds of milliseconds now, and around 1900 and 2200)."""
    for start in (1_700_000_000_000, -2_208_988_800_000, 7_258_118_400_000):
        for millis in range(start - 1000, start + 1000):
            assert attribute_value("time", str(millis)) == expected_iso(millis), millis


@pytest.mark.parametrize("millis", [253_402_300_799_999, -62_135_596_800_000])  # 9999-12-31T23:59:59.999, 0001-01-01
def test_far_dates_keep_their_milliseconds_and_four_digit_years(millis):
    assert attribute_value("time", str(millis)) == expected_iso(millis)


def test_arrays_and_json_are_parsed_into_json_values():
    assert attribute_value("array", '["gold","vip"]') == ["gold", "vip"]
    assert attribute_value("array", "[]") == []
    assert attribute_value("json", '{"b":[1,2],"a":{"c":null}}') == {"b": [1, 2], "a": {"c": None}}
    assert attribute_value("json", "3") == 3


@pytest.mark.parametrize(("kind", "text"), [
    ("string", "gold"), ("string", ""), ("string", "1.0"), ("string", "true"), ("date", "2024-02-29"),
    (None, "as is"),
])
def test_strings_and_dates_are_sent_as_text(kind, text):
    assert attribute_value(kind, text) == text


@pytest.mark.parametrize("kind", ["string", "number", "boolean", "date", "time", "array", "json", None])
def test_no_text_is_none_which_unsets(kind):
    assert attribute_value(kind, None) is None


# profile_request


def test_one_object_per_user_in_member_key_order_with_only_its_changes():
    request = profile_request("profile", 3, [
        value("external_id:u2", "tier", "gold"),
        value("external_id:u1", "orders", "3", "number"),
        value(alias_key("lead:1", "crm"), "vip", "true", "boolean"),
        value("external_id:u1", "last_order_on", "2024-05-01", "date"),
        value("email:ann@example.com", "tags", '["a","b"]', "array"),
    ], "update")
    assert body(request) == [
        {"user_alias": {"alias_name": "lead:1", "alias_label": "crm"}, "_update_existing_only": True, "vip": True},
        {"email": "ann@example.com", "_update_existing_only": True, "tags": ["a", "b"]},
        {"external_id": "u1", "_update_existing_only": True, "orders": 3, "last_order_on": "2024-05-01"},
        {"external_id": "u2", "_update_existing_only": True, "tier": "gold"},
    ]
    assert (request.kind, request.batch_number, request.track) == ("profile", 3, True)
    assert [obj.member_key for obj in request.objects] == sorted(obj.member_key for obj in request.objects)
    assert request.parts == (RequestPart("facts", 5, 0),)
    assert request.family == "users_track"


def test_upsert_sends_update_existing_only_false_for_every_identifier_aliases_included():
    request = profile_request("profile", 1, [
        value("external_id:u1", "tier", "gold"),
        value(alias_key("lead", "crm"), "tier", "gold"),
        value("braze_id:b1", "tier", "gold"),
        value("phone:+14155550100", "tier", "gold"),
    ], "upsert")
    assert [obj["_update_existing_only"] for obj in body(request)] == [False] * 4
    assert body(request)[0] == {"user_alias": {"alias_name": "lead", "alias_label": "crm"},
                                "_update_existing_only": False, "tier": "gold"}
    assert {key for obj in body(request) for key in obj} >= {"braze_id", "phone", "external_id", "user_alias"}


def test_update_sends_update_existing_only_true():
    [obj] = body(profile_request("profile", 1, [value("braze_id:b1", "tier", "gold")], "update"))
    assert obj == {"braze_id": "b1", "_update_existing_only": True, "tier": "gold"}


def test_an_unset_is_a_null_and_counts_as_a_remove():
    request = profile_request("profile", 1, [
        value("external_id:u1", "tier", None, remove=True),
        value("external_id:u1", "orders", "4", "number"),
        value("external_id:u2", "tier", None, remove=True),
    ], "update")
    assert request.body == ('{"attributes":[{"external_id":"u1","_update_existing_only":true,"tier":null,"orders":4},'
                            '{"external_id":"u2","_update_existing_only":true,"tier":null}]}')
    assert request.parts == (RequestPart("facts", 1, 2),)
    assert (request.adds, request.removes, request.identifiers) == (1, 2, 3)
    assert request.objects[0].changes == (("facts", "tier", True), ("facts", "orders", False))


def test_parts_count_each_sync_of_the_request():
    request = profile_request("profile_resync", 2, [
        value("external_id:u1", "tier", "gold", sync="b_sync"),
        value("external_id:u1", "plan", None, sync="a_sync", remove=True),
        value("external_id:u2", "plan", "pro", sync="a_sync"),
        value("external_id:u3", "tier", "silver", sync="b_sync"),
    ], "update")
    assert request.parts == (RequestPart("a_sync", 1, 1), RequestPart("b_sync", 2, 0))
    assert request.cohort_ids == ("a_sync", "b_sync")
    assert "resync_batch=2 adds=3 removes=1 objects=3 cohorts=a_sync,b_sync" == request.describe()


def test_at_most_75_users_per_request_however_many_values():
    many = [value(f"external_id:u{n:03d}", name, "x") for n in range(MAX_TRACK_OBJECTS) for name in ("a", "b")]
    request = profile_request("profile", 1, many, "update")
    assert len(request.objects) == MAX_TRACK_OBJECTS == len(body(request))
    assert request.adds == 2 * MAX_TRACK_OBJECTS
    with pytest.raises(ValueError, match="at most 75 objects, got 76"):
        profile_request("profile", 1, [*many, value("external_id:u999", "a", "x")], "update")


def test_a_key_without_a_usable_identifier_is_refused():
    with pytest.raises(ValueError, match="has no identifier /users/track can address"):
        profile_request("profile", 1, [value("device_id:d1", "tier", "gold")], "upsert")


def test_track_objects_carry_the_identifier_hashes_and_points_of_each_change():
    request = profile_request("profile", 1, [
        value(alias_key("lead", "crm"), "email_subscribe", "opted_in", points=0),
        value(alias_key("lead", "crm"), "tier", "gold"),
        value(alias_key("lead", "crm"), "plan", None, remove=True),
    ], "update")
    [obj] = request.objects
    assert obj == TrackObject(
        alias_key("lead", "crm"), ("alias", "lead", "crm"),
        (("facts", "email_subscribe", False), ("facts", "tier", False), ("facts", "plan", True)),
        ("hash-email_subscribe-opted_in", "hash-tier-gold", None),
        (0, 1, 1),
    )
    assert obj.data_points == 2


def test_data_points_per_sync_skip_rejected_objects_and_subscription_states_are_free():
    request = profile_request("profile", 1, [
        value("external_id:u1", "tier", "gold"),
        value("external_id:u1", "email_subscribe", "opted_in", points=0),
        value("external_id:u2", "tier", "silver"),
        value("external_id:u2", "orders", "3", "number"),
        value("external_id:u3", "push_subscribe", "subscribed", points=0, sync="other"),
        value("external_id:u3", "plan", None, remove=True, sync="other"),
    ], "update")
    assert [obj.data_points for obj in request.objects] == [1, 2, 1]
    assert request.data_points() == {"facts": 3, "other": 1}
    assert request.data_points(rejected=[1]) == {"facts": 1, "other": 1}
    assert request.data_points(rejected=[0, 1, 2]) == {"facts": 0, "other": 0}
    assert request.data_points(rejected=[7]) == {"facts": 3, "other": 1}  # an index the request lacks


def test_a_track_object_without_points_counts_one_per_change():
    obj = TrackObject("external_id:u1", ("external_id", "u1", None), (("c", "cohort_c", False), ("d", "cohort_d", True)))
    assert obj.data_points == 2


def test_an_empty_plan_is_an_empty_request():
    request = profile_request("profile", 1, [], "update")
    assert (request.body, request.parts, request.objects) == ('{"attributes":[]}', (), ())
    assert request.data_points() == {}



def test_the_rendered_point_totals_agree_with_counting_the_objects():
    request = profile_request("profile", 1, [
        value("external_id:u1", "tier", "gold"),
        value("external_id:u1", "email_subscribe", "opted_in", points=0),
        value("external_id:u2", "orders", "3", "number"),
        value("external_id:u3", "plan", None, remove=True, sync="other"),
    ], "update")
    counted = request._replace(points=())  # no totals: every object counted
    assert request.points == (2, 1)
    for rejected in ([], [0], [1, 2], [0, 1, 2], [5]):
        assert request.data_points(rejected) == counted.data_points(rejected)


# rendered_profile_request: the plan's page query renders each batch whole in the warehouse (that the
# request equals profile_request's is tested on every engine: tests/integration/test_attribute_syncs.py)


def test_a_batch_rendered_in_the_warehouse_is_sent_as_it_is_its_users_unread():
    objects = ('{"external_id":"u1","_update_existing_only":true,"tier":"gold"},'
               '{"braze_id":"b1","_update_existing_only":true,"plan":null}')
    request = rendered_profile_request("profile", "facts", ProfileBatch(4, 2, 1, 1, 3, objects))
    assert json.loads(request.body) == {"attributes": [
        {"external_id": "u1", "_update_existing_only": True, "tier": "gold"},
        {"braze_id": "b1", "_update_existing_only": True, "plan": None}]}
    assert (request.kind, request.batch_number, request.parts, request.points) == (
        "profile", 4, (RequestPart("facts", 1, 1),), (3,))
    assert request.objects == (UNREAD_OBJECT, UNREAD_OBJECT)  # read from the plan only for a rejection
    assert request.data_points() == {"facts": 3}
    assert request.describe() == "batch=4 adds=1 removes=1 objects=2 cohorts=facts"


def test_a_rendered_request_holds_at_most_75_users():
    assert len(rendered_profile_request("profile", "facts", (1, MAX_TRACK_OBJECTS, 75, 0, 75, "{}")).objects) == 75
    with pytest.raises(ValueError, match="at most 75 objects, got 76"):
        rendered_profile_request("profile", "facts", (1, 76, 76, 0, 76, "{}"))
