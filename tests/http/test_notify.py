"""Notifications against real local servers: email through SMTP with
STARTTLS and a login, webhooks with a JSON summary; failures are records,
never exceptions, and never show a secret."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import pytest

from cohort_sync.config import ConfigError, SmtpSettings
from cohort_sync.ops.notify import Notifier, Recipient, Streak, owed, recipients_from_json, summary_payload
from cohort_sync.warehouse.ledger import HistoryRow
from tests.receivers import free_port

AT = datetime(2026, 3, 2, 6, 0, 5)


def history_row(status: str = "success", **values) -> HistoryRow:
    defaults = dict(
        run_id="run-42", cohort_id="churn_risk", cohort_name="Churn-risk customers", entry_point="cli",
        started_at=datetime(2026, 3, 2, 6, 0), finished_at=datetime(2026, 3, 2, 6, 0, 4),
        status=status, added=1200, removed=35, requests=3, retries=1, members_after=4321,
    )
    return HistoryRow(**{**defaults, **values})


def email(address: str, *when: str) -> Recipient:
    return Recipient("email", address, frozenset(when)) if when else Recipient("email", address)


def hook(variable: str, *when: str) -> Recipient:
    return Recipient("webhook", variable, frozenset(when)) if when else Recipient("webhook", variable)


def test_email_goes_through_starttls_with_a_login_and_carries_the_counts(mail_server):
    records = Notifier(mail_server.env()).send([email("growth@example.com")], history_row(), AT)

    assert [(r.status, r.error, r.recipient, r.channel, r.outcome) for r in records] == [
        ("sent", None, "growth@example.com", "email", "success")
    ]
    [mail] = mail_server.received
    assert mail.tls and mail.login == mail_server.USER
    assert mail.rcpt_tos == ["growth@example.com"] and mail.mail_from == "cohort-sync@example.com"
    assert mail.message["Subject"].strip() == "[cohort_sync] Churn-risk customers: success (+1,200 / -35, 4,321 members)"
    assert mail.message["To"] == "growth@example.com"
    assert "synced to Braze: 1,200 added, 35 removed, 4,321 members in Braze" in mail.body
    assert "Members after: 4,321" in mail.body and "Requests:      3 (1 retries)" in mail.body


def test_implicit_tls_is_refused_by_a_starttls_server_and_recorded(mail_server):
    env = {**mail_server.env(), "COHORT_SYNC_SMTP_SECURITY": "ssl", "COHORT_SYNC_NOTIFY_TIMEOUT_SECONDS": "3"}
    [record] = Notifier(env).send([email("growth@example.com")], history_row(), AT)
    assert record.status == "failed" and "SSL" in record.error
    assert mail_server.received == []


def test_webhook_receives_a_json_summary_with_a_slack_text(webhook):
    env = {"GROWTH_WEBHOOK": webhook.url()}
    row = history_row("failed", added=1000, removed=0, error="Braze answered 400: bad payload")
    records = Notifier(env).send([hook("GROWTH_WEBHOOK")], row, AT)

    assert [(r.status, r.recipient, r.channel, r.outcome) for r in records] == [
        ("sent", "$GROWTH_WEBHOOK", "webhook", "failed")
    ]
    [(path, payload)] = webhook.posts
    assert path == "/services/T0001/B0002/secret-hook-token"
    assert payload == summary_payload(row)
    assert payload["text"] == (
        "cohort_sync: cohort 'Churn-risk customers' (churn_risk) failed to sync to Braze: "
        "Braze answered 400: bad payload. 1,000 added, 0 removed before the failure, "
        "4,321 members in Braze. Run run-42 (cli)."
    )
    assert (payload["added"], payload["removed"], payload["members_after"], payload["status"]) == (1000, 0, 4321, "failed")
    assert payload["started_at"] == "2026-03-02T06:00:00Z"


@pytest.mark.parametrize(
    ("when", "row", "notified"),
    [
        ((), history_row(), True),  # default: success, failed, blocked
        ((), history_row("blocked", error="would empty it"), True),
        (("failed", "blocked"), history_row(), False),
        (("failed", "blocked"), history_row("failed", error="x"), True),
        (("changed",), history_row(), True),
        (("changed",), history_row(added=0, removed=0), False),
        (("changed",), history_row("failed", error="x"), False),
    ],
)
def test_recipients_hear_only_the_outcomes_they_listen_to(webhook, when, row, notified):
    records = Notifier({"HOOK": webhook.url()}).send([hook("HOOK", *when)], row, AT)
    assert len(records) == len(webhook.posts) == (1 if notified else 0)


def test_not_due_and_dry_runs_never_notify():
    assert not hook("HOOK").wants(history_row("not_due"))
    assert not email("a@example.com").wants(history_row("dry_run"))


def test_failures_are_recorded_with_their_reason_and_no_secret(mail_server, webhook, caplog):
    webhook.status = 500
    closed = free_port()
    env = {
        **mail_server.env(),
        "BROKEN_HOOK": webhook.url(),
        # a refused connection: requests' message quotes the path and query, re-encoded
        "DOWN_HOOK": f"http://127.0.0.1:{closed}/hooks/path|secret?key=query-secret&token=x",
        "PLAIN_HOOK": "http://hooks.example.com/services/T1/B2/plain-secret",
        "NOT_A_URL": "hooks.example.com/services/not-a-url-secret",
    }
    recipients = [hook("BROKEN_HOOK"), hook("DOWN_HOOK"), hook("MISSING_HOOK"), hook("PLAIN_HOOK"), hook("NOT_A_URL")]
    with caplog.at_level(logging.INFO, logger="cohort_sync"):
        records = Notifier(env).send(recipients, history_row(), AT)
        records += Notifier({**env, "COHORT_SYNC_SMTP_PASSWORD": "wrong-Pa55word"}).send(
            [email("a@example.com")], history_row(), AT)
        records += Notifier({**env, "COHORT_SYNC_SMTP_PORT": str(closed)}).send(
            [email("b@example.com")], history_row(), AT)
        records += Notifier({**env, "SSL_CERT_FILE": ""}).send([email("c@example.com")], history_row(), AT)
        records += Notifier({}).send([email("d@example.com")], history_row(), AT)

    errors = {r.recipient: r.error for r in records}
    assert all(r.status == "failed" for r in records) and len(records) == 9
    assert errors["$BROKEN_HOOK"] == "$BROKEN_HOOK answered HTTP 500: invalid_token"
    assert errors["$DOWN_HOOK"] == "$DOWN_HOOK: could not connect (ConnectionError)"
    assert errors["$MISSING_HOOK"] == "environment variable MISSING_HOOK (the webhook URL) is not set"
    assert errors["$PLAIN_HOOK"] == "$PLAIN_HOOK must use https:// (plain http only for loopback addresses)"
    assert errors["$NOT_A_URL"] == "$NOT_A_URL is not an http(s) URL"
    assert errors["a@example.com"].startswith("SMTPAuthenticationError")
    assert errors["b@example.com"].startswith("ConnectionRefusedError")
    assert "CERTIFICATE_VERIFY_FAILED" in errors["c@example.com"]
    assert errors["d@example.com"] == (
        "SMTP configuration: COHORT_SYNC_SMTP_HOST is not set; COHORT_SYNC_SMTP_FROM is not set"
    )
    assert len(webhook.posts) == 1 and mail_server.received == []
    said = caplog.text + repr(records)
    for secret in ("secret-hook-token", "plain-secret", "not-a-url-secret", "path|secret", "path%7Csecret",
                   "query-secret", mail_server.PASSWORD, "wrong-Pa55word"):
        assert secret not in said
    assert caplog.text.count("notification to") == 9


def test_an_echoed_url_is_masked_before_the_answer_is_cut(webhook):
    url = webhook.url("/services/secret-hook-token/B0002/T0001")
    padding = 200 - len(" posted to ") - (url.index("/B0002") + 3)  # the 200-character cut falls in the URL
    webhook.status, webhook.body = 403, "x" * padding + " posted to " + url + " is revoked"
    [record] = Notifier({"HOOK": url}).send([hook("HOOK")], history_row(), AT)
    assert record.error.startswith("$HOOK answered HTTP 403: xxx") and "secret-hook-token" not in record.error


def test_a_dead_mail_server_costs_one_attempt_per_run(caplog):
    closed = free_port()
    env = {"COHORT_SYNC_SMTP_HOST": "127.0.0.1", "COHORT_SYNC_SMTP_PORT": str(closed),
           "COHORT_SYNC_SMTP_FROM": "a@example.com"}
    notifier = Notifier(env)
    first = notifier.send([email("a@example.com"), email("b@example.com")], history_row(), AT)
    second = notifier.send([email("c@example.com")], history_row(cohort_id="other"), AT)
    assert [r.error for r in first + second] == [
        "ConnectionRefusedError: [Errno 111] Connection refused",
        *["ConnectionRefusedError: [Errno 111] Connection refused "
          "(the mail server failed earlier in this run; not tried again)"] * 2,
    ]


def test_texts_are_safe_for_slack_and_for_mail_headers(webhook, mail_server):
    row = history_row(cohort_name="Churn & <!channel>\nrisk")
    Notifier({"HOOK": webhook.url()}).send([hook("HOOK")], row, AT)
    [(_, payload)] = webhook.posts
    assert payload["text"].startswith("cohort_sync: cohort 'Churn &amp; &lt;!channel&gt;\nrisk' (churn_risk)")
    assert payload["cohort_name"] == "Churn & <!channel>\nrisk"
    [record] = Notifier(mail_server.env()).send([email("a@example.com")], row, AT)
    assert record.status == "sent"
    assert mail_server.received[0].message["Subject"].strip().startswith("[cohort_sync] Churn & <!channel> risk: success")


def test_smtp_settings_are_validated_together():
    with pytest.raises(ConfigError) as error:
        SmtpSettings.from_env({
            "COHORT_SYNC_SMTP_HOST": "smtp.example.com", "COHORT_SYNC_SMTP_FROM": "not an address",
            "COHORT_SYNC_SMTP_SECURITY": "tls", "COHORT_SYNC_SMTP_USER": "me",
            "COHORT_SYNC_SMTP_PORT": "0",
        })
    assert str(error.value) == (
        "SMTP configuration: COHORT_SYNC_SMTP_FROM must be one email address, as ops@example.com or "
        "Name <ops@example.com>; COHORT_SYNC_SMTP_SECURITY must be one of starttls, ssl, none; "
        "COHORT_SYNC_SMTP_PORT must be a positive whole number; "
        "COHORT_SYNC_SMTP_USER and COHORT_SYNC_SMTP_PASSWORD must be set together"
    )
    with pytest.raises(ConfigError, match="credentials are sent only over TLS"):
        SmtpSettings.from_env({
            "COHORT_SYNC_SMTP_HOST": "smtp.example.com", "COHORT_SYNC_SMTP_FROM": "a@example.com",
            "COHORT_SYNC_SMTP_SECURITY": "none", "COHORT_SYNC_SMTP_USER": "me", "COHORT_SYNC_SMTP_PASSWORD": "pw",
        })
    settings = SmtpSettings.from_env({
        "COHORT_SYNC_SMTP_HOST": "smtp.example.com", "COHORT_SYNC_SMTP_FROM": "a@example.com",
        "COHORT_SYNC_SMTP_SECURITY": "ssl", "COHORT_SYNC_SMTP_PASSWORD": "pw-hidden", "COHORT_SYNC_SMTP_USER": "me",
    })
    assert (settings.port, settings.security) == (465, "ssl") and "pw-hidden" not in repr(settings)
    assert SmtpSettings.from_env({"COHORT_SYNC_SMTP_HOST": "h", "COHORT_SYNC_SMTP_FROM": "a@b"}).port == 587


def test_recipients_are_read_from_the_cohorts_model_json():
    text = '[{"email": "a@example.com", "when": ["failed"]}, {"webhook": "HOOK", "when": ["success", "changed"]}]'
    assert recipients_from_json(text) == (
        Recipient("email", "a@example.com", frozenset({"failed"})),
        Recipient("webhook", "HOOK", frozenset({"success", "changed"})),
    )
    assert recipients_from_json("[]") == recipients_from_json(None) == ()


def test_a_failing_cohort_notifies_as_it_starts_then_once_per_period_and_when_it_recovers():
    oncall = Recipient("email", "oncall@example.com", frozenset({"failed", "blocked"}), timedelta(hours=6))
    growth = email("growth@example.com", "success")
    blocked_only = email("blocked@example.com", "blocked")
    failed = history_row("failed", error="Braze answered 400")
    assert owed([oncall, growth, blocked_only], failed, Streak(), AT) == [(oncall, "failed")]  # it starts failing

    streak = Streak(frozenset({"failed"}), {("email", "oncall@example.com"): AT})
    assert owed([oncall], failed, streak, AT + timedelta(hours=5, minutes=59)) == []  # it keeps failing
    assert owed([oncall], failed, streak, AT + timedelta(hours=6)) == [(oncall, "failed")]  # a period later
    # Not notified of this streak yet (its notification failed, or it was added since): now.
    assert owed([oncall], failed, Streak(frozenset({"failed"})), AT) == [(oncall, "failed")]
    # A blocked cohort that was failing: the same streak.
    assert owed([oncall], history_row("blocked", error="x"), streak, AT + timedelta(hours=1)) == []

    # The success that ends it: 'recovered' to those who hear the streak's outcomes.
    assert owed([oncall, growth, blocked_only], history_row(), streak, AT) == [(oncall, "recovered"), (growth, "success")]
    assert owed([oncall, growth], history_row(), Streak(), AT) == [(growth, "success")]  # was not failing
    assert owed([oncall, oncall], failed, Streak(), AT) == [(oncall, "failed")]  # listed twice: once


def test_a_recovery_reads_as_one(webhook, mail_server):
    Notifier({"HOOK": webhook.url()}).deliver(hook("HOOK"), history_row(), "recovered", AT)
    [(_, payload)] = webhook.posts
    assert (payload["outcome"], payload["status"]) == ("recovered", "success")
    assert payload["text"].startswith("cohort_sync: cohort 'Churn-risk customers' (churn_risk) recovered: synced")
    record = Notifier(mail_server.env()).deliver(email("a@example.com"), history_row(), "recovered", AT)
    assert (record.outcome, record.status) == ("recovered", "sent")
    assert mail_server.received[0].message["Subject"].strip() == (
        "[cohort_sync] Churn-risk customers: recovered (+1,200 / -35, 4,321 members)")


def test_repeat_every_is_read_from_the_cohorts_model_json():
    [recipient] = recipients_from_json('[{"email": "a@example.com", "when": ["failed"], "repeat_every_minutes": 90}]')
    assert recipient.repeat_every == timedelta(minutes=90)
    assert recipients_from_json('[{"email": "a@example.com"}]')[0].repeat_every == timedelta(days=1)
