"""The delivery guarantees of event syncs (var cohort_sync_event_syncs,
decision 0015), on DuckDB, against the local endpoint over real sockets:
Braze does not deduplicate events, so each event must reach it once, except
where a lost acknowledgement makes that unknowable, and then its id must be
on record (cohort_sync_event_uncertain) as possibly duplicated, or, under
guarantee: at_most_once, as possibly lost.

Every event carries its own id as the property `ref`, so the endpoint's
profiles say how many times each event was applied. The publisher runs as a
separate process (`cohort-sync publish`), as under a scheduler, so it can be
killed; `dbt run` runs as a process too (DuckDB's file is then free for it).
"""

from __future__ import annotations

import random
import socket
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.integration.test_users_track import rest_only  # noqa: F401 - a fixture, used by name
from tests.integration.test_users_track_guarantees import dbt_run, publish
from tests.sync_project import SyncProject

pytestmark = pytest.mark.dbt

PLAN_ONLY = {"cohort_sync_publish_on_run": False}
BATCH = 75  # events per /users/track request
START = datetime(2026, 3, 1)  # every event within a day of it: all inside the default 3-day lookback
#: Faults the endpoint answers before applying anything (a 5xx here applies nothing, as Braze's may not)
BEFORE_APPLYING = [
    {"status": 429, "retry_after": 0.1},
    {"status": 500},
    {"status": 503},
    {"drop": "before"},  # the connection closes before the request is applied
]


def keys(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(count)]


def declaration(model: str, kind: str, **settings: Any) -> dict[str, Any]:
    """An event sync of `model` whose events carry their id as the property `ref`; users are created."""
    sync = {"model": model, "kind": kind, "event_id": "event_key", "time": "occurred_at", "properties": ["ref"],
            "backfill": True, "create_users": True, **settings}
    if kind == "event":
        sync["name"] = "app_open"
    else:
        sync["quantity"] = "quantity"
    return sync


def event_project(make_project, *syncs: dict[str, Any]) -> SyncProject:
    project = make_project()
    project.declare([], cohort_sync_event_syncs=list(syncs))
    return project


def write_events(project: SyncProject, model: str, ids: list[str], kind: str) -> None:
    """(Re)write the model's raw table: one event per id, 8 seconds apart, on 500 users."""
    n = len(ids)
    columns: dict[str, list[Any]] = {
        "event_key": ids,
        "ref": ids,
        "external_id": [f"user{i % 500:03d}" for i in range(n)],
        "occurred_at": [(START + timedelta(seconds=8 * i)).isoformat(sep=" ") for i in range(n)],
    }
    if kind == "purchase":
        columns.update(product_id=[("shirt", "hat", "mug")[i % 3] for i in range(n)], currency=["USD"] * n,
                       price=[f"{i % 90}.25" for i in range(n)], quantity=[1 + i % 5 for i in range(n)])
    project.warehouse.load(model, columns, {"quantity": "bigint"} if kind == "purchase" else {})
    casts = {"occurred_at": "cast(occurred_at as timestamp)", "price": "cast(price as double)"}
    select = ", ".join(f"{casts[c]} as {c}" if c in casts else c for c in columns)
    (project.root / "models" / f"{model}.sql").write_text(
        f"select {select} from {project.warehouse.raw_schema}.{model}\n")


def plan(project: SyncProject) -> dict[str, tuple[int, int]]:
    """Build the plan with `dbt run`, publishing nothing: per sync, its events and requests."""
    built = dbt_run(project, PLAN_ONLY)
    assert built.returncode == 0, built.stdout + built.stderr
    return {sync: (int(events), int(batches)) for sync, events, batches in project.query(
        "select sync_id, count(distinct event_id), max(batch_number) from cohort_sync_event_changes group by 1")}


def held(braze) -> Counter[str]:
    """How many times the endpoint holds each event (and purchase), by its id."""
    return Counter(record["properties"]["ref"] for p in braze.profiles()
                   for array in ("events", "purchases") for record in p[array])


def uncertain(project: SyncProject, outcome: str) -> list[tuple[str, str, str, str]]:
    """The uncertain events recorded with that outcome: sync, event id, the run that sent it, the run that recorded it."""
    return project.query(
        "select sync_id, event_id, sent_by_run, recorded_by_run from cohort_sync_event_uncertain "
        "where outcome = ? order by 1, 2", [outcome])


def track(requests: list[dict]) -> list[dict]:
    return [r for r in requests if r["endpoint"] == "track"]


