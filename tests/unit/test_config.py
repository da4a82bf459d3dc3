from __future__ import annotations

import pytest

from cohort_sync.config import BrazeSettings, ConfigError, expand_endpoint

GOOD = {
    "BRAZE_REST_ENDPOINT": "iad-01",
    "BRAZE_PARTNER_NAME": "cohort_sync",
    "BRAZE_PARTNER_API_KEY": "partner-SECRET-1",
    "BRAZE_DATA_IMPORT_KEY": "import-SECRET-2",
}


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("iad-01", "https://rest.iad-01.braze.com"),
        ("IAD-08", "https://rest.iad-08.braze.com"),
        ("fra-02", "https://rest.fra-02.braze.eu"),
        ("au-01", "https://rest.au-01.braze.com"),
        ("https://rest.iad-03.braze.com/", "https://rest.iad-03.braze.com"),
        ("http://127.0.0.1:4010", "http://127.0.0.1:4010"),
    ],
)
def test_endpoint_accepts_cluster_names_and_urls(value, url):
    assert expand_endpoint(value) == url


def test_valid_settings_are_frozen_and_hide_secrets():
    settings = BrazeSettings.from_env(GOOD)
    assert settings.rest_endpoint == "https://rest.iad-01.braze.com"
    assert settings.partner_name == "cohort_sync"
    text = repr(settings)
    assert "SECRET" not in text
    with pytest.raises(AttributeError):
        settings.partner_name = "other"


@pytest.mark.parametrize("missing", list(GOOD))
def test_each_missing_variable_is_named(missing):
    env = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ConfigError) as error:
        BrazeSettings.from_env(env)
    assert f"{missing} is not set" in str(error.value)


def test_every_problem_is_listed_in_one_error_without_secrets():
    env = {**GOOD, "BRAZE_REST_ENDPOINT": "not a url", "BRAZE_PARTNER_NAME": "bad/name",
           "COHORT_SYNC_MAX_ATTEMPTS": "zero"}
    with pytest.raises(ConfigError) as error:
        BrazeSettings.from_env(env)
    message = str(error.value)
    assert "BRAZE_REST_ENDPOINT must be a URL" in message
    assert "BRAZE_PARTNER_NAME must contain only" in message
    assert "COHORT_SYNC_MAX_ATTEMPTS must be a positive whole number" in message
    assert "SECRET" not in message


def test_plain_http_only_for_loopback_or_when_allowed():
    with pytest.raises(ConfigError, match="must use https://"):
        BrazeSettings.from_env({**GOOD, "BRAZE_REST_ENDPOINT": "http://braze.example.com"})
    for url in ("http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"):
        assert BrazeSettings.from_env({**GOOD, "BRAZE_REST_ENDPOINT": url}).rest_endpoint == url
    allowed = {**GOOD, "BRAZE_REST_ENDPOINT": "http://proxy.internal", "COHORT_SYNC_ALLOW_INSECURE_HTTP": "true"}
    assert BrazeSettings.from_env(allowed).rest_endpoint == "http://proxy.internal"


def test_retry_and_timeout_settings():
    settings = BrazeSettings.from_env(
        {**GOOD, "COHORT_SYNC_MAX_ATTEMPTS": "3", "COHORT_SYNC_MAX_RETRY_SECONDS": "7.5",
         "COHORT_SYNC_HTTP_TIMEOUT_SECONDS": "4"}
    )
    assert (settings.max_attempts, settings.max_retry_seconds, settings.timeout_seconds) == (3, 7.5, 4.0)


def test_rate_limit_setting_defaults_to_brazes_hourly_limit():
    assert BrazeSettings.from_env(GOOD).max_requests_per_hour == 250_000
    assert BrazeSettings.from_env({**GOOD, "COHORT_SYNC_MAX_REQUESTS_PER_HOUR": "3600"}).max_requests_per_hour == 3600
