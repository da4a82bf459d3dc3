"""Finding the warehouse the way dbt does: the project's profile and target
for the connection, and the manifest of the last dbt invocation for the
relation names of the models and state tables.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .engines import ENGINES, DuckDBEngine
from .ledger import STATE_TABLES, Ledger, Relations
from .profile import PostgresCredentials, Unsupported, load_profile

log = logging.getLogger(__name__)

PACKAGE = "cohort_sync"
DUCKDB_MEMORY_LIMIT_VAR = "COHORT_SYNC_DUCKDB_MEMORY_LIMIT"
DUCKDB_MEMORY_LIMIT = "64MB"
MODELS = {
    "changes": "cohort_sync_changes",
    "cohorts": "cohort_sync_cohorts",
    "membership": "cohort_sync_membership",
    "rejects": "cohort_sync_rejects",
    "attribute_changes": "cohort_sync_attribute_changes",
    "attribute_rows": "cohort_sync_attribute_rows",
    "event_changes": "cohort_sync_event_changes",
    "event_rows": "cohort_sync_event_rows",
}


class WarehouseError(RuntimeError):
    """The project, profile, manifest or connection cannot be used."""


class StaleManifestError(WarehouseError):
    """The manifest lacks relations this version reads: it is from an older version."""


@dataclass(frozen=True)
class Target:
    project_dir: Path
    profiles_dir: Path
    profile_name: str
    target_name: str
    adapter_type: str
    credentials: Any = field(repr=False)  # dbt's repr of them shows the password


def default_profiles_dir(project_dir: Path) -> Path:
    """dbt's rule: DBT_PROFILES_DIR, else the project dir if it has profiles.yml, else ~/.dbt."""
    if os.environ.get("DBT_PROFILES_DIR"):
        return Path(os.environ["DBT_PROFILES_DIR"])
    if (project_dir / "profiles.yml").exists():
        return project_dir
    return Path.home() / ".dbt"


def _project(project_dir: Path) -> dict[str, Any]:
    path = project_dir / "dbt_project.yml"
    if not path.exists():
        raise WarehouseError(f"no dbt_project.yml in {project_dir} (use --project-dir)")
    return yaml.safe_load(path.read_text()) or {}


def resolve_target(
    project_dir: str | Path = ".",
    profiles_dir: str | Path | None = None,
    profile: str | None = None,
    target: str | None = None,
) -> Target:
    """The project's profile, loaded as `dbt run` loads it.

    The profile and target named here, else by DBT_PROFILE and DBT_TARGET
    (dbt's command line reads them, DBT_ENGINE_ names first), else by the
    project and the profile. Read without dbt where profile.py reads it
    exactly (a DuckDB or PostgreSQL target, env_var() and dbt's filters),
    else by dbt's own loader.
    """
    project_dir = Path(project_dir).resolve()
    _project(project_dir)
    profiles_path = Path(profiles_dir).resolve() if profiles_dir else default_profiles_dir(project_dir)
    profile = profile if profile is not None else dbt_env("PROFILE")
    target = target if target is not None else dbt_env("TARGET")
    try:
        loaded: Any = load_profile(project_dir, profiles_path, profile, target)
    except Unsupported as reason:
        log.info("reading the profile with dbt's loader: %s", reason)
        loaded = load_profile_with_dbt(project_dir, profiles_path, profile, target)
    return Target(
        project_dir=project_dir,
        profiles_dir=profiles_path,
        profile_name=loaded.profile_name,
        target_name=loaded.target_name,
        adapter_type=loaded.credentials.type,
        credentials=loaded.credentials,
    )


def dbt_env(name: str) -> str | None:
    """The value dbt's command line takes from DBT_ENGINE_<name>, else DBT_<name>."""
    return os.environ.get(f"DBT_ENGINE_{name}") or os.environ.get(f"DBT_{name}") or None


