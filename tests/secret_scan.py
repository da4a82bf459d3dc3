"""Where a leaked key would land: every file a run leaves in the project
(target/, logs/) and every column of every table in the warehouse."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import duckdb


def assert_nowhere(project, secrets: Iterable[str]) -> None:
    """No secret in the project's files (its installed packages aside) or in any DuckDB table."""
    secrets = list(secrets)
    scanned = 0
    for path in Path(project.root).rglob("*"):
        if path.is_file() and "dbt_packages" not in path.parts:
            content = path.read_bytes()
            scanned += 1
            for secret in secrets:
                assert secret.encode() not in content, f"{secret[:10]}... found in {path}"
    assert any(p.name == "manifest.json" for p in Path(project.root, "target").iterdir())
    assert any(Path(project.root, "logs").iterdir())
    assert scanned > 10

    with duckdb.connect(str(project.warehouse.database)) as con:
        tables = con.execute("select table_schema, table_name from information_schema.tables").fetchall()
        assert len(tables) >= 10
        for schema, table in tables:
            columns = [row[0] for row in con.execute(f'describe "{schema}"."{table}"').fetchall()]
            for column in columns:
                for secret in secrets:
                    hits = con.execute(
                        f'select count(*) from "{schema}"."{table}" where cast("{column}" as varchar) like ?',
                        [f"%{secret}%"],
                    ).fetchall()[0][0]
                    assert hits == 0, f"{secret[:10]}... found in {schema}.{table}.{column}"
