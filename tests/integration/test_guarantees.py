"""Delivery guarantees, proven against the local endpoint over real sockets:
transient faults, SIGKILL at random points, overlapping runs, drift repair
and secrets. dbt and the publisher run as separate processes, as under a
scheduler, so a publisher can be killed and two can overlap.
"""

from __future__ import annotations

import random
import re
import signal
import socket
import subprocess
import time
from datetime import datetime, timedelta

import duckdb
import pytest
import requests

from tests.conftest import PARTNER_NAME
from tests.endpoint_requests import received_twice, users_applied

pytestmark = pytest.mark.dbt

COHORT = {"model": "big_audience", "name": "Big audience"}
PLAN_ONLY = '{"cohort_sync_publish_on_run": false}'


def ids(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}{n:06d}" for n in range(start, stop)]


def plan(project) -> None:
    built = project.cli("dbt", "run", "--vars", PLAN_ONLY)
    assert built.returncode == 0, built.stdout + built.stderr


def held(braze, cohort_id: str = "big_audience") -> list[str]:
    return braze.cohorts().get(cohort_id, {}).get("user_ids", [])


def assert_converged(project, braze, audience: list[str]) -> None:
    assert held(braze) == sorted(audience)
    assert project.published("big_audience") == {f"external_id:{m}" for m in audience}
    assert project.query("select count(*) from cohort_sync_inflight") == [(0,)]
    assert project.query("select count(*) from cohort_sync_lock") == [(0,)]


def publish_until_done(project, attempts: int = 3, *args: str) -> list[subprocess.CompletedProcess]:
    runs = []
    for _ in range(attempts):
        runs.append(project.cli("cohort-sync", "publish", *args))
        if runs[-1].returncode == 0:
            return runs
    raise AssertionError("did not converge:\n" + "\n".join(r.stdout + r.stderr for r in runs))


@pytest.fixture
def big(make_project, braze):
    """A cohort first synced with 10,000 members, then planned to change by
    21 batches: 4,000 removes and 17,000 adds (40% of members leave)."""
    project = make_project([COHORT])
    first = ids("u", 0, 10_000)
    project.set_audience("big_audience", {"external_id": first})
    plan(project)
    assert project.cli("cohort-sync", "publish").returncode == 0
    audience = first[4_000:] + ids("n", 0, 17_000)
    project.set_audience("big_audience", {"external_id": audience})
    plan(project)
    assert project.query("select max(batch_number) from cohort_sync_changes") == [(21,)]
    braze.reset()
    braze.seed("big_audience", "Big audience", first)  # what it acknowledged before the reset
    return project, audience


def test_random_transient_faults_converge_exactly(big, braze, monkeypatch):
    project, audience = big
    monkeypatch.setenv("COHORT_SYNC_HTTP_TIMEOUT_SECONDS", "0.5")
    kinds = [
        {"status": 429, "retry_after": 0.1},
        {"status": 500},
        {"status": 503},
        {"latency_ms": 900},  # the client times out; the endpoint still applies it later
        {"drop": "before"},
        {"drop": "after"},  # applied, but the acknowledgement is lost
    ]
    braze.set_faults([{"endpoint": "any", "probability": 0.037, **kind} for kind in kinds])

    runs = publish_until_done(project)

    faults = [r for r in braze.requests() if "fault" in r]
    assert len(faults) >= 3, "the faults did not fire; the test proves nothing"
    braze.set_faults([])
    time.sleep(1)  # let requests the client gave up on land
    assert_converged(project, braze, audience)
    history = project.history()[-len(runs):]
    assert sum(row["retries"] for row in history) >= 1
    assert "retrying the batch for cohort 'big_audience'" in "".join(r.stderr for r in runs)


def test_sigkill_at_random_points_then_a_full_run_converges(big, braze):
    project, audience = big
    braze.set_faults([{"endpoint": "users", "probability": 1.0, "latency_ms": 30}])
    rng = random.Random(20261122)
    unconfirmed = 0
    for _ in range(4):
        before = len(braze.requests())
        target = rng.randint(1, 6)
        process = subprocess.Popen(project.command("cohort-sync", "publish"), cwd=project.root,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(braze.requests()) - before < target and process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.03))
        process.send_signal(signal.SIGKILL)
        process.wait()
        unconfirmed += project.query("select count(*) from cohort_sync_inflight")[0][0]
    assert len(project.published("big_audience")) < len(audience), "a run finished before its kill"
    assert unconfirmed >= 1

    braze.set_faults([])
    final = project.cli("cohort-sync", "publish")
    assert final.returncode == 0, final.stdout + final.stderr
    assert "reclaiming the lock" in final.stderr  # the killed run's lock
    time.sleep(0.2)
    assert_converged(project, braze, audience)
    resent = project.query("select sum(resent_batches) from cohort_sync_run_history")[0][0]
    assert resent >= 1  # each run after a kill counted the batches it sent again


