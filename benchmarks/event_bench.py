"""Event sync at scale (issue 15, item 4): a run's cost grows with the new
events, not with the model's history, and the publisher's memory stays flat.

An event sync (kind event, two properties) over a model of H historical
events at a constant rate (the largest history spans `history_days`, a
smaller one the same rate over fewer days), whose acknowledged history is
seeded by SQL as the product leaves it after two earlier runs (decision
0015): two run_history rows with event_watermark W and W - 1 day and their
horizons (watermark less twice the lookback), and the ledger
cohort_sync_event_state holding every id from the older horizon on (a run
prunes to the horizon recorded before it). Publishing millions of events for
real would take too long; the seeded state is what publishing them would
have left. Then N new events after W are added, and one real incremental
run is measured: `dbt run` planning (its node timings), then `cohort-sync
publish` as its own process into the local endpoint (wall time, CPU time
and peak RSS). The endpoint must have received exactly the new events,
each once, and the ledger must hold them.

    python benchmarks/event_bench.py            # the full run
    python benchmarks/event_bench.py --smoke    # tiny sizes, to keep it working
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
from bench import Bench, Endpoint

from tests.measure import run_measured
from tests.sync_project import SyncProject

SYNC = "app_events"
LOOKBACK_DAYS = 3  # the default lookback (3d)
DAY_MS = 86_400_000

FULL = {
    # (history, new events) per run; the 1M and 10M runs with the same new events are the side-by-side pair
    "runs": [[1_000_000, 10_000], [10_000_000, 10_000], [10_000_000, 100_000]],
    "history_days": 100,  # the largest history's span: 100,000 events a day
    "users": 1_000_000,
    "repeat": 2,  # the runs with the fewest new events, alternating
}
SMOKE = {
    "runs": [[2_000, 100], [20_000, 100], [20_000, 1_000]],
    "history_days": 100,
    "users": 5_000,
    "repeat": 1,
}


def cpu_of_children() -> float:
    """User + system CPU seconds of this process's children reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class EventBench(Bench):
    """An event sync in its own project and DuckDB file."""

    def __init__(self, root: Path, keys: dict[str, str], config: dict[str, Any]) -> None:
        self.keys = keys
        self.config = config
        self.project = SyncProject(root)
        self.project.declare([], cohort_sync_event_syncs=[{
            "model": SYNC, "kind": "event", "event_id": "event_id", "name": "order_placed",
            "time": "occurred_at", "properties": {"ref": "event_id", "amount": "amount"},
            "start_at": "2020-01-01", "create_users": True, "max_events": 1_000_000,
            "identifiers": ["external_id"]}])
        self.db = str(self.project.warehouse.database)
        largest = max(history for history, _ in config["runs"])
        self.step_ms = config["history_days"] * DAY_MS // largest  # one event every step_ms, whatever the history
        # the newest historical event, on the hour two days ago: the new ones follow it, all in the past
        self.watermark = (int(time.time() * 1000) - 2 * DAY_MS) // 3_600_000 * 3_600_000

    def braze_env(self, endpoint: Endpoint) -> dict[str, str]:
        return {**super().braze_env(endpoint), "BRAZE_REST_API_KEY": self.keys["rest"]}

    # -- data -------------------------------------------------------------

    def events_sql(self, prefix: str, first_ms: int, count: int) -> str:
        """`count` events one step apart from `first_ms`, for users spread over the user base."""
        return f"""select '{prefix}' || i as event_id,
                       'u' || lpad(cast((i * 7919 + {len(prefix)}) % {self.config['users']} as varchar), 8, '0')
                           as external_id,
                       epoch_ms(cast({first_ms} + i * {self.step_ms} as bigint)) as occurred_at,
                       cast(i % 10000 as double) / 100 as amount
                   from range({count}) as t(i)"""

    def set_history(self, histories: list[int]) -> None:
        """raw.history_<n> for each size: n events ending at the watermark, time-ordered (as appended)."""
        with duckdb.connect(self.db) as con:
            con.execute("create schema if not exists raw")
            for size in histories:
                first = self.watermark - (size - 1) * self.step_ms
                con.execute(f"create or replace table raw.history_{size} as "
                            f"{self.events_sql('h', first, size)} order by occurred_at")

    def set_run(self, history: int, new: int) -> None:
        """The model: the history and `new` events after the watermark; the
        state as two earlier runs, which acknowledged the history, left it."""
        lookback = LOOKBACK_DAYS * DAY_MS
        with duckdb.connect(self.db) as con:
            con.execute(f"create or replace table raw.new_events as "
                        f"{self.events_sql('n', self.watermark + self.step_ms, new)}")
            for table in ("event_state", "event_inflight", "event_uncertain", "run_history", "delivery_log",
                          "rejected_changes", "lock"):
                con.execute(f"delete from cohort_sync_{table}")
            # the earlier runs: the one before last sent up to W - 1 day, the last one the day up to W
            runs = [("seed-1", self.watermark - DAY_MS, 2), ("seed-2", self.watermark, 1)]
            before = None
            for run_id, watermark, days_ago in runs:
                [(delivered, added)] = con.execute(
                    f"select count(*), count(*) filter (where epoch_ms(occurred_at) > ?) from raw.history_{history} "
                    "where epoch_ms(occurred_at) <= ?", [before if before is not None else -1, watermark]).fetchall()
                con.execute(
                    "insert into cohort_sync_run_history (run_id, cohort_id, cohort_name, entry_point, started_at, "
                    "finished_at, status, added, removed, requests, retries, resent_batches, members_after, "
                    "package_version, rejected, data_points, full_resync, event_watermark, late_events, "
                    "possibly_duplicated, possibly_lost, event_horizon) values (?, ?, ?, 'cli', "
                    "now() - to_days(?), now() - to_days(?), 'success', ?, 0, ?, 0, 0, ?, 'bench', 0, ?, false, "
                    "?, 0, 0, 0, ?)",
                    [run_id, SYNC, SYNC, days_ago, days_ago, added, -(-added // 75), delivered, added, watermark,
                     watermark - 2 * lookback])
                before = watermark
            older_horizon = runs[0][1] - 2 * lookback
            con.execute(
                "insert into cohort_sync_event_state (sync_id, event_id, member_key, event_time_ms, outcome, run_id, "
                "acknowledged_at) select ?, event_id, 'external_id:' || external_id, epoch_ms(occurred_at), "
                "'acknowledged', case when epoch_ms(occurred_at) <= ? then 'seed-1' else 'seed-2' end, now() "
                f"from raw.history_{history} where epoch_ms(occurred_at) >= ?",
                [SYNC, runs[0][1], older_horizon])
        self.write_model(history)

    def write_model(self, history: int) -> None:
        """The sync's model: the history, then the new events (both time-ordered, as an append-only table)."""
        (self.project.root / "models" / f"{SYNC}.sql").write_text(
            f"select event_id, external_id, occurred_at, amount from raw.history_{history}\n"
            "union all\nselect event_id, external_id, occurred_at, amount from raw.new_events\n")

    # -- one run ----------------------------------------------------------

    def run_once(self, endpoint: Endpoint, history: int, new: int) -> dict[str, Any]:
        self.set_run(history, new)
        endpoint.reset()
        cpu = cpu_of_children()
        started = time.perf_counter()
        nodes = self.dbt("run", plan_only=True)
        dbt_wall, dbt_cpu = time.perf_counter() - started, cpu_of_children() - cpu
        with duckdb.connect(self.db) as con:
            [(read,)] = con.execute("select count(distinct event_id) from cohort_sync_event_rows").fetchall()
            [(late,)] = con.execute("select late_events from cohort_sync_cohorts where cohort_id = ?",
                                    [SYNC]).fetchall()
            [(planned,)] = con.execute("select count(distinct event_id) from cohort_sync_event_changes").fetchall()
            [(held_before,)] = con.execute("select count(*) from cohort_sync_event_state").fetchall()
        # the window (a lookback behind W) and its late band (another), then the new events: not the history
        window = 2 * LOOKBACK_DAYS * DAY_MS // self.step_ms + 1
        assert planned == new and read == window + new and late == 0, (planned, read, late, window, new)
        cpu = cpu_of_children()
        measured = run_measured(self.project.command("cohort-sync", "publish"), cwd=self.project.root,
                                env={**os.environ, **self.braze_env(endpoint)})
        publish_cpu = cpu_of_children() - cpu
        if measured.returncode != 0:
            raise RuntimeError(f"cohort-sync publish failed:\n{measured.stdout[-2000:]}\n{measured.stderr[-2000:]}")
        sent = self.check_delivered(endpoint, new)
        with duckdb.connect(self.db) as con:
            [(acknowledged,)] = con.execute(
                "select count(*) from cohort_sync_event_state where event_id like 'n%'").fetchall()
            [(added, members_after)] = con.execute(
                "select added, members_after from cohort_sync_run_history where run_id not like 'seed-%'").fetchall()
            [(held_after,)] = con.execute("select count(*) from cohort_sync_event_state").fetchall()
        assert acknowledged == added == new, (acknowledged, added, new)
        assert members_after == history + new, (members_after, history, new)
        assert held_after == window + new, (held_after, window, new)  # pruned to the last run's horizon
        models_s = sum(nodes.values())
        return {
            "history": history, "new": new, "history_days": history * self.step_ms / DAY_MS,
            "rows_read": read, "ledger_before": held_before, "ledger_after": held_after,
            "dbt_wall_s": dbt_wall, "dbt_cpu_s": dbt_cpu, "models_s": models_s,
            "event_models_s": {n: s for n, s in nodes.items() if "event" in n},
            "publish_s": measured.seconds, "publish_cpu_s": publish_cpu, "peak_rss_mb": measured.peak_mb,
            "requests": sent, "publish_cpu_ms_per_request": 1000 * publish_cpu / sent,
            "run_s": models_s + measured.seconds, "run_cpu_s": dbt_cpu + publish_cpu,
            "run_ms_per_1k_new": 1000 * 1000 * (models_s + measured.seconds) / new,
        }

    def check_delivered(self, endpoint: Endpoint, new: int) -> int:
        """Exactly the new events reached the endpoint, each once; returns its track requests."""
        track = [r for r in endpoint.requests() if r.get("endpoint") == "track"]
        assert all(r["status"] == 201 and not r["errors"] for r in track), [r for r in track if r["status"] != 201][:3]
        profiles = requests.get(f"{endpoint.url}/_local/profiles", timeout=120).json()
        refs = [e["properties"]["ref"] for p in profiles for e in p["events"]]
        assert len(refs) == new and set(refs) == {f"n{i}" for i in range(new)}, (len(refs), len(set(refs)), new)
        return len(track)


def run(work: Path, keys: dict[str, str], rest_endpoint: Endpoint, config: dict[str, Any],
        step: Callable[[str], None]) -> dict[str, Any]:
    """The report's event section: a measured incremental run per (history, new events); the runs with
    the fewest new events (the side-by-side pair) `repeat` times, alternating: of each, the attempt
    that took the least CPU time, with the largest peak memory of all its attempts."""
    bench = EventBench(work / "events", keys, config)
    histories = sorted({history for history, _ in config["runs"]})
    step(f"event sync: generating {', '.join(f'{h:,}' for h in histories)} historical events")
    bench.set_history(histories)
    bench.write_model(histories[0])
    bench.ensure_state_tables()
    fewest = min(new for _, new in config["runs"])
    attempts: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for attempt in range(config.get("repeat", 1)):
        for history, new in config["runs"]:
            if attempt and new != fewest:
                continue
            step(f"event sync: {history:,} historical events, {new:,} new"
                 + (f" (again, {attempt + 1})" if attempt else ""))
            attempts.setdefault((history, new), []).append(bench.run_once(rest_endpoint, history, new))
    runs = []
    for measured in attempts.values():
        best = dict(min(measured, key=lambda r: r["run_cpu_s"]))
        best.update(peak_rss_mb=max(r["peak_rss_mb"] for r in measured), attempts=len(measured),
                    run_s_each=[r["run_s"] for r in measured], run_cpu_s_each=[r["run_cpu_s"] for r in measured],
                    peak_rss_mb_each=[r["peak_rss_mb"] for r in measured])
        runs.append(best)
    return {"config": config, "lookback_days": LOOKBACK_DAYS, "events_per_day": DAY_MS // bench.step_ms,
            "seeded": "the ledger and two run_history rows (watermark, horizon) written by SQL as two earlier "
                      "runs that acknowledged the history leave them; the new events published for real",
            "runs": runs, "marginal": marginal(runs)}


def marginal(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What each further new event costs at the largest history: between its fewest and most new events
    (the rest of a run is the window's read and the processes' start, whatever the new events)."""
    largest = max(r["history"] for r in runs)
    same = sorted((r for r in runs if r["history"] == largest), key=lambda r: r["new"])
    if len(same) < 2 or same[0]["new"] == same[-1]["new"]:
        return None
    low, high = same[0], same[-1]
    more = high["new"] - low["new"]
    return {"history": largest, "from_new": low["new"], "to_new": high["new"],
            "run_ms_per_1k_new": 1e6 * (high["run_s"] - low["run_s"]) / more,
            "run_cpu_ms_per_1k_new": 1e6 * (high["run_cpu_s"] - low["run_cpu_s"]) / more,
            "models_ms_per_1k_new": 1e6 * (high["models_s"] - low["models_s"]) / more,
            "publish_ms_per_1k_new": 1e6 * (high["publish_s"] - low["publish_s"]) / more,
            "publish_cpu_ms_per_request": 1000 * (high["publish_cpu_s"] - low["publish_cpu_s"])
                                          / (high["requests"] - low["requests"]),
            "fixed_run_s": low["run_s"] - low["new"] * (high["run_s"] - low["run_s"]) / more,
            "fixed_run_cpu_s": low["run_cpu_s"] - low["new"] * (high["run_cpu_s"] - low["run_cpu_s"]) / more}


def _pair(section: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The smallest and the largest history with the same (fewest) new events."""
    runs = section["runs"]
    fewest = min(r["new"] for r in runs)
    same = sorted((r for r in runs if r["new"] == fewest), key=lambda r: r["history"])
    return same[0], same[-1]


def targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    small, large = _pair(section)
    peak = max(r["peak_rss_mb"] for r in section["runs"] if r["history"] == large["history"])
    memory = large["peak_rss_mb"] / small["peak_rss_mb"]
    # CPU time (both processes, every thread): what the run costs, less exposed to a shared machine's load
    timing = large["run_cpu_s"] / small["run_cpu_s"]

    def target(name: str, value: float, limit: str, met: bool, unit: str = "") -> dict[str, Any]:
        return {"target": name, "value": round(value, 3), "limit": limit, "met": bool(met), "unit": unit}

    return [
        target(f"event sync: peak publisher memory at {large['history']:,} historical events", peak, "< 300 MB",
               peak < 300, "MB"),
        target(f"event sync: peak memory {small['history']:,} -> {large['history']:,} historical events", memory,
               "<= 1.2x", memory <= 1.2, "x"),
        target(f"event sync: run CPU time (dbt run + publish) {small['history']:,} -> {large['history']:,} "
               f"historical events, {large['new']:,} new", timing, "<= 1.5x", timing <= 1.5, "x"),
    ]


def markdown(section: dict[str, Any]) -> list[str]:
    lines = ["", f"Event sync ({section['events_per_day']:,} events a day, lookback {section['lookback_days']}d; "
             f"history seeded: {section['seeded']}): one incremental run, `dbt run` planning (its models' "
             "seconds) then `cohort-sync publish` in its own process into the local endpoint, which received "
             "exactly the new events, each once. Run s = models + publish (wall); run CPU s = both processes:", "",
             "| history | days | new | rows read | ledger | models s | publish s | run s | run CPU s | "
             "publish CPU ms / request | peak RSS (MB) | run ms / 1k new |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in section["runs"]:
        lines.append(f"| {r['history']:,} | {r['history_days']:.0f} | {r['new']:,} | {r['rows_read']:,} | "
                     f"{r['ledger_before']:,} | {r['models_s']:.2f} | {r['publish_s']:.2f} | {r['run_s']:.2f} | "
                     f"{r['run_cpu_s']:.2f} | {r['publish_cpu_ms_per_request']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['run_ms_per_1k_new']:.0f} |")
    small, large = _pair(section)
    lines += ["", f"With {large['new']:,} new events, {small['history']:,} -> {large['history']:,} historical "
              f"events: run {large['run_s'] / small['run_s']:.2f}x (wall), "
              f"{large['run_cpu_s'] / small['run_cpu_s']:.2f}x (CPU)."]
    m = section.get("marginal")
    if m:
        lines[-1] += (f" At {m['history']:,} historical events each further 1,000 new events cost "
                      f"{m['run_ms_per_1k_new']:.0f} ms of a run (models {m['models_ms_per_1k_new']:.0f} ms, "
                      f"publish {m['publish_ms_per_1k_new']:.0f} ms; {m['run_cpu_ms_per_1k_new']:.0f} ms of CPU; "
                      f"{m['publish_cpu_ms_per_request']:.1f} ms of publisher CPU per request of 75 events), over "
                      f"a fixed {m['fixed_run_s']:.1f} s ({m['fixed_run_cpu_s']:.1f} s of CPU) per run: reading "
                      "the window, which grows with the events per lookback, not with the history, and starting "
                      "the processes.")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to keep the benchmark working")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    config = SMOKE if args.smoke else FULL
    work = args.out / "tmp_events"
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
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
    section["seconds"] = time.perf_counter() - started
    section["targets"] = targets(section)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "events.json").write_text(json.dumps(section, indent=2) + "\n")
    print("\n".join(markdown(section)))
    for t in section["targets"]:
        print(f"{t['target']}: {t['value']}{t['unit']} ({t['limit']}): {'met' if t['met'] else 'NOT met'}")
    print(f"{section['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
