"""`make demo`: the whole job, end to end, on DuckDB against the local endpoint.

1. Starts the local Braze-compatible endpoint on 127.0.0.1 (a free port),
   with throwaway keys made for this run, and gives it the demo's
   customers as the users a Braze workspace would already know.
2. Builds the demo project from scratch (`dbt seed`, `dbt build`): the
   audiences, the cohort_sync models and tests, then the publish model.
3. Moves the demo's clock a week forward (a week of new orders and events
   arrives) and runs `dbt build` again: only the difference is sent.
4. After each run, prints each cohort as the endpoint holds it (three
   partner cohorts, and one profile attribute set through /users/track),
   the customer facts the attribute sync wrote on the profiles, and the
   purchases and custom events the two event syncs sent, and checks that
   each equals its model exactly: the events those of the model within
   the sync's window, each exactly once, and run 2 only the new week's.
   It shows each sync's counts and data points from its history row.

Any real BRAZE_* settings in your environment are ignored here.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import yaml

from cohort_sync.braze.local import LocalBraze

DEMO = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DATABASE = DEMO / "demo.duckdb"
WEEK_ONE, WEEK_TWO = "2026-11-01", "2026-11-08"
#: The attribute cohort: the profile attribute, and its audience read back (external id, else email).
ATTRIBUTE = ("recent_buyer", "select distinct coalesce(nullif(trim(external_id), ''), lower(trim(email))) "
                             "from recent_buyers")

# How each demo audience is read back independently of cohort_sync's models.
AUDIENCES = {
    "churn_risk_customers": (
        "user_ids",
        "select distinct trim(external_id) from churn_risk_customers "
        "where nullif(trim(external_id), '') is not null",
    ),
    "crm_high_intent": (
        "aliases",
        "select distinct alias_name, alias_label from high_intent_leads",
    ),
    "anonymous_cart_abandoners": (
        "device_ids",
        "select distinct device_id from anonymous_cart_abandoners",
    ),
}


def dbt(env: dict[str, str], *args: str) -> None:
    command = [str(BIN / "dbt"), *args, "--project-dir", str(DEMO), "--profiles-dir", str(DEMO)]
    subprocess.run(command, cwd=DEMO, env=env, check=True)


def audiences() -> dict[str, set]:
    with duckdb.connect(str(DATABASE), read_only=True) as con:
        result = {}
        for cohort_id, (_, sql) in AUDIENCES.items():
            rows = con.execute(sql).fetchall()
            result[cohort_id] = {row if len(row) > 1 else row[0] for row in rows}
        return result


def held_by_endpoint(cohort: dict) -> dict[str, set]:
    return {
        "user_ids": set(cohort["user_ids"]),
        "aliases": {(a["alias_name"], a["alias_label"]) for a in cohort["aliases"]},
        "device_ids": set(cohort["device_ids"]),
    }


def known_users() -> list[dict]:
    """The demo's customers, as the profiles a Braze workspace holds (a guest checkout by email only)."""
    with (DEMO / "seeds" / "customers.csv").open() as seed:
        return [{"external_id": row["external_id"] or None, "email": row["email"]} for row in csv.DictReader(seed)]


def show_and_check_attribute(braze: LocalBraze, requests_before: int) -> bool:
    attribute, sql = ATTRIBUTE
    holders = {profile["external_id"] or profile["email"] for profile in braze.profiles()
               if profile["attributes"].get(attribute) is True}
    with duckdb.connect(str(DATABASE), read_only=True) as con:
        expected = {row[0] for row in con.execute(sql).fetchall()}
        added, removed, requests = con.execute(
            "select added, removed, requests from cohort_sync_run_history "
            "where cohort_id = 'recent_buyers' order by started_at desc limit 1").fetchone()
    sent = [r for r in braze.requests()[requests_before:] if r.get("endpoint") == "track"]
    match = holders == expected
    sample = ", ".join(sorted(holders)[:4])
    print(f"- recent_buyers: profile attribute {attribute!r} (segment \"{attribute} is true\")")
    print(f"    {len(holders)} profiles ({sample}{', ...' if len(holders) > 4 else ''})")
    print(f"    this run (its history row): {added} set true, {removed} set null, in {requests} /users/track "
          f"request(s); {sum(r.get('created', 0) for r in sent)} profile(s) created by any /users/track request")
    print(f"    equals the audience model: {'yes' if match else 'NO'}")
    return match


