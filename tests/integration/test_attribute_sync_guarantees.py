"""The delivery guarantees of attribute syncs (var cohort_sync_attribute_syncs),
on DuckDB, against the local endpoint over real sockets, as
test_users_track_guarantees.py proves them for attribute cohorts: random
transient faults and SIGKILL at random points converge to profiles exactly
equal to the model, and no value reaches Braze twice but those of requests
whose outcome the publisher could not know; a change Braze rejects is
recorded and not sent again until its value changes; a scheduled full
resync re-sends every current value once, when due.

The publisher runs as a separate process (`cohort-sync publish`), as under a
scheduler, so it can be killed. What the endpoint applied is read from its
request log: each applied attributes object has a digest (the same object
twice, the same digest), each request the digest of the objects it applied.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest

from tests.endpoint_requests import (
    attributes_object_digest,
    received_twice,
    track_applied,
    track_objects_applied,
)
from tests.integration.test_users_track import rest_only  # noqa: F401 - a fixture, used by name
from tests.integration.test_users_track_guarantees import (
    FAULTS,
    NOTES,
    attempts_received,
    dbt_run,
    ids,
    publish,
)

pytestmark = pytest.mark.dbt

SYNC = "customer_facts"
RAW = "raw_customer_facts"
ATTRIBUTES = ("plan", "visits", "vip")  # a string, a number, a boolean
PLANS = ("free", "pro", "team")
PLAN_ONLY = {"cohort_sync_publish_on_run": False}

#: Per user: plan, visits, vip (None: a SQL null)
Facts = dict[str, tuple[str | None, int | None, bool | None]]


def sync_project(make_project, mode: str, **settings: Any):
    """A project whose only declaration is the attribute sync of the model customer_facts, by external id."""
    project = make_project()
    project.declare([], cohort_sync_attribute_syncs=[
        {"model": SYNC, "mode": mode, "identifiers": ["external_id"], **settings}])
    return project


def random_facts(users: list[str], seed: int) -> Facts:
    rng = random.Random(seed)
    return {user: (rng.choice([*PLANS, None]) if rng.random() < 0.5 else rng.choice(PLANS),
                   rng.randint(0, 500),
                   rng.choice([True, False, None]))
            for user in users}


def write_facts(project, facts: Facts) -> None:
    """(Re)write the model's raw table; the model reads vip from an int (the test loader has no boolean)."""
    users = sorted(facts)
    project.warehouse.load(RAW, {
        "external_id": users,
        "plan": [facts[u][0] for u in users],
        "visits": [facts[u][1] for u in users],
        "vip": [None if facts[u][2] is None else int(facts[u][2]) for u in users],
    }, {"visits": "bigint", "vip": "int"})
    (project.root / "models" / f"{SYNC}.sql").write_text(
        f"select external_id, plan, visits, vip = 1 as vip from {project.warehouse.raw_schema}.{RAW}\n")


def values(facts: Facts, user: str) -> dict[str, Any]:
    """The attributes Braze should hold for the user: the model's values that are not null."""
    return {name: value for name, value in zip(ATTRIBUTES, facts[user], strict=True) if value is not None}


def profiles(braze) -> dict[str, dict[str, Any]]:
    """Every profile's attributes, by external id."""
    return {p["external_id"]: p["attributes"] for p in braze.profiles()}


def plan_sync(project) -> tuple[int, int, int, int]:
    """Build the plan with `dbt run`, publishing nothing: its values written, unset, data points and batches."""
    built = dbt_run(project, PLAN_ONLY)
    assert built.returncode == 0, built.stdout + built.stderr
    [(adds, removes, points, batches)] = project.query(
        "select count(*) filter (where not should_remove), count(*) filter (where should_remove), "
        "coalesce(sum(data_points), 0), coalesce(max(batch_number), 0) from cohort_sync_attribute_changes")
    assert project.query("select planned_data_points from cohort_sync_cohorts where cohort_id = ?", [SYNC]) == [
        (points,)]
    return adds, removes, points, batches


