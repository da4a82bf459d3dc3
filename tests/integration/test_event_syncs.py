"""Event syncs (cohort_sync_event_syncs) on DuckDB, PostgreSQL and Spark.

Each scenario runs on every engine: real dbt (in-process) finds the events
of the model's window that the ledger has not acknowledged, and the
publisher sends them to the local endpoint through /users/track (inside
`dbt run` on DuckDB, through `cohort-sync publish` elsewhere). A run on
Spark takes tens of seconds, so each scenario declares several syncs in
one project and takes them all through a few runs together.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.sync_project import SyncProject

pytestmark = pytest.mark.dbt

TIMESTAMP = {"duckdb": "cast({c} as timestamp)", "postgres": "cast({c} as timestamp)",
             "spark": "cast({c} as timestamp)"}
DOUBLE = {"duckdb": "cast({c} as double)", "postgres": "cast({c} as double precision)",
          "spark": "cast({c} as double)"}
BOOLEAN = {"duckdb": "cast({c} as boolean)", "postgres": "cast({c} as boolean)",
           "spark": "cast({c} as boolean)"}
JSON = {"duckdb": "cast({c} as json)", "postgres": "cast({c} as json)"}  # Spark has no JSON type
BIGINT = ("quantity", "order_id")


def set_events(project: SyncProject, model: str, rows: list[dict[str, Any]], casts: dict[str, dict]) -> None:
    """(Re)write raw.<model> from `rows` (text, bigint for `quantity` and `order_id`) and the model casting it."""
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    project.warehouse.load(model, columns, {c: "bigint" for c in BIGINT if c in columns})
    engine = project.warehouse.name
    select = ",\n    ".join(casts[c][engine].format(c=c) + f" as {c}" if c in casts else c for c in columns)
    (project.root / "models" / f"{model}.sql").write_text(
        f"select\n    {select}\nfrom {project.warehouse.raw_schema}.{model}\n")


def endpoint_events(braze, array: str = "events") -> list[dict[str, Any]]:
    """Every event (or purchase) the endpoint holds, with its user's external_id, less its sequence number."""
    return [{"external_id": p["external_id"], **{k: v for k, v in event.items() if k != "sequence"}}
            for p in braze.profiles() for event in p.get(array, [])]


def as_counts(objects: list[dict[str, Any]]) -> Counter:
    """Objects as a multiset, to compare what arrived with what was meant, each exactly."""
    return Counter(json.dumps(o, sort_keys=True) for o in objects)


def iso(value: str | datetime) -> str:
    """A UTC time (naive text, or ISO 8601 with Z or +00:00) as Braze should get it: ISO 8601 in UTC, to the ms."""
    at = value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def ms(at: datetime) -> int:
    return int(at.replace(tzinfo=timezone.utc).timestamp() * 1000)


def track_requests(braze, since: int = 0) -> list[dict[str, Any]]:
    return [r for r in braze.requests()[since:] if r["endpoint"] == "track"]


def last_rows(project: SyncProject) -> dict[str, dict[str, Any]]:
    """Each sync's latest history row."""
    return {row["cohort_id"]: row for row in project.history()}


def ledger(project: SyncProject, sync_id: str) -> dict[str, int]:
    """The event ids cohort_sync_event_state holds for a sync, with their times."""
    return {event_id: int(at) for event_id, at in project.query(
        "select event_id, event_time_ms from cohort_sync_event_state where sync_id = ?", [sync_id])}


def rejects(project: SyncProject, sync_id: str) -> set[tuple[str, str, str | None, int]]:
    """cohort_sync_rejects of a sync: (reason, external_id, event id, source rows)."""
    return {(reason, user, event_id, int(count)) for reason, user, event_id, count in project.query(
        "select reject_reason, external_id, attribute_name, source_rows from cohort_sync_rejects "
        "where cohort_id = ?", [sync_id])}


# -- the first sync: what arrives, for whom, Braze's refusals, and a run after --------------------


