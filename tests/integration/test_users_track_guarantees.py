"""The delivery guarantees of the partner path (test_guarantees.py,
test_secrets.py), proven for cohorts delivered as profile attributes through
/users/track with a REST API key only, on DuckDB, against the local endpoint
over real sockets: random transient faults, SIGKILL at random points, one run
at a time, the guard, bad input, and secrets. The publisher runs as a
separate process (`cohort-sync publish`), as under a scheduler, so it can be
killed and two can overlap; the endpoint's profiles are read back and
compared with the audience.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import time
from collections import Counter
from datetime import datetime, timedelta

import duckdb
import pytest

from tests.endpoint_requests import received_twice, track_applied, track_objects_applied
from tests.integration.test_users_track import (
    flagged,
    rest_only,  # noqa: F401 - a fixture, used by name
    seed,
    track_requests,
)
from tests.secret_scan import assert_nowhere
from tests.sync_project import failure_text

pytestmark = pytest.mark.dbt


COHORT = {"model": "big_audience", "name": "Big audience", "delivery": "attribute"}
ATTRIBUTE = "cohort_big_audience"
PLAN_ONLY = {"cohort_sync_publish_on_run": False}
NOTES = "select count(*) from (select distinct request_kind, batch_number from cohort_sync_inflight) as notes"


def ids(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(start, stop)]


def dbt_run(project, vars: dict | None = None) -> subprocess.CompletedProcess:
    """`dbt run` as a separate process (the test process then holds no DuckDB
    file a publisher process could not open)."""
    return project.cli("dbt", "run", *(["--vars", json.dumps(vars)] if vars else []))


def plan(project) -> str:
    """Build the plan with `dbt run`, publishing nothing; its plan id."""
    built = dbt_run(project, PLAN_ONLY)
    assert built.returncode == 0, built.stdout + built.stderr
    return project.query("select max(plan_id) from cohort_sync_changes")[0][0]


def publish(project, *args: str) -> subprocess.CompletedProcess:
    return project.cli("cohort-sync", "publish", *args)


def holders(braze, attribute: str = ATTRIBUTE) -> dict[str, object]:
    """The profiles holding the attribute, whatever its value, by external id."""
    return {p["external_id"]: p["attributes"][attribute] for p in braze.profiles() if attribute in p["attributes"]}


def assert_converged(project, braze, audience: list[str]) -> None:
    """The endpoint's profiles hold the attribute, true, on the audience's members
    and on no one else; the published state is the audience; nothing is left
    in flight or locked."""
    assert holders(braze) == dict.fromkeys(audience, True)
    assert project.published("big_audience") == {f"external_id:{m}" for m in audience}
    assert project.query("select count(*) from cohort_sync_inflight") == [(0,)]
    assert project.query("select count(*) from cohort_sync_lock") == [(0,)]


@pytest.fixture
def big(make_project, braze, request):
    """An attribute cohort first synced with 1,500 members, then planned to
    change by 28 /users/track requests: 600 removes and 1,500 adds (40% of
    its members leave). Every member, past and future, has a Braze profile,
    and so do 100 people never in the audience; the endpoint's request log
    starts empty."""
    request.getfixturevalue("rest_only")
    project = make_project([COHORT])
    first, joining, others = ids("u", 0, 1_500), ids("n", 0, 1_500), ids("x", 0, 100)
    seed(braze, first + joining + others)
    project.set_audience("big_audience", {"external_id": first})
    synced = dbt_run(project)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert flagged(braze, ATTRIBUTE) == set(first)
    audience = first[600:] + joining
    project.set_audience("big_audience", {"external_id": audience})
    plan(project)
    assert project.query("select max(batch_number), count(*) from cohort_sync_changes") == [(28, 2_100)]
    braze.reset()
    braze.seed_profiles([{"external_id": m, "attributes": {ATTRIBUTE: True}} for m in first]  # as synced
                        + [{"external_id": m} for m in joining + others])
    return project, audience


# -- transient faults -------------------------------------------------------------

FAULTS = [
    {"status": 500},
    {"status": 503},
    {"status": 429, "retry_after": 0.1},
    {"drop": "before"},  # the connection closes before the request is applied
    {"drop": "after"},  # applied, but the acknowledgement is lost
]


def attempts_received(requests: list[dict]) -> int:
    """Attempts that reached /users/track: each fault it injected and each
    request it served, once (a 'drop after' fault is also served)."""
    track = [r for r in requests if r["endpoint"] == "track"]
    faults = [r for r in track if "fault" in r]
    served = [r for r in track if "status" in r]
    return len(faults) + len(served) - sum(1 for r in faults if r["fault"].get("drop") == "after")


def planned(project) -> tuple[str, int, int, int]:
    """The plan's id, adds, removes and batches."""
    [(plan_id, adds, removes, batches)] = project.query(
        "select max(plan_id), count(*) filter (where not should_remove), count(*) filter (where should_remove), "
        "max(batch_number) from cohort_sync_changes")
    return plan_id, adds, removes, batches