def assert_converged(project, braze, expected: dict[str, dict[str, Any]]) -> None:
    """The endpoint's profiles are `expected`, exactly; the acknowledged state
    holds the model's values, each once; nothing is in flight or locked."""
    assert profiles(braze) == expected
    state = project.query(
        "select member_key, attribute_name, value_hash from cohort_sync_attribute_state "
        "where sync_id = ? order by 1, 2", [SYNC])
    model = project.query(
        "select member_key, attribute_name, value_hash from cohort_sync_attribute_rows "
        "where sync_id = ? and not is_null and reject_reason is null order by 1, 2", [SYNC])
    assert state == model
    assert project.query("select count(*) from cohort_sync_inflight") == [(0,)]
    assert project.query("select count(*) from cohort_sync_lock") == [(0,)]


def served(requests: list[dict]) -> list[dict]:
    """The /users/track requests the endpoint applied (answered 201, or applied and its answer lost)."""
    return [r for r in requests if r["endpoint"] == "track" and r.get("status") == 201]


def assert_nothing_applied_twice_but_lost_acks(requests: list[dict], values_planned: int, points: int) -> None:
    """Over `requests` (from a plan's first run to the run that completed it):
    each request was applied once, plus once more for each acknowledgement
    the endpoint dropped after applying it (the only faults that apply
    anything: a 5xx, a 429 or a connection dropped before the request is
    read apply nothing); the objects applied more than once are those
    requests', as many times; and what was applied once is the plan: its
    values and its data points."""
    track = served(requests)
    lost = sum(1 for r in requests if r.get("fault", {}).get("drop") == "after")
    times = Counter(r["digest"] for r in track)
    assert sum(n - 1 for n in times.values()) == lost
    again = {d: times[r["digest"]] for r in track if times[r["digest"]] > 1 for d in r["object_digests"]}
    assert {d: n for d, n in Counter(track_objects_applied(track)).items() if n > 1} == again
    once = {r["digest"]: r for r in track}
    assert sum(sum(r["attribute_counts"]) for r in once.values()) == values_planned
    assert sum(r["data_points"] for r in once.values()) == points
    # Braze billed the plan's data points, and again those of each request applied again
    assert sum(r["data_points"] for r in track) == points + sum((times[d] - 1) * r["data_points"]
                                                                 for d, r in once.items())


# -- transient faults ---------------------------------------------------------------