def test_purchases_and_events_are_sent_once(make_engine_project, braze):
    """Purchases (product, currency, price, quantity, properties) and events (names, properties of
    each kind) arrive exactly as the models hold them; users are created or not as declared; Braze's
    per-object errors are recorded; data points are counted; a run straight after sends nothing,
    neither the acknowledged events nor the refused ones."""
    project = make_engine_project()
    project.declare([], cohort_sync_event_syncs=[
        {"model": "orders", "kind": "purchase", "event_id": "order_key", "time": "ordered_at",
         "properties": ["order_id", "coupon"], "start_at": "2026-01-01", "create_users": True,
         "quantity": "quantity"},
        {"model": "app_events", "kind": "event", "event_id": "event_key", "name_column": "event_name",
         "time": "occurred_at", "properties": ["screen", "amount", "premium", "seen_at"], "backfill": True,
         "create_users": True},
        {"model": "visits", "kind": "event", "event_id": "visit_key", "name": "ecommerce.product_viewed",
         "time": "visited_at", "backfill": True},  # create_users: false, the default
    ])
    # Every event of a sync within three days (the default lookback), so that the second run reads
    # them all again and only the ledger (and Braze's refusals on record) keeps them from being resent
    n = 120
    orders = [
        {"order_key": f"o{i}", "external_id": f"u{i % 30}",
         "ordered_at": f"2026-01-0{1 + i % 3} {i % 24:02d}:{i % 60:02d}:00",
         "product_id": ("shirt", "hat", f"sku-{i % 7}")[i % 3], "currency": ("usd", "Eur", " GBP")[i % 3],
         "price": f"{i}.99", "quantity": 100 if i % 50 == 0 else 1 + i % 3, "order_id": i,
         "coupon": "SPRING" if i % 4 == 0 else None}
        for i in range(n)]
    early = {**orders[5], "order_key": "o_early", "external_id": "early", "ordered_at": "2025-12-31 23:59:59"}
    set_events(project, "orders", [*orders, early], {"ordered_at": TIMESTAMP, "price": DOUBLE})

    def user(i: int) -> str:  # r0 and r1: users whose objects Braze refuses
        return {3: "r0", 17: "r1"}.get(i % 40, f"u{i % 30}")

    app_events = [
        {"event_key": f"e{i}", "external_id": user(i), "event_name": ("ecommerce.order_placed", "app_open")[i % 2],
         "occurred_at": f"2025-09-0{1 + i % 3} {i % 24:02d}:{i % 60:02d}:00",
         "screen": "home" if i % 3 == 0 else None, "amount": f"{i}.25" if i % 2 == 0 else None,
         "premium": ("true", "false")[i % 2] if i % 5 else None,
         "seen_at": None if i % 4 == 1 else f"2025-05-0{1 + i % 9} 0{i % 10}:30:15.{i:03d}"}
        for i in range(n)]
    set_events(project, "app_events", app_events,
               {"occurred_at": TIMESTAMP, "amount": DOUBLE, "premium": BOOLEAN, "seen_at": TIMESTAMP})
    set_events(project, "visits", [
        {"visit_key": f"v{i}", "external_id": f"k{i}", "visited_at": f"2026-02-0{1 + i % 3} 08:00:00"}
        for i in range(10)], {"visited_at": TIMESTAMP})
    braze.seed_profiles([{"external_id": f"k{i}"} for i in range(5)])  # Braze knows k0-k4, not k5-k9
    braze.set_track_rejects(["r0", "r1"], "'properties' is not valid")

    assert not project.sync()  # partial: Braze refused some events, so the run exits non-zero

    # Purchases: product, currency (trimmed, upper-cased), price, quantity, time and properties
    # intact (a null one left out); none from before start_at
    expected_purchases = [
        {"external_id": o["external_id"], "product_id": o["product_id"], "currency": o["currency"].strip().upper(),
         "price": float(o["price"]), "quantity": o["quantity"], "time": iso(o["ordered_at"]),
         "properties": {"order_id": o["order_id"], **({"coupon": o["coupon"]} if o["coupon"] else {})}}
        for o in orders]
    assert as_counts(endpoint_events(braze, "purchases")) == as_counts(expected_purchases)
    assert {p["quantity"] for p in expected_purchases} == {1, 2, 3, 100}

    # Events: names (Braze's recommended ecommerce.order_placed too), properties of each kind,
    # timestamps in ISO 8601 UTC, null properties left out (no properties at all when all are)
    def properties(e: dict[str, Any]) -> dict[str, Any]:
        values = {"screen": e["screen"], "amount": float(e["amount"]) if e["amount"] else None,
                  "premium": e["premium"] == "true" if e["premium"] else None,
                  "seen_at": iso(e["seen_at"]) if e["seen_at"] else None}
        return {k: v for k, v in values.items() if v is not None}

    refused = [e for e in app_events if e["external_id"] in ("r0", "r1")]
    expected_events = [
        {"external_id": e["external_id"], "name": e["event_name"], "time": iso(e["occurred_at"]),
         **({"properties": properties(e)} if properties(e) else {})}
        for e in app_events if e not in refused]
    assert any("properties" not in e for e in expected_events)
    assert {type(v) for e in expected_events for v in e.get("properties", {}).values()} == {str, float, bool}
    expected_events += [{"external_id": f"k{i}", "name": "ecommerce.product_viewed",
                         "time": f"2026-02-0{1 + i % 3}T08:00:00.000Z"} for i in range(5)]
    assert as_counts(endpoint_events(braze)) == as_counts(expected_events)

    # create_users false: no profile for the users Braze lacks (k5-k9); true: theirs are created
    assert {p["external_id"] for p in braze.profiles()} == {f"u{i}" for i in range(30)} | {f"k{i}" for i in range(5)}

    # Braze's per-object errors: recorded with its reason and the event's content hash, the others
    # delivered, the run partial
    content = dict(project.query(
        "select event_id, content_hash from cohort_sync_event_rows where sync_id = 'app_events' "
        "and property_number = 0"))
    assert set(project.query(
        "select delivery, cohort_id, attribute_name, member_key, error_type, value_hash "
        "from cohort_sync_rejected_changes")) == {
        ("event", "app_events", e["event_key"], f"external_id:{e['external_id']}", "'properties' is not valid",
         content[e["event_key"]]) for e in refused}
    first = last_rows(project)
    assert {s: (r["status"], r["added"], r["rejected"]) for s, r in first.items()} == {
        "orders": ("success", n, 0), "app_events": ("partial", n - len(refused), len(refused)),
        "visits": ("success", 10, 0)}
    assert f"'properties' is not valid ({len(refused)})" in first["app_events"]["error"]

    # Data points: one per event and purchase, and one per purchase property, as the endpoint billed them
    assert first["orders"]["data_points"] == sum(1 + len(p["properties"]) for p in expected_purchases)
    assert first["app_events"]["data_points"] == n - len(refused)
    assert first["visits"]["data_points"] == 10  # the events Braze ignored are billed too
    assert sum(r["data_points"] for r in first.values()) == sum(r["data_points"] for r in track_requests(braze))

    # A run straight after sends nothing: not the acknowledged events, not those Braze refused
    # (though it would take them now)
    braze.set_track_rejects([])
    sent = len(braze.requests())
    assert project.sync()
    assert track_requests(braze, sent) == []
    assert {s: (r["status"], r["added"]) for s, r in last_rows(project).items()} == {
        s: ("success", 0) for s in first}
    assert as_counts(endpoint_events(braze)) == as_counts(expected_events)


