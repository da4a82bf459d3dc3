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

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .ledger import Ledger
from .warehouse import StaleManifestError, Target, WarehouseError, open_ledger, redact_credentials

log = logging.getLogger(__name__)

#: The last step of state_migrations() in macros/migrations.sql: what this
#: version reads and writes (a unit test keeps the two equal).
STATE_SCHEMA_STEP = "0004_run_history_package_version"
MIGRATE_MACRO = "cohort_sync.migrate_state_tables"


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
    """
    arguments = [
        "run-operation", MIGRATE_MACRO, "--quiet",
        "--project-dir", str(target.project_dir), "--profiles-dir", str(target.profiles_dir),
        "--profile", target.profile_name, "--target", target.target_name,
    ]
    if target.adapter_type == "duckdb":
        dbt = Path(sys.executable).with_name("dbt")
        done = subprocess.run([str(dbt) if dbt.exists() else "dbt", *arguments], cwd=target.project_dir,
                              capture_output=True, text=True)
        ok, reason = done.returncode == 0, (done.stdout + done.stderr).strip()
    else:
        from dbt.cli.main import dbtRunner

        result = dbtRunner().invoke(arguments)
        ok, reason = result.success, str(result.exception or "")
    if not ok:
        reason = " ".join((reason or "see dbt's log in the project's logs/").split())
        raise WarehouseError(
            f"could not migrate the state tables of target '{target.target_name}' "
            f"(dbt run-operation {MIGRATE_MACRO}): {redact_credentials(reason, target.credentials)[:800]}"
        )