def converge(project: SyncProject, braze, monkeypatch, first_attempts: int, attempts: int) -> list[tuple[int, Any]]:
    """Publish until a run succeeds (at most 10 runs): the first with at most
    `first_attempts` attempts per request, the others `attempts`. Each run's
    result, with the index of its first request at the endpoint."""
    runs = []
    monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", str(first_attempts))
    for _ in range(10):
        start = len(braze.requests())
        result = publish(project)
        monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", str(attempts))
        runs.append((start, result))
        if result.returncode == 0:
            return runs
    raise AssertionError("did not converge:\n" + "\n".join(r.stdout + r.stderr for _, r in runs))


def assert_counted(project: SyncProject) -> None:
    """Each run's history counts the uncertain events it recorded, per sync and outcome."""
    recorded = {(sync, run, outcome): int(n) for sync, run, outcome, n in project.query(
        "select sync_id, recorded_by_run, outcome, count(*) from cohort_sync_event_uncertain group by 1, 2, 3")}
    for row in project.history():
        key = (row["cohort_id"], row["run_id"])
        assert (row["possibly_duplicated"], row["possibly_lost"]) == (
            recorded.get((*key, "possibly_duplicated"), 0), recorded.get((*key, "possibly_lost"), 0)), row


def assert_settled(project: SyncProject, expected: dict[str, set[str]]) -> None:
    """The ledger holds each event of `expected` (per sync) once, nothing else; nothing in flight or locked."""
    state = project.query("select sync_id, event_id, count(*) from cohort_sync_event_state group by 1, 2")
    assert {(sync, event_id) for sync, event_id, _ in state} == {(s, e) for s, ids in expected.items() for e in ids}
    assert {n for *_, n in state} == {1}
    for table in ("cohort_sync_event_inflight", "cohort_sync_inflight", "cohort_sync_lock"):
        assert project.query(f"select count(*) from {table}") == [(0,)], table


def assert_a_run_after_sends_nothing(project: SyncProject, braze, syncs: list[str]) -> None:
    """`dbt run` (publishing, as a scheduler runs it) plans no event and sends nothing."""
    start, recorded = len(braze.requests()), len(project.history())
    after = dbt_run(project)
    assert after.returncode == 0, after.stdout + after.stderr
    assert project.query("select count(*) from cohort_sync_event_changes") == [(0,)]
    assert braze.requests()[start:] == []
    rows = project.history()[recorded:]
    assert sorted((r["cohort_id"], r["status"], r["requests"], r["added"], r["possibly_duplicated"],
                   r["possibly_lost"]) for r in rows) == [(sync, "success", 0, 0, 0, 0) for sync in sorted(syncs)]


# -- faults before Braze applies anything ---------------------------------------------------