# -- bad input: rejected before sending, with its reason ----------------------------------------


def test_bad_events_are_rejected_with_their_reason_and_never_sent(make_engine_project, braze):
    """Each class of bad input is listed in cohort_sync_rejects with its reason and never reaches
    Braze; the good rows beside them (ISO 8601 text times of each form, the limits themselves, one
    event_id twice with the same content) are sent, each once."""
    project = make_engine_project()
    engine = project.warehouse.name
    syncs = [
        {"model": "orders", "kind": "purchase", "event_id": "order_key", "time": "ordered_at",  # text
         "properties": ["coupon"], "quantity": "quantity", "backfill": True, "create_users": True},
        {"model": "signups", "kind": "event", "event_id": "event_key", "name_column": "event_name",
         "time": "signed_up_at", "properties": ["plan"], "backfill": True, "create_users": True},
        {"model": "signups", "sync_id": "bad_names", "kind": "event", "event_id": "event_key", "name": "signup",
         "time": "signed_up_at", "properties": {"$x": "plan"}, "backfill": True, "create_users": True},
    ]
    if engine != "spark":  # a JSON column of properties
        syncs.append({"model": "profile_events", "kind": "event", "event_id": "event_key", "name": "profile_updated",
                      "time": "occurred_at", "properties_json": "props", "backfill": True, "create_users": True})
    project.declare([], cohort_sync_event_syncs=syncs)

    def order(user: str, **fields: Any) -> dict[str, Any]:
        return {"order_key": f"o_{user}", "external_id": user, "ordered_at": "2026-01-02 10:00:00",
                "product_id": "shirt", "currency": "usd", "price": "9.5", "quantity": 1, "coupon": None, **fields}

    good = [order("ok_space"), order("ok_z", ordered_at="2026-01-02T10:00:00Z", quantity=100),
            order("ok_ms", ordered_at="2026-01-02T10:00:00.250+00:00", coupon="y" * 255)]
    twin = order("twin")  # twice, the same content: one event
    bad = [  # each bad row's user names what is wrong with it
        order("bad_missing_time", ordered_at=None),
        order("bad_text_time", ordered_at="02/01/2026 10:00"),
        order("bad_offset_time", ordered_at="2026-01-02T10:00:00+02:00"),
        order("bad_currency", currency="ZZZ"),
        order("bad_quantity_0", quantity=0),
        order("bad_quantity_101", quantity=101),
        order("bad_no_id", order_key=None),
        order("bad_long", coupon="y" * 256),
        *(order("bad_dup", price=price) for price in ("1.5", "2.5")),  # one id, two contents: neither is sent
    ]
    set_events(project, "orders", [*good, twin, twin, *bad], {"price": DOUBLE})
    set_events(project, "signups", [
        {"event_key": f"s_{user}", "external_id": user, "event_name": name, "signed_up_at": "2026-01-02 10:00:00",
         "plan": "pro"}
        for user, name in {"signup_ok": "signup", "signup_no_name": None, "signup_dollar_name": "$signup",
                           "signup_long_name": "n" * 256}.items()], {"signed_up_at": TIMESTAMP})
    json_props = {"j_ok": '{"plan": "pro", "seats": 3, "beta": true}', "j_array": "[1, 2]",
                  "j_dollar": '{"$x": 1}', "j_long": json.dumps({"s": "x" * 256})}
    if engine != "spark":
        set_events(project, "profile_events", [
            {"event_key": f"j_{u}", "external_id": u, "occurred_at": "2026-02-01 09:00:00", "props": props}
            for u, props in json_props.items()], {"occurred_at": TIMESTAMP, "props": JSON})

    assert project.sync()

    assert rejects(project, "orders") == {(reason, u, f"o_{u}", 1) for u, reason in {
        "bad_missing_time": "missing_time", "bad_text_time": "invalid_time", "bad_offset_time": "invalid_time",
        "bad_currency": "invalid_currency", "bad_quantity_0": "invalid_quantity",
        "bad_quantity_101": "invalid_quantity", "bad_long": "string_too_long"}.items()} | {
        ("missing_event_id", "bad_no_id", None, 1), ("duplicate_event_id", "bad_dup", "o_bad_dup", 2)}
    assert rejects(project, "signups") == {(reason, u, f"s_{u}", 1) for u, reason in {
        "signup_no_name": "missing_event_name", "signup_dollar_name": "invalid_event_name",
        "signup_long_name": "invalid_event_name"}.items()}
    assert rejects(project, "bad_names") == {
        ("invalid_property_name", u, f"s_{u}", 1)
        for u in ("signup_ok", "signup_no_name", "signup_dollar_name", "signup_long_name")}
    if engine != "spark":
        assert rejects(project, "profile_events") == {
            ("invalid_properties", u, f"j_{u}", 1) for u in ("j_array", "j_dollar", "j_long")}

    # Only the good events reach Braze, each once (and so only their users exist there)
    assert as_counts(endpoint_events(braze, "purchases")) == as_counts([
        {"external_id": o["external_id"], "product_id": "shirt", "currency": "USD", "price": 9.5,
         "quantity": o["quantity"], "time": iso(o["ordered_at"]),
         **({"properties": {"coupon": o["coupon"]}} if o["coupon"] else {})}
        for o in [*good, twin]])
    assert {p["time"] for p in endpoint_events(braze, "purchases")} == {
        "2026-01-02T10:00:00.000Z", "2026-01-02T10:00:00.250Z"}
    assert as_counts(endpoint_events(braze)) == as_counts([
        {"external_id": "signup_ok", "name": "signup", "time": "2026-01-02T10:00:00.000Z",
         "properties": {"plan": "pro"}},
        *([{"external_id": "j_ok", "name": "profile_updated", "time": "2026-02-01T09:00:00.000Z",
            "properties": {"plan": "pro", "seats": 3, "beta": True}}] if engine != "spark" else [])])
    assert {s: r["added"] for s, r in last_rows(project).items()} == {
        "orders": 4, "signups": 1, "bad_names": 0, **({"profile_events": 1} if engine != "spark" else {})}