@pytest.mark.usefixtures("rest_only")
def test_random_faults_converge_to_the_model_and_only_lost_acks_are_applied_twice(make_project, braze, monkeypatch):
    project = sync_project(make_project, "update", on_leave="unset")
    users, joining, others = ids("u", 0, 2_000), ids("u", 2_000, 2_050), ids("x", 0, 100)
    braze.seed_profiles([{"external_id": u} for u in users + joining + others])  # update mode: all exist
    facts = random_facts(users, seed=20261201)
    random_faults = [{"endpoint": "track", "probability": 0.045, **kind} for kind in FAULTS]  # 20% of attempts
    runs = []  # (notes of earlier runs in flight before the run, where its requests start, result)
    for step in range(2):
        if step == 0:
            # One attempt per request: the first to arrive is applied and its answer lost,
            # so this run fails and leaves a request the next one must send again.
            monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "1")
            braze.set_faults([{"endpoint": "track", "times": 1, "drop": "after"}, *random_faults])
        else:
            before, facts = facts, dict(facts)
            for user in users[:300]:  # a new plan
                facts[user] = ("enterprise", *facts[user][1:])
            for user in users[300:500]:  # more visits
                facts[user] = (facts[user][0], facts[user][1] + 1_000, facts[user][2])
            for user in users[500:600]:  # every value null: unset
                facts[user] = (None, None, None)
            for user in users[1_900:]:  # leave the model: their values are unset (on_leave: unset)
                del facts[user]
            facts.update(random_facts(joining, seed=7))
            braze.set_faults([{"endpoint": "track", "times": 1, "status": 503, "retry_after": 0}, *random_faults])
        write_facts(project, facts)
        adds, removes, points, batches = plan_sync(project)
        if step == 0:  # every value of 2,000 users, 75 users a request
            assert (adds, removes, batches) == (sum(len(values(facts, u)) for u in users), 0, 27)
        else:  # one value of 500 users, the values of those who joined; those of the 200 others unset
            assert (adds, removes, batches) == (
                500 + sum(len(values(facts, u)) for u in joining),
                sum(len(values(before, u)) for u in users[500:600] + users[1_900:]), 10)
        step_start, recorded = len(braze.requests()), len(project.history())
        for _ in range(10):
            notes = project.query(NOTES)[0][0]
            start = len(braze.requests())
            result = publish(project)
            monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "2")  # then a request fails only when faulted twice
            runs.append((notes, start, result))
            if result.returncode == 0:
                break
        else:
            raise AssertionError("did not converge:\n" + "\n".join(r.stdout + r.stderr for *_, r in runs))
        expected = {u: values(facts, u) if u in facts else {} for u in users + joining + others}
        assert_converged(project, braze, expected)

        # Every batch of the plan was acknowledged once, and counted so by the runs' history.
        logged = project.query(
            "select batch_number, count(*), sum(added), sum(removed) from cohort_sync_delivery_log "
            "where cohort_id = ? and request_kind = 'profile' and plan_id = (select max(plan_id) from "
            "cohort_sync_attribute_changes) group by batch_number order by batch_number", [SYNC])
        assert [(number, count) for number, count, _, _ in logged] == [(n, 1) for n in range(1, batches + 1)]
        assert (sum(row[2] for row in logged), sum(row[3] for row in logged)) == (adds, removes)
        rows = project.history()[recorded:]
        assert (sum(r["added"] for r in rows), sum(r["removed"] for r in rows)) == (adds, removes)
        assert sum(r["data_points"] for r in rows) == points
        assert_nothing_applied_twice_but_lost_acks(braze.requests()[step_start:], adds + removes, points)

    braze.set_faults([])
    fired = Counter(str(sorted(r["fault"].items())) for r in braze.requests() if "fault" in r)
    assert all(str(sorted(kind.items())) in fired for kind in FAULTS), f"a kind of fault never fired: {fired}"
    assert not [r for r in braze.requests() if r.get("created")]  # update mode never creates a user
    assert len(braze.profiles()) == 2_150

    history = project.history()
    assert len(history) == len(runs) >= 3
    assert {row["cohort_id"] for row in history} == {SYNC}
    assert history[0]["status"] == "failed"  # the lost answer
    twice = received_twice(braze, [start for _, start, _ in runs], track_applied)
    assert sum(twice) >= 1  # a later run delivered that request again
    for (notes, _, result), row, again in zip(runs, history, twice, strict=True):
        acknowledged = project.query(
            "select count(*), coalesce(sum(added), 0), coalesce(sum(removed), 0) from cohort_sync_delivery_log "
            "where run_id = ?", [row["run_id"]])[0]
        assert (row["added"], row["removed"]) == acknowledged[1:]
        if result.returncode == 0:
            assert (row["status"], row["requests"]) == ("success", acknowledged[0]), result.stderr
            assert row["resent_batches"] == notes  # it sent again every request earlier runs left unconfirmed
        else:
            assert row["status"] == "failed" and "gave up on the /users/track request" in row["error"], result.stdout
            assert row["requests"] > acknowledged[0]
            assert row["resent_batches"] <= notes
        assert row["resent_batches"] >= again  # every request Braze applied in an earlier run too is counted
    assert sum(row["requests"] + row["retries"] for row in history) == attempts_received(braze.requests())
    assert sum(row["retries"] for row in history) >= 1

    start = len(braze.requests())
    assert publish(project).returncode == 0
    assert braze.requests()[start:] == []  # converged: nothing is sent again


# -- SIGKILL --------------------------------------------------------------------------


