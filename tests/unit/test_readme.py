"""The README's profiles are the ones that work: each parses, dbt reads it as
`cohort-sync` does, and it is the profile the tests run (Spark's session
method) or the demo runs (DuckDB)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import yaml

from cohort_sync.warehouse.target import resolve_target
from tests.sync_project import REPO
from tests.warehouses import spark_output

FENCED_YAML = re.compile(r"^( *)```yaml\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def readme_profile(containing: str) -> dict:
    """The README's one YAML block holding `containing`, parsed."""
    blocks = [textwrap.dedent(m.group(2)) for m in FENCED_YAML.finditer((REPO / "README.md").read_text())]
    [block] = [b for b in blocks if containing in b]
    return yaml.safe_load(block)


def read_as_cohort_sync(profiles: dict, root: Path):
    """The profile's target as `cohort-sync` (dbt's own profile loader) reads it."""
    [name] = profiles
    (root / "dbt_project.yml").write_text(yaml.safe_dump({"name": "p", "version": "1.0.0", "config-version": 2,
                                                          "profile": name}))
    (root / "profiles.yml").write_text(yaml.safe_dump(profiles))
    return resolve_target(root, root)


def test_the_spark_session_profile_is_the_one_the_tests_run(tmp_path):
    profiles = readme_profile("method: session")
    [output] = profiles["analytics"]["outputs"].values()
    home = Path(re.search(r"-Dderby.system.home=(\S+)", output["server_side_parameters"]
                          ["spark.driver.extraJavaOptions"]).group(1))
    assert output == spark_output(output["schema"], home)
    credentials = read_as_cohort_sync(profiles, tmp_path).credentials
    assert (credentials.type, credentials.method, credentials.schema) == ("spark", "session", "marketing")
    # as given (dbt-spark adds its own defaults, such as spark.sql.ansi.enabled)
    assert spark_output("marketing", home)["server_side_parameters"].items() <= credentials.server_side_parameters.items()


def test_the_duckdb_profile_is_the_demos(tmp_path):
    profiles = readme_profile("type: duckdb")
    [output] = profiles["my_project"]["outputs"].values()
    [demo] = yaml.safe_load((REPO / "demo" / "profiles.yml").read_text())["cohort_sync_demo"]["outputs"].values()
    assert output.keys() == demo.keys()
    assert {k: v for k, v in output.items() if k != "path"} == {k: v for k, v in demo.items() if k != "path"}
    target = read_as_cohort_sync(profiles, tmp_path)
    assert (target.adapter_type, target.target_name, target.credentials.path) == ("duckdb", "dev", "warehouse.duckdb")
