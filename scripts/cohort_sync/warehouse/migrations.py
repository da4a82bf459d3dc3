"""State tables that migrate themselves, from the CLI too.

The steps are the dbt package's (`state_migrations()` in
macros/migrations.sql): `dbt run` applies them in its on-run-start hook.
A `cohort-sync` command may run before any `dbt run` of the new version,
so it first reads which steps the warehouse records; when this version's
last step is not among them (or the manifest predates this version), it
applies them the way the hook does, with `dbt run-operation
cohort_sync.migrate_state_tables` on the same project, profile and
target, and opens the warehouse again.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from .ledger import Ledger
from .target import (
    PACKAGE,
    StaleManifestError,
    Target,
    WarehouseError,
    manifest_path,
    open_ledger,
    redact_credentials,
)

log = logging.getLogger(__name__)

#: The last step of state_migrations() in macros/migrations.sql: what this
#: version reads and writes (a unit test keeps the two equal).
STATE_SCHEMA_STEP = "0008_event_syncs"
MIGRATE_MACRO = "cohort_sync.migrate_state_tables"
MIGRATE_TIMEOUT_SECONDS = 1800


class StateBehindError(WarehouseError):
    """The project's cohort_sync dbt package is older than this cohort-sync."""


def open_current_ledger(target: Target, migrate: Callable[[Target], None] | None = None) -> Ledger:
    """A ledger on the target's warehouse, its state tables migrated first
    when they are behind this version (a quick read when they are not)."""
    try:
        ledger = open_ledger(target)
    except StaleManifestError:
        before = None  # the project's last dbt invocation was of an older version
    else:
        before = _applied(ledger)
        if STATE_SCHEMA_STEP in before:
            return ledger
        ledger.close()
    (migrate or run_migrations)(target)
    ledger = open_ledger(target)
    after = _applied(ledger)
    if STATE_SCHEMA_STEP not in after:
        ledger.close()
        raise StateBehindError(
            f"the state tables of target '{target.target_name}' were migrated as far as the project's "
            f"cohort_sync dbt package goes ({max(after, default='no step')}), but this cohort-sync needs "
            f"{STATE_SCHEMA_STEP}: run `dbt deps` so that the project installs the cohort_sync dbt package "
            "of this cohort-sync's version, then `dbt run`"
        )
    if before is None:
        log.warning("the project's manifest predated this cohort-sync: ran `dbt run-operation %s`, which "
                    "read the project again and migrated any state table behind", MIGRATE_MACRO)
    elif after - before:
        log.warning("migrated the state tables of target '%s': %s",
                    target.target_name, ", ".join(sorted(after - before)))
    return ledger


def _applied(ledger: Ledger) -> set[str]:
    try:
        return ledger.applied_steps()
    except BaseException:
        ledger.close()
        raise


def run_migrations(target: Target) -> None:
    """`dbt run-operation cohort_sync.migrate_state_tables` on the target.

    DuckDB: in a dbt process of its own, because dbt-duckdb keeps the file
    open in the process that ran it. Elsewhere in this process (Spark's
    session method has one JVM per process, and its metastore with it).
    The state schema is the one the project's last dbt invocation used
    (var cohort_sync_state_schema may have come from its command line).
    """
    arguments = [
        "run-operation", MIGRATE_MACRO, "--quiet", "--no-use-colors",
        "--project-dir", str(target.project_dir), "--profiles-dir", str(target.profiles_dir),
        "--profile", target.profile_name, "--target", target.target_name,
    ]
    schema = state_schema(target.project_dir)
    if schema:
        arguments += ["--vars", json.dumps({"cohort_sync_state_schema": schema})]
    if target.adapter_type == "duckdb":
        try:
            done = subprocess.run(
                [sys.executable, "-c", "from dbt.cli.main import cli; cli()", *arguments],
                cwd=target.project_dir, capture_output=True, text=True, timeout=MIGRATE_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired:
            ok, reason = False, f"dbt did not finish within {MIGRATE_TIMEOUT_SECONDS} s"
        else:
            ok, reason = done.returncode == 0, (done.stdout + done.stderr).strip()
    else:
        from dbt.cli.main import dbtRunner

        result = dbtRunner().invoke(arguments)
        ok, reason = result.success, str(result.exception or "")
    if ok:
        return
    reason = redact_credentials(" ".join((reason or "see dbt's log in the project's logs/").split()), target.credentials)
    if "could not find a macro" in reason:  # a dbt package from before 0.2.0
        raise StateBehindError(
            f"the project's cohort_sync dbt package has no {MIGRATE_MACRO}: it is older than this "
            f"cohort-sync ({__version__}). Run `dbt deps` so that the project installs the cohort_sync dbt "
            "package of this version, then `dbt run`"
        )
    raise WarehouseError(
        f"could not migrate the state tables of target '{target.target_name}' "
        f"(dbt run-operation {MIGRATE_MACRO}): {reason[-800:]}"
    )


def state_schema(project_dir: Path) -> str | None:
    """The state tables' schema in the project's manifest, if it has one."""
    try:
        manifest = json.loads(manifest_path(project_dir).read_text())
    except (OSError, ValueError):
        return None
    for source in manifest.get("sources", {}).values():
        if source.get("package_name") == PACKAGE and source.get("name") == "published_state":
            return source.get("schema")
    return None