@pytest.mark.usefixtures("rest_only")
def test_sigkill_four_times_then_a_full_run_converges_and_resends_only_what_was_in_flight(
        make_project, braze, monkeypatch):
    project = sync_project(make_project, "upsert")  # upsert: the run creates every profile
    users = ids("u", 0, 3_000)
    facts = random_facts(users, seed=20261202)
    write_facts(project, facts)
    adds, removes, points, batches = plan_sync(project)
    assert (adds, removes, batches) == (sum(len(values(facts, u)) for u in users), 0, 40)
    batch_of = dict(project.query(
        "select distinct member_key, batch_number from cohort_sync_attribute_changes where sync_id = ?", [SYNC]))
    # the object each user's values go in, and the digest the endpoint gives it once applied
    user_of = {attributes_object_digest({"external_id": u, "_update_existing_only": False, **values(facts, u)}): u
               for u in users}

    monkeypatch.setenv("COHORT_SYNC_CONCURRENCY", "3")
    # One start every 250 ms, each answered after 500 ms: a kill soon after a
    # request reaches the endpoint finds it (and maybe another) in flight.
    monkeypatch.setenv("COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_HOUR", "14400")
    braze.set_faults([{"endpoint": "track", "probability": 1.0, "latency_ms": 500}])
    rng = random.Random(20261203)
    starts: list[int] = []
    dead: list[tuple[str, set[int]]] = []  # each killed run, and the batches it noted in flight

    def received(since: int) -> int:
        return sum(1 for r in braze.requests()[since:] if "fault" in r)

    def answered() -> int:
        return sum(1 for r in braze.requests() if r["endpoint"] == "track" and "status" in r)

    for _ in range(4):
        starts.append(len(braze.requests()))
        target = rng.randint(2, 9)  # requests received before the kill: some acknowledged, at most 3 in flight
        run_id = project.publish_killed(lambda start=starts[-1], target=target: received(start) >= target, rng)
        flying = project.query("select request_kind, batch_number from cohort_sync_inflight where run_id = ?", [run_id])
        assert {kind for kind, _ in flying} <= {"profile"}
        dead.append((run_id, {int(number) for _, number in flying}))
        deadline = time.monotonic() + 15  # the requests it left at the endpoint are applied, late
        while received(0) != answered():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert all(left for _, left in dead), "a kill found nothing in flight; the test proves nothing"
    [(held,)] = project.query("select count(*) from cohort_sync_attribute_state")
    assert held < adds, "a run finished before its kill"

    braze.set_faults([])
    starts.append(len(braze.requests()))
    final = publish(project)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "reclaiming the lock" in final.stderr  # the last killed run's
    assert_converged(project, braze, {u: values(facts, u) for u in users})
    assert sum(r["created"] for r in served(braze.requests())) == len(users)  # each profile created once

    rows = project.history()
    final_row = rows[-1]
    runs = [run_id for run_id, _ in dead] + [final_row["run_id"]]
    by_run = {run_id: [row for row in rows if row["run_id"] == run_id] for run_id in runs}
    assert all(len(recorded) == 1 for recorded in by_run.values()), by_run  # each run recorded once
    twice = received_twice(braze, starts, track_applied)
    assert sum(twice) >= len(dead)  # each kill left a request at the endpoint, delivered again later
    assert [by_run[run_id][0]["resent_batches"] for run_id in runs] == twice

    # Every object the endpoint applied is a user's values as the plan has them;
    # one applied more than once is of a batch in flight when a run died, applied
    # again at most once per such death; a request is applied again only by a later
    # run (as often as the runs counted it resent), and so are its objects.
    track = served(braze.requests())
    times = Counter(track_objects_applied(track))
    assert set(times) == set(user_of)
    for digest, n in times.items():
        batch = batch_of[f"external_id:{user_of[digest]}"]
        assert n - 1 <= sum(1 for _, flying in dead if batch in flying), (user_of[digest], batch, n, dead)
    requests_applied = Counter(r["digest"] for r in track)
    assert sum(n - 1 for n in requests_applied.values()) == sum(twice)
    again = {d: requests_applied[r["digest"]] for r in track if requests_applied[r["digest"]] > 1
             for d in r["object_digests"]}
    assert {d: n for d, n in times.items() if n > 1} == again

    # A killed run is recorded, by the run after it, from what it left behind.
    for run_id, flying in dead:
        [row] = by_run[run_id]
        logged = project.query(
            "select count(*), coalesce(sum(added), 0), coalesce(sum(removed), 0) "
            "from cohort_sync_delivery_log where run_id = ?", [run_id])[0]
        assert (row["status"], row["requests"], row["added"], row["removed"], row["retries"]) == (
            "interrupted", logged[0] + len(flying), logged[1], logged[2], 0)
        assert row["started_at"] <= row["finished_at"] and "recorded by run" in row["error"]
    sent_last = braze.requests()[starts[-1]:]
    assert final_row["requests"] == len(track_applied(sent_last)) and final_row["retries"] == 0
    assert final_row["added"] == adds - sum(by_run[run_id][0]["added"] for run_id, _ in dead)
    assert final_row["data_points"] == final_row["added"]  # a point per value written

    # The data points each run spent on what Braze acknowledged in it add up to the plan's, the
    # killed runs' included (each value here costs one: as many as the values acknowledged).
    assert [by_run[run_id][0]["data_points"] for run_id in runs] == [by_run[run_id][0]["added"] for run_id in runs]
    assert sum(by_run[run_id][0]["data_points"] for run_id in runs) == points