def test_random_faults_on_users_track_converge_exactly_with_truthful_counters(big, braze, monkeypatch):
    project, audience = big
    random_faults = [{"endpoint": "track", "probability": 0.045, **kind} for kind in FAULTS]  # 20% of attempts
    recorded = len(project.history())
    runs = []  # (the plan's id, notes of earlier runs in flight before the run, where its requests start, result)
    for step in range(2):
        if step == 0:
            # One attempt per request: the first to arrive is applied and its answer lost,
            # so this run fails and leaves a request the next one must send again.
            monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "1")
            braze.set_faults([{"endpoint": "track", "times": 1, "drop": "after"}, *random_faults])
        else:
            # 300 more leave, 200 who left come back (null, then true again)
            audience = audience[300:] + ids("u", 0, 200)
            project.set_audience("big_audience", {"external_id": audience})
            plan(project)
            braze.set_faults([{"endpoint": "track", "times": 1, "status": 503, "retry_after": 0}, *random_faults])
        plan_id, adds, removes, batches = planned(project)
        for _ in range(10):
            notes = project.query(NOTES)[0][0]
            start = len(braze.requests())
            result = publish(project)
            monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "2")  # then a request fails only when faulted twice
            runs.append((plan_id, notes, start, result))
            if result.returncode == 0:
                break
        else:
            raise AssertionError("did not converge:\n" + "\n".join(r.stdout + r.stderr for *_, r in runs))
        assert_converged(project, braze, audience)

        # Every change of the plan was acknowledged, each batch once, and counted so by the runs' history.
        logged = project.query(
            "select batch_number, count(*), sum(added), sum(removed) from cohort_sync_delivery_log "
            "where plan_id = ? and request_kind = 'track' group by batch_number order by batch_number", [plan_id])
        assert [(number, count) for number, count, _, _ in logged] == [(n, 1) for n in range(1, batches + 1)]
        assert (sum(row[2] for row in logged), sum(row[3] for row in logged)) == (adds, removes)
        rows = [row for (plan, *_), row in zip(runs, project.history()[recorded:], strict=True) if plan == plan_id]
        assert (sum(row["added"] for row in rows), sum(row["removed"] for row in rows)) == (adds, removes)

    braze.set_faults([])
    fired = Counter(json.dumps(r["fault"], sort_keys=True) for r in braze.requests() if "fault" in r)
    assert all(json.dumps(kind, sort_keys=True) in fired for kind in FAULTS), f"a kind of fault never fired: {fired}"
    assert not [r for r in braze.requests() if r.get("created")]  # membership never creates a user
    assert len(braze.profiles()) == 3_100

    history = project.history()[recorded:]
    assert len(history) == len(runs) >= 3
    assert history[0]["status"] == "failed"  # the lost answer
    twice = received_twice(braze, [start for _, _, start, _ in runs], track_applied)
    assert sum(twice) >= 1  # a later run delivered that request again
    for (_, notes, _, result), row, again in zip(runs, history, twice, strict=True):
        acknowledged = project.query(
            "select count(*), coalesce(sum(added), 0), coalesce(sum(removed), 0) from cohort_sync_delivery_log "
            "where run_id = ?", [row["run_id"]])[0]
        # added and removed: what Braze acknowledged in the run, as logged
        assert (row["added"], row["removed"]) == acknowledged[1:]
        if result.returncode == 0:
            assert (row["status"], row["requests"]) == ("success", acknowledged[0]), result.stderr
            assert row["resent_batches"] == notes  # it sent again every request earlier runs left unconfirmed
        else:
            assert row["status"] == "failed" and "gave up on the /users/track request" in row["error"], result.stdout
            assert row["requests"] > acknowledged[0]  # the requests that failed count too
            assert row["resent_batches"] <= notes
        assert row["resent_batches"] >= again  # every request Braze applied in an earlier run too is counted
    # Each attempt the endpoint received is a request or a retry of the history.
    assert sum(row["requests"] + row["retries"] for row in history) == attempts_received(braze.requests())
    assert sum(row["retries"] for row in history) >= 1
    assert "retrying the /users/track request" in "".join(result.stderr for *_, result in runs)

    start = len(braze.requests())
    assert publish(project).returncode == 0
    assert braze.requests()[start:] == []  # converged: nothing is sent again