@pytest.mark.usefixtures("rest_only")
def test_ten_thousand_events_through_faults_before_applying_are_each_held_exactly_once(
        make_project, braze, monkeypatch):
    """8,000 events and 2,000 purchases, two syncs; a first run whose every
    connection is refused, then 20% of attempts failed before the endpoint
    applies them (429, 500, 503, a connection dropped before the request is
    applied): once the runs converge, the endpoint holds each event once."""
    project = event_project(make_project, declaration("app_events", "event"), declaration("orders", "purchase"))
    ids = {"app_events": keys("e", 8_000), "orders": keys("o", 2_000)}
    write_events(project, "app_events", ids["app_events"], "event")
    write_events(project, "orders", ids["orders"], "purchase")
    assert plan(project) == {"app_events": (8_000, 107), "orders": (2_000, 27)}

    # Refused: nothing listens on the port. No attempt can have reached Braze,
    # so the run fails and leaves nothing uncertain nor in flight.
    monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "2")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
        refused = publish(project)
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", braze.url)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert [(r["cohort_id"], r["status"], r["added"]) for r in project.history()] == [
        ("app_events", "failed", 0), ("orders", "failed", 0)]
    assert "ConnectionError" in project.history()[0]["error"]
    assert braze.requests() == []
    for table in ("cohort_sync_event_state", "cohort_sync_event_inflight", "cohort_sync_event_uncertain"):
        assert project.query(f"select count(*) from {table}") == [(0,)], table

    # The first attempt to arrive is answered 503 and the run makes one attempt a
    # request: it fails, and the next run cannot know Braze did not apply it.
    # Then a request fails only when faulted three times.
    braze.set_faults([{"endpoint": "track", "times": 1, "status": 503},
                      *[{"endpoint": "track", "probability": 0.055, **kind} for kind in BEFORE_APPLYING]])
    runs = converge(project, braze, monkeypatch, first_attempts=1, attempts=3)
    braze.set_faults([])
    assert len(runs) >= 2 and runs[0][1].returncode == 1

    fired = Counter(str(sorted(r["fault"].items())) for r in braze.requests() if "fault" in r)
    assert all(str(sorted(kind.items())) in fired for kind in BEFORE_APPLYING), f"a kind of fault never fired: {fired}"
    attempts = track(braze.requests())
    assert 0.12 < sum(1 for r in attempts if "fault" in r) / len(attempts) < 0.3  # about 20% of attempts faulted

    # Each event once: none lost, none twice, nothing else
    assert held(braze) == Counter(ids["app_events"] + ids["orders"])
    assert sum(r.get("applied", 0) for r in attempts) == 10_000
    assert {a: sum(len(p[a]) for p in braze.profiles()) for a in ("events", "purchases")} == {
        "events": 8_000, "purchases": 2_000}
    assert_settled(project, {sync: set(events) for sync, events in ids.items()})

    # Each sync's history adds up to its events; a request retried after a 5xx or a
    # dropped connection may have been applied twice, as far as the publisher can
    # know: its events are on record as possibly duplicated (here they were not)
    history = project.history()
    assert len(history) == 2 * (1 + len(runs))
    for sync, events in ids.items():
        rows = [r for r in history if r["cohort_id"] == sync]
        assert sum(r["added"] for r in rows) == len(events)
        assert rows[-1]["status"] == "success" and rows[-1]["members_after"] == len(events)
        # (a sync whose requests all went out before another's failure was known succeeded in that run)
        assert all(r["status"] in ("failed", "success") for r in rows[:-1])
    statuses: dict[str, set[str]] = {}
    for row in history:
        statuses.setdefault(row["run_id"], set()).add(row["status"])
    assert [("failed" in s) for s in statuses.values()] == [True] * (len(statuses) - 1) + [False]
    assert sum(r["retries"] for r in history) >= 1
    doubtful = uncertain(project, "possibly_duplicated")
    # the request answered 503 in the first faulted run, recorded (with any other it left) by the second
    first, second = history[2]["run_id"], history[4]["run_id"]
    assert sum(1 for *_, sent, recorder in doubtful if (sent, recorder) == (first, second)) >= BATCH
    assert any(sent == recorder for *_, sent, recorder in doubtful)  # retried within a run after a 5xx or a drop
    assert uncertain(project, "possibly_lost") == uncertain(project, "unconfirmed") == []
    assert_counted(project)

    assert_a_run_after_sends_nothing(project, braze, list(ids))


# -- faults that lose the acknowledgement -------------------------------------------------


def lost_acks(requests: list[dict]) -> int:
    """Attempts the endpoint applied and never answered: dropped after, or answered past the client's timeout."""
    return sum(1 for r in track(requests) if r.get("fault", {}).get("drop") == "after"
               or r.get("fault", {}).get("answer_after_ms"))


