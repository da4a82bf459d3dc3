"""Reading a dbt profile without importing dbt, for the profiles it reads exactly.

dbt's loader (dbt.config.runtime.load_profile) imports most of dbt and its
adapter: about 80 MB of the CLI's memory, for a few values of one file. For
the common profile this module gives what dbt gives, by dbt's own steps
(dbt.config.profile.Profile.render, its ProfileRenderer):

- the profile name from dbt_project.yml, rendered; the target from the
  caller, else the profile's `target`, rendered; only that output rendered;
- every string rendered as dbt renders it, with jinja2's native types
  (so `5432` is a number, `'x'` loses its quotes, one trailing newline
  goes), `env_var('X')`, `env_var('X', 'default')` (DBT_ENV_SECRET_
  variables as dbt substitutes them) and the filters as_text, as_bool,
  as_number and as_native;
- the credentials dbt-duckdb or dbt-postgres builds from the output: the
  same keys, aliases, types and defaults.

Anything else raises Unsupported and the caller asks dbt: any other Jinja
(a name, a filter, a statement), any error (a missing variable, a missing
profile or target, a value of the wrong type: dbt's own message), another
adapter type (Spark connects through its dbt adapter anyway), a key these
credentials lack (for DuckDB: extensions, settings, attach, secrets,
plugins..., which the publisher's connection does not apply). Nothing here
is logged or raised with a value in it.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from itertools import chain, islice
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

#: dbt's constants (dbt_common.constants, dbt.constants).
SECRET_ENV_PREFIX = "DBT_ENV_SECRET"
SECRET_PLACEHOLDER = "$$$DBT_SECRET_START$$${}$$$DBT_SECRET_END$$$"
#: dbt's test for a string worth rendering (dbt.clients.jinja); it renders the others too.
RENDER_CHARS = re.compile(r"({[{%#]|[#}%]})")
FILTERS = ("as_text", "as_bool", "as_number", "as_native")
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # dbt's (dbt.clients.yaml_helper)
#: DuckDB output keys read here, with their type (dbt-duckdb's DuckDBCredentials).
#: Any other key (extensions, settings, attach, secrets, plugins, config_options...)
#: changes how DuckDB must be opened: dbt's loader reads those.
DUCKDB_KEYS: dict[str, type | tuple[type, ...]] = {
    "path": str, "database": str, "schema": str, "external_root": str,
    "keep_open": bool, "disable_transactions": bool,
}


class Unsupported(Exception):
    """This profile is not one read here: dbt's loader reads it (the reason names no value)."""


@dataclass(frozen=True)
class DuckDBCredentials:
    """What dbt-duckdb's credentials hold for an output of only DUCKDB_KEYS."""

    path: str = ":memory:"
    database: str = "main"
    schema: str = "main"
    external_root: str = "."
    keep_open: bool = True
    disable_transactions: bool = False

    @property
    def type(self) -> str:
        return "duckdb"


@dataclass(frozen=True)
class LoadedProfile:
    profile_name: str
    target_name: str
    threads: int
    credentials: Any  # DuckDBCredentials or PostgresCredentials


def load_profile(
    project_dir: Path,
    profiles_dir: Path,
    profile: str | None = None,
    target: str | None = None,
    env: Mapping[str, str] | None = None,
) -> LoadedProfile:
    """The profile and target dbt would load, or Unsupported."""
    renderer = Renderer(os.environ if env is None else env)
    raw_project = _yaml(project_dir / "dbt_project.yml", strip=True)
    profile_name = renderer.render(raw_project.get("profile"))  # even when overridden, as dbt does
    if profile is not None:
        profile_name = profile
    if not isinstance(profile_name, str):
        raise Unsupported("no profile name")
    raw_profiles = _yaml(profiles_dir / "profiles.yml", strip=False)
    raw_profile = raw_profiles.get(profile_name)
    if not isinstance(raw_profile, dict) or not raw_profile:
        raise Unsupported("no such profile")
    if target is not None:
        target_name = target
    elif "target" in raw_profile:
        target_name = renderer.render(raw_profile["target"])
    else:
        raise Unsupported("no target")  # dbt uses 'default' and says so
    outputs = raw_profile.get("outputs")
    if not isinstance(target_name, str) or not isinstance(outputs, dict):
        raise Unsupported("no target")
    output = outputs.get(target_name)
    if not isinstance(output, dict):
        raise Unsupported("no such target")
    data = renderer.render_data(output)
    threads = data.pop("threads", 1)
    credentials = CREDENTIALS.get(data.pop("type", None))
    if credentials is None:
        raise Unsupported("adapter type")
    if not _is(threads, int):
        raise Unsupported("threads")
    return LoadedProfile(profile_name, target_name, threads, credentials(data))


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    """isinstance, where a bool is no int (dbt's schema tells them apart)."""
    return isinstance(value, kind) and (not isinstance(value, bool) or kind is bool or
                                        (isinstance(kind, tuple) and bool in kind))


