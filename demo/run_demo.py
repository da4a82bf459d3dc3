"""`make demo`: the whole job, end to end, on DuckDB against the local endpoint.

1. Starts the local Braze-compatible endpoint on 127.0.0.1 (a free port),
   with throwaway keys made for this run, and gives it the demo's
   customers as the users a Braze workspace would already know.
2. Builds the demo project from scratch (`dbt seed`, `dbt build`): the
   audiences, the cohort_sync models and tests, then the publish model.
3. Moves the demo's clock a week forward (a week of new orders and events
   arrives) and runs `dbt build` again: only the difference is sent.
4. After each run, prints each cohort as the endpoint holds it (three
   partner cohorts, and one profile attribute set through /users/track)
   and the customer facts the attribute sync wrote on the profiles, and
   checks both equal the models exactly, and how many data points the
   sync's values cost.

Any real BRAZE_* settings in your environment are ignored here.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import duckdb

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
    sent = [r for r in braze.requests()[requests_before:] if r.get("endpoint") == "track"]
    match = holders == expected
    sample = ", ".join(sorted(holders)[:4])
    print(f"- recent_buyers: profile attribute {attribute!r} (segment \"{attribute} is true\")")
    print(f"    {len(holders)} profiles ({sample}{', ...' if len(holders) > 4 else ''})")
    print(f"    this run: {len(sent)} /users/track request(s), {sum(r.get('objects', 0) for r in sent)} object(s),"
          f" {sum(r.get('created', 0) for r in sent)} profile(s) created")
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


def show_and_check(braze: LocalBraze, title: str, requests_before: int) -> bool:
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
    return show_and_check_attribute(braze, requests_before) and show_and_check_facts(braze) and ok


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

        print(f"\n--- run 1: first sync, as of {WEEK_ONE} (dbt build) ---")
        dbt(env, "build", "--quiet", "--vars", json.dumps({"demo_as_of": WEEK_ONE}))
        first_ok = show_and_check(braze, "after run 1", 0)

        print(f"\n--- run 2: a week later, as of {WEEK_TWO}: new orders and events arrived ---")
        before = len(braze.requests())
        dbt(env, "build", "--quiet", "--vars", json.dumps({"demo_as_of": WEEK_TWO}))
        second_ok = show_and_check(braze, "after run 2", before)

        print("\n--- cohort-sync status (the run history) ---")
        subprocess.run(
            [str(BIN / "cohort-sync"), "status", "--project-dir", str(DEMO), "--profiles-dir", str(DEMO),
             "--limit", "6"],
            env=env, check=True,
        )
    if first_ok and second_ok:
        print("\ndemo OK: after both runs Braze's cohorts and profile attributes equal the audiences and the "
              "customer facts; run 2 sent only the difference.")
        return 0
    print("\ndemo FAILED: the endpoint's cohorts or profile attributes differ from the audiences", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