@pytest.mark.usefixtures("rest_only")
def test_lost_acknowledgements_deliver_every_purchase_and_each_duplicate_is_recorded(make_project, braze, monkeypatch):
    """3,000 purchases. The endpoint applies a request, then drops the
    connection, or answers after the client's timeout: the request is sent
    again, by a later run (the first run makes one attempt per request) or
    within the run (a retry whose outcome was uncertain, answered 201).
    Every purchase arrives; each the endpoint holds twice is on record as
    possibly duplicated, and here, where every uncertain request was in fact
    applied, so is none other."""
    project = event_project(make_project, declaration("orders", "purchase"))
    ids = keys("o", 3_000)
    write_events(project, "orders", ids, "purchase")
    assert plan(project) == {"orders": (3_000, 40)}
    monkeypatch.setenv("COHORT_SYNC_HTTP_TIMEOUT_SECONDS", "1.5")

    # The first request to arrive is applied and its answer lost: one attempt, the run fails.
    monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "1")
    braze.set_faults([{"endpoint": "track", "times": 1, "drop": "after"}])
    failed = publish(project)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    [first] = project.history()
    assert first["status"] == "failed" and "gave up on the /users/track request" in first["error"]
    assert (first["possibly_duplicated"], len(uncertain(project, "possibly_duplicated"))) == (0, 0)

    # Then the first to arrive is answered after the client gave up (3 s > 1.5 s), and
    # 10% of attempts lose their answer; three attempts a request.
    braze.set_faults([{"endpoint": "track", "times": 1, "answer_after_ms": 3_000},
                      {"endpoint": "track", "probability": 0.05, "drop": "after"},
                      {"endpoint": "track", "probability": 0.05, "answer_after_ms": 3_000}])
    runs = converge(project, braze, monkeypatch, first_attempts=3, attempts=3)
    braze.set_faults([])
    history = project.history()
    assert len(history) == 1 + len(runs)

    times = held(braze)
    assert set(times) == set(ids)  # every purchase arrived
    twice = {event_id for event_id, n in times.items() if n > 1}
    doubtful = uncertain(project, "possibly_duplicated")
    assert twice <= {event_id for _, event_id, _, _ in doubtful}  # each duplicate is on record
    assert twice == {event_id for _, event_id, _, _ in doubtful}  # and here each on record was applied twice
    # Nothing else was sent twice: each request was applied once, plus once per lost answer
    served = [r for r in track(braze.requests()) if r.get("status") == 201]
    assert sum(n - 1 for n in Counter(r["digest"] for r in served).values()) == lost_acks(braze.requests()) >= 2
    assert sum(n - 1 for n in times.values()) == sum(r["applied"] for r in served) - len(ids)

    # The request whose answer the first run lost: recorded by the second, which sent it again
    later = [(event_id, recorder) for _, event_id, sent, recorder in doubtful if sent == first["run_id"]]
    assert len(later) == BATCH and {recorder for _, recorder in later} == {history[1]["run_id"]}
    # A retry whose outcome was uncertain, answered 201: recorded by the run that sent it
    within = [event_id for _, event_id, sent, recorder in doubtful if sent == recorder]
    assert len(within) >= BATCH and all(times[event_id] >= 2 for event_id in within)
    failed_runs = {r["run_id"] for r in history if r["status"] == "failed"}
    assert all(sent == recorder or sent in failed_runs for _, _, sent, recorder in doubtful)

    assert_counted(project)
    assert sum(r["possibly_duplicated"] for r in history) == len(doubtful) >= 2 * BATCH
    assert sum(r["retries"] for r in history) >= 1
    assert sum(r["added"] for r in history) == len(ids)
    assert history[-1]["status"] == "success"
    assert_settled(project, {"orders": set(ids)})

    start = len(braze.requests())
    assert publish(project).returncode == 0
    assert braze.requests()[start:] == []  # converged: nothing is sent again


# -- SIGKILL --------------------------------------------------------------------------


def sequences(braze) -> dict[str, list[int]]:
    """The endpoint's sequence numbers (the order it recorded events in) of each event, by its id."""
    held_at: dict[str, list[int]] = {}
    for profile in braze.profiles():
        for event in profile["events"]:
            held_at.setdefault(event["properties"]["ref"], []).append(event["sequence"])
    return held_at


