"""The local endpoint validates as Braze documents (over a real socket)."""

from __future__ import annotations

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
    from cohort_sync.local_braze import LocalBraze

    with LocalBraze(partner_name=PARTNER_NAME, rate_limit_per_hour=3600, **keys) as server:  # 10 per 10 s
        body = {"partner_api_key": keys["partner_api_key"], "client_secret": keys["data_import_key"],
                "cohort_id": "c", "cohort_changes": [{"user_ids": ["u"]}]}
        statuses = [
            requests.post(f"{server.url}/partners/{PARTNER_NAME}/cohorts/users", json=body, timeout=5)
            for _ in range(11)
        ]
    assert [r.status_code for r in statuses] == [201] * 10 + [429]
    assert statuses[-1].headers["Retry-After"] == "10"
