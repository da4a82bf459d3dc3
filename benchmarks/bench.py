"""`make bench`: how fast, against lower bounds measured in the same process.

Generates synthetic audiences in DuckDB (100k, 1M, 10M members; 0.1%, 1%,
10% churn) and measures, side by side:

1. diff: building the changes models (cohort_sync_changes and
   cohort_sync_cohorts, dbt's own node timings) vs the lower bound, one bare
   query of two anti-joins (adds and removes) over the same two tables;
   and the naive approach (both member lists fetched into Python, diffed
   with sets);
2. publish: publisher throughput into the local endpoint vs a raw transport
   baseline posting pre-built bodies with the same concurrency;
3. latency-bound publish: the endpoint adds 100 ms to every request and
   enforces Braze's 250,000 requests/hour; ids/s as a share of the quota;
4. memory: peak RSS of the `cohort-sync publish` process at each size;
5. the whole incremental run (`dbt run`, publishing) at 1% churn;
6. attribute sync: 100k and 1M users x 20 attributes of mixed kinds,
   published once into the local endpoint, then 1% of users change one
   value: building the attribute models (cohort_sync_attribute_rows,
   cohort_sync_attribute_changes, cohort_sync_cohorts) vs the lower bound,
   one bare query unpivoting the model and full-outer-joining it with a
   table of md5 hashes shaped as the state; and the bytes the acknowledged
   state (cohort_sync_attribute_state) takes per value in DuckDB,
   extrapolated to 10M users x 20 attributes.

Writes results/report.json, results/report.md and results/chart.png.

    python benchmarks/bench.py            # the full run (make bench)
    python benchmarks/bench.py --smoke    # tiny sizes, to keep it working
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cohort_sync.run.publish import PublishOptions, publish_run  # noqa: E402
from cohort_sync.warehouse.engines import DuckDBEngine  # noqa: E402
from cohort_sync.warehouse.ledger import Ledger  # noqa: E402
from cohort_sync.warehouse.target import relations_from_manifest  # noqa: E402
from tests.measure import peak_rss_kb  # noqa: E402
from tests.sync_project import BIN, SyncProject  # noqa: E402

QUOTA_IDS_PER_SECOND = 250_000 * 1000 / 3600
REPEAT = 3  # timings are the best of REPEAT runs, for ours and the lower bound alike
PARTNER = "cohort_sync_bench"
COHORT = "audience"

FULL = {
    "sizes": [100_000, 1_000_000, 10_000_000],
    "churns": [0.001, 0.01, 0.1],
    "publish_sizes": [100_000, 1_000_000],
    "latency_adds": 1_000_000,
}
SMOKE = {
    "sizes": [2_000, 6_000],
    "churns": [0.01],
    "publish_sizes": [3_000],
    "latency_adds": 3_000,
}


class Endpoint:
    """The local Braze-compatible endpoint in its own process (as Braze is remote)."""

    def __init__(self, keys: dict[str, str], *args: str) -> None:
        env = {**os.environ, "BRAZE_PARTNER_NAME": PARTNER, "BRAZE_PARTNER_API_KEY": keys["partner"],
               "BRAZE_DATA_IMPORT_KEY": keys["import"], "BRAZE_REST_API_KEY": keys["rest"]}
        self.process = subprocess.Popen(
            [str(BIN / "cohort-sync"), "local-braze", "--port", "0", *args],
            env=env, stdout=subprocess.PIPE, text=True,
        )
        self.url = self.process.stdout.readline().strip().rsplit(" ", 1)[-1]
        self.keys = keys

    def requests(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/_local/requests", timeout=30).json()

    def reset(self) -> None:
        requests.post(f"{self.url}/_local/reset", timeout=30).raise_for_status()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def cpu_since(before: os.times_result) -> float:
    """This process's CPU seconds (user and system, all threads) since `before`."""
    after = os.times()
    return after.user - before.user + after.system - before.system


def sink_span(stats: dict[str, Any]) -> float:
    """Seconds from the first request the sink received to the last: a run's
    sending, without its start-up and closing (the same measure for ours and raw)."""
    return stats["last_at"] - stats["first_at"]


def target(name: str, value: float, limit: str, met: bool, unit: str = "") -> dict[str, Any]:
    """One target of the report: met or not, with its value and limit."""
    return {"target": name, "value": round(value, 3), "limit": limit, "met": bool(met), "unit": unit}


