"""The Braze client against the local endpoint over a real socket, with injected faults."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import pytest

from cohort_sync.braze.client import (
    BrazeAuthError,
    BrazeClient,
    BrazeRejectedError,
    BrazeUnavailableError,
    ObjectError,
)
from cohort_sync.braze.local import LocalBraze
from cohort_sync.config import BrazeSettings, ConfigError
from tests.conftest import PARTNER_NAME


@pytest.fixture
def settings(braze_env) -> BrazeSettings:
    return BrazeSettings.from_env()


@pytest.fixture
def client(settings):
    with BrazeClient(settings) as c:
        yield c


def test_name_and_update_are_acknowledged(client, braze):
    ack = client.name_cohort("c1", "Cohort one", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert (ack.status, ack.retries) == (201, 0)
    assert client.update_cohort("c1", [{"user_ids": ["u1"]}]).status == 201
    held = braze.cohorts()["c1"]
    assert held["created_at"] == "2026-01-02T03:04:05+00:00"
    assert held["user_ids"] == ["u1"]


def test_transient_failures_are_retried_and_logged(client, braze, caplog):
    braze.set_faults([
        {"endpoint": "users", "times": 1, "status": 429, "retry_after": 0},
        {"endpoint": "users", "times": 1, "status": 503},
        {"endpoint": "users", "times": 1, "drop": "before"},
    ])
    with caplog.at_level(logging.WARNING, logger="cohort_sync.braze.client"):
        ack = client.update_cohort("c1", [{"user_ids": ["u1"]}])
    assert (ack.status, ack.attempts) == (201, 4)
    reasons = [r.getMessage() for r in caplog.records]
    assert len(reasons) == 3
    assert "HTTP 429" in reasons[0] and "HTTP 503" in reasons[1] and "ConnectionError" in reasons[2]
    assert braze.cohorts()["c1"]["user_ids"] == ["u1"]


def test_retries_are_capped_with_the_last_error(braze_env, braze, monkeypatch):
    monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "2")
    braze.set_faults([{"endpoint": "users", "times": 5, "status": 500, "retry_after": 0}])
    with BrazeClient(BrazeSettings.from_env()) as client, pytest.raises(BrazeUnavailableError) as error:
        client.update_cohort("c1", [{"user_ids": ["u1"]}])
    assert "after 2 attempt(s)" in str(error.value) and "HTTP 500" in str(error.value)


def test_retry_after_beyond_the_time_cap_gives_up_at_once(braze_env, braze, monkeypatch):
    monkeypatch.setenv("COHORT_SYNC_MAX_RETRY_SECONDS", "1")
    braze.set_faults([{"endpoint": "users", "times": 1, "status": 429, "retry_after": 60}])
    with BrazeClient(BrazeSettings.from_env()) as client, pytest.raises(BrazeUnavailableError, match="HTTP 429"):
        client.update_cohort("c1", [{"user_ids": ["u1"]}])


def test_a_400_is_fatal_and_shows_the_server_message(client, braze):
    too_many = [{"user_ids": [f"u{n}" for n in range(1001)]}]
    with pytest.raises(BrazeRejectedError) as error:
        client.update_cohort("c1", too_many)
    assert "HTTP 400" in str(error.value) and "at most 1000 identifiers" in str(error.value)
    assert len(braze.requests()) == 1


def test_a_401_names_the_likely_key_without_echoing_it(braze_env, braze, monkeypatch, keys):
    monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", "IMPORTKEY-rotated-away")
    with BrazeClient(BrazeSettings.from_env()) as client, pytest.raises(BrazeAuthError) as error:
        client.update_cohort("c1", [{"user_ids": ["u1"]}])
    message = str(error.value)
    assert "BRAZE_DATA_IMPORT_KEY" in message and "Invalid client secret" in message
    assert "IMPORTKEY" not in message and keys["partner_api_key"] not in message


def test_an_html_error_page_reads_as_a_message(client, braze):
    braze.set_faults([{"endpoint": "users", "times": 1, "status": 404, "body": "<html><h1>Not Found</h1></html>"}])
    with pytest.raises(BrazeRejectedError) as error:
        client.update_cohort("c1", [{"user_ids": ["u1"]}])
    assert "non-JSON response (text/html): Not Found" in str(error.value)


def test_a_lost_acknowledgement_is_retried_and_harmless(client, braze):
    braze.set_faults([{"endpoint": "users", "times": 1, "drop": "after"}])
    ack = client.update_cohort("c1", [{"user_ids": ["u1"]}])
    assert ack.attempts == 2
    assert braze.cohorts()["c1"]["user_ids"] == ["u1"]


def test_an_empty_error_body_reads_as_a_message(client, braze):
    braze.set_faults([{"endpoint": "users", "times": 1, "status": 400, "body": ""}])
    with pytest.raises(BrazeRejectedError) as error:
        client.update_cohort("c1", [{"user_ids": ["u1"]}])
    assert "HTTP 400: empty response body" in str(error.value)


# -- /users/track ---------------------------------------------------------------

T = "2026-03-01T12:00:00Z"


def body(*attributes: dict, **arrays: list) -> str:
    return json.dumps({"attributes": list(attributes), **arrays} if attributes else arrays)


@pytest.fixture
def track_settings(braze_env) -> BrazeSettings:
    return BrazeSettings.from_env(families=["users_track"])


@pytest.fixture
def track_client(track_settings):
    with BrazeClient(track_settings, sleep=lambda seconds: None) as c:  # no backoff to wait out
        yield c


class FakeTime:
    """A monotonic clock and an epoch clock that move together, only when slept."""

    def __init__(self, now: float = 100.0, epoch_offset: float = 2900.5) -> None:
        self.now = now
        self.offset = epoch_offset
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.offset

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_track_is_acknowledged_and_applied(track_client, braze, caplog, keys):
    ready = []
    with caplog.at_level(logging.DEBUG):
        ack = track_client.track(body({"external_id": "u1", "cohort_loyal": True}),
                                 detail="batch=3 objects=1 cohorts=loyal", ready=lambda: ready.append(1))
    assert (ack.status, ack.attempts, ack.errors) == (201, 1, ())
    assert ready == [1]
    assert braze.profiles()[0]["attributes"] == {"cohort_loyal": True}
    [line] = [r.getMessage() for r in caplog.records if r.name == "cohort_sync.braze.client"]
    assert line.startswith("POST /users/track batch=3 objects=1 cohorts=loyal attempt=1: HTTP 201 in ")
    assert keys["rest_api_key"] not in caplog.text and "Bearer" not in caplog.text


def test_track_needs_no_partner_variables(braze, keys, monkeypatch):
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", braze.url)
    monkeypatch.setenv("BRAZE_REST_API_KEY", keys["rest_api_key"])
    settings = BrazeSettings.from_env(families=["users_track"])
    with BrazeClient(settings) as client:
        assert client.track(body({"external_id": "u1", "a": 1})).status == 201
        with pytest.raises(ConfigError, match="BRAZE_PARTNER_NAME, BRAZE_PARTNER_API_KEY, BRAZE_DATA_IMPORT_KEY"):
            client.update_cohort("c1", [{"user_ids": ["u1"]}])
    assert len(braze.requests()) == 1


def test_track_without_the_rest_key_in_the_settings_sends_nothing(braze_env, braze, monkeypatch):
    monkeypatch.delenv("BRAZE_REST_API_KEY")
    with BrazeClient(BrazeSettings.from_env()) as client, pytest.raises(ConfigError, match="BRAZE_REST_API_KEY"):
        client.track(body({"external_id": "u1"}))
    assert braze.requests() == []


def test_rejected_objects_are_named_and_the_others_applied(track_client, braze):
    braze.set_track_rejects(["u2"], type="'email_subscribe' is not valid")
    ack = track_client.track(body(
        {"external_id": "u1", "a": 1}, {"external_id": "u2", "a": 1},
        events=[{"external_id": "u2", "name": "e", "time": T}, {"external_id": "u1", "time": T}],
    ))
    assert ack.status == 201
    assert ack.errors == (
        ObjectError("attributes", 1, "'email_subscribe' is not valid"),
        ObjectError("events", 0, "'email_subscribe' is not valid"),
        ObjectError("events", 1, "'name' is required"),
    )
    assert [(p["external_id"], p["attributes"]) for p in braze.profiles()] == [("u1", {"a": 1})]


def test_a_400_shows_brazes_message_and_is_not_retried(track_client, braze):
    too_many = body(*({"external_id": f"u{n}"} for n in range(76)))
    with pytest.raises(BrazeRejectedError) as error:
        track_client.track(too_many, detail="batch=1 objects=76")
    message = str(error.value)
    assert "the /users/track request (batch=1 objects=76) with HTTP 400" in message
    assert "Too many objects: at most 75" in message and "the request holds 76 objects" in message
    assert (error.value.maybe_applied, error.value.attempts, error.value.errors) == (False, 1, ())
    assert len(braze.requests()) == 1


def test_a_400_naming_objects_carries_them(track_client, braze):
    braze.set_faults([{"endpoint": "track", "times": 1, "status": 400, "body": json.dumps({
        "message": "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields.",
        "errors": [{"type": "'external_id' is not valid", "input_array": "attributes", "index": 0}],
    })}])
    with pytest.raises(BrazeRejectedError) as error:
        track_client.track(body({"external_id": "u1"}))
    assert error.value.errors == (ObjectError("attributes", 0, "'external_id' is not valid"),)
    assert "'external_id' is not valid (attributes[0])" in str(error.value)


def test_a_401_points_at_the_rest_api_key_without_echoing_it(braze_env, braze, monkeypatch, keys):
    wrong = "RESTKEY-rotated-away"
    monkeypatch.setenv("BRAZE_REST_API_KEY", wrong)
    braze.set_faults([{"endpoint": "track", "times": 1, "status": 503, "body": f"upstream saw {wrong}"}])
    with BrazeClient(BrazeSettings.from_env(families=["users_track"]), sleep=lambda s: None) as client, \
            pytest.raises(BrazeAuthError) as error:
        client.track(body({"external_id": "u1"}))
    message = str(error.value)
    assert "Braze answered 401 (Invalid API key): BRAZE_REST_API_KEY is likely wrong" in message
    assert wrong not in message and keys["rest_api_key"] not in message
    assert (error.value.attempts, error.value.maybe_applied) == (2, True)  # the 503 may have applied it


def test_a_403_says_the_key_lacks_the_users_track_permission(track_client, braze, keys):
    braze.set_faults([{"endpoint": "track", "times": 1, "status": 403, "body": json.dumps({
        "message": f"Access denied for {keys['rest_api_key']}"})}])
    with pytest.raises(BrazeAuthError) as error:
        track_client.track(body({"external_id": "u1"}))
    message = str(error.value)
    assert "lacks the users.track permission" in message and "BRAZE_REST_API_KEY" in message
    assert keys["rest_api_key"] not in message and "[redacted]" in message


def test_track_retries_transient_failures_like_the_cohort_calls(track_client, braze, caplog):
    braze.set_faults([
        {"endpoint": "track", "times": 1, "status": 429, "retry_after": 0},
        {"endpoint": "track", "times": 1, "status": 503},
        {"endpoint": "track", "times": 1, "drop": "before"},
    ])
    with caplog.at_level(logging.WARNING, logger="cohort_sync.braze.client"):
        ack = track_client.track(body({"external_id": "u1", "visits": {"inc": 1}}), detail="batch=1")
    assert (ack.status, ack.attempts) == (201, 4)
    reasons = [r.getMessage() for r in caplog.records]
    assert [r.split(" in ")[0] for r in reasons] == ["retrying the /users/track request (batch=1)"] * 3
    assert "HTTP 429" in reasons[0] and "HTTP 503" in reasons[1] and "ConnectionError" in reasons[2]
    assert braze.profiles()[0]["attributes"] == {"visits": 1}


def test_a_lost_track_acknowledgement_is_retried_and_applied_twice(track_client, braze):
    braze.set_faults([{"endpoint": "track", "times": 1, "drop": "after"}])
    ack = track_client.track(body({"external_id": "u1", "visits": {"inc": 1}}))
    assert ack.attempts == 2
    applied = [r for r in braze.requests() if r.get("status") == 201]
    assert len(applied) == 2 and applied[0]["digest"] == applied[1]["digest"]
    assert braze.profiles()[0]["attributes"] == {"visits": 2}  # why a sync sends states, not increments


def test_retry_after_and_x_ratelimit_retry_after_are_honoured(braze_env, braze):
    fake = FakeTime()
    braze.set_faults([
        {"endpoint": "track", "times": 1, "status": 429, "retry_after": 4},
        {"endpoint": "track", "times": 1, "status": 429, "headers": {"X-Ratelimit-Retry-After": "7"}},
        {"endpoint": "track", "times": 1, "status": 429, "retry_after": 2, "headers": {"X-Ratelimit-Retry-After": "9"}},
    ])
    settings = BrazeSettings.from_env(families=["users_track"])
    with BrazeClient(settings, sleep=fake.sleep, clock=fake.clock, wall=fake.wall) as client:
        assert client.track(body({"external_id": "u1"})).attempts == 4
    assert [s for s in fake.slept if s >= 1] == [4.0, 7.0, 2.0]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("<html>OK</html>", "the answer cannot be read: non-JSON response (text/html): OK"),
        ('{"message": "success", "errors": [{"type": "x"}]}', "one of its errors names no object"),
        ('{"message": "success", "errors": [{"type": "x", "input_array": "attributes", "index": 1}]}',
         "an error names attributes[1], which the request does not hold"),
        ('{"message": "success", "errors": "oops"}', "the answer's errors are not a list"),
    ],
)
def test_an_unreadable_2xx_is_an_error_that_may_have_applied(track_client, braze, answer, problem):
    braze.set_faults([{"endpoint": "track", "times": 1, "status": 201, "body": answer}])
    with pytest.raises(BrazeRejectedError) as error:
        track_client.track(body({"external_id": "u1"}))
    assert problem in str(error.value) and "HTTP 201" in str(error.value)
    assert (error.value.maybe_applied, error.value.attempts) == (True, 1)


def test_the_pace_keeps_to_the_budget_brazes_headers_announce(keys, monkeypatch):
    fake = FakeTime()  # the server's epoch clock reads 3000.5: its 3-second window ends at 3003
    with LocalBraze(partner_name=PARTNER_NAME, track_rate_limit=(2, 3.0), clock=fake.wall, **keys) as server:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", server.url)
        monkeypatch.setenv("BRAZE_REST_API_KEY", keys["rest_api_key"])
        settings = BrazeSettings.from_env(families=["users_track"])
        with BrazeClient(settings, sleep=fake.sleep, clock=fake.clock, wall=fake.wall) as client:
            acks = [client.track(body({"external_id": "u1", "visits": {"inc": 1}})) for _ in range(3)]
        logged = server.requests()
    # the second start waits out the even spacing (3 s / 3,000); the third
    # waits for the window's reset, as "remaining 0" said: no 429
    assert fake.slept == [0.001, 2.499]
    assert [a.attempts for a in acks] == [1, 1, 1]
    assert [r["status"] for r in logged] == [201, 201, 201]


def test_each_family_has_its_own_pace(braze_env, monkeypatch):
    monkeypatch.setenv("COHORT_SYNC_MAX_REQUESTS_PER_HOUR", "3600")
    with BrazeClient(BrazeSettings.from_env(families=["cohort_import", "users_track"])) as client:
        assert (client.spacing, client.spacing_for("cohort_import")) == (1.0, 1.0)
        assert client.spacing_for("users_track") == pytest.approx(0.001)
        with pytest.raises(ValueError, match="unknown endpoint family"):
            client.spacing_for("users_export")
    monkeypatch.setenv("COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_HOUR", "90000")
    with BrazeClient(BrazeSettings.from_env(families=["users_track"])) as client:
        assert client.spacing_for("users_track") == pytest.approx(0.04)  # the hourly cap is the stricter