@pytest.mark.usefixtures("rest_only")
def test_a_lost_acknowledgement_is_counted_as_resent_by_the_next_run(make_project, braze, monkeypatch):
    monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("COHORT_SYNC_CONCURRENCY", "1")  # batch 2 waits for batch 1, which fails
    project = make_project([COHORT])
    audience = ids("u", 0, 150)
    seed(braze, audience)
    project.set_audience("big_audience", {"external_id": audience})
    plan(project)
    braze.set_faults([{"endpoint": "track", "times": 1, "drop": "after"}])  # applied, the answer lost
    assert publish(project).returncode == 1
    starts = [0, len(braze.requests())]
    assert publish(project).returncode == 0
    assert_converged(project, braze, audience)
    assert received_twice(braze, starts, track_applied) == [0, 1]
    assert [(r["status"], r["requests"], r["retries"], r["resent_batches"]) for r in project.history()] == [
        ("failed", 1, 0, 0),  # batch 1, applied but its answer lost; batch 2 never left
        ("success", 2, 0, 1),  # batch 1 again, and batch 2
    ]


@pytest.mark.usefixtures("rest_only")
def test_a_refused_connection_and_a_401_count_their_attempts_and_nothing_is_resent(make_project, braze, monkeypatch,
                                                                                    keys):
    monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("COHORT_SYNC_CONCURRENCY", "1")
    project = make_project([COHORT])
    audience = ids("u", 0, 150)
    seed(braze, audience)
    project.set_audience("big_audience", {"external_id": audience})
    plan(project)
    with socket.socket() as closed:  # a port nothing listens on: every attempt is refused
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
        refused = publish(project)
    assert refused.returncode == 1 and "ConnectionError" in refused.stdout, refused.stdout + refused.stderr
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", braze.url)
    monkeypatch.setenv("BRAZE_REST_API_KEY", "RESTKEY-wrong")
    for _ in range(3):
        assert publish(project).returncode == 1
    monkeypatch.setenv("BRAZE_REST_API_KEY", keys["rest_api_key"])
    good = publish(project)
    assert good.returncode == 0, good.stdout + good.stderr
    assert_converged(project, braze, audience)
    assert [(r["status"], r["requests"], r["retries"], r["resent_batches"]) for r in project.history()] == [
        ("failed", 1, 2, 0),  # batch 1, tried 3 times
        *[("failed", 1, 0, 0)] * 3,  # batch 1, answered 401
        ("success", 2, 0, 0),  # nothing reached Braze before: nothing is sent again
    ]
    assert [r["status"] for r in braze.requests()] == [401, 401, 401, 201, 201]


