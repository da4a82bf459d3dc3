"""A throwaway dbt project that installs cohort_sync with `local:` and
declares audiences read from tables the test writes, run with dbtRunner."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import yaml
from dbt.cli.main import dbtRunner, dbtRunnerResult

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


class SyncProject:
    def __init__(self, root: Path, cohorts: list[dict[str, Any]] | None = None) -> None:
        self.root = root
        self.database = root / "warehouse.duckdb"
        root.mkdir(parents=True, exist_ok=True)
        (root / "models").mkdir(exist_ok=True)
        (root / "packages.yml").write_text(yaml.safe_dump({"packages": [{"local": str(REPO)}]}))
        (root / "profiles.yml").write_text(yaml.safe_dump({
            "sync_test": {
                "target": "dev",
                "outputs": {"dev": {"type": "duckdb", "path": str(self.database), "threads": 1}},
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
        """(Re)write the raw table behind the audience model `model`."""
        types = types or {}
        names = list(columns)
        select = ", ".join(
            f"unnest(?::{types.get(name, 'varchar')}[]) as {name}" for name in names
        )
        with duckdb.connect(str(self.database)) as con:
            con.execute("create schema if not exists raw")
            con.execute(
                f"create or replace table raw.{model} as select {select}",
                [list(columns[name]) for name in names],
            )
        (self.root / "models" / f"{model}.sql").write_text(f"select * from raw.{model}\n")

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

    def run(self, vars: dict[str, Any] | None = None) -> dbtRunnerResult:
        result = self.dbt("run", vars=vars)
        return result

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with duckdb.connect(str(self.database)) as con:
            return con.execute(sql, list(params)).fetchall()

    def published(self, cohort_id: str) -> set[str]:
        return {
            row[0]
            for row in self.query(
                "select member_key from cohort_sync_published_state where cohort_id = ?", [cohort_id]
            )
        }

    def history(self) -> list[dict[str, Any]]:
        with duckdb.connect(str(self.database)) as con:
            cursor = con.execute("select * from cohort_sync_run_history order by started_at, cohort_id")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def failure_text(result: dbtRunnerResult) -> str:
    """Every error message a dbt invocation produced, as one string."""
    parts = [str(result.exception or "")]
    for node in getattr(result.result, "results", None) or []:
        if node.message:
            parts.append(str(node.message))
    return "\n".join(parts)