def timed(function, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


class Bench:
    def __init__(self, root: Path, keys: dict[str, str]) -> None:
        self.keys = keys
        self.project = SyncProject(root / "project", [{"model": COHORT, "name": "Benchmark audience"}])
        self.db = str(self.project.warehouse.database)

    # -- data -------------------------------------------------------------

    def set_data(self, size: int, churn: float) -> int:
        """Audience of `size` members, of whom Braze already holds all but churn/2; returns changes."""
        shift = int(size * churn / 2)
        with duckdb.connect(self.db) as con:
            con.execute("create schema if not exists raw")
            con.execute(
                "create or replace table raw.audience as select 'u' || lpad(cast(i as varchar), 10, '0') "
                "as external_id from range(?, ?) as t(i)",
                [shift, size + shift],
            )
        (self.project.root / "models" / f"{COHORT}.sql").write_text("select * from raw.audience\n")
        self.ensure_state_tables()
        with duckdb.connect(self.db) as con:
            for table in ("published_state", "published_cohorts", "delivery_log", "inflight", "lock"):
                con.execute(f"delete from cohort_sync_{table}")
            con.execute(
                "insert into cohort_sync_published_state (cohort_id, member_key, identifier_type, external_id, "
                "delivery, run_id, acknowledged_at) select ?, 'external_id:' || id, 'external_id', id, "
                "'cohort_import', 'seed', now() from (select 'u' || lpad(cast(i as varchar), 10, '0') as id "
                "from range(0, ?) as t(i))",
                [COHORT, size],
            )
            con.execute(
                "insert into cohort_sync_published_cohorts values (?, 'Benchmark audience', now(), 'seed', now())",
                [COHORT],
            )
        return 2 * shift

    def set_fresh(self, adds: int) -> None:
        """An audience never published: every member is an add."""
        self.set_data(adds, 0.0)
        with duckdb.connect(self.db) as con:
            con.execute("delete from cohort_sync_published_state")

    def ensure_state_tables(self) -> None:
        if not hasattr(self, "_state_ready"):
            self.dbt("run-operation", "cohort_sync.migrate_state_tables")
            self._state_ready = True

    # -- dbt ----------------------------------------------------------------

    def dbt(self, *args: str, plan_only: bool = False, env: dict[str, str] | None = None) -> dict[str, float]:
        """Run dbt in its own process; returns the node execution times."""
        if plan_only:
            args = (*args, "--vars", '{"cohort_sync_publish_on_run": false}')
        result = subprocess.run(
            self.project.command("dbt", *args), cwd=self.project.root, capture_output=True, text=True,
            env={**os.environ, **(env or {})},
        )
        if result.returncode != 0:
            raise RuntimeError(f"dbt {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
        run_results = json.loads((self.project.root / "target" / "run_results.json").read_text())
        return {
            r["unique_id"].rsplit(".", 1)[-1]: r["execution_time"]
            for r in run_results["results"] if r["unique_id"].startswith("model.")
        }

    def plan(self) -> dict[str, float]:
        return self.dbt("run", "--exclude", "cohort_sync_publish", plan_only=True)

    # -- 1. diff --------------------------------------------------------------

    def diff(self, size: int, churn: float, naive: bool) -> dict[str, Any]:
        changes = self.set_data(size, churn)
        self.plan()
        ours = min(
            sum(self.dbt("run", "--select", "cohort_sync_changes", "cohort_sync_cohorts", plan_only=True).values())
            for _ in range(REPEAT)
        )
        bare_sql = """
            create or replace table bench_bare_changes as
            select m.cohort_id, m.member_key, false as should_remove
            from cohort_sync_membership as m
            where not exists (select 1 from cohort_sync_published_state as p
                              where p.cohort_id = m.cohort_id and p.member_key = m.member_key)
            union all
            select p.cohort_id, p.member_key, true
            from cohort_sync_published_state as p
            where not exists (select 1 from cohort_sync_membership as m
                              where m.cohort_id = p.cohort_id and m.member_key = p.member_key)
        """
        with duckdb.connect(self.db) as con:
            bare = timed(lambda: con.execute(bare_sql), repeat=REPEAT)
            found = con.execute("select count(*) from bench_bare_changes").fetchall()[0][0]
            planned = con.execute("select count(*) from cohort_sync_changes").fetchall()[0][0]
            con.execute("drop table bench_bare_changes")
            naive_seconds = None
            if naive:
                def by_hand() -> None:
                    members = {r[0] for r in con.execute(
                        "select member_key from cohort_sync_membership").fetchall()}
                    held = {r[0] for r in con.execute(
                        "select member_key from cohort_sync_published_state").fetchall()}
                    assert len(members - held) + len(held - members) == changes
                naive_seconds = timed(by_hand)
        assert found == planned == changes, (found, planned, changes)
        return {"size": size, "churn": churn, "changes": changes, "ours_s": ours, "bare_s": bare,
                "ratio": ours / bare, "naive_s": naive_seconds,
                "naive_ratio": naive_seconds / ours if naive_seconds else None}

    # -- 2. publish throughput ----------------------------------------------------

    def throughput(self, sink: Any, adds: int) -> dict[str, Any]:
        """The publisher (in this process) against the raw transport posting
        the same bodies, pre-rendered, with the same concurrency, into the sink
        (no latency, no limit); CPU from this process's times (the sink is another)."""
        from cohort_sync.braze.transport import Transport

        self.set_fresh(adds)
        self.plan()
        os.environ.update(self.braze_env(sink), COHORT_SYNC_MAX_REQUESTS_PER_HOUR="1e12")
        options = PublishOptions.from_env()
        relations = relations_from_manifest(self.project.root)
        sink.reset()
        with duckdb.connect(self.db) as con:
            before = os.times()
            publish_run(lambda: Ledger(DuckDBEngine(con, owns_connection=False), relations), entry_point="cli",
                        options=options)
            ours_cpu = cpu_since(before)
            ids = [r[0] for r in con.execute(
                "select external_id from cohort_sync_changes order by batch_number, change_number").fetchall()]
        stats = sink.stats()
        requests_sent, ours = stats["partner_requests"], sink_span(stats)
        bodies = [
            json.dumps({"partner_api_key": self.keys["partner"], "client_secret": self.keys["import"],
                        "cohort_id": COHORT, "cohort_changes": [{"user_ids": ids[i:i + 1000]}]})
            for i in range(0, len(ids), 1000)
        ]
        sink.reset()
        transport = Transport(sink.url, pool_size=options.concurrency)
        path = f"/partners/{PARTNER}/cohorts/users"

        def post(body: str) -> None:
            assert transport.post(path, body, {}, (10.0, 60.0)).status_code == 201

        with ThreadPoolExecutor(options.concurrency) as pool:
            before = os.times()
            list(pool.map(post, bodies))
            raw_cpu = cpu_since(before)
        transport.close()
        stats = sink.stats()
        assert stats["identifiers"] == adds
        raw = sink_span(stats)
        return {"adds": adds, "requests": requests_sent, "concurrency": options.concurrency, "ours_s": ours,
                "raw_s": raw, "ours_ids_per_s": adds / ours, "raw_ids_per_s": adds / raw, "ratio": raw / ours,
                "ours_cpu_ms_per_request": 1000 * ours_cpu / requests_sent,
                "raw_cpu_ms_per_request": 1000 * raw_cpu / len(bodies)}

    # -- 3. latency-bound publish ---------------------------------------------------

    def latency_bound(self, sink: Any, adds: int) -> dict[str, Any]:
        """Into the sink with 100 ms per request and Braze's hourly limit enforced."""
        self.set_fresh(adds)
        self.plan()
        os.environ.update(self.braze_env(sink))
        os.environ.pop("COHORT_SYNC_MAX_REQUESTS_PER_HOUR", None)
        options = PublishOptions.from_env()
        relations = relations_from_manifest(self.project.root)
        sink.reset()
        with duckdb.connect(self.db) as con:
            started, before = time.perf_counter(), os.times()
            summary = publish_run(lambda: Ledger(DuckDBEngine(con, owns_connection=False), relations),
                                  entry_point="cli", options=options)
            wall, cpu = time.perf_counter() - started, cpu_since(before)
        assert summary.ok, summary.rows
        stats = sink.stats()
        assert stats["identifiers"] == adds, stats
        seconds = sink_span(stats)  # the sending, from the first request to the last
        ids_per_s = adds / seconds
        return {"adds": adds, "latency_ms": 100, "concurrency": options.concurrency, "seconds": seconds,
                "wall_s": wall,
                "ids_per_s": ids_per_s, "quota_share": ids_per_s / QUOTA_IDS_PER_SECOND,
                "responses_429": stats["rate_limited"], "retries": sum(r.retries for r in summary.rows),
                "cpu_ms_per_request": 1000 * cpu / stats["partner_requests"]}

    # -- 4. memory ------------------------------------------------------------------

    def memory(self, endpoint: Endpoint, adds: int) -> dict[str, Any]:
        self.set_fresh(adds)
        self.plan()
        endpoint.reset()
        env = {**os.environ, **self.braze_env(endpoint), "COHORT_SYNC_MAX_REQUESTS_PER_HOUR": "1e12"}
        started = time.perf_counter()
        process = subprocess.Popen(self.project.command("cohort-sync", "publish"), cwd=self.project.root,
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak_kb = 0
        while process.poll() is None:
            # VmHWM is the process's own peak RSS since exec (ru_maxrss of a
            # child would also count the pages it inherited from this process)
            peak_kb = max(peak_kb, peak_rss_kb(process.pid))
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            raise RuntimeError(f"cohort-sync publish failed: {process.stderr.read()[-2000:]}")
        with duckdb.connect(self.db) as con:
            published = con.execute("select count(*) from cohort_sync_published_state").fetchall()[0][0]
        assert published == adds, (published, adds)
        return {"changes": adds, "peak_rss_mb": peak_kb / 1024, "seconds": seconds}

    # -- 5. whole incremental run -------------------------------------------------------

    def incremental(self, endpoint: Endpoint, size: int) -> dict[str, Any]:
        changes = self.set_data(size, 0.01)
        endpoint.reset()
        env = {**self.braze_env(endpoint), "COHORT_SYNC_MAX_REQUESTS_PER_HOUR": "1e12"}
        started = time.perf_counter()
        nodes = self.dbt("run", env=env)
        wall = time.perf_counter() - started
        publish = nodes.pop("cohort_sync_publish")
        sent = sum(r.get("identifiers", 0) for r in endpoint.requests())
        assert sent == changes, (sent, changes)
        return {"size": size, "changes": changes, "wall_s": wall, "models_s": sum(nodes.values()),
                "publish_s": publish, "publish_ms_per_1k_changes": 1000 * 1000 * publish / changes}

    def braze_env(self, endpoint: Endpoint) -> dict[str, str]:
        return {"BRAZE_REST_ENDPOINT": endpoint.url, "BRAZE_PARTNER_NAME": PARTNER,
                "BRAZE_PARTNER_API_KEY": self.keys["partner"], "BRAZE_DATA_IMPORT_KEY": self.keys["import"]}


#: The attribute sync's synthetic model: each attribute as a DuckDB expression
#: of the user's number i, of mixed kinds (6 strings, 4 integers, 4 doubles,
#: 3 booleans, 3 timestamps; two with nulls, which the state does not hold).
ATTRIBUTES = {
    "plan": "['free', 'basic', 'pro', 'team'][1 + i % 4]",
    "home_city_code": "'city_' || (i % 1000)",
    "segment": "'segment_' || (i * 7 % 37)",
    "referrer": "case when i % 10 <> 0 then 'ref_' || (i * 13 % 5003) end",
    "favourite_category": "'category_' || (i % 97)",
    "nickname": "'nick_' || i",
    "orders": "cast(i % 250 as integer)",
    "visits": "i * 13 % 10007",
    "age": "cast(18 + i % 60 as smallint)",
    "loyalty_points": "i * 31 % 100000",
    "lifetime_value": "cast(round((i % 100000) * 0.37, 2) as double)",
    "avg_basket": "cast(i % 1000 as double) / 7",
    "churn_score": "cast(i % 1000 as double) / 1000",
    "discount_rate": "cast(i % 20 as double) * 0.05",
    "is_vip": "i % 20 = 0",
    "newsletter": "i % 3 = 0",
    "has_app": "i % 2 = 0",
    "signed_up_at": "timestamp '2020-01-01' + to_seconds(i)",
    "last_seen_at": "timestamp '2024-06-01' + to_seconds(i % 86400 * 30)",
    "last_order_at": "case when i % 5 <> 0 then timestamp '2023-01-01' + to_seconds(i * 17 % 31536000) end",
}
ATTRIBUTE_SYNC = "user_facts"
CHANGED_ATTRIBUTE = "lifetime_value"  # 1% of users (i % 100 = 0) get a new value


class AttributeBench(Bench):
    """An attribute sync of `size` users x 20 attributes in its own project
    and DuckDB file, so the state's storage is measured on its own."""

    def __init__(self, root: Path, keys: dict[str, str]) -> None:
        self.keys = keys
        self.project = SyncProject(root)
        self.project.declare([], cohort_sync_attribute_syncs=[
            {"model": ATTRIBUTE_SYNC, "mode": "update", "identifiers": ["external_id"]}])
        self.db = str(self.project.warehouse.database)

    def braze_env(self, endpoint: Endpoint) -> dict[str, str]:
        return {**super().braze_env(endpoint), "BRAZE_REST_API_KEY": self.keys["rest"]}

    def set_users(self, size: int) -> int:
        """The model's raw table; returns the values it holds (non-null)."""
        columns = ", ".join(f"{sql} as {name}" for name, sql in ATTRIBUTES.items())
        with duckdb.connect(self.db) as con:
            con.execute("create schema if not exists raw")
            con.execute(f"create or replace table raw.{ATTRIBUTE_SYNC} as select i as user_number, "
                        f"'u' || lpad(cast(i as varchar), 10, '0') as external_id, {columns} from range(?) as t(i)",
                        [size])
            values = con.execute(f"select {' + '.join(f'count({name})' for name in ATTRIBUTES)} "
                                 f"from raw.{ATTRIBUTE_SYNC}").fetchall()[0][0]
        (self.project.root / "models" / f"{ATTRIBUTE_SYNC}.sql").write_text(
            f"select external_id, {', '.join(ATTRIBUTES)} from raw.{ATTRIBUTE_SYNC}\n")
        return values

    def publish(self, endpoint: Endpoint) -> float:
        endpoint.reset()
        env = {**os.environ, **self.braze_env(endpoint)}
        started = time.perf_counter()
        result = subprocess.run(self.project.command("cohort-sync", "publish"), cwd=self.project.root, env=env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"cohort-sync publish failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        return time.perf_counter() - started

    def state_bytes(self) -> dict[str, int]:
        """The state table's storage in DuckDB, as the publisher left it
        (distinct blocks its column segments occupy, after a checkpoint) and
        copied alone into a fresh file (the file's growth over an empty copy)."""
        with duckdb.connect(self.db) as con:
            con.execute("checkpoint")
            block_size = con.execute("select block_size from pragma_database_size()").fetchall()[0][0]
            blocks = con.execute(
                "select count(distinct b) from (select block_id as b from pragma_storage_info("
                "'cohort_sync_attribute_state') where persistent union all select unnest(additional_block_ids) "
                "from pragma_storage_info('cohort_sync_attribute_state') where persistent)"
            ).fetchall()[0][0]
            copies = {}
            for name, where in (("empty", "where false"), ("copy", "")):
                path = Path(self.db).with_name(f"state_{name}.duckdb")
                con.execute(f"attach '{path}' as probe")
                con.execute(f"create table probe.attribute_state as select * from cohort_sync_attribute_state {where}")
                con.execute("detach probe")
                copies[name] = path.stat().st_size
                path.unlink()
        return {"in_place": blocks * block_size, "copy": copies["copy"] - copies["empty"]}

    def bare_values_sql(self) -> str:
        """The model's values unpivoted, each cast to text and hashed: what any diff must compute."""
        casts = ", ".join(f"cast({name} as varchar) as {name}" for name in ATTRIBUTES)
        return f"""
            select 'external_id:' || external_id as member_key, attribute_name, value_text,
                md5(value_text) as value_hash
            from (select external_id, {casts} from {ATTRIBUTE_SYNC})
            unpivot (value_text for attribute_name in ({', '.join(ATTRIBUTES)}))"""

    def seed_state(self) -> None:
        """What publishing the first plan would acknowledge, written by one insert."""
        with duckdb.connect(self.db) as con:
            con.execute("""insert into cohort_sync_attribute_state (sync_id, member_key, attribute_name, value_hash,
                               run_id, acknowledged_at)
                           select sync_id, member_key, attribute_name, value_hash, 'seed', now()
                           from cohort_sync_attribute_changes where not should_remove""")


def sections():
    """The benchmark's sections in modules of their own (imported late: they import this one)."""
    import attribute_bench
    import event_bench
    import track_bench

    return track_bench, attribute_bench, event_bench


def judge(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, met or not, and by how much."""
    track_bench, attribute_bench, event_bench = sections()
    largest = max(report["config"]["sizes"])
    diffs = [d for d in report["diff"] if d["size"] == largest]
    worst_diff = max(d["ratio"] for d in diffs)
    naive = next(d["naive_ratio"] for d in diffs if d["naive_ratio"])
    publish = report["publish"][-1]
    latency = report["latency"]
    memory = {m["changes"]: m["peak_rss_mb"] for m in report["memory"]}
    sizes = sorted(memory)
    flat = memory[sizes[-1]] / memory[sizes[-2]] if len(sizes) > 1 else 1.0
    runs = report["incremental"]
    per_change = [r["publish_ms_per_1k_changes"] for r in runs if r["size"] >= (sizes[-2] if len(sizes) > 1 else 0)]
    growth = max(per_change) / min(per_change)

    return [
        target(f"diff at {largest:,} members vs bare anti-join (worst churn)", worst_diff, "<= 1.5x",
               worst_diff <= 1.5, "x"),
        target("partner path: publisher vs raw transport", publish["ratio"], ">= 0.8x", publish["ratio"] >= 0.8, "x"),
        target("partner path, 100 ms latency: share of the 69,444 ids/s quota", latency["quota_share"], ">= 0.95",
               latency["quota_share"] >= 0.95),
        target("partner path, 100 ms latency: 429s drawn by our client", latency["responses_429"], "0",
               latency["responses_429"] == 0),
        target(f"peak publisher memory at {sizes[-1]:,} changes", memory[sizes[-1]], "< 300 MB",
               memory[sizes[-1]] < 300, "MB"),
        target(f"memory growth {sizes[-2] if len(sizes) > 1 else sizes[-1]:,} -> {sizes[-1]:,} changes", flat,
               "<= 1.2x", flat <= 1.2, "x"),
        target("incremental run: publish time per change, largest sizes (max/min)", growth, "<= 1.5x",
               growth <= 1.5, "x"),
        target(f"naive Python set diff vs ours at {largest:,}", naive, ">= 10x", naive >= 10, "x"),
        *track_bench.targets(report["track"]),
        *attribute_bench.targets(report["attribute_scale"]),
        *event_bench.targets(report["events"]),
    ]


def section_seconds(report: dict[str, Any]) -> dict[str, float]:
    """Seconds per section of the run, from its steps (a step's section is its name up to the colon)."""
    steps = report.get("steps", [])
    totals: dict[str, float] = {}
    if not steps:  # (a report of a version that did not note its steps)
        return totals
    for this, following in zip(steps, [*steps[1:], {"at_s": report["seconds"]}], strict=True):
        section = this["step"].split(":", 1)[0]
        totals[section] = totals.get(section, 0.0) + following["at_s"] - this["at_s"]
    return totals


def markdown(report: dict[str, Any]) -> str:
    track_bench, attribute_bench, event_bench = sections()
    spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in section_seconds(report).items())
    lines = [f"Machine: {report['machine']}. Run {report['finished_at']} ({report['seconds']:.0f} s"
             f"{': ' + spent if spent else ''})."]
    if report.get("reruns"):
        lines[0] += " Sections rerun alone since (`make bench ONLY=<section>`): " + ", ".join(
            f"{name} {rerun['finished_at']} at commit {rerun['commit']} ({rerun['seconds']:.0f} s"
            + (f", on {rerun['machine']}" if rerun.get("machine", report["machine"]) != report["machine"] else "") + ")"
            for name, rerun in report["reruns"].items()) + "; the others are of the whole run."
    lines += ["", "| target | value | limit | met |", "|---|---|---|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {t['value']}{t['unit']} | {t['limit']} | {'yes' if t['met'] else '**no**'} |")
    lines += ["", "Diff (changes models vs bare anti-join, seconds):", "",
              "| members | churn | changes | ours | bare | ratio | naive Python | naive / ours |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for d in report["diff"]:
        naive = f"{d['naive_s']:.2f}" if d["naive_s"] else ""
        naive_ratio = f"{d['naive_ratio']:.1f}x" if d["naive_ratio"] else ""
        lines.append(f"| {d['size']:,} | {d['churn']:.1%} | {d['changes']:,} | {d['ours_s']:.2f} | "
                     f"{d['bare_s']:.2f} | {d['ratio']:.2f}x | {naive} | {naive_ratio} |")
    lines += ["", "Partner path: publisher vs raw transport (the same bodies, pre-rendered, through the same "
              "transport and concurrency) into the benchmark's sink, no latency:", "",
              "| adds | requests | concurrency | ours ids/s | raw ids/s | ours / raw | CPU ms / request, ours | raw |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in report["publish"]:
        lines.append(f"| {p['adds']:,} | {p['requests']:,} | {p['concurrency']} | {p['ours_ids_per_s']:,.0f} | "
                     f"{p['raw_ids_per_s']:,.0f} | {p['ratio']:.2f}x | {p['ours_cpu_ms_per_request']:.2f} | "
                     f"{p['raw_cpu_ms_per_request']:.2f} |")
    lat = report["latency"]
    lines += ["", f"Partner path, latency-bound: {lat['adds']:,} adds, 100 ms per request, Braze's hourly limit "
              f"enforced by the sink, concurrency {lat['concurrency']}: {lat['ids_per_s']:,.0f} ids/s from the "
              f"sink's first request to its last ({lat['wall_s']:.1f} s for the whole run) = "
              f"{lat['quota_share']:.1%} of the quota, {lat['responses_429']} responses 429, "
              f"{lat['cpu_ms_per_request']:.2f} ms of publisher CPU per request.", "",
              "Peak publisher memory (`cohort-sync publish`, partner path):", "",
              "| changes | peak RSS (MB) | seconds |", "|---:|---:|---:|"]
    for m in report["memory"]:
        lines.append(f"| {m['changes']:,} | {m['peak_rss_mb']:.0f} | {m['seconds']:.1f} |")
    lines += ["", "Whole incremental run (`dbt run` with publishing), 1% churn:", "",
              "| members | changes | wall s | models s | publish s | publish ms / 1k changes |",
              "|---:|---:|---:|---:|---:|---:|"]
    for r in report["incremental"]:
        lines.append(f"| {r['size']:,} | {r['changes']:,} | {r['wall_s']:.1f} | {r['models_s']:.2f} | "
                     f"{r['publish_s']:.2f} | {r['publish_ms_per_1k_changes']:.0f} |")
    lines += track_bench.markdown(report["track"])
    lines += ["", *attribute_bench.markdown(report["attribute_scale"])]
    lines += ["", *event_bench.markdown(report["events"])]
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    one_percent = [d for d in report["diff"] if d["churn"] == 0.01]
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    sizes = [d["size"] for d in one_percent]
    ax.plot(sizes, [d["ours_s"] for d in one_percent], "o-", label="changes models (ours)")
    ax.plot(sizes, [d["bare_s"] for d in one_percent], "s--", label="bare anti-join (lower bound)")
    naive = [(d["size"], d["naive_s"]) for d in one_percent if d["naive_s"]]
    if naive:
        ax.plot(*zip(*naive, strict=True), "^:", label="naive Python set diff")
    runs = report["incremental"]
    ax.plot([r["size"] for r in runs], [r["wall_s"] for r in runs], "d-", label="whole incremental run (dbt run)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("audience size (members), 1% churn")
    ax.set_ylabel("seconds")
    ax.set_title("cohort_sync: time vs audience size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()

    track = report["track"]
    shares = [
        ("/users/track\nshare of ceiling\n(100 ms)", track["latency"]["ceiling_share"], 0.9),
        ("partner\nshare of quota\n(100 ms)", report["latency"]["quota_share"], 0.95),
        ("/users/track\npublisher / raw", track["raw"]["ratio"], 0.8),
        ("partner\npublisher / raw", report["publish"][-1]["ratio"], 0.8),
    ]
    positions = range(len(shares))
    bars.bar(positions, [value for _, value, _ in shares],
             color=["tab:green" if value >= limit else "tab:red" for _, value, limit in shares])
    for position, (_, value, limit) in zip(positions, shares, strict=True):
        bars.hlines(limit, position - 0.4, position + 0.4, colors="black", linestyles="dashed")
        bars.annotate(f"{value:.2f}", (position, value), ha="center", va="bottom")
    bars.set_xticks(list(positions), [label for label, _, _ in shares], fontsize=8)
    bars.set_ylim(0, max(1.05, max(value for _, value, _ in shares) * 1.1))
    bars.set_title("throughput (dashed: target)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to keep the benchmark working")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--only", choices=list(RERUNS),
                        help="rerun this section alone into the last report (which says so)")
    args = parser.parse_args(argv)
    track_bench, attribute_bench, event_bench = sections()
    config = dict(SMOKE if args.smoke else FULL)
    for name, module in (("track", track_bench), ("attribute_scale", attribute_bench), ("events", event_bench)):
        config[name] = module.SMOKE if args.smoke else module.FULL
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "tmp"
    started = time.perf_counter()
    keys = {name: "bench-" + secrets.token_hex(8) for name in ("partner", "import", "rest")}
    os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    if args.only:
        return rerun(args.only, args.out, work, keys, config, started)
    bench = Bench(work, keys)
    report: dict[str, Any] = {"config": config, "machine": machine()}

    def step(name: str) -> None:
        at = time.perf_counter() - started
        report.setdefault("steps", []).append({"step": name, "at_s": round(at, 1)})  # where the time goes
        # what is measured so far, kept where a later section's failure cannot lose it
        (args.out / "tmp_partial_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"[{at:6.1f}s] {name}", flush=True)

    diff(bench, config, report, step)
    partner(bench, keys, config, report, step)
    plain = Endpoint(keys)
    try:
        memory(bench, plain, config, report, step)
        incremental(bench, plain, config, report, step)
    finally:
        plain.stop()
    report["track"] = track_bench.run(work / "track", keys, config["track"], step)
    rest = Endpoint(keys)
    try:
        report["attribute_scale"] = attribute_bench.run(work / "attribute_scale", keys, rest,
                                                        config["attribute_scale"], step)
        report["events"] = event_bench.run(work / "events", keys, rest, config["events"], step)
    finally:
        rest.stop()

    report["seconds"] = time.perf_counter() - started
    report["finished_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return write(report, args.out)


def machine() -> str:
    """The machine a report is of, as the report states it."""
    return f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, DuckDB {duckdb.__version__}"


def same_kind(described: str) -> str:
    """A machine's description without its kernel's build tag (`-fc-v1045`: the
    virtual machine's image, which changes between hosts of one kind)."""
    return re.sub(r"-v\d+(?=-)", "", described)


def partner(bench: Bench, keys: dict[str, str], config: dict[str, Any], report: dict[str, Any], step) -> None:
    """The partner path's sections: publisher vs raw transport, then latency-bound."""
    track_bench = sections()[0]
    with track_bench.Sink(keys, "--no-rate-limit") as sink:
        report["publish"] = []
        for adds in config["publish_sizes"]:
            step(f"partner path: publisher vs raw transport, {adds:,} adds")
            report["publish"].append(bench.throughput(sink, adds))
    with track_bench.Sink(keys, "--latency-ms", "100") as sink:
        step(f"partner path, latency-bound: {config['latency_adds']:,} adds, 100 ms per request")
        report["latency"] = bench.latency_bound(sink, config["latency_adds"])


def diff(bench: Bench, config: dict[str, Any], report: dict[str, Any], step) -> None:
    """The cohort diff at each size and churn, the naive Python diff at 1%."""
    report["diff"] = []
    for size in config["sizes"]:
        for churn in config["churns"]:
            step(f"diff: {size:,} members, {churn:.1%} churn")
            report["diff"].append(bench.diff(size, churn, naive=churn == 0.01))


def memory(bench: Bench, endpoint: Endpoint, config: dict[str, Any], report: dict[str, Any], step) -> None:
    """Peak publisher memory at each size."""
    report["memory"] = []
    for size in config["sizes"]:
        step(f"memory: publishing {size:,} changes")
        report["memory"].append(bench.memory(endpoint, size))


def incremental(bench: Bench, endpoint: Endpoint, config: dict[str, Any], report: dict[str, Any], step) -> None:
    """A whole incremental run (`dbt run` with publishing) at each size, 1% churn."""
    report["incremental"] = []
    for size in config["sizes"]:
        step(f"whole incremental run: {size:,} members, 1% churn")
        report["incremental"].append(bench.incremental(endpoint, size))


def write(report: dict[str, Any], out: Path) -> int:
    """Judge the report's targets, write report.json, report.md and the chart."""
    report["targets"] = judge(report)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (out / "report.md").write_text(table)
    chart(report, out / "chart.png")
    print("\n" + table)
    missed = [t["target"] for t in report["targets"] if not t["met"]]
    print(f"targets met: {len(report['targets']) - len(missed)} of {len(report['targets'])}")
    return 0


#: The sections `--only` reruns, each with the configuration keys it must share with the last report.
RERUNS = {"diff": ("sizes", "churns"), "partner": ("publish_sizes", "latency_adds"), "memory": ("sizes",),
          "incremental": ("sizes",), "track": ("track",), "attribute_scale": ("attribute_scale",),
          "events": ("events",)}


def rerun(name: str, out: Path, work: Path, keys: dict[str, str], config: dict[str, Any], started: float) -> int:
    """Measure one section again, alone, into the last whole run's report (report.json): for a change
    that touches only what that section measures. The report names the section, its time and commit."""
    report = json.loads((out / "report.json").read_text())
    if any(report["config"][key] != config[key] for key in RERUNS[name]):
        raise SystemExit(f"the last report measured {name} with another configuration: run `make bench`")
    if same_kind(report["machine"]) != same_kind(machine()):
        raise SystemExit(f"the last report is of another machine ({report['machine']}): run `make bench`")
    track_bench, attribute_bench, event_bench = sections()

    def step(label: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {label}", flush=True)

    if name == "diff":
        diff(Bench(work, keys), config, report, step)
    elif name == "partner":
        partner(Bench(work, keys), keys, config, report, step)
    elif name in ("memory", "incremental"):
        plain = Endpoint(keys)
        try:
            (memory if name == "memory" else incremental)(Bench(work, keys), plain, config, report, step)
        finally:
            plain.stop()
    elif name == "track":
        report["track"] = track_bench.run(work / "track", keys, config["track"], step)
    else:
        rest = Endpoint(keys)
        try:
            module = attribute_bench if name == "attribute_scale" else event_bench
            report[name] = module.run(work / name, keys, rest, config[name], step)
        finally:
            rest.stop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    report.setdefault("reruns", {})[name] = {
        "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": time.perf_counter() - started, "commit": commit.stdout.strip() or "unknown", "machine": machine()}
    return write(report, out)


if __name__ == "__main__":
    sys.exit(main())