# -- SIGKILL --------------------------------------------------------------------------


def test_sigkill_four_times_then_a_full_run_converges_and_counts_exactly_what_braze_applied_twice(
        big, braze, monkeypatch):
    project, audience = big
    monkeypatch.setenv("COHORT_SYNC_CONCURRENCY", "3")
    # One start every 250 ms: requests wait for the rate limiter (none of them is in flight
    # then), and a kill soon after one reaches the endpoint is long before the next leaves.
    monkeypatch.setenv("COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_HOUR", "14400")
    braze.set_faults([{"endpoint": "track", "probability": 1.0, "latency_ms": 500}])
    rng = random.Random(20261207)
    starts: list[int] = []
    dead: list[tuple[str, int]] = []  # each killed run, and its notes of requests in flight

    def received(since: int) -> int:
        return sum(1 for r in braze.requests()[since:] if "fault" in r)

    def served() -> int:
        return sum(1 for r in braze.requests() if r["endpoint"] == "track" and "status" in r)

    for _ in range(4):
        starts.append(len(braze.requests()))
        target = rng.randint(1, 4)
        run_id = project.publish_killed(lambda start=starts[-1], target=target: received(start) >= target, rng)
        dead.append((run_id, project.query(
            "select count(*) from cohort_sync_inflight where run_id = ?", [run_id])[0][0]))
        deadline = time.monotonic() + 15  # the requests it left at the endpoint are applied, late
        while received(0) != served():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert all(left for _, left in dead), "a kill found nothing in flight; the test proves nothing"
    assert len(project.published("big_audience")) < len(audience), "a run finished before its kill"

    starts.append(len(braze.requests()))
    final = publish(project)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "reclaiming the lock" in final.stderr  # the last killed run's
    assert_converged(project, braze, audience)

    rows = project.history()
    final_row = rows[-1]
    runs = [run_id for run_id, _ in dead] + [final_row["run_id"]]
    twice = received_twice(braze, starts, track_applied)
    assert sum(twice) >= len(dead)  # each kill left a request at the endpoint, delivered again later
    by_run = {run_id: [row for row in rows if row["run_id"] == run_id] for run_id in runs}
    assert all(len(recorded) == 1 for recorded in by_run.values()), by_run  # each run recorded once
    assert [by_run[run_id][0]["resent_batches"] for run_id in runs] == twice

    # Nothing else was applied twice: no request twice within a run, and the objects applied
    # more than once are those of the requests applied again, as many times.
    applied = [r for r in braze.requests() if r["endpoint"] == "track" and r.get("status") == 201]
    times = Counter(r["digest"] for r in applied)
    assert sum(n - 1 for n in times.values()) == sum(twice)
    again = {d: times[r["digest"]] for r in applied if times[r["digest"]] > 1 for d in r["object_digests"]}
    assert {d: n for d, n in Counter(track_objects_applied(applied)).items() if n > 1} == again

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
    assert final_row["requests"] == len(track_applied(sent_last)) and final_row["retries"] == 0


# -- one run at a time ----------------------------------------------------------------


def test_a_second_publisher_refuses_while_one_sends_to_users_track(big, braze, monkeypatch):
    project, audience = big
    monkeypatch.setenv("COHORT_SYNC_CONCURRENCY", "2")  # 28 requests of 500 ms, two at a time
    braze.set_faults([{"endpoint": "track", "probability": 1.0, "latency_ms": 500}])
    first = subprocess.Popen(project.command("cohort-sync", "publish"), cwd=project.root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not braze.requests():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.01)
        second = publish(project)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"in use by another process (PID {first.pid})" in second.stderr
        assert "another cohort-sync publish or dbt run is in progress" in second.stderr
    finally:
        braze.set_faults([])
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert_converged(project, braze, audience)
    acknowledged = project.query(
        "select count(*), count(distinct batch_number) from cohort_sync_delivery_log "
        "where request_kind = 'track' and run_id = (select max_by(run_id, started_at) from cohort_sync_run_history)"
    )
    assert acknowledged == [(28, 28)]
    applied = track_applied(braze.requests())  # the endpoint applied each request, and each object, once
    assert len(applied) == len(set(applied)) == 28
    objects = track_objects_applied(braze.requests())
    assert len(objects) == len(set(objects)) == 2_100