#: The attribute sync: Braze attribute -> the customer_facts column, read back independently.
FACTS = {"orders": "order_count", "lifetime_value": "lifetime_value", "last_order_on": "last_order_on", "tier": "tier"}


def show_and_check_facts(braze: LocalBraze) -> bool:
    columns = ", ".join(f"cast({column} as varchar)" if name == "last_order_on" else column
                        for name, column in FACTS.items())
    with duckdb.connect(str(DATABASE), read_only=True) as con:
        expected = {row[0]: dict(zip(FACTS, row[1:], strict=True))
                    for row in con.execute(f"select external_id, {columns} from customer_facts").fetchall()}
        added, removed, requests, points = con.execute(
            "select added, removed, requests, data_points from cohort_sync_run_history "
            "where cohort_id = 'customer_facts' order by started_at desc limit 1").fetchone()
    held = {profile["external_id"]: {name: profile["attributes"][name] for name in FACTS if name in profile["attributes"]}
            for profile in braze.profiles() if profile.get("external_id")}
    match = all(held.get(user) == values for user, values in expected.items())
    print(f"- customer_facts: attribute sync ({', '.join(FACTS)}) on {len(expected)} customers' profiles")
    print(f"    this run (its history row): {added} value(s) written, {removed} unset, in {requests} "
          f"/users/track request(s): {points} data point(s)")
    print(f"    equals the model: {'yes' if match else 'NO'}")
    return match


#: The event syncs: the list of each Braze profile their objects land in, their model read back
#: independently (the user, the time in ms, then the event's own fields), and the same fields of an
#: object the endpoint holds. Events are compared as multisets of these keys, so one held twice shows.
EVENT_SYNCS = {
    "order_purchases": (
        "purchases",
        "select external_id, epoch_ms(ordered_at), product_id, currency, price, 1 as quantity, order_id "
        "from order_purchases",
        lambda held: (held["product_id"], held["currency"], held["price"], held["quantity"],
                      held.get("properties", {}).get("order_id")),
    ),
    "customer_app_events": (
        "events",
        "select external_id, epoch_ms(occurred_at), event_name, order_id, total from customer_app_events",
        lambda held: (held["name"], held.get("properties", {}).get("order_id"), held.get("properties", {}).get("total")),
    ),
}
EPOCH = datetime(1970, 1, 1)


def event_declarations() -> dict[str, dict]:
    """The demo's event syncs as demo/dbt_project.yml declares them, by sync id."""
    declared = yaml.safe_load((DEMO / "dbt_project.yml").read_text())["vars"]["cohort_sync_event_syncs"]
    return {entry.get("sync_id", entry["model"]): entry for entry in declared}


def iso_time(ms: int) -> str:
    """An event's time as Braze receives it: ISO 8601 in UTC, to the millisecond."""
    return f"{EPOCH + timedelta(milliseconds=ms):%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def last_sequence(braze: LocalBraze) -> int:
    """The endpoint's latest event or purchase: those after it arrive in the next run."""
    return max((held["sequence"] for profile in braze.profiles() for array in ("events", "purchases")
                for held in profile[array]), default=0)


