"""Braze and SMTP settings, read once from the environment, validated and frozen.

Secrets come only from environment variables and never appear in a repr,
a log line or an exception message.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from urllib.parse import urlsplit

ENDPOINT_VAR = "BRAZE_REST_ENDPOINT"
PARTNER_NAME_VAR = "BRAZE_PARTNER_NAME"
PARTNER_API_KEY_VAR = "BRAZE_PARTNER_API_KEY"
DATA_IMPORT_KEY_VAR = "BRAZE_DATA_IMPORT_KEY"
REST_API_KEY_VAR = "BRAZE_REST_API_KEY"
ALLOW_INSECURE_VAR = "COHORT_SYNC_ALLOW_INSECURE_HTTP"
TIMEOUT_VAR = "COHORT_SYNC_HTTP_TIMEOUT_SECONDS"
MAX_ATTEMPTS_VAR = "COHORT_SYNC_MAX_ATTEMPTS"
MAX_RETRY_SECONDS_VAR = "COHORT_SYNC_MAX_RETRY_SECONDS"
MAX_REQUESTS_PER_HOUR_VAR = "COHORT_SYNC_MAX_REQUESTS_PER_HOUR"
USERS_TRACK_PER_3S_VAR = "COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_3S"
USERS_TRACK_PER_HOUR_VAR = "COHORT_SYNC_USERS_TRACK_MAX_REQUESTS_PER_HOUR"
SMTP_HOST_VAR = "COHORT_SYNC_SMTP_HOST"
SMTP_PORT_VAR = "COHORT_SYNC_SMTP_PORT"
SMTP_SECURITY_VAR = "COHORT_SYNC_SMTP_SECURITY"
SMTP_USER_VAR = "COHORT_SYNC_SMTP_USER"
SMTP_PASSWORD_VAR = "COHORT_SYNC_SMTP_PASSWORD"
SMTP_FROM_VAR = "COHORT_SYNC_SMTP_FROM"
NOTIFY_TIMEOUT_VAR = "COHORT_SYNC_NOTIFY_TIMEOUT_SECONDS"
SMTP_PORTS = {"starttls": 587, "ssl": 465, "none": 25}

# The endpoint families a run may talk to, and the variables each needs
# besides BRAZE_REST_ENDPOINT: the partner cohort import API needs the keys
# Braze issues to technology partners; /users/track needs only the
# workspace's REST API key.
COHORT_IMPORT = "cohort_import"
USERS_TRACK = "users_track"
FAMILY_VARS = {
    COHORT_IMPORT: (PARTNER_NAME_VAR, PARTNER_API_KEY_VAR, DATA_IMPORT_KEY_VAR),
    USERS_TRACK: (REST_API_KEY_VAR,),
}
_FIELDS = {
    PARTNER_NAME_VAR: "partner_name", PARTNER_API_KEY_VAR: "partner_api_key",
    DATA_IMPORT_KEY_VAR: "data_import_key", REST_API_KEY_VAR: "rest_api_key",
}

_CLUSTER = re.compile(r"^(?P<region>[a-z]{2,4})-(?P<number>\d{2})$")
_PARTNER_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class ConfigError(ValueError):
    """A missing or malformed setting; the message names the variable."""


def expand_endpoint(value: str) -> str:
    """A full REST endpoint URL, or a Braze cluster name expanded to one.

    >>> expand_endpoint("iad-01")
    'https://rest.iad-01.braze.com'
    >>> expand_endpoint("fra-02")
    'https://rest.fra-02.braze.eu'
    """
    value = value.strip()
    match = _CLUSTER.match(value.lower())
    if match:
        tld = "eu" if match["region"] == "fra" else "com"
        return f"https://rest.{value.lower()}.braze.{tld}"
    return value.rstrip("/")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class BrazeSettings:
    """Everything the publisher needs to talk to Braze.

    A key is None when its variable is unset and no requested endpoint
    family needs it (see from_env).
    """

    rest_endpoint: str
    partner_name: str | None = None
    partner_api_key: str | None = field(default=None, repr=False)
    data_import_key: str | None = field(default=None, repr=False)
    rest_api_key: str | None = field(default=None, repr=False)
    timeout_seconds: float = 30.0
    max_attempts: int = 6
    max_retry_seconds: float = 300.0
    max_requests_per_hour: float = 250_000.0  # the cohort import family's
    users_track_requests_per_window: int = 3000
    users_track_window_seconds: float = 3.0
    users_track_requests_per_hour: float | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every key that is set, to redact from any message."""
        keys = (self.partner_api_key, self.data_import_key, self.rest_api_key)
        return tuple(key for key in keys if key is not None)

    def missing(self, family: str) -> list[str]:
        """The variables this endpoint family needs that were not set."""
        return [name for name in FAMILY_VARS[family] if getattr(self, _FIELDS[name]) is None]

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, families: Iterable[str] = (COHORT_IMPORT,)
    ) -> BrazeSettings:
        """Read and validate the settings; one ConfigError lists every problem.

        `families`: the endpoint families the run will call, among
        "cohort_import" and "users_track" (FAMILY_VARS); only their
        variables are required, but every variable that is set is validated.
        """
        families = tuple(families)
        unknown = sorted(set(families) - set(FAMILY_VARS))
        if unknown:
            raise ValueError(f"unknown endpoint families {unknown}: expected some of {sorted(FAMILY_VARS)}")
        needed = {ENDPOINT_VAR, *(name for family in families for name in FAMILY_VARS[family])}
        env = os.environ if environ is None else environ
        problems: list[str] = []

        def read(name: str) -> str | None:
            value = env.get(name, "").strip()
            if not value:
                if name in needed:
                    problems.append(f"{name} is not set")
                return None
            if any(ch.isspace() for ch in value):
                problems.append(f"{name} must not contain whitespace")
            return value

        endpoint_raw = read(ENDPOINT_VAR)
        partner_name = read(PARTNER_NAME_VAR)
        partner_api_key = read(PARTNER_API_KEY_VAR)
        data_import_key = read(DATA_IMPORT_KEY_VAR)
        rest_api_key = read(REST_API_KEY_VAR)

        endpoint = ""
        if endpoint_raw:
            endpoint = expand_endpoint(endpoint_raw)
            problem = _endpoint_problem(endpoint, _flag(env, ALLOW_INSECURE_VAR, problems))
            if problem:
                problems.append(f"{ENDPOINT_VAR} {problem}")
        if partner_name and not _PARTNER_NAME.match(partner_name):
            problems.append(
                f"{PARTNER_NAME_VAR} must contain only letters, digits, '_', '-' and '.'"
            )

        timeout = _number(env, TIMEOUT_VAR, 30.0, float, problems)
        max_attempts = _number(env, MAX_ATTEMPTS_VAR, 6, int, problems)
        max_retry_seconds = _number(env, MAX_RETRY_SECONDS_VAR, 300.0, float, problems)
        max_requests_per_hour = _number(env, MAX_REQUESTS_PER_HOUR_VAR, 250_000.0, float, problems)
        users_track_per_window = _number(env, USERS_TRACK_PER_3S_VAR, 3000, int, problems)
        users_track_per_hour = _number(env, USERS_TRACK_PER_HOUR_VAR, None, float, problems)

        if problems:
            raise ConfigError("Braze configuration: " + "; ".join(problems))
        return cls(
            rest_endpoint=endpoint,
            partner_name=partner_name,
            partner_api_key=partner_api_key,
            data_import_key=data_import_key,
            rest_api_key=rest_api_key,
            timeout_seconds=timeout,
            max_attempts=max_attempts,
            max_retry_seconds=max_retry_seconds,
            max_requests_per_hour=max_requests_per_hour,
            users_track_requests_per_window=users_track_per_window,
            users_track_requests_per_hour=users_track_per_hour,
        )