@pytest.mark.usefixtures("rest_only")
def test_a_lock_held_by_a_live_run_refuses_before_any_users_track_request(make_project, braze):
    project = make_project([COHORT])
    members = ids("u", 0, 10)
    seed(braze, members)
    project.set_audience("big_audience", {"external_id": members})
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
    refused = publish(project)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "another publish run is in progress on this target: run run-elsewhere" in refused.stderr
    assert "process scheduler-2:4242" in refused.stderr
    in_dbt = dbt_run(project)  # dbt run publishes too: it refuses as well
    assert in_dbt.returncode == 1
    assert "another publish run is in progress on this target: run run-elsewhere" in in_dbt.stdout
    assert braze.requests() == []
    assert project.published("big_audience") == set()

    hold(now - timedelta(seconds=1))
    reclaimed = publish(project)
    assert reclaimed.returncode == 0, reclaimed.stdout + reclaimed.stderr
    assert "reclaiming the lock of run run-elsewhere" in reclaimed.stderr
    assert flagged(braze, ATTRIBUTE) == set(members)


# -- the guard ------------------------------------------------------------------------


@pytest.mark.usefixtures("rest_only")
def test_the_guard_blocks_emptying_or_removing_more_than_the_share_until_allowed_for_one_run(make_project, braze):
    seed(braze, ids("u", 0, 300))
    project = make_project([
        {"model": "a_audience", "name": "A", "cohort_id": "a", "delivery": "attribute"},
        {"model": "b_audience", "name": "B", "cohort_id": "b", "delivery": "attribute"},
    ])

    def audiences(a: list[str], b: list[str]) -> None:
        project.set_audience("a_audience", {"external_id": a})
        project.set_audience("b_audience", {"external_id": b})

    def rows() -> dict[str, dict]:
        return {row["cohort_id"]: row for row in project.history()[-2:]}

    audiences(ids("u", 0, 300), ids("u", 0, 10))
    assert dbt_run(project).returncode == 0
    assert (flagged(braze, "cohort_a"), flagged(braze, "cohort_b")) == (set(ids("u", 0, 300)), set(ids("u", 0, 10)))

    # 200 of a's 300 members would leave (67%, more than the 50% limit): blocked, nothing sent
    audiences(ids("u", 0, 100), ids("u", 0, 10))
    start = len(braze.requests())
    assert dbt_run(project).returncode == 1
    row = rows()["a"]
    assert row["status"] == "blocked"
    assert "the run would remove 200 of 300 members (66.7%), more than the 50% limit" in row["error"]
    assert braze.requests()[start:] == []
    blocked = publish(project)  # the same plan, from the CLI
    assert blocked.returncode == 1
    assert "blocked" in blocked.stdout and "--allow-removals a" in blocked.stdout
    assert braze.requests()[start:] == []
    dry = publish(project, "--dry-run")
    assert dry.returncode == 0 and "would be blocked" in dry.stdout
    assert flagged(braze, "cohort_a") == set(ids("u", 0, 300))

    # b's changes still go, without a's: u00200 to u00209 join b and stay in a
    audiences(ids("u", 0, 100), ids("u", 0, 10) + ids("u", 200, 210))
    start = len(braze.requests())
    assert dbt_run(project).returncode == 1
    assert {c: r["status"] for c, r in rows().items()} == {"a": "blocked", "b": "success"}
    assert [r["objects"] for r in track_requests(braze, start)] == [10]
    assert flagged(braze, "cohort_a") == set(ids("u", 0, 300))
    assert flagged(braze, "cohort_b") == set(ids("u", 0, 10) + ids("u", 200, 210))

    # allowed for one run
    assert dbt_run(project, {"cohort_sync_allow_removals": ["a"]}).returncode == 0
    assert rows()["a"]["removed"] == 200
    assert flagged(braze, "cohort_a") == set(ids("u", 0, 100))
    assert flagged(braze, "cohort_b") == set(ids("u", 0, 10) + ids("u", 200, 210))

    # emptying either cohort is blocked, whatever its size, the allowance of the last run being spent
    audiences([], [])
    start = len(braze.requests())
    assert dbt_run(project).returncode == 1
    assert {c: (r["status"], r["error"].split(";")[0]) for c, r in rows().items()} == {
        "a": ("blocked", "the run would leave the cohort empty (removing all 100 members)"),
        "b": ("blocked", "the run would leave the cohort empty (removing all 20 members)"),
    }
    assert braze.requests()[start:] == []

    allowed = publish(project, "--allow-removals", "b")  # b only: a is still blocked
    assert allowed.returncode == 1, allowed.stdout + allowed.stderr
    assert {c: r["status"] for c, r in rows().items()} == {"a": "blocked", "b": "success"}
    assert (flagged(braze, "cohort_a"), flagged(braze, "cohort_b")) == (set(ids("u", 0, 100)), set())
    assert dbt_run(project, {"cohort_sync_allow_removals": ["a"]}).returncode == 0
    assert not [p for p in braze.profiles() if set(p["attributes"]) & {"cohort_a", "cohort_b"}]

    start = len(braze.requests())
    assert dbt_run(project).returncode == 0
    assert braze.requests()[start:] == []