# -- a change Braze rejects --------------------------------------------------------------


@pytest.mark.usefixtures("rest_only")
def test_an_object_braze_rejects_is_recorded_not_resent_and_sent_whole_once_it_changes(make_project, braze):
    project = sync_project(make_project, "update")
    users = ids("u", 0, 200)
    braze.seed_profiles([{"external_id": u} for u in users])
    facts = {u: (PLANS[n % 3], n, n % 2 == 0) for n, u in enumerate(users)}
    write_facts(project, facts)
    braze.set_track_rejects(["u00007"], "invalid value for plan")

    first = project.run()
    assert not first.success  # partial: the run exits non-zero, so a scheduler notices
    row = project.history()[-1]
    assert (row["status"], row["added"], row["removed"], row["rejected"], row["data_points"]) == (
        "partial", 597, 0, 3, 597)
    assert "invalid value for plan (1)" in row["error"]
    rejected = project.query(
        "select delivery, cohort_id, member_key, attribute_name, should_remove, error_type, value_hash "
        "from cohort_sync_rejected_changes order by attribute_name")
    hashes = dict(project.query(
        "select attribute_name, value_hash from cohort_sync_attribute_rows where member_key = 'external_id:u00007'"))
    assert rejected == [("profile", SYNC, "external_id:u00007", name, False, "invalid value for plan", hashes[name])
                        for name in sorted(ATTRIBUTES)]
    assert profiles(braze) == {u: {} if u == "u00007" else values(facts, u) for u in users}
    assert project.query("select count(*) from cohort_sync_attribute_state where member_key = 'external_id:u00007'") == [
        (0,)]

    # Not sent again: the plan no longer holds it (Braze would still refuse it)
    start = len(braze.requests())
    assert project.run().success
    assert project.query("select count(*) from cohort_sync_attribute_changes") == [(0,)]
    assert braze.requests()[start:] == []
    assert project.history()[-1]["status"] == "success"

    # Braze rejects whole objects: once the model's visits change for that user, the object
    # differs from the rejected one, so every value of it is planned again (the fixed one
    # and the two Braze never took): one object of three values
    braze.set_track_rejects([])
    facts["u00007"] = (facts["u00007"][0], 7_007, facts["u00007"][2])
    write_facts(project, facts)
    start = len(braze.requests())
    assert project.run().success
    [sent] = served(braze.requests()[start:])
    assert (sent["objects"], sent["attribute_counts"], sent["data_points"], sent["errors"]) == (1, [3], 3, [])
    assert profiles(braze) == {u: values(facts, u) for u in users}
    row = project.history()[-1]
    assert (row["status"], row["added"], row["rejected"], row["data_points"]) == ("success", 3, 0, 3)
    assert len(project.query("select * from cohort_sync_rejected_changes")) == 3  # recorded once

    # The same object rejected again: held back until var cohort_sync_retry_rejected asks for it
    braze.set_track_rejects(["u00008"], "invalid value for plan")
    facts["u00008"] = (facts["u00008"][0], 8_008, facts["u00008"][2])
    write_facts(project, facts)
    assert not project.run().success  # partial
    start = len(braze.requests())
    assert project.run().success
    assert braze.requests()[start:] == []  # the object Braze rejected is not sent again
    braze.set_track_rejects([])
    assert project.run(vars={"cohort_sync_retry_rejected": True}).success
    [sent] = served(braze.requests()[start:])
    assert (sent["objects"], sent["attribute_counts"]) == (1, [1])
    assert profiles(braze) == {u: values(facts, u) for u in users}


# -- a scheduled full resync --------------------------------------------------------------