@pytest.mark.usefixtures("rest_only")
@pytest.mark.parametrize("guarantee", ["at_least_once", "at_most_once"])
def test_sigkill_four_times_then_a_full_run_resends_only_what_was_in_flight(make_project, braze, monkeypatch,
                                                                           guarantee):
    """3,000 events; a publisher killed four times while requests are in
    flight (each slowed to 500 ms at the endpoint, which applies them after
    the kill), the plan rebuilt after the second kill, then a full run.
    at_least_once: every event arrives; each one held twice was in flight
    at a kill, as many times, and is on record as possibly duplicated.
    at_most_once: nothing is held twice; every missing event is on record as
    possibly lost, held in the ledger as skipped, and never sent after."""
    sync = "app_events"
    project = event_project(make_project, declaration(sync, "event", guarantee=guarantee))
    ids = keys("e", 3_000)
    write_events(project, sync, ids, "event")
    assert plan(project) == {sync: (3_000, 40)}

    concurrency = 3
    monkeypatch.setenv("COHORT_SYNC_CONCURRENCY", str(concurrency))
    # One start every 250 ms, each answered after 500 ms: a kill soon after a
    # request reaches the endpoint finds it (and maybe another) in flight.
    monkeypatch.setenv("COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_HOUR", "14400")
    braze.set_faults([{"endpoint": "track", "probability": 1.0, "latency_ms": 500}])
    rng = random.Random(20261214 if guarantee == "at_least_once" else 20261215)
    dead: list[tuple[str, set[str], int]] = []  # each killed run, the ids it noted in flight, the last sequence after

    def received(since: int) -> int:
        return sum(1 for r in braze.requests()[since:] if "fault" in r)

    def answered() -> int:
        return sum(1 for r in braze.requests() if r["endpoint"] == "track" and "status" in r)

    for kill in range(4):
        if kill == 2:  # a scheduler's next `dbt run`: the plan leaves out what Braze acknowledged
            [(acknowledged,)] = project.query("select count(*) from cohort_sync_event_state")
            planned = plan(project)
            assert planned == {sync: (3_000 - acknowledged, -(-(3_000 - acknowledged) // BATCH))}
        start = len(braze.requests())
        target = rng.randint(2, 9)  # requests received before the kill: some acknowledged, at most 3 in flight
        run_id = project.publish_killed(lambda start=start, target=target: received(start) >= target, rng)
        flying = {e for (e,) in project.query(
            "select event_id from cohort_sync_event_inflight where run_id = ?", [run_id])}
        deadline = time.monotonic() + 15  # the requests it left at the endpoint are applied, late
        while received(0) != answered():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        dead.append((run_id, flying, max((s for seq in sequences(braze).values() for s in seq), default=0)))
    assert all(flying for _, flying, _ in dead), "a kill found nothing in flight; the test proves nothing"
    assert all(len(flying) <= concurrency * BATCH for _, flying, _ in dead)
    [(acknowledged,)] = project.query("select count(*) from cohort_sync_event_state where outcome = 'acknowledged'")
    assert acknowledged < len(ids), "a run finished before its kill"

    braze.set_faults([])
    monkeypatch.delenv("COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_HOUR")  # the full run goes at full speed
    final = publish(project)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "reclaiming the lock" in final.stderr  # the last killed run's
    history = project.history()
    runs = [run_id for run_id, _, _ in dead] + [history[-1]["run_id"]]
    assert [(r["run_id"], r["status"]) for r in history] == [
        *[(run_id, "interrupted") for run_id, _, _ in dead], (runs[-1], "success")]

    # What each kill left in flight is on record, by the run after it, and nothing else.
    outcome = "possibly_duplicated" if guarantee == "at_least_once" else "possibly_lost"
    records = uncertain(project, outcome)
    for (run_id, flying, _), recorder in zip(dead, runs[1:], strict=True):
        assert {e for _, e, sent, _ in records if sent == run_id} == flying
        assert {recorder_ for _, _, sent, recorder_ in records if sent == run_id} == {recorder}
    assert len(records) == sum(len(flying) for _, flying, _ in dead)
    other = "possibly_lost" if guarantee == "at_least_once" else "possibly_duplicated"
    assert uncertain(project, other) == uncertain(project, "unconfirmed") == []
    assert_counted(project)
    delivered = 0  # each row counts the events acknowledged so far, the killed runs' included
    for row in history:
        delivered += row["added"]
        assert row["members_after"] == delivered, row
    assert project.query("select count(*) from cohort_sync_event_state where outcome = 'acknowledged'") == [
        (delivered,)]

    times = held(braze)
    recorded = {e for _, e, _, _ in records}
    if guarantee == "at_least_once":
        assert set(times) == set(ids)  # every event arrived
        for event_id, n in times.items():  # applied again at most once per kill that found it in flight
            assert n - 1 <= sum(1 for _, flying, _ in dead if event_id in flying), (event_id, n)
        assert {e for e, n in times.items() if n > 1} <= recorded
        assert all(times[e] == 1 for e in set(ids) - recorded)  # nothing else was sent twice
        # at most the events in flight at the kills, at most `concurrency` requests each; at least one request
        assert BATCH <= sum(n - 1 for n in times.values()) <= sum(len(flying) for _, flying, _ in dead)
        assert_settled(project, {sync: set(ids)})
    else:
        assert set(times.values()) == {1}  # nothing twice
        assert set(ids) - set(times) <= recorded  # each missing event is on record as possibly lost
        assert set(times) >= set(ids) - recorded  # every other one arrived
        skipped = {e for (e,) in project.query(
            "select event_id from cohort_sync_event_state where outcome = 'skipped'")}
        assert skipped == recorded
        held_at = sequences(braze)
        for run_id, flying, last in dead:  # a possibly lost event the endpoint holds came from the killed run
            assert all(held_at[e][0] <= last for e in flying if e in held_at), run_id
        assert_settled(project, {sync: set(ids)})

    assert_a_run_after_sends_nothing(project, braze, [sync])