# -- bad input ------------------------------------------------------------------------

#: (external_id, alias_name, alias_label, email, phone, device_id, the reason it is rejected)
BAD_ROWS = [
    ("   ", None, None, None, None, None, "no_identifier"),  # whitespace only
    ("\u00a0\t\u3000", None, None, "  ", " ", None, "no_identifier"),  # Unicode whitespace only
    ("x" * 600, None, None, None, None, None, "identifier_too_long"),
    (None, None, None, "y" * 600 + "@example.com", None, None, "identifier_too_long"),
    (None, "lonely", None, None, None, None, "alias_name_without_alias_label"),
    (None, None, "label-only", None, None, None, "alias_label_without_alias_name"),
    (None, None, None, None, None, "device-1", "device_id_not_addressable"),
    (None, None, None, "not-an-email", None, None, "invalid_email"),
    (None, None, None, "a@b@example.com", None, None, "invalid_email"),
    (None, None, None, None, "4155550100", None, "invalid_phone"),  # no +
    (None, None, None, None, "+0123456", None, "invalid_phone"),  # a leading 0
    (None, None, None, None, "+1234567890123456", None, "invalid_phone"),  # 16 digits
]
GOOD_ROWS = [
    ("good1", None, None, None, None, None),
    ("  good2\t", None, None, "ignored@example.com", None, None),  # trimmed; sent by its external id
    (None, "anon1", "crm", None, None, "device-2"),  # the alias goes; device ids cannot
    (None, None, None, " Ann@Example.COM ", None, None),
    (None, None, None, None, "+1 (415) 555-0100", None),
]
COLUMNS = ("external_id", "alias_name", "alias_label", "email", "phone", "device_id")


def held(braze, attribute: str = "cohort_buyers") -> set[str]:
    """The profiles holding the attribute, by external id, alias_name|alias_label, email or phone
    (each of them holds it true)."""
    found = set()
    for profile in braze.profiles():
        if attribute in profile["attributes"]:
            assert profile["attributes"][attribute] is True
            alias = profile["user_alias"]
            found.add(profile["external_id"] or (alias and f"{alias['alias_name']}|{alias['alias_label']}")
                      or profile["email"] or profile["phone"])
    return found