def test_resent_batches_are_exactly_the_batches_braze_received_twice_across_kills(big, braze, monkeypatch):
    project, audience = big
    monkeypatch.setenv("COHORT_SYNC_CONCURRENCY", "3")
    # One start every 250 ms: requests wait for the rate limiter (none of them is in flight
    # then), and a kill soon after one reaches the endpoint is long before the next leaves.
    monkeypatch.setenv("COHORT_SYNC_MAX_REQUESTS_PER_HOUR", "14400")
    braze.set_faults([{"endpoint": "users", "probability": 1.0, "latency_ms": 500}])
    rng = random.Random(20261201)
    starts: list[int] = []
    dead: list[tuple[str, int]] = []  # each killed run, and its notes of requests in flight

    def received(since: int) -> int:
        return sum(1 for r in braze.requests()[since:] if "fault" in r)

    for _ in range(4):
        starts.append(len(braze.requests()))
        target = rng.randint(1, 4)
        run_id = project.publish_killed(lambda start=starts[-1], target=target: received(start) >= target, rng)
        dead.append((run_id, project.query(
            "select count(*) from cohort_sync_inflight where run_id = ?", [run_id])[0][0]))
        deadline = time.monotonic() + 15  # the requests it left at the endpoint are applied, late
        while received(0) != sum(1 for r in braze.requests() if r["endpoint"] == "users" and "status" in r):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert all(left for _, left in dead), "a kill found nothing in flight; the test proves nothing"

    starts.append(len(braze.requests()))
    final = project.cli("cohort-sync", "publish")
    assert final.returncode == 0, final.stdout + final.stderr
    assert_converged(project, braze, audience)

    rows = project.history()
    final_row = rows[-1]
    runs = [run_id for run_id, _ in dead] + [final_row["run_id"]]
    twice = received_twice(braze, starts)
    assert sum(twice) >= len(dead)  # each kill left a request at the endpoint, delivered again later
    by_run = {run_id: [row for row in rows if row["run_id"] == run_id] for run_id in runs}
    assert all(len(recorded) == 1 for recorded in by_run.values()), by_run  # each run recorded once
    assert [by_run[run_id][0]["resent_batches"] for run_id in runs] == twice

    # A killed run is recorded, by the run after it, from what it left behind.
    for run_id, left in dead:
        [row] = by_run[run_id]
        logged = project.query(
            "select count(*), coalesce(sum(added), 0), coalesce(sum(removed), 0) "
            "from cohort_sync_delivery_log where run_id = ?", [run_id])[0]
        assert (row["status"], row["requests"], row["added"], row["removed"], row["retries"]) == (
            "interrupted", logged[0] + left, logged[1], logged[2], 0)
        assert row["started_at"] <= row["finished_at"] and "recorded by run" in row["error"]
    sent_last = braze.requests()[starts[-1]:]
    assert final_row["requests"] == len(users_applied(sent_last)) and final_row["retries"] == 0


def test_a_lost_acknowledgement_is_counted_as_resent_by_the_next_run(make_project, braze, monkeypatch):
    monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("COHORT_SYNC_CONCURRENCY", "1")  # batch 2 waits for batch 1, which fails
    project = make_project([COHORT])
    audience = ids("u", 0, 1_500)
    project.set_audience("big_audience", {"external_id": audience})
    plan(project)
    braze.set_faults([{"endpoint": "users", "times": 1, "drop": "after"}])  # applied, the answer lost
    assert project.cli("cohort-sync", "publish").returncode == 1
    starts = [0, len(braze.requests())]
    assert project.cli("cohort-sync", "publish").returncode == 0
    assert_converged(project, braze, audience)
    assert received_twice(braze, starts) == [0, 1]
    assert [(r["status"], r["requests"], r["retries"], r["resent_batches"]) for r in project.history()] == [
        ("failed", 2, 0, 0),  # the name call, and batch 1, applied but its answer lost; batch 2 never left
        ("success", 2, 0, 1),  # batch 1 again, and batch 2
    ]