def show_and_check_events(braze: LocalBraze, sync_id: str, sequence_before: int, seen: dict[str, dict]) -> bool:
    """An event sync: the endpoint holds each of the model's events within the sync's window exactly
    once, and received in this run exactly those new since the last run (less any late one: older than
    the window, reported and never sent); the counts, data points and late events of its history row
    agree, and its ledger keeps only the ids from the horizon an earlier run recorded (two lookbacks
    behind its watermark)."""
    array, sql, fields = EVENT_SYNCS[sync_id]
    declaration = event_declarations()[sync_id]
    lookback = declaration.get("lookback", "3d")
    lookback_ms = int(lookback[:-1]) * {"m": 60_000, "h": 3_600_000, "d": 86_400_000}[lookback[-1]]
    start = None if declaration.get("backfill") else int((datetime.fromisoformat(declaration["start_at"])
                                                           - EPOCH).total_seconds() * 1000)
    with duckdb.connect(str(DATABASE), read_only=True) as con:
        rows = [((user, iso_time(ms), *rest), ms) for user, ms, *rest in con.execute(sql).fetchall()]
        times = dict(rows)
        model = Counter(key for key, ms in rows if start is None or ms >= start)
        *earlier, (added, requests, points, late, duplicated, lost, _, watermark) = con.execute(
            "select added, requests, data_points, late_events, possibly_duplicated, possibly_lost, event_horizon, "
            "event_watermark from cohort_sync_run_history where cohort_id = ? order by started_at", [sync_id]).fetchall()
        ledger = con.execute("select count(*) from cohort_sync_event_state where sync_id = ?", [sync_id]).fetchone()[0]
    # The window (decision 0015): from a lookback behind the newest event acknowledged before this run.
    # Events new in the model since the last run are sent, unless older than that: late, and a lookback
    # further back not even read (nor counted); an event not sent once is never sent.
    before = max((row[-1] for row in earlier if row[-1] is not None), default=None)
    floor = start if start is not None else float("-inf")
    window_start = floor if before is None else max(floor, before - lookback_ms)
    read_from = floor if before is None else max(floor, before - 2 * lookback_ms)
    state = seen.setdefault(sync_id, {"model": Counter(), "unsent": Counter()})
    new = model - state["model"]
    too_late = Counter({key: n for key, n in new.items() if times[key] < window_start})
    counted_late = sum(n for key, n in too_late.items() if times[key] >= read_from)
    state["model"], state["unsent"] = model, state["unsent"] + too_late
    expected, expected_now = model - state["unsent"], new - too_late

    held, received, billed = Counter(), Counter(), 0
    for profile in braze.profiles():
        for event in profile[array]:
            key = (profile["external_id"], event["time"], *fields(event))
            held[key] += 1
            if event["sequence"] > sequence_before:
                received[key] += 1
                billed += 1 + (len(event.get("properties") or {}) if array == "purchases" else 0)
    # the ledger is pruned to the horizon an earlier run recorded (its watermark less two lookbacks)
    pruned_to = max((row[-2] for row in earlier if row[-2] is not None), default=None)
    kept = sum(n for key, n in expected.items() if pruned_to is None or times[key] >= pruned_to)
    match = (held == expected and received == expected_now and added == sum(received.values()) and points == billed
             and late == counted_late and not duplicated and not lost and ledger == kept
             and watermark == max((times[key] for key in expected), default=None))

    kind, day = array[:-1], "%Y-%m-%d %H:%M"
    names = Counter(key[2] for key in held.elements())
    twice = sum(1 for n in held.values() if n > 1)
    dated = sorted(key[1][:10] for key in received)
    if before is None:
        window = "every event in the model (backfill)" if start is None else f"from {declaration['start_at']} (start_at)"
    else:
        window = (f"from {EPOCH + timedelta(milliseconds=window_start):{day}} ({lookback} behind "
                  f"{EPOCH + timedelta(milliseconds=before):{day}}, the newest event acknowledged before)")
    horizon = EPOCH + timedelta(milliseconds=pruned_to) if pruned_to is not None else None
    print(f"- {sync_id}: event sync of {array} ({'backfill' if start is None else 'start_at ' + declaration['start_at']},"
          f" lookback {lookback})")
    print(f"    {sum(held.values())} {array} held, " + (f"{twice} of them more than once" if twice else "each once")
          + f" ({', '.join(f'{n} {name}' for name, n in names.most_common())})")
    print(f"    this run (its history row): {added} {kind}(s) sent in {requests} request(s): {points} data point(s); "
          f"{late} late, {duplicated} possibly duplicated, {lost} possibly lost")
    print(f"    window: {window}")
    print(f"    received this run: {sum(received.values())}" + (f", dated {dated[0]} to {dated[-1]}" if dated else "")
          + f"; the ledger keeps {ledger} event id(s)" + (f", from {horizon:%Y-%m-%d} on" if horizon else ""))
    print(f"    equals the model's events in the window, each exactly once, only the new ones this run: "
          f"{'yes' if match else 'NO'}")
    return match


