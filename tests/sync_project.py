"""A throwaway dbt project that installs cohort_sync with `local:` and
declares audiences read from tables the test writes, run with dbtRunner,
on any engine of tests/warehouses.py (DuckDB by default)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import yaml
from dbt.cli.main import dbtRunner, dbtRunnerResult

from cohort_sync.cli import main as cli_main
from cohort_sync.warehouse.engines import DuckDBEngine
from cohort_sync.warehouse.ledger import Ledger
from cohort_sync.warehouse.target import open_ledger, relations_from_manifest, resolve_target
from tests.warehouses import Warehouse

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


class SyncProject:
    def __init__(
        self,
        root: Path,
        cohorts: list[dict[str, Any]] | None = None,
        warehouse: Callable[[Path], Warehouse] = Warehouse,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.warehouse = warehouse(root)
        (root / "models").mkdir(exist_ok=True)
        (root / "packages.yml").write_text(yaml.safe_dump({"packages": [{"local": str(REPO)}]}))
        (root / "profiles.yml").write_text(yaml.safe_dump({
            "sync_test": {
                "target": "dev",
                "outputs": {"dev": self.warehouse.output()},
            }
        }))
        self.declare(cohorts or [])
        self.dbt("deps")

    def declare(self, cohorts: list[dict[str, Any]], **extra_vars: Any) -> None:
        (self.root / "dbt_project.yml").write_text(yaml.safe_dump({
            "name": "sync_test",
            "version": "1.0.0",
            "config-version": 2,
            "profile": "sync_test",
            "model-paths": ["models"],
            "vars": {"cohort_sync_cohorts": cohorts, **extra_vars},
        }, sort_keys=False))

    def set_audience(
        self,
        model: str,
        columns: dict[str, Sequence[Any]],
        types: dict[str, str] | None = None,
    ) -> None:
        """(Re)write the raw table behind the audience model `model` (types: string, bigint, int)."""
        self.warehouse.load(model, columns, types or {})
        (self.root / "models" / f"{model}.sql").write_text(f"select * from {self.warehouse.raw_schema}.{model}\n")

    def dbt(self, *args: str, vars: dict[str, Any] | None = None) -> dbtRunnerResult:
        command = [*args, "--project-dir", str(self.root), "--profiles-dir", str(self.root)]
        if vars:
            command += ["--vars", json.dumps(vars)]
        return dbtRunner().invoke(command)

    def command(self, *args: str) -> list[str]:
        """`dbt ...` or `cohort-sync ...` as a command line for this project."""
        return [str(BIN / args[0]), *args[1:], "--project-dir", str(self.root), "--profiles-dir", str(self.root)]

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run `dbt ...` or `cohort-sync ...` as a separate process, as a scheduler would."""
        return subprocess.run(self.command(*args), cwd=self.root, capture_output=True, text=True, timeout=timeout)

    def publish_killed(self, reached: Callable[[], bool], rng: random.Random, timeout: float = 60) -> str:
        """Start `cohort-sync publish` as its own process, SIGKILL it once
        `reached()` holds (and up to 50 ms more, at random), and return the id
        of the dead run, which still holds the lock."""
        process = subprocess.Popen(self.command("cohort-sync", "publish"), cwd=self.root,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not reached():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait()
        [(run_id,)] = self.query("select run_id from cohort_sync_lock")
        return run_id

    def run(self, vars: dict[str, Any] | None = None) -> dbtRunnerResult:
        return self.dbt("run", vars=vars)

    def sync(self, *publish_args: str, vars: dict[str, Any] | None = None) -> bool:
        """What a scheduler runs: `dbt run`, then `cohort-sync publish` where dbt does not publish.

        The CLI runs in this process, so on Spark it shares the test's JVM.
        """
        result = self.run(vars=vars)
        if not result.success or self.warehouse.publishes_in_dbt:
            return result.success
        return cli_main(["publish", *publish_args, "--project-dir", str(self.root),
                         "--profiles-dir", str(self.root)]) == 0

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Rows of `sql` in the project's schema (`?` placeholders)."""
        return self.warehouse.query(sql, params)

    def published(self, cohort_id: str) -> set[str]:
        return {
            row[0]
            for row in self.query(
                "select member_key from cohort_sync_published_state where cohort_id = ?", [cohort_id]
            )
        }

    def ledger(self) -> Ledger:
        """The publisher's ledger on the project's warehouse (on DuckDB, a connection of
        the test process, as the in-process dbt runs keep theirs open)."""
        if self.warehouse.name == "duckdb":
            engine = DuckDBEngine(duckdb.connect(str(self.warehouse.database)))
            return Ledger(engine, relations_from_manifest(self.root))
        return open_ledger(resolve_target(self.root, self.root))

    def history(self) -> list[dict[str, Any]]:
        names, rows = self.warehouse.columns("select * from cohort_sync_run_history order by started_at, cohort_id")
        return [dict(zip(names, row, strict=True)) for row in rows]


def failure_text(result: dbtRunnerResult) -> str:
    """Every error message a dbt invocation produced, as one string."""
    parts = [str(result.exception or "")]
    for node in getattr(result.result, "results", None) or []:
        if node.message:
            parts.append(str(node.message))
    return "\n".join(parts)