def _endpoint_problem(endpoint: str, allow_insecure: bool) -> str | None:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            "must be a URL such as https://rest.iad-01.braze.com "
            "or a cluster name such as iad-01"
        )
    if parts.query or parts.fragment:
        return "must not have a query string or fragment"
    if parts.scheme == "http" and not (is_loopback(parts.hostname) or allow_insecure):
        return (
            f"must use https:// (plain http is allowed only for loopback "
            f"addresses, or with {ALLOW_INSECURE_VAR}=true)"
        )
    return None


def _flag(env: Mapping[str, str], name: str, problems: list[str]) -> bool:
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value not in _FALSE:
        problems.append(f"{name} must be true or false")
    return False


def positive_number(env: Mapping[str, str], name: str, default: float, kind: type = float) -> float:
    """A positive number from the environment, or default when unset; ConfigError when malformed."""
    problems: list[str] = []
    value = _number(env, name, default, kind, problems)
    if problems:
        raise ConfigError(problems[0])
    return value


def _number(env, name, default, kind, problems):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value <= 0:
        problems.append(f"{name} must be a positive {'whole ' if kind is int else ''}number")
        return default
    return value


@dataclass(frozen=True)
class SmtpSettings:
    """The mail server notifications go through.

    STARTTLS by default (`ssl` for implicit TLS on 465); the server's
    certificate is verified against the system's trust store, which
    SSL_CERT_FILE overrides. Credentials travel only over TLS, except to a
    loopback server.
    """

    host: str
    sender: str
    port: int = 587
    security: str = "starttls"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SmtpSettings:
        """Read and validate the settings; one ConfigError lists every problem."""
        env = os.environ if environ is None else environ
        problems: list[str] = []
        host = env.get(SMTP_HOST_VAR, "").strip()
        sender = env.get(SMTP_FROM_VAR, "").strip()
        for name, value in ((SMTP_HOST_VAR, host), (SMTP_FROM_VAR, sender)):
            if not value:
                problems.append(f"{name} is not set")
        if sender and ("@" not in parseaddr(sender)[1] or "\n" in sender or "\r" in sender):
            problems.append(f"{SMTP_FROM_VAR} must be one email address, as ops@example.com or Name <ops@example.com>")
        security = env.get(SMTP_SECURITY_VAR, "").strip().lower() or "starttls"
        if security not in SMTP_PORTS:
            problems.append(f"{SMTP_SECURITY_VAR} must be one of {', '.join(SMTP_PORTS)}")
            security = "starttls"
        port = _number(env, SMTP_PORT_VAR, SMTP_PORTS[security], int, problems)
        user = env.get(SMTP_USER_VAR, "").strip() or None
        password = env.get(SMTP_PASSWORD_VAR, "") or None
        if (user is None) != (password is None):
            problems.append(f"{SMTP_USER_VAR} and {SMTP_PASSWORD_VAR} must be set together")
        if user and security == "none" and host and not is_loopback(host):
            problems.append(
                f"credentials are sent only over TLS: set {SMTP_SECURITY_VAR} to starttls or ssl"
            )
        timeout = _number(env, NOTIFY_TIMEOUT_VAR, 10.0, float, problems)
        if problems:
            raise ConfigError("SMTP configuration: " + "; ".join(problems))
        return cls(
            host=host, sender=sender, port=port, security=security, user=user,
            password=password, timeout_seconds=timeout,
        )
