"""The local endpoint validates as Braze documents (over a real socket)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import PARTNER_NAME


@pytest.fixture
def post(braze, keys):
    def send(path: str, **fields):
        body = {"partner_api_key": keys["partner_api_key"], "client_secret": keys["data_import_key"], **fields}
        return requests.post(f"{braze.url}/partners/{PARTNER_NAME}{path}", json=body, timeout=5)

    return send


def test_name_then_changes_are_held_and_read_back(post, braze):
    assert post("/cohorts", cohort_id="c1", name="Cohort one", created_at="2026-01-21T19:20:30+05:00").status_code == 201
    response = post("/cohorts/users", cohort_id="c1", cohort_changes=[
        {"user_ids": ["u1", "u2"], "aliases": [{"alias_name": "a", "alias_label": "l"}], "device_ids": ["d1"]},
    ])
    assert response.status_code == 201
    post("/cohorts/users", cohort_id="c1", cohort_changes=[{"user_ids": ["u2"], "should_remove": True}])
    held = requests.get(f"{braze.url}/_local/cohorts", timeout=5).json()["c1"]
    assert held == {
        "name": "Cohort one",
        "created_at": "2026-01-21T19:20:30+05:00",
        "user_ids": ["u1"],
        "aliases": [{"alias_name": "a", "alias_label": "l"}],
        "device_ids": ["d1"],
    }


@pytest.mark.parametrize(
    ("field", "message"),
    [("partner_api_key", "Invalid partner API key"), ("client_secret", "Invalid client secret")],
)
def test_wrong_keys_are_401(post, field, message):
    response = post("/cohorts", cohort_id="c1", name="n", created_at="2026-01-01T00:00:00Z", **{field: "wrong"})
    assert response.status_code == 401
    assert response.json()["message"] == message


def test_unknown_partner_is_401(braze, keys):
    body = {"partner_api_key": keys["partner_api_key"], "client_secret": keys["data_import_key"],
            "cohort_id": "c", "name": "n", "created_at": "2026-01-01T00:00:00Z"}
    response = requests.post(f"{braze.url}/partners/someone_else/cohorts", json=body, timeout=5)
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("path", "fields", "message"),
    [
        ("/cohorts", {"cohort_id": 5, "name": "n", "created_at": "2026-01-01T00:00:00Z"}, "cohort_id must be a non-empty string"),
        ("/cohorts", {"cohort_id": "c", "name": "", "created_at": "2026-01-01T00:00:00Z"}, "name must be a non-empty string"),
        ("/cohorts", {"cohort_id": "c", "name": "n", "created_at": "yesterday"}, "created_at must be an ISO-8601 timestamp"),
        ("/cohorts/users", {"cohort_id": "c", "cohort_changes": {"user_ids": ["u"]}}, "cohort_changes must be an array of objects"),
        ("/cohorts/users", {"cohort_id": "c", "cohort_changes": [{"user_ids": [1]}]}, "user_ids must be an array of strings"),
        ("/cohorts/users", {"cohort_id": "c", "cohort_changes": [{"device_ids": "d"}]}, "device_ids must be an array of strings"),
        ("/cohorts/users", {"cohort_id": "c", "cohort_changes": [{"aliases": [{"alias_name": "a"}]}]}, "each alias needs alias_name and alias_label"),
        ("/cohorts/users", {"cohort_id": "c", "cohort_changes": [{"user_ids": [f"u{n}" for n in range(600)]}, {"device_ids": [f"d{n}" for n in range(401)]}]}, "at most 1000 identifiers per request, got 1001"),
        ("/cohorts/users", {"cohort_id": "c", "cohort_changes": [{"user_ids": ["u"]}, {"user_ids": ["u"], "should_remove": True}]}, "both added and removed"),
    ],
)
def test_malformed_requests_are_400(post, braze, path, fields, message):
    response = post(path, **fields)
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert braze.cohorts() == {}


def test_injected_faults_are_consumed_in_order(post, braze):
    braze.set_faults([{"endpoint": "users", "times": 1, "status": 503, "retry_after": 2}])
    first = post("/cohorts/users", cohort_id="c", cohort_changes=[{"user_ids": ["u"]}])
    assert (first.status_code, first.headers["Retry-After"]) == (503, "2")
    assert post("/cohorts/users", cohort_id="c", cohort_changes=[{"user_ids": ["u"]}]).status_code == 201


def test_rate_limit_answers_429_beyond_the_window(keys):
    from cohort_sync.braze.local import LocalBraze

    with LocalBraze(partner_name=PARTNER_NAME, rate_limit_per_hour=3600, **keys) as server:  # 10 per 10 s
        body = {"partner_api_key": keys["partner_api_key"], "client_secret": keys["data_import_key"],
                "cohort_id": "c", "cohort_changes": [{"user_ids": ["u"]}]}
        statuses = [
            requests.post(f"{server.url}/partners/{PARTNER_NAME}/cohorts/users", json=body, timeout=5)
            for _ in range(11)
        ]
    assert [r.status_code for r in statuses] == [201] * 10 + [429]
    assert statuses[-1].headers["Retry-After"] == "10"


# -- POST /users/track --------------------------------------------------------

T = "2026-03-01T12:00:00Z"


@pytest.fixture
def track(braze, keys):
    def send(body=None, *, key: str | None = keys["rest_api_key"], raw: str | None = None, server=None):
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        url = f"{(server or braze).url}/users/track"
        if raw is not None:
            return requests.post(url, data=raw, headers={**headers, "Content-Type": "application/json"}, timeout=5)
        return requests.post(url, json=body, headers=headers, timeout=5)

    return send


def by_external_id(braze) -> dict:
    return {p["external_id"]: p for p in braze.profiles() if p["external_id"]}


@pytest.mark.parametrize("key", [None, "RESTKEY-wrong"])
def test_track_needs_the_rest_api_key_as_a_bearer_token(track, braze, key):
    response = track({"attributes": [{"external_id": "u1", "a": 1}]}, key=key)
    assert response.status_code == 401
    assert "API key" in response.json()["message"]
    assert braze.profiles() == []
    assert braze.requests()[-1]["status"] == 401


def test_without_a_rest_api_key_every_track_call_is_401(keys):
    from cohort_sync.braze.local import LocalBraze

    partner = {k: v for k, v in keys.items() if k != "rest_api_key"}
    with LocalBraze(partner_name=PARTNER_NAME, **partner) as server:
        response = requests.post(f"{server.url}/users/track", json={"attributes": [{"external_id": "u"}]},
                                 headers={"Authorization": "Bearer anything"}, timeout=5)
    assert response.status_code == 401


def test_seeded_profiles_read_back_sorted_over_http_and_in_python(braze):
    braze.seed_profiles([{"external_id": "u2"}, {"email": "x@y.z", "braze_id": "b1"}])
    seeded = requests.post(f"{braze.url}/_local/profiles", timeout=5, json={"profiles": [
        {"user_alias": {"alias_name": "a", "alias_label": "l"}}, {"external_id": "u1", "attributes": {"tier": "gold"}},
    ]})
    assert seeded.status_code == 200
    profiles = requests.get(f"{braze.url}/_local/profiles", timeout=5).json()
    assert profiles == braze.profiles()
    assert [(p["external_id"], p["user_alias"], p["email"]) for p in profiles] == [
        ("u1", None, None), ("u2", None, None),
        (None, {"alias_name": "a", "alias_label": "l"}, None), (None, None, "x@y.z"),
    ]
    assert profiles[0] == {
        "external_id": "u1", "user_alias": None, "braze_id": profiles[0]["braze_id"], "email": None, "phone": None,
        "attributes": {"tier": "gold"}, "events": [], "purchases": [],
    }
    assert len({p["braze_id"] for p in profiles}) == 4 and profiles[3]["braze_id"] == "b1"
    taken = requests.post(f"{braze.url}/_local/profiles", json={"profiles": [{"external_id": "u1"}]}, timeout=5)
    assert taken.status_code == 400 and "exists already" in taken.json()["message"]
    with pytest.raises(ValueError, match="not a profile"):
        braze.seed_profiles([{"nickname": "x"}])
    braze.reset()
    assert braze.profiles() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"attributes": [{"external_id": "u1"}], "users": []}, "unknown field 'users'"),
        ({"attributes": {"external_id": "u1"}}, "'attributes' must be an array"),
        ({"attributes": [], "events": []}, "Valid data must be provided"),
        ([{"external_id": "u1"}], "must be a JSON object"),
    ],
)
def test_a_malformed_track_request_is_400_and_applies_nothing(track, braze, body, message):
    response = track(body)
    assert response.status_code == 400
    assert message in response.json()["message"] + str(response.json().get("errors"))
    assert braze.profiles() == []
    assert braze.requests()[-1]["status"] == 400


def test_at_most_75_objects_in_total_across_the_three_arrays(track, braze):
    body = {
        "attributes": [{"external_id": f"u{n}", "a": 1} for n in range(40)],
        "events": [{"external_id": f"u{n}", "name": "e", "time": T} for n in range(30)],
        "purchases": [{"external_id": f"u{n}", "product_id": "p", "currency": "EUR", "price": 1, "time": T}
                      for n in range(6)],
    }
    response = track(body)
    assert response.status_code == 400
    assert response.json()["errors"] == ["the request holds 76 objects"]
    assert braze.profiles() == []
    body["purchases"].pop()
    assert track(body).status_code == 201
    assert len(braze.profiles()) == 40


def test_max_track_objects_is_configurable(keys, track):
    from cohort_sync.braze.local import LocalBraze

    with LocalBraze(partner_name=PARTNER_NAME, max_track_objects=2, **keys) as server:
        assert track({"attributes": [{"external_id": "a"}] * 3}, server=server).status_code == 400
        assert track({"attributes": [{"external_id": "a"}] * 2}, server=server).status_code == 201


def test_each_object_needs_exactly_one_valid_identifier(track, braze):
    response = track({"attributes": [
        {"a": 1},
        {"external_id": "u1", "braze_id": "b1", "a": 1},
        {"external_id": "", "a": 1},
        {"user_alias": {"alias_name": "a"}, "_update_existing_only": False},
        {"email": "not an email"},
        {"phone": "555-1234"},
        {"external_id": "u2", "a": 1},
    ]})
    assert response.status_code == 201
    assert response.json() == {
        "message": "success",
        "attributes_processed": 1,
        "errors": [
            {"type": "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required",
             "input_array": "attributes", "index": 0},
            {"type": "only one of 'external_id', 'braze_id' may be given", "input_array": "attributes", "index": 1},
            {"type": "'external_id' is not valid", "input_array": "attributes", "index": 2},
            {"type": "'user_alias' is not valid", "input_array": "attributes", "index": 3},
            {"type": "'email' is not valid", "input_array": "attributes", "index": 4},
            {"type": "'phone' is not valid", "input_array": "attributes", "index": 5},
        ],
    }
    assert [p["external_id"] for p in braze.profiles()] == ["u2"]


def test_email_beside_an_external_id_is_the_profiles_email_and_is_found_case_insensitively(track, braze):
    braze.seed_profiles([{"email": "Ann@Example.com"}])
    track({"attributes": [{"email": "ann@example.COM", "first_name": "Ann"},
                          {"external_id": "u1", "email": "bob@example.com"}]})
    track({"attributes": [{"email": "BOB@example.com", "first_name": "Bob"}]})
    profiles = braze.profiles()
    assert [(p["external_id"], p["email"], p["attributes"]) for p in profiles] == [
        ("u1", "bob@example.com", {"first_name": "Bob"}),
        (None, "Ann@Example.com", {"first_name": "Ann"}),
    ]


def test_which_unknown_users_an_object_creates(track, braze):
    braze.seed_profiles([{"external_id": "known"}])
    response = track({"attributes": [
        {"external_id": "new", "a": 1},                                                     # created
        {"external_id": "unknown", "_update_existing_only": True, "a": 1},                  # ignored
        {"external_id": "known", "_update_existing_only": True, "a": 1},                    # updated
        {"user_alias": {"alias_name": "n", "alias_label": "l"}, "a": 1},                    # ignored: default true
        {"user_alias": {"alias_name": "m", "alias_label": "l"}, "_update_existing_only": False, "a": 1},  # created
        {"email": "new@example.com", "a": 1},                                               # created
        {"braze_id": "nobody", "_update_existing_only": False, "a": 1},                     # ignored: never creates
        {"external_id": "x", "_update_existing_only": "yes"},                               # error
    ]})
    assert response.json() == {
        "message": "success", "attributes_processed": 7,
        "errors": [{"type": "'_update_existing_only' is not valid", "input_array": "attributes", "index": 7}],
    }
    held = [(p["external_id"], p["user_alias"], p["email"]) for p in braze.profiles()]
    assert held == [("known", None, None), ("new", None, None),
                    (None, {"alias_name": "m", "alias_label": "l"}, None), (None, None, "new@example.com")]
    entry = braze.requests()[-1]
    assert (entry["objects"], entry["applied"], entry["ignored"], entry["created"]) == (8, 4, 3, 3)


def test_attribute_updates_follow_brazes_rules(track, braze):
    braze.seed_profiles([{"external_id": "u1", "attributes": {
        "gone": "x", "visits": 3, "tags": ["a", "b"], "address": {"city": "Paris", "zip": "75001"},
        "prefs": {"email": True, "sms": {"on": False}},
    }}])
    response = track({"attributes": [{
        "external_id": "u1", "gone": None, "visits": {"inc": 2}, "count": {"inc": 1},
        "tags": {"add": ["c", "a"], "remove": ["b"]}, "many": [f"v{n}" for n in range(30)] + ["v0"],
        "address": {"city": "Lyon"}, "_merge_objects": False,
    }, {
        "external_id": "u1", "prefs": {"sms": {"on": True}, "push": False}, "_merge_objects": True,
    }]})
    assert response.status_code == 201 and "errors" not in response.json()
    attributes = by_external_id(braze)["u1"]["attributes"]
    assert attributes == {
        "visits": 5, "count": 1, "tags": ["a", "c"], "many": [f"v{n}" for n in range(25)],
        "address": {"city": "Lyon"}, "prefs": {"email": True, "sms": {"on": True}, "push": False},
    }


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"$reserved": 1}, "'$reserved' is not a valid attribute name"),
        ({"n" * 256: 1}, "is not a valid attribute name"),
        ({"name": "x" * 256}, "'name' is not valid: strings are at most 255 characters"),
        ({"tier": {"inc": 1}}, "'tier' is not an integer attribute"),
        ({"visits": {"inc": "1"}}, "'visits' is not valid: inc takes an integer"),
        ({"tier": {"add": ["x"]}}, "'tier' is not an array attribute"),
        ({"obj": {"a.b": 1}}, "'obj' is not valid: nested keys have no '.' or spaces"),
        ({"a": 1, "_merge_objects": "yes"}, "'_merge_objects' is not valid"),
    ],
)
def test_an_invalid_attribute_rejects_its_whole_object_only(track, braze, fields, error):
    braze.seed_profiles([{"external_id": "u1", "attributes": {"tier": "gold"}}])
    response = track({"attributes": [{"external_id": "u1", "other": 1, **fields}, {"external_id": "u2", "a": 1}]})
    assert response.status_code == 201
    [reported] = response.json()["errors"]
    assert error in reported["type"] and (reported["input_array"], reported["index"]) == ("attributes", 0)
    assert {k: p["attributes"] for k, p in by_external_id(braze).items()} == {"u1": {"tier": "gold"}, "u2": {"a": 1}}


def test_events_and_purchases_are_appended_in_the_order_received(track, braze):
    response = track({
        "events": [
            {"external_id": "u1", "name": "signed_up", "time": T, "properties": {"plan": "pro"}},
            {"external_id": "u1", "name": "signed_up", "time": T, "app_id": "app"},
        ],
        "purchases": [{"external_id": "u1", "product_id": "sku", "currency": "EUR", "price": 9.5, "time": T}],
        "attributes": [{"external_id": "u1", "plan": "pro"}],
    })
    assert response.json() == {"message": "success", "attributes_processed": 1, "events_processed": 2,
                               "purchases_processed": 1}
    profile = by_external_id(braze)["u1"]
    assert profile["events"] == [
        {"sequence": 1, "name": "signed_up", "time": T, "properties": {"plan": "pro"}},
        {"sequence": 2, "name": "signed_up", "time": T, "app_id": "app"},
    ]
    assert profile["purchases"] == [
        {"sequence": 3, "product_id": "sku", "currency": "EUR", "price": 9.5, "time": T, "quantity": 1},
    ]
    assert profile["attributes"] == {"plan": "pro"}


@pytest.mark.parametrize(
    ("array", "fields", "error"),
    [
        ("events", {"time": T}, "'name' is required"),
        ("events", {"name": "e"}, "'time' is required"),
        ("events", {"name": "e", "time": "yesterday"}, "'time' is not valid"),
        ("events", {"name": 5, "time": T}, "'name' is not valid"),
        ("events", {"name": "e", "time": T, "properties": []}, "'properties' is not valid"),
        ("events", {"name": "e", "time": T, "properties": {"$p": 1}}, "'$p' is not a valid property name"),
        ("purchases", {"currency": "EUR", "price": 1, "time": T}, "'product_id' is required"),
        ("purchases", {"product_id": "p" * 256, "currency": "EUR", "price": 1, "time": T}, "'product_id' is not valid"),
        ("purchases", {"product_id": "p", "currency": "eur", "price": 1, "time": T}, "'currency' is not valid"),
        ("purchases", {"product_id": "p", "currency": "EUR", "price": "1", "time": T}, "'price' is not valid"),
        ("purchases", {"product_id": "p", "currency": "EUR", "price": 1, "time": T, "quantity": 101},
         "'quantity' is not valid"),
    ],
)
def test_an_invalid_event_or_purchase_is_a_per_object_error(track, braze, array, fields, error):
    response = track({array: [{"external_id": "u1", **fields}]})
    assert response.status_code == 201
    assert response.json()["errors"] == [{"type": error, "input_array": array, "index": 0}]
    assert braze.profiles() == []


def test_injected_rejections_name_the_objects_and_apply_the_rest(track, braze):
    braze.set_track_rejects(["u2", "Ann@example.com", "alias"], type="'email_subscribe' is not valid")
    response = track({
        "attributes": [{"external_id": "u1", "a": 1}, {"external_id": "u2", "a": 1}, {"email": "ann@EXAMPLE.com"}],
        "events": [{"user_alias": {"alias_name": "alias", "alias_label": "l"}, "name": "e", "time": T}],
    })
    assert response.json() == {
        "message": "success", "attributes_processed": 1, "events_processed": 0,
        "errors": [
            {"type": "'email_subscribe' is not valid", "input_array": "attributes", "index": 1},
            {"type": "'email_subscribe' is not valid", "input_array": "attributes", "index": 2},
            {"type": "'email_subscribe' is not valid", "input_array": "events", "index": 0},
        ],
    }
    assert list(by_external_id(braze)) == ["u1"]
    assert braze.requests()[-1]["errors"] == response.json()["errors"]
    requests.post(f"{braze.url}/_local/track_rejects", json={"identifiers": ["u1"]}, timeout=5)
    again = track({"attributes": [{"external_id": "u1", "a": 2}, {"external_id": "u2", "a": 2}]})
    assert again.json()["errors"] == [{"type": "injected rejection", "input_array": "attributes", "index": 0}]
    braze.reset()
    assert "errors" not in track({"attributes": [{"external_id": "u1", "a": 3}]}).json()


def test_the_request_log_digests_what_was_applied(track, braze):
    braze.set_track_rejects(["bad"])
    body = {"attributes": [{"external_id": "u1", "a": 1}, {"external_id": "bad", "a": 1},
                           {"external_id": "ghost", "_update_existing_only": True}],
            "events": [{"external_id": "u1", "name": "e", "time": T}]}
    track(body)
    track(body)
    track({"attributes": [{"external_id": "u1", "a": 2}]})
    first, second, third = braze.requests()
    assert {k: first[k] for k in ("endpoint", "status", "objects", "applied", "ignored", "created")} == {
        "endpoint": "track", "status": 201, "objects": 4, "applied": 2, "ignored": 1, "created": 1,
    }
    assert first["errors"] == [{"type": "injected rejection", "input_array": "attributes", "index": 1}]
    assert len(first["object_digests"]) == 2
    assert (second["digest"], second["object_digests"], second["created"]) == (first["digest"], first["object_digests"], 0)
    assert third["digest"] != first["digest"]


def test_track_rate_limit_is_a_fixed_window_with_brazes_headers(keys, track):
    from cohort_sync.braze.local import LocalBraze

    now = [3000.5]  # the window is [3000, 3003)
    with LocalBraze(partner_name=PARTNER_NAME, track_rate_limit=(2, 3.0), clock=lambda: now[0], **keys) as server:
        body = {"attributes": [{"external_id": "u1", "visits": {"inc": 1}}]}
        answers = [track(body, server=server) for _ in range(3)]
        unauthorized = track(body, server=server, key="wrong")
        now[0] = 3003.0
        after_reset = track(body, server=server)
        visits = server.profiles()[0]["attributes"]["visits"]
        logged = server.requests()
    assert [r.status_code for r in answers] == [201, 201, 429]
    assert [(r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"], r.headers["X-RateLimit-Reset"])
            for r in answers] == [("2", "1", "3003"), ("2", "0", "3003"), ("2", "0", "3003")]
    assert answers[2].headers["Retry-After"] == "3" and "Retry-After" not in answers[1].headers
    assert unauthorized.status_code == 429 and unauthorized.headers["X-RateLimit-Remaining"] == "0"
    assert after_reset.status_code == 201
    assert (after_reset.headers["X-RateLimit-Remaining"], after_reset.headers["X-RateLimit-Reset"]) == ("1", "3006")
    assert visits == 3
    assert [e.get("rate_limited", False) for e in logged] == [False, False, True, True, False]


def test_every_track_answer_carries_the_rate_headers_unless_disabled(keys, track, braze):
    assert track({"attributes": [{"external_id": "u1"}]}, key="wrong").headers["X-RateLimit-Limit"] == "3000"
    braze.set_faults([{"endpoint": "track", "times": 1, "status": 503}])
    assert track({"attributes": [{"external_id": "u1"}]}).headers["X-RateLimit-Remaining"] == "2998"
    from cohort_sync.braze.local import LocalBraze

    with LocalBraze(partner_name=PARTNER_NAME, track_rate_limit=None, **keys) as server:
        response = track({"attributes": [{"external_id": "u1"}]}, server=server)
    assert response.status_code == 201 and not any(h.lower().startswith("x-ratelimit") for h in response.headers)


def test_track_faults_are_injected_like_the_cohort_endpoints(track, braze):
    braze.set_faults([
        {"endpoint": "users", "times": 1, "status": 500},
        {"endpoint": "track", "times": 1, "status": 503, "retry_after": 2, "headers": {"X-Ratelimit-Retry-After": "2"}},
        {"endpoint": "any", "times": 1, "status": 502, "body": "<html>Bad gateway</html>"},
        {"endpoint": "track", "times": 1, "drop": "before"},
        {"endpoint": "track", "times": 1, "drop": "after"},
    ])
    body = {"attributes": [{"external_id": "u1", "visits": {"inc": 1}}]}
    first = track(body)
    assert (first.status_code, first.headers["Retry-After"], first.headers["X-Ratelimit-Retry-After"]) == (503, "2", "2")
    second = track(body)
    assert (second.status_code, second.text) == (502, "<html>Bad gateway</html>")
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            track(body)
    assert track(body).status_code == 201
    assert by_external_id(braze)["u1"]["attributes"] == {"visits": 2}  # the lost ack was applied
    faults = [e["fault"] for e in braze.requests() if "fault" in e]
    assert [e["endpoint"] for e in braze.requests() if "fault" in e] == ["track"] * 4
    assert faults[0] == {"status": 503, "retry_after": 2, "headers": {"X-Ratelimit-Retry-After": "2"}}


def test_a_burst_of_new_connections_is_served_without_stalls_or_errors(post, braze):
    """A publisher opens up to COHORT_SYNC_CONCURRENCY (16) connections at once, and again after
    dropped ones: each must reach the handler (a listen backlog of 5 drops the excess)."""
    def name(n: int) -> int:
        return post("/cohorts", cohort_id=f"c{n}", name="n", created_at="2026-01-01T00:00:00Z").status_code

    for _ in range(3):
        with ThreadPoolExecutor(max_workers=32) as pool:  # a new session, so a new connection, each
            assert list(pool.map(name, range(32))) == [201] * 32
    assert len(braze.requests()) == 96
