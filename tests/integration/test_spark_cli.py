"""The CLI publisher from Spark, as a scheduler runs it: `dbt run`, then
`cohort-sync publish`, each its own process with its own JVM, on a
1,000,000-member audience. The publisher's peak memory (its own process;
the local Spark driver is the warehouse engine, reported beside it) must
stay under 300 MB, and a second run must find nothing left to send.
"""

from __future__ import annotations

import os

import pytest

from tests.measure import run_measured
from tests.sync_project import SyncProject
from tests.warehouses import SparkOwnProcesses

pytestmark = pytest.mark.dbt

MEMBERS = int(os.environ.get("COHORT_SYNC_SPARK_CLI_MEMBERS", "1000000"))
AUDIENCE = """
select concat('u', lpad(cast(id as string), 7, '0')) as external_id
from range({{ var('members') }})
"""


def test_a_million_members_sync_through_the_cli_from_spark(tmp_path, braze_env, braze, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    project = SyncProject(tmp_path / "project", [{"model": "big_audience", "name": "Big"}], SparkOwnProcesses)
    (project.root / "models" / "big_audience.sql").write_text(AUDIENCE)
    members = ["--vars", f"{{members: {MEMBERS}}}"]

    built = project.cli("dbt", "run", *members, timeout=1200)
    assert built.returncode == 0, built.stdout[-3000:]
    published = run_measured(project.command("cohort-sync", "publish"), cwd=project.root)
    assert published.returncode == 0, published.stderr[-3000:]
    print(f"\n{MEMBERS:,} members published from Spark in {published.seconds:.0f} s; "
          f"publisher peak RSS {published.peak_mb:.0f} MB, local Spark driver JVM {published.children_peak_mb:.0f} MB")

    held = braze.cohorts()["big_audience"]["user_ids"]
    assert len(held) == MEMBERS
    assert held[0] == "u0000000" and held[-1] == f"u{MEMBERS - 1:07d}"
    users = [r for r in braze.requests() if r["endpoint"] == "users"]
    assert len(users) == -(-MEMBERS // 1000)
    assert published.peak_mb < 300

    sent = len(braze.requests())
    assert project.cli("dbt", "run", *members, timeout=1200).returncode == 0
    again = project.cli("cohort-sync", "publish", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(braze.requests()) == sent
    status = project.cli("cohort-sync", "status", timeout=600)
    assert status.returncode == 0, status.stderr[-3000:]
    runs = [line.split() for line in status.stdout.splitlines() if "big_audience" in line]
    assert len(runs) == 2, status.stdout  # newest first: nothing to do, then the million adds
    assert all("success" in run and str(MEMBERS) in run for run in runs), status.stdout
    # members; and the million adds, their data points and the members
    assert runs[0].count(str(MEMBERS)) == 1 and runs[1].count(str(MEMBERS)) == 3, status.stdout