def load_profile_with_dbt(project_dir: Path, profiles_path: Path, profile: str | None, target: str | None) -> Any:
    """dbt's own loader, by dbt's own steps (dbt.cli.requires).

    An invocation context holding the environment, which env_var() reads
    (without one, the renderer fails, and a password it fails on is kept as
    its literal text), the flags naming the profiles directory, then
    dbt.config.runtime.load_profile.
    """
    from argparse import Namespace

    from dbt.config.runtime import load_profile as dbt_load_profile
    from dbt.flags import set_from_args
    from dbt_common.clients.system import get_env
    from dbt_common.context import set_invocation_context
    from dbt_common.exceptions import DbtRuntimeError

    set_invocation_context(get_env())
    set_from_args(Namespace(profiles_dir=str(profiles_path)), None)
    try:
        return dbt_load_profile(str(project_dir), {}, profile_name_override=profile, target_override=target)
    except DbtRuntimeError as exc:
        raise WarehouseError(f"the profile in {profiles_path / 'profiles.yml'}: {exc}") from None


def manifest_path(project_dir: Path) -> Path:
    """target/manifest.json of the project (or its target-path)."""
    return project_dir / _project(project_dir).get("target-path", "target") / "manifest.json"


def relations_from_manifest(project_dir: Path) -> Relations:
    """Relation names as dbt rendered them in the last invocation's manifest."""
    path = manifest_path(project_dir)
    if not path.exists():
        raise WarehouseError(
            f"no manifest at {path}: run `dbt run` (or `dbt build`) in the project first"
        )
    with path.open("rb") as handle:
        manifest = json.load(handle, object_hook=_node_names)
    names: dict[str, str] = {}
    for node in manifest.get("nodes", {}).values():
        if node.get("package_name") == PACKAGE and node.get("resource_type") == "model":
            for key, model in MODELS.items():
                if node.get("name") == model:
                    names[key] = node["relation_name"]
    for source in manifest.get("sources", {}).values():
        if source.get("package_name") == PACKAGE and source.get("source_name") == PACKAGE:
            if source.get("name") in STATE_TABLES:
                names[source["name"]] = source["relation_name"]
    missing = [key for key in (*MODELS, *STATE_TABLES) if key not in names]
    if missing:
        raise StaleManifestError(
            f"the manifest at {path} lacks cohort_sync's {', '.join(missing)}: run `dbt deps` and "
            "`dbt run` in the project, with the same version of the cohort_sync dbt package as this "
            "cohort-sync (the manifest is from an older version, or the package is not installed)"
        )
    return Relations(**names)


#: What relations_from_manifest reads of a node or source.
NODE_KEYS = ("package_name", "resource_type", "name", "relation_name", "source_name")


def _node_names(node: dict[str, Any]) -> dict[str, Any]:
    """A manifest's node (or source, macro...) as its names only: a large
    project's manifest is then held in memory as a small one."""
    if "resource_type" not in node:
        return node
    return {key: node[key] for key in NODE_KEYS if key in node}


def open_ledger(target: Target) -> Ledger:
    """A ledger on the target's warehouse: DuckDB directly, PostgreSQL
    directly when profile.py read its credentials (as dbt-postgres connects),
    other engines through their dbt adapter's own connection code (every
    method the adapter supports: session, thrift, http, odbc...)."""
    relations = relations_from_manifest(target.project_dir)
    if target.adapter_type == "duckdb":
        return Ledger(DuckDBEngine(_open_duckdb(target)), relations)
    engine = ENGINES.get(target.adapter_type)
    if engine is None:
        raise WarehouseError(
            f"cohort-sync publish supports {', '.join(sorted(ENGINES))} targets; target "
            f"'{target.target_name}' is {target.adapter_type}"
        )
    if isinstance(target.credentials, PostgresCredentials):
        return Ledger(engine(_open_postgres(target)), relations)
    return Ledger(engine(_open_with_adapter(target)), relations)


