"""The Braze client against the local endpoint over a real socket, with injected faults."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from cohort_sync.client import BrazeAuthError, BrazeClient, BrazeRejectedError, BrazeUnavailableError
from cohort_sync.config import BrazeSettings


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
    with caplog.at_level(logging.WARNING, logger="cohort_sync.client"):
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
