"""No key may appear in any output, log, dbt artifact or warehouse table."""

from __future__ import annotations

import os

import pytest

from tests.secret_scan import assert_nowhere

pytestmark = pytest.mark.dbt


def test_keys_never_leak_through_any_path(make_project, braze, keys, monkeypatch):
    wrong_key = "IMPORTKEY-WRONG-" + keys["data_import_key"][-12:]
    # The REST API key is set too (braze_env), unused by a partner cohort: it must not leak either.
    secrets = [keys["partner_api_key"], keys["data_import_key"], keys["rest_api_key"], wrong_key]
    project = make_project([{"model": "audience", "name": "Audience"}])
    project.set_audience("audience", {"external_id": [f"u{n}" for n in range(1_500)]})
    outputs: list[str] = []

    def cli(*args: str, env: dict[str, str] | None = None, code: int | None = 0) -> None:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        result = project.cli(*args)
        outputs.extend([result.stdout, result.stderr])
        if code is not None:
            assert result.returncode == code, result.stdout + result.stderr

    cli("dbt", "run", "--vars", '{"cohort_sync_dry_run": true}')              # dry run inside dbt
    cli("dbt", "run")                                                          # success, in dbt
    project.set_audience("audience", {"external_id": [f"u{n}" for n in range(100, 1_600)]})
    cli("dbt", "run", "--vars", '{"cohort_sync_publish_on_run": false}')
    cli("cohort-sync", "publish", "--dry-run")                                 # dry run, CLI
    braze.set_faults([{"endpoint": "users", "times": 2, "status": 503, "retry_after": 0}])
    cli("cohort-sync", "publish", "--verbose")                                # retries, then success
    project.set_audience("audience", {"external_id": [f"u{n}" for n in range(200, 1_700)]})
    cli("dbt", "run", "--vars", '{"cohort_sync_publish_on_run": false}')
    braze.set_faults([{"endpoint": "users", "times": 1, "status": 400,
                       "body": '{"message": "cohort_changes malformed"}'}])
    cli("cohort-sync", "publish", "--verbose", code=1)                        # 400
    cli("cohort-sync", "publish", "--verbose", env={"BRAZE_DATA_IMPORT_KEY": wrong_key}, code=1)  # 401
    cli("dbt", "run", code=1)                                                  # 401 inside dbt
    cli("cohort-sync", "status")
    cli("dbt", "run", code=None, env={"BRAZE_DATA_IMPORT_KEY": ""})           # missing key

    assert any("Invalid client secret" in text for text in outputs), "the 401 path did not run"
    assert any("retrying the batch" in text for text in outputs), "the retry path did not run"

    for text in outputs:
        for secret in secrets:
            assert secret not in text

    assert_nowhere(project, secrets)
    assert os.environ["BRAZE_DATA_IMPORT_KEY"] == ""
    assert os.environ["BRAZE_REST_API_KEY"] == keys["rest_api_key"]  # it was in every run's environment
