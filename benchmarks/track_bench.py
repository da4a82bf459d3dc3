"""`make bench`, the REST path at Braze's ceiling: /users/track throughput
with 100 ms added to every request, and the publisher against a raw
transport baseline on both paths.

1. The sink (benchmarks/sink.py) first shows it absorbs at least 1.2x the
   ceiling: a load generator in its own process posts pre-rendered
   75-object bodies over many connections, rate limit off, 100 ms latency.
2. Track, latency-bound: an attribute sync of `track_users` new users (one
   object each, 75 per request) published by `cohort-sync publish` into the
   sink with 100 ms latency and Braze's 3,000 requests per 3 seconds
   enforced: objects per second as a share of 75,000, the 429s our client
   drew, and the publisher's CPU time per request (from the child's rusage).
3. Publisher vs raw transport, /users/track: the same publish into the sink
   without latency or limit, against the product's own HTTP transport
   posting the bodies the publisher sent (pre-rendered) with the same
   concurrency. The partner path's pair is in bench.py (throughput).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "scripts"))

from bench import sink_span  # noqa: E402

from tests.sync_project import SyncProject  # noqa: E402

CEILING_REQUESTS_PER_SECOND = 3000 / 3.0
OBJECTS_PER_REQUEST = 75
CEILING_OBJECTS_PER_SECOND = CEILING_REQUESTS_PER_SECOND * OBJECTS_PER_REQUEST
SYNC = "track_users"
FULL = {"track_users": 600_000, "raw_users": 300_000, "capacity_seconds": 6.0, "capacity_connections": 200}
SMOKE = {"track_users": 3_000, "raw_users": 3_000, "capacity_seconds": 1.0, "capacity_connections": 20}


class Sink:
    """benchmarks/sink.py in its own process."""

    def __init__(self, keys: dict[str, str], *args: str) -> None:
        env = {**os.environ, "BRAZE_REST_API_KEY": keys["rest"], "BRAZE_PARTNER_API_KEY": keys["partner"],
               "BRAZE_DATA_IMPORT_KEY": keys["import"]}
        self.process = subprocess.Popen([sys.executable, str(HERE / "sink.py"), "--port", "0", *args],
                                        env=env, stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip().rsplit(" ", 1)[-1]

    def stats(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/_sink/stats", timeout=30).json()

    def reset(self) -> None:
        requests.post(f"{self.url}/_sink/reset", timeout=30).raise_for_status()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def sample_body(size: int = OBJECTS_PER_REQUEST) -> bytes:
    return json.dumps({"attributes": [
        {"external_id": f"u{i:010d}", "plan": "pro", "lifetime_value": 12.5, "_update_existing_only": False}
        for i in range(size)]}, separators=(",", ":")).encode()


def capacity(keys: dict[str, str], config: dict[str, Any]) -> dict[str, Any]:
    """What the sink absorbs with 100 ms latency and no rate limit, driven from another process."""
    with Sink(keys, "--latency-ms", "100", "--no-rate-limit") as sink:
        script = (
            "import json, sys; sys.path.insert(0, sys.argv[1]); import sink; "
            "print(json.dumps(sink.load(sys.argv[2], '/users/track', sys.argv[3].encode(), "
            "{'Authorization': 'Bearer ' + sys.argv[4]}, int(sys.argv[5]), float(sys.argv[6]))))"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, str(HERE), sink.url, sample_body().decode(), keys["rest"],
             str(config["capacity_connections"]), str(config["capacity_seconds"])],
            capture_output=True, text=True, check=True,
        )
        load = json.loads(result.stdout)
        stats = sink.stats()
    answered = load["statuses"].get("201", 0)
    assert answered == stats["track_requests"], (load, stats)
    per_second = answered / load["seconds"]
    return {"connections": config["capacity_connections"], "seconds": load["seconds"], "requests": answered,
            "requests_per_s": per_second, "objects_per_s": per_second * OBJECTS_PER_REQUEST,
            "ceiling_multiple": per_second / CEILING_REQUESTS_PER_SECOND}


class TrackProject:
    """An attribute sync of new users (one object of three attributes each), in update mode."""

    def __init__(self, root: Path, keys: dict[str, str]) -> None:
        self.keys = keys
        self.project = SyncProject(root)
        self.project.declare([], cohort_sync_attribute_syncs=[
            {"model": SYNC, "mode": "upsert", "identifiers": ["external_id"]}])
        self.db = str(self.project.warehouse.database)

    def set_users(self, users: int) -> None:
        with duckdb.connect(self.db) as con:
            con.execute("create schema if not exists raw")
            con.execute(f"""create or replace table raw.{SYNC} as
                            select 'u' || lpad(cast(i as varchar), 10, '0') as external_id,
                                   ['free', 'pro', 'team'][1 + i % 3] as plan,
                                   cast(i % 1000 as double) / 8 as lifetime_value,
                                   i % 2 = 0 as is_vip
                            from range(?) as t(i)""", [users])
        (self.project.root / "models" / f"{SYNC}.sql").write_text(f"select * from raw.{SYNC}\n")

    def plan(self) -> None:
        result = self.project.cli("dbt", "run", "--vars", '{"cohort_sync_publish_on_run": false}', timeout=1800)
        if result.returncode != 0:
            raise RuntimeError(f"dbt run failed:\n{result.stdout[-3000:]}")

    def forget(self) -> None:
        """As if nothing had been published: the plan is the same, the state empty."""
        with duckdb.connect(self.db) as con:
            for table in ("attribute_state", "delivery_log", "inflight", "lock", "run_history"):
                con.execute(f"delete from cohort_sync_{table}")

    def publish(self, url: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        """`cohort-sync publish` in a child process: wall seconds and CPU seconds (user + system)."""
        env = {**os.environ, "BRAZE_REST_ENDPOINT": url, "BRAZE_REST_API_KEY": self.keys["rest"], **(env or {})}
        env.pop("BRAZE_PARTNER_API_KEY", None)
        started = time.perf_counter()
        process = subprocess.Popen(self.project.command("cohort-sync", "publish"), cwd=self.project.root,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"cohort-sync publish failed ({process.returncode}):\n{out[-2000:]}\n{err[-2000:]}")
        return {"seconds": seconds, "cpu_s": usage.ru_utime + usage.ru_stime}

    def acknowledged(self) -> int:
        with duckdb.connect(self.db) as con:
            return con.execute("select count(distinct member_key) from cohort_sync_attribute_state").fetchall()[0][0]


def latency_bound(project: TrackProject, keys: dict[str, str], users: int) -> dict[str, Any]:
    with Sink(keys, "--latency-ms", "100") as sink:
        project.forget()
        run = project.publish(sink.url)
        stats = sink.stats()
    assert stats["attributes"] == users == project.acknowledged(), (stats, users)
    requests_sent = stats["requests"]
    # the sending rate, from the sink's first request to its last (the process's
    # start-up and closing are in `wall_s`)
    sending = sink_span(stats)
    objects_per_s = users / sending
    return {"users": users, "latency_ms": 100, "requests": requests_sent, "seconds": sending, "wall_s": run["seconds"],
            "objects_per_s": objects_per_s, "ceiling_share": objects_per_s / CEILING_OBJECTS_PER_SECOND,
            "responses_429": stats["rate_limited"], "cpu_s": run["cpu_s"],
            "cpu_ms_per_request": 1000 * run["cpu_s"] / stats["track_requests"]}


UNLIMITED = {"COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_3S": "1000000000"}


def rendered_bodies(project: TrackProject) -> list[str]:
    """The plan's requests, rendered by the product's own code before anything is timed."""
    from cohort_sync.braze.payload import PROFILE_CHANGE_COLUMNS, profile_request

    with duckdb.connect(project.db, read_only=True) as con:
        rows = con.execute(f"select {', '.join(PROFILE_CHANGE_COLUMNS)} from cohort_sync_attribute_changes "
                           "order by batch_number, member_key, attribute_name").fetchall()
    batches: dict[int, list[tuple]] = {}
    for row in rows:
        batches.setdefault(row[0], []).append(row)
    return [profile_request("profile", number, changes, "upsert").body for number, changes in sorted(batches.items())]


def raw_transport(url: str, keys: dict[str, str], bodies: list[str], concurrency: int) -> dict[str, Any]:
    """Pre-rendered bodies posted through the product's transport, `concurrency` at once,
    in this process: wall and CPU seconds (the process's own CPU times)."""
    from cohort_sync.braze.transport import Transport

    transport = Transport(url, pool_size=concurrency)
    headers = {"Authorization": f"Bearer {keys['rest']}"}

    def post(body: str) -> None:
        response = transport.post("/users/track", body, headers, (10.0, 60.0))
        assert response.status_code == 201, response.status_code

    with ThreadPoolExecutor(concurrency) as pool:
        before, started = os.times(), time.perf_counter()
        list(pool.map(post, bodies))
        seconds, after = time.perf_counter() - started, os.times()
    transport.close()
    return {"seconds": seconds, "cpu_s": after.user - before.user + after.system - before.system}


def publisher_vs_raw(project: TrackProject, keys: dict[str, str], users: int, concurrency: int) -> dict[str, Any]:
    """Both timed by the sink, from the first request it received to the last.
    No latency, no rate limit: the publisher (a child process, its start-up
    excluded by timing from its first request to its last) against the raw
    transport, into one sink."""
    bodies = rendered_bodies(project)
    with Sink(keys, "--no-rate-limit") as sink:
        project.forget()
        ours = project.publish(sink.url, UNLIMITED)
        stats = sink.stats()
        assert stats["attributes"] == users == project.acknowledged(), (stats, users)
        ours_seconds = sink_span(stats)
        sink.reset()
        raw = raw_transport(sink.url, keys, bodies, concurrency)
        raw_stats = sink.stats()
        assert raw_stats["attributes"] == users, raw_stats
        raw["seconds"] = sink_span(raw_stats)
    count = len(bodies)
    return {"path": "users_track", "users": users, "requests": count, "concurrency": concurrency,
            "ours_s": ours_seconds, "raw_s": raw["seconds"], "ours_requests_per_s": count / ours_seconds,
            "raw_requests_per_s": count / raw["seconds"], "ratio": raw["seconds"] / ours_seconds,
            "ours_cpu_ms_per_request": 1000 * ours["cpu_s"] / count,
            "raw_cpu_ms_per_request": 1000 * raw["cpu_s"] / count}


def run(work: Path, keys: dict[str, str], config: dict[str, Any], step) -> dict[str, Any]:
    """The section of the report: the sink's capacity, then the track runs."""
    step(f"track: sink capacity, {config['capacity_connections']} connections, 100 ms latency")
    section: dict[str, Any] = {"capacity": capacity(keys, config)}
    project = TrackProject(work, keys)
    step(f"track: latency-bound publish of {config['track_users']:,} users (100 ms per request)")
    project.set_users(config["track_users"])
    project.plan()
    section["latency"] = latency_bound(project, keys, config["track_users"])
    step(f"track: publisher vs raw transport, {config['raw_users']:,} users")
    project.set_users(config["raw_users"])
    project.forget()
    project.plan()
    from cohort_sync.run.publish import PublishOptions

    concurrency = PublishOptions.from_env({}).track_concurrency  # the raw baseline posts as many at once
    section["raw"] = publisher_vs_raw(project, keys, config["raw_users"], concurrency)
    return section


def targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    from bench import target

    capacity_, latency, raw = section["capacity"], section["latency"], section["raw"]
    return [
        target("sink absorbs, before measuring: multiple of the /users/track ceiling", capacity_["ceiling_multiple"],
               ">= 1.2x", capacity_["ceiling_multiple"] >= 1.2, "x"),
        target("track, 100 ms latency: share of the 75,000 objects/s ceiling", latency["ceiling_share"], ">= 0.9",
               latency["ceiling_share"] >= 0.9),
        target("track, 100 ms latency: 429s drawn by our client", latency["responses_429"], "0",
               latency["responses_429"] == 0),
        target("track: publisher vs raw transport", raw["ratio"], ">= 0.8x", raw["ratio"] >= 0.8, "x"),
    ]


def markdown(section: dict[str, Any]) -> list[str]:
    capacity_, latency, raw = section["capacity"], section["latency"], section["raw"]
    return [
        "", "/users/track (attribute sync of new users, 75 objects of 3 attributes per request), into the "
        "benchmark's sink (benchmarks/sink.py); seconds from the first request the sink received to the last "
        f"(the latency-bound run's whole process took {latency['wall_s']:.1f} s with start-up); publisher CPU "
        "from the process's own times, start-up included:", "",
        "| run | requests | seconds | objects/s | share of 75,000/s | 429s | publisher CPU ms / request |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| sink capacity, load generator, {capacity_['connections']} connections, 100 ms | "
        f"{capacity_['requests']:,} | {capacity_['seconds']:.1f} | {capacity_['objects_per_s']:,.0f} | "
        f"{capacity_['ceiling_multiple']:.0%} |  |  |",
        f"| publisher, 100 ms latency, limit enforced | {latency['requests']:,} | {latency['seconds']:.1f} | "
        f"{latency['objects_per_s']:,.0f} | {latency['ceiling_share']:.1%} | {latency['responses_429']} | "
        f"{latency['cpu_ms_per_request']:.2f} |",
        f"| publisher, no latency, no limit | {raw['requests']:,} | {raw['ours_s']:.1f} | "
        f"{raw['requests'] * OBJECTS_PER_REQUEST / raw['ours_s']:,.0f} |  |  | {raw['ours_cpu_ms_per_request']:.2f} |",
        f"| raw transport, same bodies, no latency | {raw['requests']:,} | {raw['raw_s']:.1f} | "
        f"{raw['requests'] * OBJECTS_PER_REQUEST / raw['raw_s']:,.0f} |  |  | {raw['raw_cpu_ms_per_request']:.2f} |",
    ]


def main() -> None:
    import argparse
    import secrets

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    keys = {name: "bench-" + secrets.token_hex(8) for name in ("partner", "import", "rest")}
    os.environ["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    work = HERE / "results" / "tmp_track"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    section = run(work, keys, SMOKE if args.smoke else FULL, print)
    print("\n".join(markdown(section)))
    for t in targets(section):
        print(t)


if __name__ == "__main__":
    main()