def test_a_refused_connection_and_a_401_count_their_attempts_and_nothing_is_resent(make_project, braze, monkeypatch,
                                                                                    keys):
    monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "3")
    project = make_project([COHORT])
    audience = ids("u", 0, 1_500)
    project.set_audience("big_audience", {"external_id": audience})
    plan(project)
    with socket.socket() as closed:  # a port nothing listens on: every attempt is refused
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
        refused = project.cli("cohort-sync", "publish")
    assert refused.returncode == 1 and "ConnectionError" in refused.stdout
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", braze.url)
    monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", "IMPORTKEY-wrong")
    for _ in range(3):
        assert project.cli("cohort-sync", "publish").returncode == 1
    monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", keys["data_import_key"])
    good = project.cli("cohort-sync", "publish")
    assert good.returncode == 0, good.stdout + good.stderr
    assert_converged(project, braze, audience)
    assert [(r["status"], r["requests"], r["retries"], r["resent_batches"]) for r in project.history()] == [
        ("failed", 1, 2, 0),  # the name call, tried 3 times
        *[("failed", 1, 0, 0)] * 3,  # the name call, answered 401
        ("success", 3, 0, 0),  # nothing reached Braze before: nothing is sent again
    ]
    assert [r["status"] for r in braze.requests()] == [401, 401, 401, 201, 201, 201]


