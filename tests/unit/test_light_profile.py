"""The profile read without dbt (warehouse/profile.py) is the one dbt reads:
each value renders as dbt's ProfileRenderer renders it, the target and its
credentials are dbt's, and whatever the light reader does not read exactly
goes to dbt's loader (with dbt's errors, and no secret in them)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cohort_sync.warehouse.profile import Renderer, Unsupported, load_profile
from cohort_sync.warehouse.target import WarehouseError, load_profile_with_dbt, resolve_target
from tests.warehouses import spark_output

ENV = {
    "CS_PORT": "5432", "CS_TRUE": "true", "CS_QUOTE": "it's", "CS_LIST": "[1, 2]", "CS_LINES": "x\ny",
    "CS_QUOTED": "'q'", "CS_SPACED": " 7", "CS_FLOAT": "1e3", "CS_NONE": "None", "CS_ZEROS": "0123",
    "CS_PATH": "warehouse.duckdb", "CS_BOOL": "True", "DBT_ENV_SECRET_CS_PW": "s3cr3t-pw",
}

#: Values the light reader renders itself, each exactly as dbt does (value and type).
RENDERED = [
    "5432", "plain", "'quoted'", '"dq"', "True", "true", "None", "null", "[1, 2]", "{'a': 1}", "1e3", "0123",
    " 7", "7 ", "x\n", "x\r\n", "a\r\nb", "", "a}}b", 5, 5.5, True, None,
    "{{ env_var('CS_PORT') }}", "{{env_var('CS_PORT')}}", '{{ env_var("CS_PORT") }}', "{{- env_var('CS_PORT') -}}",
    "{{ env_var('CS_PORT') | as_number }}", "{{ env_var('CS_PORT') | as_text }}", "{{ env_var('CS_PORT') | as_native }}",
    "{{ env_var('CS_BOOL') | as_bool }}", "{{ env_var('CS_TRUE') }}", "{{ env_var('CS_QUOTE') }}",
    "{{ env_var('CS_LIST') | as_native }}", "{{ env_var('CS_LIST') }}", "{{ env_var('CS_LINES') }}",
    "{{ env_var('CS_QUOTED') }}", "{{ env_var('CS_QUOTED') | as_native }}", "{{ env_var('CS_SPACED') | as_number }}",
    "{{ env_var('CS_FLOAT') | as_number }}", "{{ env_var('CS_NONE') | as_native }}", "{{ env_var('CS_ZEROS') | as_native }}",
    "{{ env_var('CS_UNSET', 'dflt') }}", "{{ env_var('CS_UNSET', '5') }}", "{{ env_var('CS_UNSET', '5') | as_number }}",
    "pre-{{ env_var('CS_PORT') }}-post", "{{ env_var('CS_PORT') }}{{ env_var('CS_TRUE') }}", "  {{ env_var('CS_PORT') }}  ",
    "{{ env_var('CS_PORT') }}\n", "{{ env_var('CS_PORT') | as_number }}\n", "{# a comment #}{{ env_var('CS_PORT') }}",
    "{{ env_var('DBT_ENV_SECRET_CS_PW') }}", "x{{ env_var('DBT_ENV_SECRET_CS_PW') }}y",
    "{{ 5 }}", "{{ '5' }}", "{{ 'a' }}", "{{ '5' | as_text }}", "{{ '5' | as_number }}",
]

#: Values it leaves to dbt: other Jinja, and every error (dbt's message; a password kept literal).
FALLS_BACK = [
    "{{ var('x', 'y') }}", "{{ env_var('CS_PORT') | int }}", "{% if true %}1{% endif %}", "{{ env_var }}",
    "{{ env_var('CS_PORT', default='1') }}", "{{ modules.datetime.date.today() }}", "{{ oops",
    "{{ env_var('CS_UNSET') }}", "{{ env_var('CS_TRUE') | as_number }}", "{{ env_var('CS_TRUE') | as_bool }}", "{{ env_var('CS_QUOTE') | as_bool }}",
    "{{ env_var('DBT_ENV_SECRET_CS_PW') | as_number }}", "DBT_ENV_SECRET",
    "{{ env_var('DBT_ENV_SECRET_CS_PW') }}{{ env_var('DBT_ENV_SECRET_CS_PW') }}",
]


@pytest.fixture
def env(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("DBT_TARGET", "DBT_ENGINE_TARGET", "DBT_PROFILE", "DBT_ENGINE_PROFILE", "DBT_PROFILES_DIR"):
        monkeypatch.delenv(name, raising=False)
    return dict(os.environ)


def dbt_rendered(value):
    from dbt.config.renderer import ProfileRenderer
    from dbt_common.clients.system import get_env
    from dbt_common.context import set_invocation_context

    set_invocation_context(get_env())
    try:
        return "ok", ProfileRenderer({}).render_value(value, ("host",))
    except Exception as exc:  # noqa: BLE001 - any error of dbt's
        return "error", type(exc).__name__


@pytest.mark.parametrize("value", RENDERED)
def test_a_value_renders_as_dbt_renders_it(env, value):
    ours, (outcome, theirs) = Renderer(env).render(value), dbt_rendered(value)
    assert (outcome, theirs) == ("ok", ours)
    assert type(ours) is type(theirs) or isinstance(ours, str) and isinstance(theirs, str)  # dbt's markers are str


@pytest.mark.parametrize("value", FALLS_BACK)
def test_other_jinja_and_every_error_are_left_to_dbt(env, value):
    with pytest.raises(Unsupported) as raised:
        Renderer(env).render(value)
    assert "s3cr3t" not in str(raised.value)


def write_project(root: Path, outputs: dict, target: str = "dev", profile: str = "sync_test") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dbt_project.yml").write_text(yaml.safe_dump({"name": "p", "version": "1.0.0", "config-version": 2,
                                                          "profile": profile}))
    (root / "profiles.yml").write_text(yaml.safe_dump({"sync_test": {"target": target, "outputs": outputs}}))
    return root


def both(root: Path, profile=None, target=None):
    """(light, dbt) as (profile, target, adapter type, threads, the credentials' path/database/schema)."""
    def summary(loaded):
        c = loaded.credentials
        return loaded.profile_name, loaded.target_name, c.type, loaded.threads, c.path, c.database, c.schema

    return summary(load_profile(root, root, profile, target)), summary(load_profile_with_dbt(root, root, profile, target))


DUCKDB_OUTPUTS = [
    {"type": "duckdb", "path": "warehouse.duckdb", "threads": 1},
    {"type": "duckdb", "path": "/abs/dir/my.db.duckdb"},
    {"type": "duckdb", "path": "{{ env_var('CS_PATH') }}", "threads": "{{ env_var('CS_UNSET', '4') | as_number }}"},
    {"type": "duckdb", "path": "sub/.hidden.duckdb", "schema": "analytics", "database": "hidden"},
    {"type": "duckdb"},
    {"type": "duckdb", "path": ":memory:", "keep_open": "{{ env_var('CS_BOOL') | as_bool }}"},
]


@pytest.mark.parametrize("output", DUCKDB_OUTPUTS)
def test_a_duckdb_target_is_read_as_dbt_reads_it(env, tmp_path, output):
    root = write_project(tmp_path, {"dev": output, "other": {"type": "duckdb", "path": "{{ env_var('CS_UNSET') }}"}})
    light, dbt = both(root)
    assert light == dbt


def test_profile_and_target_come_from_the_caller_then_dbt_variables_then_the_files(env, tmp_path, monkeypatch):
    outputs = {"dev": {"type": "duckdb", "path": "dev.duckdb"}, "prod": {"type": "duckdb", "path": "prod.duckdb"},
               "ci": {"type": "duckdb", "path": "ci.duckdb"}}
    root = write_project(tmp_path, outputs, target="{{ env_var('CS_TARGET', 'dev') }}",
                         profile="{{ env_var('CS_PROFILE', 'sync_test') }}")
    assert both(root)[0] == both(root)[1]
    assert resolve_target(root, root).credentials.path == "dev.duckdb"
    monkeypatch.setenv("CS_TARGET", "prod")
    assert resolve_target(root, root).credentials.path == "prod.duckdb"
    monkeypatch.setenv("DBT_TARGET", "ci")  # dbt's command line reads it, as `cohort-sync` does
    assert (resolve_target(root, root).target_name, resolve_target(root, root).credentials.path) == ("ci", "ci.duckdb")
    monkeypatch.setenv("DBT_ENGINE_TARGET", "dev")  # dbt's newer name first
    assert resolve_target(root, root).target_name == "dev"
    assert resolve_target(root, root, target="prod").target_name == "prod"
    assert both(root, target="prod")[0] == both(root, target="prod")[1]
    monkeypatch.setenv("DBT_PROFILE", "missing")
    with pytest.raises(WarehouseError, match="Could not find profile named 'missing'"):
        resolve_target(root, root)
    assert resolve_target(root, root, profile="sync_test").profile_name == "sync_test"


def test_the_light_path_imports_no_dbt(env, tmp_path):
    root = write_project(tmp_path, {"dev": {"type": "duckdb", "path": "{{ env_var('CS_PATH') }}"}})
    code = ("import sys; from cohort_sync.warehouse.target import resolve_target; "
            f"t = resolve_target({str(root)!r}, {str(root)!r}); "
            "print(t.credentials.path, sorted({m.split('.')[0] for m in sys.modules if m.startswith('dbt')}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["warehouse.duckdb", "[]"]


@pytest.mark.parametrize(("output", "reason"), [
    ({"type": "duckdb", "path": "{{ var('db', 'x.duckdb') }}"}, "Jinja other than"),
    ({"type": "duckdb", "path": "x.duckdb", "extensions": ["httpfs"], "settings": {"s3_region": "eu"}},
     "is read by dbt's loader only"),
    ({"type": "duckdb", "path": "x.duckdb", "attach": [{"path": "other.duckdb"}]}, "key 'attach' is read by dbt's loader only"),
    ({"type": "duckdb", "path": "md:my_db"}, "MotherDuck"),
    ({"type": "duckdb", "path": "x.duckdb", "threads": "two"}, "threads"),
])
def test_what_it_does_not_read_exactly_dbt_reads(env, tmp_path, caplog, output, reason):
    root = write_project(tmp_path, {"dev": output})
    with pytest.raises(Unsupported, match=reason):
        load_profile(root, root)
    caplog.set_level(logging.INFO, logger="cohort_sync")
    try:
        target = resolve_target(root, root)
    except WarehouseError as exc:  # dbt refuses it: its message
        assert "threads" in str(exc)
    else:
        assert target.credentials == load_profile_with_dbt(root, root, None, None).credentials
        assert target.credentials.__class__.__module__.startswith("dbt.adapters.duckdb")
    assert any("reading the profile with dbt's loader" in r.getMessage() for r in caplog.records)


def test_a_missing_variable_is_dbts_error_naming_it_and_no_secret_is_shown(env, tmp_path):
    root = write_project(tmp_path, {"dev": {
        "type": "postgres", "host": "{{ env_var('CS_UNSET_HOST') }}", "port": 5432, "user": "u",
        "password": "{{ env_var('DBT_ENV_SECRET_CS_PW') }}", "dbname": "d", "schema": "s"}})
    with pytest.raises(WarehouseError, match="CS_UNSET_HOST") as raised:
        resolve_target(root, root)
    assert "s3cr3t" not in str(raised.value)


def test_spark_gets_dbts_credentials_and_defaults(env, tmp_path):
    root = write_project(tmp_path, {"dev": spark_output("marketing", tmp_path / "spark")})
    with pytest.raises(Unsupported, match="adapter type"):
        load_profile(root, root)
    spark = resolve_target(root, root).credentials
    assert spark.__class__.__module__.startswith("dbt.adapters.spark")
    assert (spark.type, str(spark.method), spark.schema) == ("spark", "session", "marketing")


def test_no_target_repr_shows_the_password(env, tmp_path):
    output = {**POSTGRES_OUTPUTS[0], "password": "{{ env_var('DBT_ENV_SECRET_CS_PW') }}"}
    root = write_project(tmp_path, {"dev": output, "other": {**output, "port": "{{ env_var('CS_PORT') }}"}})
    for name in ("dev", "other"):  # read here; read by dbt (a port as text is dbt's to refuse or accept)
        try:
            target = resolve_target(root, root, target=name)
        except WarehouseError as exc:
            assert "s3cr3t" not in str(exc)
        else:
            assert target.credentials.password == "s3cr3t-pw"
            assert "s3cr3t" not in repr(target)


POSTGRES_OUTPUTS = [
    # as tests/warehouses.py configures PostgreSQL
    {"type": "postgres", "host": "127.0.0.1", "port": 54321, "user": "postgres", "password": "", "dbname": "db",
     "schema": "s", "threads": 1},
    {"type": "postgres", "host": "h", "port": "{{ env_var('CS_PORT') | as_number }}", "user": "u",
     "pass": "{{ env_var('DBT_ENV_SECRET_CS_PW') }}", "database": "d", "schema": "s", "role": "r",
     "search_path": "a, b", "keepalives_idle": 30, "sslmode": "require", "sslrootcert": "/ca.pem",
     "application_name": None, "autocommit": True, "retries": 0, "connect_timeout": 3},
]


@pytest.mark.parametrize("output", POSTGRES_OUTPUTS)
def test_a_postgres_target_is_read_and_connected_as_dbt_does(env, tmp_path, monkeypatch, output):
    import dataclasses

    import psycopg2
    from dbt.adapters.contracts.connection import Connection
    from dbt.adapters.postgres import PostgresConnectionManager

    from cohort_sync.warehouse.target import _open_postgres

    root = write_project(tmp_path, {"dev": output})
    light = load_profile(root, root)
    dbt = load_profile_with_dbt(root, root, None, None)
    assert (light.profile_name, light.target_name, light.threads) == (dbt.profile_name, dbt.target_name, dbt.threads)
    names = [f.name for f in dataclasses.fields(light.credentials)]
    assert {n: getattr(light.credentials, n) for n in names} == {n: getattr(dbt.credentials, n) for n in names}
    assert "s3cr3t" not in repr(light.credentials)

    class Handle:
        autocommit = False

        def cursor(self):
            return self

        def execute(self, sql):
            calls.append(sql)

    def connect(**kwargs):
        calls.append(kwargs)
        return Handle()

    monkeypatch.setattr(psycopg2, "connect", connect)
    calls: list = []
    ours = _open_postgres(resolve_target(root, root))
    ours_calls, calls = calls, []
    theirs = PostgresConnectionManager.open(Connection(type="postgres", name="t", credentials=dbt.credentials)).handle
    assert ours_calls == calls and ours.autocommit == theirs.autocommit


def test_a_postgres_connection_error_is_retried_as_dbt_does_and_shows_no_password(env, tmp_path):
    output = {**POSTGRES_OUTPUTS[0], "port": 1, "password": "{{ env_var('DBT_ENV_SECRET_CS_PW') }}", "retries": 1,
              "connect_timeout": 2}
    root = write_project(tmp_path, {"dev": output})
    from cohort_sync.warehouse.target import _open_postgres

    with pytest.raises(WarehouseError, match=r"cannot connect to target 'dev' \(postgres\)") as raised:
        _open_postgres(resolve_target(root, root))
    assert "s3cr3t" not in str(raised.value)
