from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from cohort_sync.local_braze import LocalBraze
from tests.sync_project import SyncProject

PARTNER_NAME = "cohort_sync_test"


@pytest.fixture
def keys() -> dict[str, str]:
    """Distinctive fake keys, so a leak is easy to find."""
    return {
        "partner_api_key": "PARTNERKEY-" + secrets.token_hex(12),
        "data_import_key": "IMPORTKEY-" + secrets.token_hex(12),
    }


@pytest.fixture
def braze(keys: dict[str, str]) -> Iterator[LocalBraze]:
    with LocalBraze(partner_name=PARTNER_NAME, **keys) as server:
        yield server


@pytest.fixture
def braze_env(braze: LocalBraze, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "BRAZE_REST_ENDPOINT": braze.url,
        "BRAZE_PARTNER_NAME": PARTNER_NAME,
        "BRAZE_PARTNER_API_KEY": keys["partner_api_key"],
        "BRAZE_DATA_IMPORT_KEY": keys["data_import_key"],
        "COHORT_SYNC_MAX_RETRY_SECONDS": "20",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return env


@pytest.fixture
def make_project(tmp_path: Path, braze_env: dict[str, str]):
    """A throwaway dbt project with cohort_sync installed via `local:`."""

    def make(cohorts=None, name: str = "project") -> SyncProject:
        return SyncProject(tmp_path / name, cohorts)

    return make