def test_sigkill_between_the_name_call_and_the_first_batch(make_project, braze, monkeypatch):
    monkeypatch.setenv("COHORT_SYNC_CONCURRENCY", "1")  # one request in flight: an exact kill point
    project = make_project([COHORT])
    audience = ids("u", 0, 2_500)
    project.set_audience("big_audience", {"external_id": audience})
    plan(project)
    braze.set_faults([{"endpoint": "users", "times": 1, "latency_ms": 3000}])
    process = subprocess.Popen(project.command("cohort-sync", "publish"), cwd=project.root,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(r.get("fault") for r in braze.requests()):  # the first batch is in flight
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert braze.cohorts()["big_audience"]["name"] == "Big audience"
    assert project.query("select request_kind, batch_number from cohort_sync_inflight") == [("users", 1)]

    # the killed run's request still lands, late (harmless); let it, so the
    # requests counted below are the next run's only
    deadline = time.monotonic() + 15
    while not [r for r in braze.requests() if r["endpoint"] == "users" and not r.get("fault")]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    before = len(braze.requests())
    final = project.cli("cohort-sync", "publish")
    assert final.returncode == 0, final.stdout + final.stderr
    after = braze.requests()[before:]
    assert [r["endpoint"] for r in after] == ["users", "users", "users"]  # no second name call
    assert_converged(project, braze, audience)
    row = project.history()[-1]
    assert (row["status"], row["resent_batches"], row["requests"]) == ("success", 1, 3)


def test_an_overlapping_run_refuses_at_once_naming_the_running_one(big, braze, monkeypatch):
    project, audience = big
    monkeypatch.setenv("COHORT_SYNC_CONCURRENCY", "2")  # 21 batches take over 5 s
    braze.set_faults([{"endpoint": "users", "probability": 1.0, "latency_ms": 500}])
    first = subprocess.Popen(project.command("cohort-sync", "publish"), cwd=project.root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not braze.requests():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.01)
        started = time.monotonic()
        second = project.cli("cohort-sync", "publish")
        assert second.returncode == 2
        assert f"in use by another process (PID {first.pid})" in second.stderr
        assert "another cohort-sync publish or dbt run is in progress" in second.stderr
        assert time.monotonic() - started < 15  # refused at once, not after waiting for the first
    finally:
        braze.set_faults([])
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert_converged(project, braze, audience)
    acknowledged = project.query(
        "select count(*), count(distinct batch_number) from cohort_sync_delivery_log "
        "where request_kind = 'users' and run_id = (select max_by(run_id, started_at) from cohort_sync_run_history)"
    )
    assert acknowledged == [(21, 21)]  # nothing applied twice


def test_a_lock_held_by_a_live_run_refuses_and_an_expired_one_is_reclaimed(make_project, braze):
    project = make_project([COHORT])
    project.set_audience("big_audience", {"external_id": ids("u", 0, 10)})
    plan(project)
    now = datetime.utcnow()

    def hold(expires_at: datetime) -> None:
        with duckdb.connect(str(project.warehouse.database)) as con:
            con.execute("delete from cohort_sync_lock")
            con.execute(
                "insert into cohort_sync_lock values ('publisher', 'run-elsewhere', 'scheduler-2:4242', 'cli', ?, ?)",
                [now - timedelta(minutes=1), expires_at],
            )

    hold(now + timedelta(minutes=10))
    refused = project.cli("cohort-sync", "publish")
    assert refused.returncode == 2
    assert "another publish run is in progress on this target: run run-elsewhere" in refused.stderr
    assert "process scheduler-2:4242" in refused.stderr
    assert braze.requests() == []

    hold(now - timedelta(seconds=1))
    reclaimed = project.cli("cohort-sync", "publish")
    assert reclaimed.returncode == 0, reclaimed.stderr
    assert "reclaiming the lock of run run-elsewhere" in reclaimed.stderr
    assert len(held(braze)) == 10


def test_full_resync_repairs_drift_after_edits_in_braze(make_project, braze, keys):
    project = make_project([COHORT])
    audience = ids("u", 0, 1_500)
    project.set_audience("big_audience", {"external_id": audience})
    plan(project)
    assert project.cli("cohort-sync", "publish").returncode == 0
    # Someone removes members by hand in Braze: the published state cannot know.
    requests.post(
        f"{braze.url}/partners/{PARTNER_NAME}/cohorts/users",
        json={"partner_api_key": keys["partner_api_key"], "client_secret": keys["data_import_key"],
              "cohort_id": "big_audience", "cohort_changes": [{"user_ids": audience[:700], "should_remove": True}]},
        timeout=5,
    ).raise_for_status()
    assert project.cli("cohort-sync", "publish").returncode == 0
    assert len(held(braze)) == 800  # an ordinary run sends only changes

    resync = project.cli("cohort-sync", "publish", "--full-resync")
    assert resync.returncode == 0, resync.stderr
    assert held(braze) == sorted(audience)
    row = project.history()[-1]
    assert (row["added"], row["removed"], row["requests"]) == (1_500, 0, 2)
    assert project.published("big_audience") == {f"external_id:{m}" for m in audience}


def test_blocked_cohort_exits_non_zero_and_allow_removals_publishes_it(make_project, braze):
    project = make_project([COHORT])
    project.set_audience("big_audience", {"external_id": ids("u", 0, 300)})
    plan(project)
    assert project.cli("cohort-sync", "publish").returncode == 0
    project.set_audience("big_audience", {"external_id": ids("u", 0, 100)})
    plan(project)

    blocked = project.cli("cohort-sync", "publish")
    assert blocked.returncode == 1
    assert "blocked" in blocked.stdout and "--allow-removals big_audience" in blocked.stdout
    assert len(held(braze)) == 300
    dry = project.cli("cohort-sync", "publish", "--dry-run")
    assert dry.returncode == 0 and "would be blocked" in dry.stdout

    allowed = project.cli("cohort-sync", "publish", "--allow-removals", "big_audience")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert held(braze) == ids("u", 0, 100)


def two_cohorts(make_project):
    project = make_project([
        {"model": "a_audience", "name": "A"},
        {"model": "b_audience", "name": "B"},
    ])
    project.set_audience("a_audience", {"external_id": ids("a", 0, 2_500)})
    project.set_audience("b_audience", {"external_id": ids("b", 0, 10)})
    plan(project)
    return project


def test_a_401_stops_the_whole_run_naming_the_likely_key(make_project, braze, monkeypatch):
    project = two_cohorts(make_project)
    monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", "IMPORTKEY-rotated")
    result = project.cli("cohort-sync", "publish")
    assert result.returncode == 1
    assert "run stopped" in result.stderr and "BRAZE_DATA_IMPORT_KEY" in result.stderr
    assert "IMPORTKEY-rotated" not in result.stdout + result.stderr
    assert len(braze.requests()) == 1  # the second cohort was not attempted
    reason = "not attempted: the run stopped after a 401 on cohort 'a_audience'"
    assert [(r["cohort_id"], r["status"], r["requests"]) for r in project.history()] == [
        ("a_audience", "failed", 1), ("b_audience", "skipped", 0)]
    assert project.history()[1]["error"] == reason
    assert re.search(r"^b_audience +skipped +0 +0 +0 +0 +0 +0 +0 +0 +not attempted: the run stopped", result.stdout, re.M)
    assert f"b_audience (skipped): {reason}" in result.stdout


def test_after_a_401_in_dbt_run_the_cohorts_not_attempted_are_skipped_or_not_due(make_project, braze, monkeypatch):
    project = make_project([
        {"model": "a_audience", "name": "A"},
        {"model": "b_audience", "name": "B"},
        {"model": "c_audience", "name": "C", "schedule": "once"},
    ])
    for name in ("a", "b", "c"):
        project.set_audience(f"{name}_audience", {"external_id": ids(name, 0, 10)})
    first = project.cli("dbt", "run")
    assert first.returncode == 0, first.stdout
    for name in ("a", "b"):
        project.set_audience(f"{name}_audience", {"external_id": ids(name, 0, 12)})
    monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", "IMPORTKEY-rotated")
    stopped = project.cli("dbt", "run")
    assert stopped.returncode == 1  # the publish model fails, after recording every cohort
    reason = "not attempted: the run stopped after a 401 on cohort 'a_audience'"
    rows = project.history()[3:]
    assert [(r["cohort_id"], r["status"], r["error"] if r["status"] != "failed" else None) for r in rows] == [
        ("a_audience", "failed", None), ("b_audience", "skipped", reason), ("c_audience", "not_due", None)]
    assert f"b_audience (skipped): {reason}" in stopped.stdout
    # The import history's accepted values admit the new status.
    tested = project.cli("dbt", "build", "--select", "cohort_sync_import_history", "--vars", PLAN_ONLY)
    assert tested.returncode == 0, tested.stdout
    assert project.query("select status from cohort_sync_import_history where cohort_id = 'b_audience' "
                         "order by started_at") == [("success",), ("skipped",)]


def test_a_400_fails_its_cohort_only_and_the_others_still_run(make_project, braze):
    project = two_cohorts(make_project)
    braze.set_faults([{"endpoint": "users", "times": 1, "status": 400, "body": '{"message": "cohort_id invalid"}'}])
    result = project.cli("cohort-sync", "publish")
    assert result.returncode == 1
    rows = {r["cohort_id"]: r for r in project.history()}
    assert rows["a_audience"]["status"] == "failed"
    assert "HTTP 400: cohort_id invalid" in rows["a_audience"]["error"]
    assert rows["b_audience"]["status"] == "success"
    assert held(braze, "b_audience") == ids("b", 0, 10)
    assert "a_audience (failed): Braze rejected the batch for cohort 'a_audience' with HTTP 400" in result.stdout


def test_when_the_retry_cap_is_reached_what_was_acknowledged_stays_recorded(make_project, braze, monkeypatch):
    project = two_cohorts(make_project)
    monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("COHORT_SYNC_CONCURRENCY", "1")  # batch 2 is the one that exhausts its retries
    braze.set_faults([
        {"endpoint": "users", "times": 1, "latency_ms": 1},  # the first batch goes through
        {"endpoint": "users", "times": 3, "status": 503, "retry_after": 0},
    ])
    result = project.cli("cohort-sync", "publish")
    assert result.returncode == 1
    row = next(r for r in project.history() if r["cohort_id"] == "a_audience")
    # requests: the name call, batch 1, and batch 2 that gave up (3 attempts: 2 retries)
    assert (row["status"], row["added"], row["requests"], row["retries"], row["members_after"]) == (
        "failed", 1_000, 3, 2, 1_000)
    assert "gave up on the batch for cohort 'a_audience' after 3 attempt(s)" in row["error"]
    assert "HTTP 503" in row["error"]
    assert len(project.published("a_audience")) == 1_000 == len(held(braze, "a_audience"))
    assert held(braze, "b_audience") == ids("b", 0, 10)  # the other cohort still ran

    assert project.cli("cohort-sync", "publish").returncode == 0
    assert held(braze, "a_audience") == ids("a", 0, 2_500)


def test_concurrent_requests_record_every_acknowledged_batch_when_one_fails(make_project, braze, monkeypatch):
    monkeypatch.setenv("COHORT_SYNC_CONCURRENCY", "4")
    monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "1")
    project = make_project([COHORT])
    audience = ids("u", 0, 8_000)
    project.set_audience("big_audience", {"external_id": audience})
    plan(project)
    braze.set_faults([
        {"endpoint": "users", "probability": 1.0, "latency_ms": 300, "times": 3},
        {"endpoint": "users", "times": 1, "status": 500},
    ])
    result = project.cli("cohort-sync", "publish")
    assert result.returncode == 1
    row = project.history()[-1]
    assert row["status"] == "failed" and "HTTP 500" in row["error"]
    # every batch Braze acknowledged, including those in flight when one failed, is recorded
    assert len(project.published("big_audience")) == len(held(braze)) == row["added"]
    assert row["added"] >= 3_000
    assert project.cli("cohort-sync", "publish").returncode == 0
    assert_converged(project, braze, audience)
