"""/users/track attempts whose outcome is uncertain, against the local
endpoint over a real socket: a 5xx, a timeout or a connection lost after
sending may have been applied. By default the client retries them and its
Ack says `maybe_duplicated` (an event sync records those events as
possibly duplicated); with `retry_uncertain=False` (an at_most_once event
sync) it gives up after such an attempt instead, with maybe_applied, and
still retries what cannot have been applied (a 429, a refused connection).
"""

from __future__ import annotations

import json
import logging
import socket

import pytest

from cohort_sync.braze.client import BrazeClient, BrazeRejectedError, BrazeUnavailableError
from cohort_sync.config import BrazeSettings

EVENT = {"external_id": "u1", "name": "app_open", "time": "2026-03-01T12:00:00.000Z"}
BODY = json.dumps({"events": [EVENT]})


@pytest.fixture
def client(braze_env):
    with BrazeClient(BrazeSettings.from_env(families=["users_track"]), sleep=lambda seconds: None) as c:
        yield c  # no backoff to wait out


def held_events(braze) -> int:
    """How many events the endpoint holds (it applied each request that carried one)."""
    return sum(len(p.get("events", [])) for p in braze.profiles())


def test_a_first_attempt_that_succeeds_is_not_a_duplicate(client, braze):
    for retry_uncertain in (True, False):
        ack = client.track(BODY, retry_uncertain=retry_uncertain)
        assert (ack.status, ack.attempts, ack.maybe_duplicated) == (201, 1, False)
    assert held_events(braze) == 2


@pytest.mark.parametrize(("fault", "held"), [
    ({"drop": "after"}, 2),  # applied, then the answer was lost: the retry applies it again
    ({"status": 503}, 1),    # this endpoint did not apply it, but a 5xx may have been applied
    ({"status": 500}, 1),
    ({"drop": "before"}, 1),  # the connection was made and the request sent: it may have been read
])
def test_a_retry_after_an_attempt_that_may_have_been_applied_may_be_a_duplicate(client, braze, fault, held):
    braze.set_faults([{"endpoint": "track", "times": 1, **fault}])
    ack = client.track(BODY)
    assert (ack.status, ack.attempts, ack.maybe_duplicated) == (201, 2, True)
    assert held_events(braze) == held


def test_a_retry_after_a_429_is_not_a_duplicate(client, braze):
    braze.set_faults([{"endpoint": "track", "times": 2, "status": 429, "retry_after": 0}])
    ack = client.track(BODY)
    assert (ack.attempts, ack.maybe_duplicated) == (3, False)
    assert held_events(braze) == 1


def test_an_uncertain_attempt_marks_the_ack_even_when_later_failures_were_certain(client, braze):
    braze.set_faults([
        {"endpoint": "track", "times": 1, "drop": "after"},
        {"endpoint": "track", "times": 1, "status": 429, "retry_after": 0},
    ])
    ack = client.track(BODY)
    assert (ack.attempts, ack.maybe_duplicated) == (3, True)
    assert held_events(braze) == 2


def test_a_timeout_is_retried_by_default_and_may_be_a_duplicate(braze_env, braze, monkeypatch):
    monkeypatch.setenv("COHORT_SYNC_HTTP_TIMEOUT_SECONDS", "0.3")
    braze.set_faults([{"endpoint": "track", "times": 1, "answer_after_ms": 2000}])  # applied, answered too late
    with BrazeClient(BrazeSettings.from_env(families=["users_track"]), sleep=lambda s: None) as client:
        ack = client.track(BODY)
    assert (ack.attempts, ack.maybe_duplicated) == (2, True)
    assert held_events(braze) == 2


@pytest.mark.parametrize(("fault", "reason", "held"), [
    ({"drop": "after"}, "ConnectionError", 1),
    ({"status": 503}, "HTTP 503", 0),
    ({"drop": "before"}, "ConnectionError", 0),
])
def test_without_retry_uncertain_an_attempt_that_may_have_been_applied_is_not_retried(
    client, braze, caplog, fault, reason, held
):
    braze.set_faults([{"endpoint": "track", "times": 1, **fault}])
    with caplog.at_level(logging.WARNING, logger="cohort_sync.braze.client"), \
            pytest.raises(BrazeUnavailableError) as error:
        client.track(BODY, detail="batch=1 objects=1 cohorts=app_events", retry_uncertain=False)
    message = str(error.value)
    assert message.startswith("gave up on the /users/track request (batch=1 objects=1 cohorts=app_events) after "
                              f"attempt 1, which Braze may have applied ({reason}")
    assert message.endswith("sent at most once, it is not retried")
    assert (error.value.attempts, error.value.maybe_applied) == (1, True)
    assert held_events(braze) == held  # a retry would have applied it (again): the fault fires once
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def test_without_retry_uncertain_a_timeout_is_not_retried(braze_env, braze, monkeypatch):
    monkeypatch.setenv("COHORT_SYNC_HTTP_TIMEOUT_SECONDS", "0.3")
    braze.set_faults([{"endpoint": "track", "times": 1, "answer_after_ms": 2000}])
    with BrazeClient(BrazeSettings.from_env(families=["users_track"]), sleep=lambda s: None) as client, \
            pytest.raises(BrazeUnavailableError, match="after attempt 1, which Braze may have applied") as error:
        client.track(BODY, retry_uncertain=False)
    assert (error.value.attempts, error.value.maybe_applied) == (1, True)
    assert held_events(braze) == 1


def test_without_retry_uncertain_what_cannot_have_been_applied_is_still_retried(client, braze):
    braze.set_faults([{"endpoint": "track", "times": 2, "status": 429, "retry_after": 0}])
    ack = client.track(BODY, retry_uncertain=False)
    assert (ack.status, ack.attempts, ack.maybe_duplicated) == (201, 3, False)
    assert held_events(braze) == 1


def test_without_retry_uncertain_a_429_then_a_503_gives_up_at_the_503(client, braze):
    braze.set_faults([
        {"endpoint": "track", "times": 1, "status": 429, "retry_after": 0},
        {"endpoint": "track", "times": 1, "status": 503},
    ])
    with pytest.raises(BrazeUnavailableError, match="after attempt 2, which Braze may have applied") as error:
        client.track(BODY, retry_uncertain=False)
    assert (error.value.attempts, error.value.maybe_applied) == (2, True)
    assert held_events(braze) == 0


def test_without_retry_uncertain_a_refused_connection_is_retried_to_the_cap_and_never_applied(
    braze_env, monkeypatch
):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "3")
    with BrazeClient(BrazeSettings.from_env(families=["users_track"]), sleep=lambda s: None) as client, \
            pytest.raises(BrazeUnavailableError, match="after 3 attempt") as error:
        client.track(BODY, retry_uncertain=False)
    assert (error.value.attempts, error.value.maybe_applied) == (3, False)


def test_a_400_is_never_retried_and_was_not_applied(client, braze):
    braze.set_faults([{"endpoint": "track", "times": 1, "status": 400}])
    with pytest.raises(BrazeRejectedError) as error:
        client.track(BODY, retry_uncertain=False)
    assert (error.value.attempts, error.value.maybe_applied) == (1, False)
    assert held_events(braze) == 0
