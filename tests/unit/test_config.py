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


REST_ONLY = {"BRAZE_REST_ENDPOINT": "iad-01", "BRAZE_REST_API_KEY": "rest-SECRET-3"}


def test_users_track_needs_only_the_endpoint_and_the_rest_api_key():
    settings = BrazeSettings.from_env(REST_ONLY, families=["users_track"])
    assert settings.rest_api_key == "rest-SECRET-3"
    assert (settings.partner_name, settings.partner_api_key, settings.data_import_key) == (None, None, None)
    assert settings.secrets == ("rest-SECRET-3",)
    assert "SECRET" not in repr(settings)


def test_the_default_family_is_the_cohort_import_api():
    with pytest.raises(ConfigError) as error:
        BrazeSettings.from_env(REST_ONLY)
    message = str(error.value)
    assert all(f"{name} is not set" in message for name in
               ("BRAZE_PARTNER_NAME", "BRAZE_PARTNER_API_KEY", "BRAZE_DATA_IMPORT_KEY"))
    assert "BRAZE_REST_API_KEY" not in message
    assert BrazeSettings.from_env(GOOD).rest_api_key is None


def test_both_families_need_every_variable_and_one_error_names_them_all():
    with pytest.raises(ConfigError) as error:
        BrazeSettings.from_env({"BRAZE_PARTNER_NAME": "cohort_sync"}, families=("cohort_import", "users_track"))
    message = str(error.value)
    for name in ("BRAZE_REST_ENDPOINT", "BRAZE_PARTNER_API_KEY", "BRAZE_DATA_IMPORT_KEY", "BRAZE_REST_API_KEY"):
        assert f"{name} is not set" in message
    assert "BRAZE_PARTNER_NAME" not in message
    both = BrazeSettings.from_env({**GOOD, **REST_ONLY}, families=("cohort_import", "users_track"))
    assert both.secrets == ("partner-SECRET-1", "import-SECRET-2", "rest-SECRET-3")


def test_a_variable_that_is_set_is_validated_even_when_no_family_needs_it():
    env = {**REST_ONLY, "BRAZE_PARTNER_NAME": "bad/name", "BRAZE_PARTNER_API_KEY": "with space-SECRET"}
    with pytest.raises(ConfigError) as error:
        BrazeSettings.from_env(env, families=["users_track"])
    message = str(error.value)
    assert "BRAZE_PARTNER_NAME must contain only" in message
    assert "BRAZE_PARTNER_API_KEY must not contain whitespace" in message
    assert "SECRET" not in message
    with pytest.raises(ConfigError, match="BRAZE_REST_API_KEY must not contain whitespace"):
        BrazeSettings.from_env({**GOOD, "BRAZE_REST_API_KEY": "a b"})


def test_an_unknown_family_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown endpoint families"):
        BrazeSettings.from_env(REST_ONLY, families=["users_export"])


def test_users_track_rate_limits_default_to_brazes_and_are_configurable():
    default = BrazeSettings.from_env(REST_ONLY, families=["users_track"])
    assert (default.users_track_requests_per_window, default.users_track_window_seconds,
            default.users_track_requests_per_hour) == (3000, 3.0, None)
    assert default.max_requests_per_hour == 250_000
    configured = BrazeSettings.from_env(
        {**REST_ONLY, "COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_3S": "500",
         "COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_HOUR": "90000"}, families=["users_track"])
    assert (configured.users_track_requests_per_window, configured.users_track_requests_per_hour) == (500, 90_000)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_3S", "0", "must be a positive whole number"),
        ("COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_3S", "2.5", "must be a positive whole number"),
        ("COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_HOUR", "-1", "must be a positive number"),
        ("COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_HOUR", "lots", "must be a positive number"),
    ],
)
def test_users_track_rate_limits_must_be_positive(name, value, problem):
    with pytest.raises(ConfigError, match=f"{name} {problem}"):
        BrazeSettings.from_env({**REST_ONLY, name: value}, families=["users_track"])