def _open_postgres(target: Target) -> Any:
    """A psycopg2 connection as dbt-postgres's PostgresConnectionManager.open
    makes it: the same arguments, `set role`, and its retries (retries + 1
    attempts on an OperationalError, 0, 1, 4... seconds apart)."""
    import psycopg2

    credentials = target.credentials
    options: dict[str, Any] = {}
    if credentials.keepalives_idle:  # dbt passes no 0 (an invalid setsockopt)
        options["keepalives_idle"] = credentials.keepalives_idle
    if credentials.search_path is not None and credentials.search_path != "":
        options["options"] = "-c search_path={}".format(credentials.search_path.replace(" ", "\\ "))
    if credentials.sslmode:
        options["sslmode"] = credentials.sslmode
    for name in ("sslcert", "sslkey", "sslrootcert"):
        if getattr(credentials, name) is not None:
            options[name] = getattr(credentials, name)
    if credentials.application_name:
        options["application_name"] = credentials.application_name
    attempt = 0
    while True:
        try:
            handle = psycopg2.connect(
                dbname=credentials.database, user=credentials.user, host=credentials.host,
                password=credentials.password, port=credentials.port,
                connect_timeout=credentials.connect_timeout, **options,
            )
            if credentials.autocommit:
                handle.autocommit = True
            if credentials.role:
                handle.cursor().execute(f"set role {credentials.role}")
            return handle
        except psycopg2.OperationalError as exc:
            if attempt >= credentials.retries:
                error = exc
                break
            time.sleep(attempt * attempt)
            attempt += 1
        except Exception as exc:  # noqa: BLE001 - as dbt: any other error is final
            error = exc
            break
    raise WarehouseError(
        f"cannot connect to target '{target.target_name}' ({target.adapter_type}): "
        f"{redact_credentials(str(error), credentials)}"
    ) from None


def _open_with_adapter(target: Target) -> Any:
    from dbt.adapters.contracts.connection import Connection
    from dbt.adapters.factory import get_adapter_class_by_name

    manager = get_adapter_class_by_name(target.adapter_type).ConnectionManager
    try:
        connection = manager.open(Connection(type=target.adapter_type, name="cohort_sync", credentials=target.credentials))
    except Exception as exc:  # the adapter's own connection error
        raise WarehouseError(
            f"cannot connect to target '{target.target_name}' ({target.adapter_type}): "
            f"{redact_credentials(str(exc), target.credentials)}"
        ) from None
    return connection.handle


SECRET_FIELDS = ("password", "token", "private_key", "private_key_passphrase", "client_secret", "keyfile_json")


def redact_credentials(message: str, credentials: Any) -> str:
    """The message with any secret of the profile's credentials masked."""
    for name in SECRET_FIELDS:
        value = getattr(credentials, name, None)
        if isinstance(value, str) and len(value) >= 4:
            message = message.replace(value, "****")
    return message


def _open_duckdb(target: Target) -> Any:
    import duckdb

    path = target.credentials.path
    if path != ":memory:" and not os.path.isabs(path):
        path = str(target.project_dir / path)
    # The publisher reads pages and writes small batches: a small buffer pool
    # keeps its memory flat however large the plan (the blocks it read stay
    # cached up to the limit: at 128MB the peak grew 1.4x from 1M to 10M
    # changes, at 64MB 1.1x, and no run was slower).
    config = {"memory_limit": os.environ.get(DUCKDB_MEMORY_LIMIT_VAR, DUCKDB_MEMORY_LIMIT)}
    try:
        return duckdb.connect(path, config=config)
    except duckdb.IOException as exc:
        holder = re.search(r"\(PID (\d+)\)", str(exc))
        if "lock" not in str(exc).lower():
            raise WarehouseError(f"cannot open the DuckDB file {path}: {exc}") from None
        raise WarehouseError(
            f"the DuckDB file {path} is in use by another process"
            f"{' (PID ' + holder.group(1) + ')' if holder else ''}: another cohort-sync publish "
            "or dbt run is in progress on this target; try again when it ends"
        ) from None
