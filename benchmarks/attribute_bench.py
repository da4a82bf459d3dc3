"""The attribute diff at scale: users x 20 attributes, 0.1%, 1% and 10% of values changed.

One DuckDB project holds a synthetic model of `users` users and the 20
attributes of bench.ATTRIBUTES (mixed kinds). The state of a first sync is
seeded by one SQL insert of what the publisher would have acknowledged
(every sendable value's hash, read from cohort_sync_attribute_rows built
once on the unchanged model), and the bare query's own state likewise (its
own hashes). Then, for each share of values changed, the model's raw table
is regenerated from the unchanged one with those values changed (chosen by
a hash of user and attribute, so spread over users and attributes) and:

- ours: the attribute models (cohort_sync_attribute_rows,
  cohort_sync_attribute_changes, cohort_sync_cohorts), dbt's node timings;
- bare: one query unpivoting the model, each value cast to text and hashed
  with md5, full-outer-joined with a state table of the same shape;

both must find the true number of changed values (counted from the
generator's choice, not by either diff), and the plan's data points
(cohort_sync_cohorts.planned_data_points of the sync) must equal it; they
are compared with a full upsert (every row whole: users x attributes) and a
row-level diff (every changed row whole: changed users x attributes).

A smaller case (publish_users, publish_churn) is published through the
local endpoint: its first sync, then the changed values; the data points
the endpoint billed for the second run must equal the changed values.

Each figure is one run (config "repeat": 1, best of 1): at 10M users a run
of the models takes minutes. Timings are wall clock (dbt's node timings for
ours); the CPU seconds of both (ours: the dbt process, its start-up
included) and the load average are reported beside them, as the machine
may be shared.

    python benchmarks/attribute_bench.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import ATTRIBUTE_SYNC, ATTRIBUTES, REPO, AttributeBench, Endpoint  # noqa: E402

FULL = {"users": 10_000_000, "churns": [0.001, 0.01, 0.1], "publish_users": 100_000, "publish_churn": 0.01,
        "repeat": 1}
SMOKE = {"users": 3_000, "churns": [0.01, 0.1], "publish_users": 1_000, "publish_churn": 0.1, "repeat": 1}

MODELS = ("cohort_sync_attribute_rows", "cohort_sync_attribute_changes", "cohort_sync_cohorts")
LIMIT = 1.5  # ours at most this many times the bare comparison
BASE = f"{ATTRIBUTE_SYNC}_unchanged"


def changed_sql(column: str, duckdb_type: str) -> str:
    """Another value of the same kind (null stays null: a null never changes here)."""
    kind = duckdb_type.upper()
    if kind == "VARCHAR":
        return f"{column} || '*'"
    if kind == "BOOLEAN":
        return f"not {column}"
    if kind.startswith("TIMESTAMP"):
        return f"{column} + interval 1 second"
    return f"cast({column} + 1 as {kind})"


class AttributeScale(AttributeBench):
    """One attribute sync's project, its model regenerated per share of values changed."""

    def __init__(self, root: Path, keys: dict[str, str], mode: str = "update") -> None:
        super().__init__(root, keys)
        self.project.declare([], cohort_sync_attribute_syncs=[
            {"model": ATTRIBUTE_SYNC, "mode": mode, "identifiers": ["external_id"]}])

    def generate(self, users: int) -> int:
        """The unchanged raw table (and the model reading raw.<sync>); returns its values (non-null)."""
        values = self.set_users(users)
        with duckdb.connect(self.db) as con:
            con.execute(f"create or replace table raw.{BASE} as select * from raw.{ATTRIBUTE_SYNC}")
            self.types = {name: kind for name, kind in con.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = 'raw' and table_name = ?", [BASE]).fetchall()}
        return values

    def selected(self, churn: float) -> dict[str, str]:
        """Per attribute, whether a user's value changes: a hash of (user, attribute) below the share."""
        threshold = round(churn * 1_000_000)
        return {name: f"hash(user_number, {number}) % 1000000 < {threshold}"
                for number, name in enumerate(ATTRIBUTES)}

    def change(self, churn: float) -> dict[str, int]:
        """raw.<sync> becomes the unchanged table with `churn` of its values changed; the truth, counted
        from the choice: values changed (selected and not null) and users with any value changed."""
        chosen = self.selected(churn)
        columns = ", ".join(f"case when {chosen[name]} then {changed_sql(name, self.types[name])} else {name} end "
                            f"as {name}" for name in ATTRIBUTES)
        hit = {name: f"({chosen[name]} and {name} is not null)" for name in ATTRIBUTES}
        with duckdb.connect(self.db) as con:
            con.execute(f"create or replace table raw.{ATTRIBUTE_SYNC} as select user_number, external_id, {columns} "
                        f"from raw.{BASE}")
            values, users = con.execute(
                f"select {' + '.join(f'count(*) filter (where {h})' for h in hit.values())}, "
                f"count(*) filter (where {' or '.join(hit.values())}) from raw.{BASE}").fetchall()[0]
        return {"changed_values": values, "changed_users": users}

    def seed_states(self) -> int:
        """With the model unchanged: the state a first sync acknowledges (every sendable value's hash,
        one insert from the attribute rows) and the bare query's own state (its own hashes)."""
        # every model but the plan's two (the first plan, 200M new values at 10M users, is not needed)
        self.dbt("run", "--exclude", "cohort_sync_publish", "cohort_sync_attribute_changes", "cohort_sync_cohorts",
                 plan_only=True)
        with duckdb.connect(self.db) as con:
            con.execute("delete from cohort_sync_attribute_state")
            con.execute("""insert into cohort_sync_attribute_state (sync_id, member_key, attribute_name, value_hash,
                               run_id, acknowledged_at)
                           select sync_id, member_key, attribute_name, value_hash, 'seed', now()
                           from cohort_sync_attribute_rows
                           where member_key is not null and reject_reason is null and not is_null""")
            con.execute(f"""create or replace table bench_bare_state as
                            select '{ATTRIBUTE_SYNC}' as sync_id, member_key, attribute_name, value_hash,
                                'seed' as run_id, now() as acknowledged_at
                            from ({self.bare_values_sql()})""")
            held = con.execute("select count(*) from cohort_sync_attribute_state").fetchall()[0][0]
            bare_held = con.execute("select count(*) from bench_bare_state").fetchall()[0][0]
        assert held == bare_held, (held, bare_held)
        return held

    def bare_sql(self) -> str:
        return f"""
            create or replace table bench_bare_attribute_changes as
            with current_values as ({self.bare_values_sql()})
            select
                coalesce(c.member_key, s.member_key) as member_key,
                coalesce(c.attribute_name, s.attribute_name) as attribute_name,
                c.value_text,
                c.value_hash,
                case when s.member_key is null then 'new' when c.member_key is null then 'unset'
                    else 'changed' end as change_kind
            from current_values as c
            full outer join bench_bare_state as s
                on s.sync_id = '{ATTRIBUTE_SYNC}' and s.member_key = c.member_key
                and s.attribute_name = c.attribute_name
            where s.member_key is null or c.member_key is null or s.value_hash <> c.value_hash
        """

    def measure(self, churn: float, repeat: int) -> dict[str, Any]:
        truth = self.change(churn)
        load = os.getloadavg()[0]
        runs = []
        for _ in range(repeat):
            cpu = children_cpu()
            nodes = self.dbt("run", "--select", *MODELS, plan_only=True)
            runs.append((sum(nodes.values()), children_cpu() - cpu, nodes))
        ours, ours_cpu, nodes = min(runs, key=lambda r: r[0])
        with duckdb.connect(self.db) as con:
            planned, kinds, data_points = con.execute(
                "select count(*), count(distinct change_kind), sum(data_points) from cohort_sync_attribute_changes"
            ).fetchall()[0]
            plan_points = con.execute("select planned_data_points from cohort_sync_cohorts where cohort_id = ?",
                                      [ATTRIBUTE_SYNC]).fetchall()[0][0]
            planned_users = con.execute(
                "select count(distinct member_key) from cohort_sync_attribute_changes").fetchall()[0][0]
            bare, bare_cpu = float("inf"), float("inf")
            for _ in range(repeat):
                cpu, started = time.process_time(), time.perf_counter()
                con.execute(self.bare_sql())
                bare, bare_cpu = min(bare, time.perf_counter() - started), min(bare_cpu, time.process_time() - cpu)
            found = con.execute("select count(*) from bench_bare_attribute_changes where change_kind = 'changed'"
                                ).fetchall()[0][0]
            con.execute("drop table bench_bare_attribute_changes")
        values = truth["changed_values"]
        assert found == planned == values, (found, planned, values)
        assert kinds == 1 and data_points == plan_points == values, (kinds, data_points, plan_points, values)
        assert planned_users == truth["changed_users"], (planned_users, truth)
        return {"churn": churn, **truth, "ours_s": ours, "models_s": nodes, "bare_s": bare, "ratio": ours / bare,
                "ours_cpu_s": ours_cpu, "bare_cpu_s": bare_cpu, "cpu_ratio": ours_cpu / bare_cpu,
                "load_average": load, "planned_data_points": plan_points}

    def seed_profiles(self, endpoint: Endpoint, users: int) -> None:
        """The users exist in Braze (the sync's mode is update)."""
        with duckdb.connect(self.db) as con:
            ids = [r[0] for r in con.execute(f"select external_id from raw.{BASE}").fetchall()]
        for start in range(0, len(ids), 50_000):
            requests.post(f"{endpoint.url}/_local/profiles", timeout=120, json={
                "profiles": [{"external_id": i} for i in ids[start:start + 50_000]]}).raise_for_status()

    def publish_after(self, endpoint: Endpoint) -> float:
        """`cohort-sync publish` of the built plan, the endpoint's requests (and users) kept."""
        env = {**os.environ, **self.braze_env(endpoint)}
        started = time.perf_counter()
        result = subprocess.run(self.project.command("cohort-sync", "publish"), cwd=self.project.root, env=env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"cohort-sync publish failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        return time.perf_counter() - started


def children_cpu() -> float:
    """CPU seconds of the finished child processes (dbt runs in its own)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def billed(track: list[dict[str, Any]]) -> int:
    return sum(r.get("data_points", 0) for r in track)


def published(work: Path, keys: dict[str, str], endpoint: Endpoint, users: int, churn: float) -> dict[str, Any]:
    """A first sync published whole, then `churn` of the values changed and published: what the endpoint billed."""
    bench = AttributeScale(work / "published", keys)
    values = bench.generate(users)
    bench.ensure_state_tables()
    bench.seed_profiles(endpoint, users)
    bench.dbt("run", plan_only=True)
    before = len(endpoint.requests())
    first_s = bench.publish_after(endpoint)
    first = [r for r in endpoint.requests()[before:] if r.get("endpoint") == "track"]
    assert billed(first) == values, (billed(first), values)
    truth = bench.change(churn)
    bench.dbt("run", "--select", *MODELS, plan_only=True)
    with duckdb.connect(bench.db) as con:
        plan_points = con.execute("select planned_data_points from cohort_sync_cohorts where cohort_id = ?",
                                  [ATTRIBUTE_SYNC]).fetchall()[0][0]
    before = len(endpoint.requests())
    second_s = bench.publish_after(endpoint)
    second = [r for r in endpoint.requests()[before:] if r.get("endpoint") == "track"]
    objects = sum(len(r.get("attribute_counts", [])) for r in second)
    assert all(r.get("status", 201) < 300 for r in second), [r.get("status") for r in second]
    sent = billed(second)
    assert sent == plan_points == truth["changed_values"], (sent, plan_points, truth)
    assert objects == truth["changed_users"], (objects, truth)
    return {"users": users, "attributes": len(ATTRIBUTES), "values": values, "churn": churn, **truth,
            "first_publish_s": first_s, "first_values_per_s": values / first_s, "publish_s": second_s,
            "track_requests": len(second), "objects_sent": objects, "planned_data_points": plan_points,
            "billed_data_points": sent}


def run(work: Path, keys: dict[str, str], rest_endpoint: Endpoint, config: dict[str, Any],
        step: Callable[[str], None]) -> dict[str, Any]:
    """The report's section: the diff at each share of values changed, and the published case."""
    started = time.perf_counter()
    users = config["users"]
    step(f"attribute diff: generating {users:,} users x {len(ATTRIBUTES)} attributes")
    bench = AttributeScale(work / "attribute_scale", keys)
    values = bench.generate(users)
    bench.ensure_state_tables()
    step("attribute diff: seeding the acknowledged state (one SQL insert) and the bare query's own")
    seeding = time.perf_counter()
    held = bench.seed_states()
    seed_s = time.perf_counter() - seeding
    assert held == values, (held, values)
    runs = []
    for churn in config["churns"]:
        step(f"attribute diff: {users:,} users, {churn:.1%} of values changed")
        runs.append(bench.measure(churn, config["repeat"]))
    for r in runs:
        r["full_upsert_data_points"] = users * len(ATTRIBUTES)
        r["row_diff_data_points"] = r["changed_users"] * len(ATTRIBUTES)
        r["vs_full_upsert"] = r["planned_data_points"] / r["full_upsert_data_points"]
        r["vs_row_diff"] = r["planned_data_points"] / r["row_diff_data_points"]
    step(f"attribute diff: publishing {config['publish_users']:,} users, then "
         f"{config['publish_churn']:.1%} of values changed, through the local endpoint")
    sent = published(work, keys, rest_endpoint, config["publish_users"], config["publish_churn"])
    return {"users": users, "attributes": len(ATTRIBUTES), "values": values, "repeat": config["repeat"],
            "seed_s": seed_s, "runs": runs, "published": sent, "seconds": time.perf_counter() - started}


def targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    worst = max(section["runs"], key=lambda r: r["ratio"])
    exact = all(r["planned_data_points"] == r["changed_values"] for r in section["runs"])
    sent = section["published"]
    return [
        {"target": f"attribute diff at {section['users']:,} users x {section['attributes']} attributes vs bare "
                   f"comparison (worst: {worst['churn']:.1%} changed)",
         "value": round(worst["ratio"], 3), "limit": f"<= {LIMIT}x", "met": worst["ratio"] <= LIMIT, "unit": "x"},
        {"target": f"data points sent / changed values ({sent['users']:,} users published, "
                   f"{sent['churn']:.1%} changed; planned at every share changed)",
         "value": round(sent["billed_data_points"] / sent["changed_values"], 3), "limit": "= 1 exactly",
         "met": exact and sent["billed_data_points"] == sent["changed_values"], "unit": "x"},
    ]


def markdown(section: dict[str, Any]) -> list[str]:
    sent = section["published"]
    repeat = "best of 1" if section["repeat"] == 1 else f"best of {section['repeat']}"
    lines = [f"Attribute diff at {section['users']:,} users x {section['attributes']} attributes "
             f"({section['values']:,} values; state seeded by one SQL insert in {section['seed_s']:.0f} s; "
             f"{repeat}): attribute models (rows + changes + cohorts, dbt node timings) vs one bare query "
             "(unpivot, cast to text, md5, full outer join with a state of the same shape), seconds; "
             "data points planned vs a full upsert (every row whole) and a row-level diff (every changed row whole):",
             "",
             "| values changed | changed values | changed users | ours | bare | ratio | CPU s ours / bare "
             "(ours: the dbt process, start-up included) | load average | data points | vs full upsert | "
             "vs row-level diff |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in section["runs"]:
        lines.append(f"| {r['churn']:.1%} | {r['changed_values']:,} | {r['changed_users']:,} | {r['ours_s']:.1f} | "
                     f"{r['bare_s']:.1f} | {r['ratio']:.2f}x | {r['ours_cpu_s']:.0f} / {r['bare_cpu_s']:.0f} = "
                     f"{r['cpu_ratio']:.2f}x | {r['load_average']:.1f} | {r['planned_data_points']:,} | "
                     f"{r['vs_full_upsert']:.2%} | {r['vs_row_diff']:.2%} |")
    lines += ["", "Per model, seconds: " + "; ".join(
        f"{r['churn']:.1%}: " + ", ".join(f"{name.removeprefix('cohort_sync_')} {s:.1f}"
                                          for name, s in r["models_s"].items()) for r in section["runs"]) + ".",
              "", f"Published through the local endpoint: {sent['users']:,} users x {sent['attributes']} "
              f"attributes ({sent['values']:,} values, first sync at {sent['first_values_per_s']:,.0f} values/s), "
              f"then {sent['churn']:.1%} changed: {sent['changed_values']:,} changed values of "
              f"{sent['changed_users']:,} users, {sent['billed_data_points']:,} data points billed in "
              f"{sent['track_requests']:,} /users/track requests ({sent['objects_sent']:,} objects)."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to keep it working")
    parser.add_argument("--users", type=int, help="the diff's users (default: the config's)")
    parser.add_argument("--publish-users", type=int, help="the published case's users (default: the config's)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "attributes")
    args = parser.parse_args(argv)
    config = dict(SMOKE if args.smoke else FULL)
    if args.users:
        config["users"] = args.users
    if args.publish_users:
        config["publish_users"] = args.publish_users
    work = args.out / "tmp"
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    keys = {name: "bench-" + secrets.token_hex(8) for name in ("partner", "import", "rest")}
    started = time.perf_counter()

    def step(name: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {name}", flush=True)

    endpoint = Endpoint(keys)
    try:
        section = run(work, keys, endpoint, config, step)
    finally:
        endpoint.stop()
    (args.out / "attributes.json").write_text(json.dumps(section, indent=2) + "\n")
    print("\n".join(["", *markdown(section), ""]))
    for t in targets(section):
        print(f"{t['target']}: {t['value']}{t['unit']} ({t['limit']}): {'met' if t['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