# -- later runs: late events, the replay guard, a compact ledger -------------------------------


def test_late_events_the_replay_guard_and_a_compact_ledger(make_engine_project, braze):
    """An event late within the lookback is sent once, one later is reported and not sent; a run
    over max_events is blocked until allowed once; the ledger forgets ids twice the lookback behind
    its watermark (on DuckDB and PostgreSQL), and nothing is ever sent again."""
    project = make_engine_project()
    engine = project.warehouse.name
    guard_limit = 40
    project.declare([], cohort_sync_event_syncs=[
        {"model": "sessions", "kind": "event", "event_id": "event_key", "name": "session_start",
         "time": "started_at", "start_at": "2026-03-01", "lookback": "1d", "create_users": True},
        {"model": "page_views", "kind": "event", "event_id": "event_key", "name": "page_view",
         "time": "viewed_at", "backfill": True, "max_events": guard_limit, "create_users": True},
    ])
    lookback = timedelta(days=1)
    newest = datetime(2026, 3, 10, 12)  # the first run's watermark

    def session(key: str, at: datetime) -> dict[str, Any]:
        return {"event_key": key, "external_id": key, "started_at": at.strftime("%Y-%m-%d %H:%M:%S")}

    sessions = [session(f"s{k}", newest - timedelta(hours=18 * k)) for k in range(12)]
    before_start = session("before_start", datetime(2026, 2, 27))
    set_events(project, "sessions", [*sessions, before_start], {"started_at": TIMESTAMP})
    views = [{"event_key": f"p{i}", "external_id": f"u{i % 20}",
              "viewed_at": (datetime(2026, 3, 1) + timedelta(hours=3 * i)).strftime("%Y-%m-%d %H:%M:%S")}
             for i in range(2 * guard_limit)]
    set_events(project, "page_views", views, {"viewed_at": TIMESTAMP})

    def sent(name: str) -> Counter:
        return as_counts([e for e in endpoint_events(braze) if e["name"] == name])

    def meant(rows: list[dict[str, Any]], name: str, time: str) -> Counter:
        return as_counts([{"external_id": r["external_id"], "name": name, "time": iso(r[time])} for r in rows])

    # 1. The sessions from start_at on are sent; the page views, twice the limit, are blocked
    assert not project.sync()  # blocked: the run exits non-zero
    first = last_rows(project)
    assert (first["sessions"]["status"], first["sessions"]["added"], first["sessions"]["event_watermark"]) == (
        "success", 12, ms(newest))
    assert sent("session_start") == meant(sessions, "session_start", "started_at")
    assert (first["page_views"]["status"], first["page_views"]["added"]) == ("blocked", 0)
    error = first["page_views"]["error"]
    assert f"would send {2 * guard_limit} events, more than the sync's max_events of {guard_limit}" in error
    assert "--allow-removals page_views" in error and "cohort_sync_allow_removals: ['page_views']" in error
    assert sent("page_view") == Counter() and ledger(project, "page_views") == {}

    # 2. Late sessions: half a lookback behind the watermark (sent), one and a half (reported, not
    # sent), three (not even read); one three days ahead moves the watermark. The page views,
    # allowed once, are sent.
    late_in = session("late_in", newest - lookback / 2)
    late_out = session("late_out", newest - lookback * 1.5)
    ancient = session("ancient", newest - lookback * 3)
    ahead_at = newest + lookback * 3
    ahead = session("ahead", ahead_at)
    set_events(project, "sessions", [*sessions, before_start, late_in, late_out, ancient, ahead],
               {"started_at": TIMESTAMP})
    assert project.sync(vars={"cohort_sync_allow_removals": ["page_views"]})
    second = last_rows(project)
    assert sent("session_start") == meant([*sessions, late_in, ahead], "session_start", "started_at")
    assert (second["sessions"]["status"], second["sessions"]["added"], second["sessions"]["late_events"],
            second["sessions"]["event_watermark"]) == ("success", 2, 1, ms(ahead_at))
    assert project.query("select late_events from cohort_sync_cohorts where cohort_id = 'sessions'") == [(1,)]
    assert rejects(project, "sessions") == {("late_outside_window", "late_out", "late_out", 1)}
    assert "1 event(s) older than the sync's window" in second["sessions"]["error"]
    assert (second["page_views"]["status"], second["page_views"]["added"]) == ("success", 2 * guard_limit)
    assert sent("page_view") == meant(views, "page_view", "viewed_at")

    # The ledger: each run records its horizon, twice the lookback behind its watermark (DuckDB and
    # PostgreSQL); ids are deleted up to the horizon already on record, an earlier run's (so a run
    # that dies before its own row leaves every id the next window reaches). Spark's plain tables
    # take no deletes: there every id stays.
    acknowledged = {r["event_key"]: ms(datetime.fromisoformat(r["started_at"]))
                    for r in [*sessions, late_in, ahead]}
    views_at = {r["event_key"]: ms(datetime.fromisoformat(r["viewed_at"])) for r in views}
    horizons = {"sessions": ms(ahead_at - 2 * lookback),  # page_views: twice the default lookback, 3d
                "page_views": max(views_at.values()) - int(timedelta(days=2 * 3).total_seconds() * 1000)}
    if engine == "spark":
        assert {s: second[s]["event_horizon"] for s in horizons} == {"sessions": None, "page_views": None}
    else:
        assert {s: second[s]["event_horizon"] for s in horizons} == horizons
        assert ledger(project, "sessions") == {  # pruned to the first run's horizon
            k: at for k, at in acknowledged.items() if at >= ms(newest - 2 * lookback)}
        assert ledger(project, "page_views") == views_at  # blocked at first: no horizon before this run's

    # 3. A run straight after, without the allowance, sends nothing: no late session again, no id
    # the ledger forgot (or, on Spark, kept), no page view; late_out, now over twice the lookback
    # behind the watermark, is no longer read
    requests = len(braze.requests())
    assert project.sync()
    assert track_requests(braze, requests) == []
    assert project.query("select count(*) from cohort_sync_event_changes") == [(0,)]
    third = last_rows(project)
    assert {s: (r["status"], r["added"], r["late_events"]) for s, r in third.items()} == {
        "sessions": ("success", 0, 0), "page_views": ("success", 0, 0)}
    assert rejects(project, "sessions") == set()
    assert sent("session_start") == meant([*sessions, late_in, ahead], "session_start", "started_at")

    # After runs spanning more than twice the lookback, the ledger holds no id more than twice the
    # lookback behind the watermark (DuckDB, PostgreSQL); on Spark it holds them all, and (above)
    # the plan still sends none of them
    if engine == "spark":
        assert ledger(project, "sessions") == acknowledged
        assert ledger(project, "page_views") == views_at
    else:
        assert ledger(project, "sessions") == {"ahead": ms(ahead_at)}
        assert ledger(project, "page_views") == {k: at for k, at in views_at.items() if at >= horizons["page_views"]}
        assert 0 < len(ledger(project, "page_views")) < len(views)