def _checked(data: dict[str, Any], keys: dict[str, Any]) -> None:
    for key, value in data.items():
        if key not in keys or not _is(value, keys[key]):
            raise Unsupported(f"the key {key!r} is read by dbt's loader only")  # a name, never a value


def duckdb_credentials(data: dict[str, Any]) -> DuckDBCredentials:
    """dbt-duckdb's credentials for an output of DUCKDB_KEYS (type and threads taken out)."""
    _checked(data, DUCKDB_KEYS)
    path = data.get("path", ":memory:")
    if path != ":memory:" and (urlparse(path).scheme or "ducklake:" in path.lower()):
        raise Unsupported("a DuckDB path with a scheme (MotherDuck, DuckLake)")
    # DuckDBCredentials.__pre_deserialize__: the database is the path's catalog name.
    derived = "memory" if path == ":memory:" else os.path.basename(path).lstrip(".").split(".")[0]
    if derived and data.setdefault("database", derived) != derived:
        raise Unsupported("database differs from the path's")  # dbt's error
    return DuckDBCredentials(**data)


@dataclass(frozen=True)
class PostgresCredentials:
    """What dbt-postgres's credentials hold, with its defaults."""

    host: str
    user: str
    port: int
    password: str = field(repr=False)
    database: str
    schema: str
    connect_timeout: int = 10
    role: str | None = None
    search_path: str | None = None
    keepalives_idle: int = 0
    sslmode: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslrootcert: str | None = None
    application_name: str | None = "dbt"
    autocommit: bool | None = False
    retries: int = 1

    @property
    def type(self) -> str:
        return "postgres"


OPTIONAL_TEXT = (str, type(None))
POSTGRES_KEYS: dict[str, type | tuple[type, ...]] = {
    "host": str, "user": str, "port": int, "password": str, "database": str, "schema": str,
    "connect_timeout": int, "role": OPTIONAL_TEXT, "search_path": OPTIONAL_TEXT, "keepalives_idle": int,
    "sslmode": OPTIONAL_TEXT, "sslcert": OPTIONAL_TEXT, "sslkey": OPTIONAL_TEXT, "sslrootcert": OPTIONAL_TEXT,
    "application_name": OPTIONAL_TEXT, "autocommit": (bool, type(None)), "retries": int,
}
POSTGRES_ALIASES = {"dbname": "database", "pass": "password"}
POSTGRES_REQUIRED = ("host", "user", "port", "password", "database", "schema")


def postgres_credentials(data: dict[str, Any]) -> PostgresCredentials:
    """dbt-postgres's credentials (type and threads taken out): its aliases, types and defaults."""
    for alias, name in POSTGRES_ALIASES.items():
        if alias in data:
            if name in data:
                raise Unsupported("a key given twice")  # dbt's error
            data[name] = data.pop(alias)
    _checked(data, POSTGRES_KEYS)
    if any(key not in data for key in POSTGRES_REQUIRED):
        raise Unsupported("a required key missing")  # dbt's error names it
    if not 0 <= data["port"] <= 65535 or data.get("retries", 1) < 0:
        raise Unsupported("a number out of range")
    if os.environ.get("DBT_ENGINE_RECORDER_MODE") or os.environ.get("DBT_RECORDER_MODE"):
        raise Unsupported("dbt's recorder")
    return PostgresCredentials(**data)


CREDENTIALS = {"duckdb": duckdb_credentials, "postgres": postgres_credentials}


def _yaml(path: Path, *, strip: bool) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
        loaded = yaml.load(text.strip() if strip else text, Loader=YAML_LOADER)
    except (OSError, ValueError, yaml.YAMLError):
        raise Unsupported(f"cannot read {path.name}") from None
    if not isinstance(loaded, dict):
        raise Unsupported(f"{path.name} is not a mapping")
    return loaded


class TextMarker(str):
    """dbt's as_text: a string kept a string."""


class NativeMarker(str):
    """dbt's as_native: a string read as a Python literal."""


class BoolMarker(NativeMarker):
    pass


class NumberMarker(NativeMarker):
    pass