def show_and_check(braze: LocalBraze, title: str, requests_before: int, sequence_before: int,
                   seen: dict[str, dict]) -> bool:
    held = braze.cohorts()
    sent = braze.requests()[requests_before:]
    expected = audiences()
    print(f"\n=== {title}: what the endpoint holds ===")
    ok = True
    for cohort_id, (kind, _) in AUDIENCES.items():
        cohort = held.get(cohort_id)
        members = held_by_endpoint(cohort)[kind] if cohort else set()
        calls = [r for r in sent if r.get("cohort_id") == cohort_id]
        adds = sum(r.get("adds", 0) for r in calls)
        removes = sum(r.get("removes", 0) for r in calls)
        match = members == expected[cohort_id] and all(
            not other for key, other in (held_by_endpoint(cohort).items() if cohort else []) if key != kind
        )
        ok = ok and match
        sample = ", ".join(str(m if not isinstance(m, tuple) else f"{m[1]}:{m[0]}") for m in sorted(members)[:4])
        print(f"- {cohort_id}: \"{cohort['name'] if cohort else '?'}\"")
        print(f"    {len(members)} {kind} ({sample}{', ...' if len(members) > 4 else ''})")
        print(f"    this run: {len(calls)} request(s), {adds} added, {removes} removed")
        print(f"    equals the audience model: {'yes' if match else 'NO'}")
    checks = [show_and_check_attribute(braze, requests_before), show_and_check_facts(braze)]
    checks += [show_and_check_events(braze, sync_id, sequence_before, seen) for sync_id in EVENT_SYNCS]
    return ok and all(checks)


def main() -> int:
    for path in (DATABASE, DATABASE.with_suffix(".duckdb.wal")):
        path.unlink(missing_ok=True)
    keys = {"partner_api_key": "demo-partner-" + secrets.token_hex(8),
            "data_import_key": "demo-import-" + secrets.token_hex(8),
            "rest_api_key": "demo-rest-" + secrets.token_hex(8)}
    with LocalBraze(partner_name="cohort_sync_demo", **keys) as braze:
        braze.seed_profiles(known_users())
        env = {
            **{name: value for name, value in os.environ.items() if not name.startswith("BRAZE_")},
            "BRAZE_REST_ENDPOINT": braze.url,
            "BRAZE_PARTNER_NAME": "cohort_sync_demo",
            "BRAZE_PARTNER_API_KEY": keys["partner_api_key"],
            "BRAZE_DATA_IMPORT_KEY": keys["data_import_key"],
            "BRAZE_REST_API_KEY": keys["rest_api_key"],
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
        print(f"local Braze-compatible endpoint on {braze.url}")
        dbt(env, "deps", "--quiet")
        dbt(env, "seed", "--quiet")

        seen: dict[str, dict] = {}  # per event sync, the model's events at the last check
        print(f"\n--- run 1: first sync, as of {WEEK_ONE} (dbt build) ---")
        dbt(env, "build", "--quiet", "--vars", json.dumps({"demo_as_of": WEEK_ONE}))
        first_ok = show_and_check(braze, "after run 1", 0, 0, seen)

        print(f"\n--- run 2: a week later, as of {WEEK_TWO}: new orders and events arrived ---")
        before, sequence = len(braze.requests()), last_sequence(braze)
        dbt(env, "build", "--quiet", "--vars", json.dumps({"demo_as_of": WEEK_TWO}))
        second_ok = show_and_check(braze, "after run 2", before, sequence, seen)

        print("\n--- cohort-sync status (the run history) ---")
        subprocess.run(
            [str(BIN / "cohort-sync"), "status", "--project-dir", str(DEMO), "--profiles-dir", str(DEMO),
             "--limit", "6"],
            env=env, check=True,
        )
    if first_ok and second_ok:
        print("\ndemo OK: after both runs Braze's cohorts and profile attributes equal the audiences and the "
              "customer facts, and its purchases and events equal the event models' within their windows, each "
              "exactly once; run 2 sent only the difference, and only the new week's events.")
        return 0
    print("\ndemo FAILED: the endpoint's cohorts, profile attributes, purchases or events differ from the models",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