@pytest.mark.usefixtures("rest_only")
def test_a_due_full_resync_resends_every_current_value_once_and_repairs_users_created_since(make_project, braze):
    project = sync_project(make_project, "update", full_resync_every="1h")
    users = ids("u", 0, 200)
    later = users[150:]  # not in Braze yet: update mode ignores them, the state records their values
    braze.seed_profiles([{"external_id": u} for u in users[:150]])
    facts = random_facts(users, seed=20261204)
    write_facts(project, facts)
    every_value = sum(len(values(facts, u)) for u in users)

    def run() -> tuple[dict, list[dict]]:
        start = len(braze.requests())
        result = dbt_run(project)
        assert result.returncode == 0, result.stdout + result.stderr
        return project.history()[-1], served(braze.requests()[start:])

    row, sent = run()
    assert (row["status"], row["added"], row["data_points"], row["full_resync"]) == (
        "success", every_value, every_value, False)
    assert sum(r["ignored"] for r in sent) == len(later)
    assert profiles(braze) == {u: values(facts, u) for u in users[:150]}

    braze.seed_profiles([{"external_id": u} for u in later])  # they sign up
    row, sent = run()
    assert (row["status"], row["requests"], row["full_resync"], sent) == ("success", 0, False, [])  # not due
    assert all(profiles(braze)[u] == {} for u in later)

    # An hour later (the sync's history rewritten to have started two hours ago),
    # with one value changed: that value goes once, and every other one again.
    project.query("update cohort_sync_run_history set started_at = started_at - interval 2 hour, "
                  "finished_at = finished_at - interval 2 hour where cohort_id = ?", [SYNC])
    facts["u00003"] = ("enterprise", *facts["u00003"][1:])
    write_facts(project, facts)
    assert dbt_run(project, PLAN_ONLY).returncode == 0
    dry = publish(project, "--dry-run")  # counts the resync's data points, and does not count as the resync
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"would also re-send everything Braze holds (full resync): {every_value - 1} data point(s)" in dry.stdout
    row = project.history()[-1]
    assert (row["status"], row["full_resync"], row["data_points"]) == ("dry_run", True, every_value)
    row, sent = run()
    assert (row["status"], row["full_resync"], row["added"], row["data_points"]) == (
        "success", True, every_value, every_value)
    assert sum(sum(r["attribute_counts"]) for r in sent) == sum(r["data_points"] for r in sent) == every_value
    def object_of(user: str, **attributes: Any) -> str:
        return attributes_object_digest({"external_id": user, "_update_existing_only": True, **attributes})

    change = object_of("u00003", plan="enterprise")
    resync = [object_of(u, **{k: v for k, v in values(facts, u).items() if (u, k) != ("u00003", "plan")})
              for u in users]
    assert sorted(track_objects_applied(sent)) == sorted([change, *resync])  # the change, then every user's rest
    assert profiles(braze) == {u: values(facts, u) for u in users}  # those who signed up hold their values

    row, sent = run()  # the resync is done: nothing is due
    assert (row["status"], row["requests"], row["full_resync"], row["data_points"], sent) == (
        "success", 0, False, 0, [])


@pytest.mark.usefixtures("rest_only")
def test_a_full_resync_over_several_pages_resends_each_value_exactly_once(make_project, braze):
    """4,000 users are more than one page of the resync's reads (50 requests of
    75 on DuckDB): every user's values go again, each once, in full requests."""
    project = sync_project(make_project, "upsert")
    users = ids("u", 0, 4000)
    facts = {u: (PLANS[n % 3], n, None if n % 5 == 0 else n % 2 == 0) for n, u in enumerate(users)}
    write_facts(project, facts)
    assert dbt_run(project, PLAN_ONLY).returncode == 0
    assert publish(project).returncode == 0
    start = len(braze.requests())
    resync = publish(project, "--full-resync")
    assert resync.returncode == 0, resync.stderr[-2000:]
    sent = served(braze.requests()[start:])
    assert sorted(r["objects"] for r in sent) == [25] + [75] * 53  # requests go concurrently: any order
    applied = track_objects_applied(sent)
    assert len(applied) == len(set(applied)) == 4000  # each user's object once
    assert sum(sum(r["attribute_counts"]) for r in sent) == sum(len(values(facts, u)) for u in users)
    row = project.history()[-1]
    assert (row["full_resync"], row["data_points"]) == (True, sum(len(values(facts, u)) for u in users))
    assert profiles(braze) == {u: values(facts, u) for u in users}