class Renderer:
    """dbt's ProfileRenderer in native mode, for env_var and the four filters."""

    def __init__(self, env: Mapping[str, str]) -> None:
        import jinja2.nativetypes
        import jinja2.sandbox

        class Template(jinja2.nativetypes.NativeTemplate):
            def render(self, *args: Any, **kwargs: Any) -> Any:
                return _native_concat(self.root_render_func(self.new_context(args[0])))

        # dbt's NativeSandboxEnvironment; its extensions only add block tags,
        # which this renderer never renders.
        class Environment(jinja2.sandbox.SandboxedEnvironment):
            code_generator_class = jinja2.nativetypes.NativeCodeGenerator
            template_class = Template

        self.env = env
        self.jinja = Environment(extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"])
        self.jinja.filters.update(as_text=TextMarker, as_bool=BoolMarker, as_native=NativeMarker,
                                  as_number=NumberMarker)
        self.nodes = jinja2.nodes
        self.context = {"env_var": self.env_var}
        self.cache: dict[str, Any] = {}

    def env_var(self, var: str, default: str | None = None) -> str:
        """dbt's SecretContext.env_var."""
        if var in self.env and var.startswith(SECRET_ENV_PREFIX):
            return SECRET_PLACEHOLDER.format(var)
        if var in self.env:
            return self.env[var]
        if default is not None:
            return default
        raise Unsupported("a variable without a value")  # dbt names it (and keeps a password literal)

    def render_data(self, data: dict[str, Any]) -> dict[str, Any]:
        """dbt's deep_map_render of render_value over the values (keys as they are)."""
        return {key: self._deep(value) for key, value in data.items()}

    def _deep(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._deep(item) for item in value]
        if isinstance(value, dict):
            return {key: self._deep(item) for key, item in value.items()}
        if isinstance(value, (int, float, str, bool, date)) or value is None:
            return self.render(value)
        raise Unsupported("a value of an unexpected type")

    def render(self, value: Any) -> Any:
        """dbt's SecretRenderer.render_value."""
        if not isinstance(value, str):
            return value.isoformat() if isinstance(value, date) else value
        if value not in self.cache:
            self.cache[value] = self._render(value)
        rendered = self.cache[value]
        if SECRET_ENV_PREFIX not in str(rendered):
            return rendered
        match = isinstance(rendered, str) and re.search(
            SECRET_PLACEHOLDER.format(f"({SECRET_ENV_PREFIX}(.*))").replace("$", r"\$"), rendered)
        if not match or match.group(1) not in self.env:
            raise Unsupported("a secret dbt cannot substitute")
        return rendered.replace(SECRET_PLACEHOLDER.format(match.group(1)), self.env[match.group(1)])

    def _render(self, source: str) -> Any:
        try:
            tree = self.jinja.parse(source)
        except Exception:  # noqa: BLE001 - dbt's error (or, for a password, the literal text)
            raise Unsupported("Jinja dbt reads differently") from None
        if RENDER_CHARS.search(source):
            self._check(tree)
        try:
            return self.jinja.from_string(tree, globals=self.context).render(self.context)
        except Unsupported:
            raise
        except Exception:  # noqa: BLE001 - a filter's conversion error: dbt's message
            raise Unsupported("a value dbt cannot render") from None

    def _check(self, tree: Any) -> None:
        """Only text, constants, env_var() calls and the four filters."""
        nodes = self.nodes
        callees: set[int] = set()
        for node in tree.find_all(nodes.Node):  # depth first: a call before its callee
            if isinstance(node, (nodes.Output, nodes.TemplateData, nodes.Const)):
                continue
            if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and \
                    node.node.name == "env_var" and not (node.kwargs or node.dyn_args or node.dyn_kwargs) \
                    and 1 <= len(node.args) <= 2:
                callees.add(id(node.node))
                continue
            if isinstance(node, nodes.Name) and id(node) in callees:
                continue
            if isinstance(node, nodes.Filter) and node.name in FILTERS and node.node is not None and \
                    not (node.args or node.kwargs or node.dyn_args or node.dyn_kwargs):
                continue
            raise Unsupported(f"Jinja other than env_var() and {', '.join(FILTERS)}")


def _native_concat(nodes: Any) -> Any:
    """dbt's quoted_native_concat (dbt_common.clients.jinja)."""
    head = list(islice(nodes, 2))
    if not head:
        return ""
    if len(head) > 1:
        return "".join(str(v) for v in chain(head, nodes))
    raw = head[0]
    if isinstance(raw, TextMarker):
        return str(raw)
    if not isinstance(raw, NativeMarker):
        return raw
    try:
        result = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError):
        result = str(raw)
    if isinstance(raw, BoolMarker) and not isinstance(result, bool):
        raise Unsupported("not a bool")
    if isinstance(raw, NumberMarker) and (not isinstance(result, (int, float)) or isinstance(result, bool)):
        raise Unsupported("not a number")
    return result