@pytest.mark.usefixtures("rest_only")
def test_bad_input_is_rejected_with_its_reason_and_never_sent_and_a_change_braze_rejects_is_not_resent(
        make_project, braze):
    braze.seed_profiles([
        {"external_id": "good1"}, {"external_id": "good2"}, {"user_alias": {"alias_name": "anon1", "alias_label": "crm"}},
        {"email": "ann@example.com"}, {"phone": "+14155550100"}, {"external_id": "good3"}, {"external_id": "refused1"},
        # profiles a bad row would reach if it were sent as it is
        {"external_id": "   "}, {"external_id": "x" * 600}, {"email": "y" * 600 + "@example.com"},
        {"email": "ignored@example.com"}, {"user_alias": {"alias_name": "lonely", "alias_label": "crm"}},
    ])
    project = make_project([{"model": "buyers", "name": "Buyers", "delivery": "attribute"}])

    def audience(*external_ids: str) -> None:
        """The bad and good rows, and these members."""
        rows = [row[:6] for row in BAD_ROWS] + GOOD_ROWS + [(value, *[None] * 5) for value in external_ids]
        project.set_audience("buyers", {name: [row[i] for row in rows] for i, name in enumerate(COLUMNS)})

    audience()
    good = {"good1", "good2", "anon1|crm", "ann@example.com", "+14155550100"}

    result = project.run()
    assert result.success, failure_text(result)
    reasons = dict(project.query("select reject_reason, sum(source_rows) from cohort_sync_rejects group by 1"))
    assert reasons == dict(Counter(row[6] for row in BAD_ROWS))
    assert held(braze) == good  # and no other profile holds the attribute, whatever its value
    assert sum(r["objects"] for r in track_requests(braze)) == len(good)  # nothing else was sent
    assert project.query("select count(*) from cohort_sync_changes") == [(len(good),)]
    assert project.history()[-1]["status"] == "success"

    # A member Braze rejects: recorded, not delivered, and never sent again
    braze.set_track_rejects(["refused1"], "invalid external_id")
    audience("refused1")
    partial = project.run()
    assert not partial.success  # the run exits non-zero, so a scheduler notices
    row = project.history()[-1]
    assert (row["status"], row["added"], row["rejected"]) == ("partial", 0, 1)
    assert "invalid external_id (1)" in row["error"]
    rejected = "select member_key, should_remove, error_type from cohort_sync_rejected_changes"
    assert project.query(rejected) == [("external_id:refused1", False, "invalid external_id")]

    start = len(braze.requests())
    assert project.run().success  # the plan no longer holds it
    assert track_requests(braze, start) == []
    audience("refused1", "good3")
    assert project.run().success  # another change goes, without it
    assert [r["objects"] for r in track_requests(braze, start)] == [1]
    served = [r for r in braze.requests() if r["endpoint"] == "track" and "status" in r]
    assert sum(len(r["errors"]) for r in served) == 1  # Braze saw the rejected object once
    assert project.query(rejected) == [("external_id:refused1", False, "invalid external_id")]
    assert held(braze) == good | {"good3"}
    assert project.history()[-1]["status"] == "success"

    # once its data is fixed in Braze, var cohort_sync_retry_rejected plans it again, for one run
    braze.set_track_rejects([])
    assert project.run(vars={"cohort_sync_retry_rejected": True}).success
    assert held(braze) == good | {"good3", "refused1"}


# -- secrets ---------------------------------------------------------------------------


