"""A tiny run of the benchmark, only to keep it working (it measures nothing here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.sync_project import REPO

pytestmark = pytest.mark.dbt


def test_benchmark_smoke_run_writes_every_section(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert {"diff", "publish", "latency", "memory", "incremental", "track", "attribute_scale", "events", "targets",
            "machine"} <= set(report)
    assert [d["changes"] for d in report["diff"]] == [20, 60]
    assert all(d["ours_s"] > 0 and d["bare_s"] > 0 for d in report["diff"])
    assert report["latency"]["responses_429"] == 0
    assert [m["changes"] for m in report["memory"]] == [2_000, 6_000]
    assert report["track"]["latency"]["responses_429"] == 0
    assert report["track"]["raw"]["requests"] == report["track"]["latency"]["requests"] > 0
    assert [r["new"] for r in report["events"]["runs"]] == [100, 100, 1000]
    names = [t["target"] for t in report["targets"]]
    assert len(names) == len(set(names)) == 17, names
    assert all(isinstance(t["met"], bool) for t in report["targets"])
    assert any(name.startswith("sink absorbs") for name in names)
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| target | value | limit | met |" in (tmp_path / "report.md").read_text()

    # One section rerun alone goes into that report, which names it; the other sections stay as they were.
    rerun = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--smoke", "--only", "track", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    again = json.loads((tmp_path / "report.json").read_text())
    assert set(again["reruns"]) == {"track"} and again["reruns"]["track"]["seconds"] > 0
    assert again["diff"] == report["diff"] and again["events"] == report["events"]
    assert again["track"]["latency"]["requests"] == report["track"]["latency"]["requests"] > 0
    assert "Sections rerun alone since (`make bench ONLY=<section>`): track " in (
        tmp_path / "report.md").read_text().splitlines()[0]