def test_the_rest_key_never_leaks_through_any_path(make_project, braze, keys, monkeypatch):
    wrong_key = "RESTKEY-WRONG-" + keys["rest_api_key"][-12:]
    secrets = [keys["rest_api_key"], keys["partner_api_key"], keys["data_import_key"], wrong_key]
    seed(braze, [f"u{n}" for n in range(420)])
    project = make_project([{"model": "audience", "name": "Audience", "delivery": "attribute"}])
    project.set_audience("audience", {"external_id": [f"u{n}" for n in range(300)]})
    outputs: list[str] = []
    plan_only = json.dumps(PLAN_ONLY)

    def cli(*args: str, env: dict[str, str] | None = None, code: int | None = 0) -> None:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        result = project.cli(*args)
        outputs.extend([result.stdout, result.stderr])
        if code is not None:
            assert result.returncode == code, result.stdout + result.stderr

    def echoing(status: int, message: str, key: str) -> list[dict]:
        """A fault whose answer echoes the key, as a careless server might."""
        return [{"endpoint": "track", "times": 1, "status": status,
                 "body": json.dumps({"message": f"{message} (key {key})", "errors": [f"Bearer {key}"]})}]

    cli("dbt", "run", "--vars", '{"cohort_sync_dry_run": true}')              # dry run inside dbt
    cli("dbt", "run")                                                          # success, in dbt
    project.set_audience("audience", {"external_id": [f"u{n}" for n in range(50, 350)]})
    cli("dbt", "run", "--vars", plan_only)
    cli("cohort-sync", "publish", "--dry-run")                                 # dry run, CLI
    braze.set_faults([{"endpoint": "track", "times": 2, "status": 503, "retry_after": 0}])
    cli("cohort-sync", "publish", "--verbose")                                 # retries, then success
    project.set_audience("audience", {"external_id": [f"u{n}" for n in range(100, 400)]})
    cli("dbt", "run", "--vars", plan_only)
    braze.set_faults(echoing(400, "Invalid request body", keys["rest_api_key"]))
    cli("cohort-sync", "publish", "--verbose", code=1)                         # 400
    braze.set_faults(echoing(403, "Forbidden", keys["rest_api_key"]))
    cli("cohort-sync", "publish", "--verbose", code=1)                         # 403
    braze.set_faults(echoing(401, "Invalid API key", wrong_key))
    cli("cohort-sync", "publish", "--verbose", env={"BRAZE_REST_API_KEY": wrong_key}, code=1)  # 401, echoed
    cli("cohort-sync", "publish", "--verbose", code=1)                         # 401
    cli("dbt", "run", code=1)                                                  # 401 inside dbt
    project.set_audience("audience", {"external_id": [f"u{n}" for n in range(100, 410)]})
    cli("dbt", "run", "--vars", plan_only, env={"BRAZE_REST_API_KEY": keys["rest_api_key"]})
    braze.set_track_rejects(["u405"], "invalid external_id")
    cli("cohort-sync", "publish", "--verbose", code=1)                         # partial: one object rejected
    cli("cohort-sync", "status")
    cli("cohort-sync", "report")
    cli("dbt", "run", code=None, env={"BRAZE_REST_API_KEY": ""})              # missing key

    for output in outputs:
        for secret in secrets:
            assert secret not in output
    text = "\n".join(outputs)
    assert "retrying the /users/track request" in text, "the retry path did not run"
    assert "Braze answered 401 (Invalid API key" in text, "the 401 path did not run"
    assert "Braze answered 403 (Forbidden" in text, "the 403 path did not run"
    assert "with HTTP 400: Invalid request body" in text, "the 400 path did not run"
    assert "(key [redacted])" in text, "no answer echoed a key; the redaction was not tested"
    assert "BRAZE_REST_API_KEY is not set" in text, "the missing key path did not run"
    assert "Braze rejected 1 change(s)" in text, "the partial path did not run"
    assert "dry run: would send" in text, "the dry run path did not run"
    assert flagged(braze, "cohort_audience") == {f"u{n}" for n in range(100, 410)} - {"u405"}

    assert_nowhere(project, secrets)
    assert project.query("select count(*) from cohort_sync_rejected_changes") == [(1,)]
