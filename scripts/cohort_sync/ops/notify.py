"""Notifications: a cohort's recipients hear when an import completes or fails.

Recipients are declared per cohort (`notify` in cohort_sync_cohorts): an
email address, sent through the SMTP server of the COHORT_SYNC_SMTP_*
variables, or a webhook whose URL is in an environment variable, posted a
JSON summary whose `text` field Slack shows as is.

Neither lost nor noisy. The publisher queues a cohort's notifications as
'pending' records of cohort_sync_notification_log in the transaction that
writes its history row, sends them before it releases the run lock, and
settles each with a 'sent' or 'failed' record right after the attempt. A
run that died in between leaves pending records that the next run (holding
the lock, so no other run is sending them) sends, once, if they were
queued within NOTIFY_CATCH_UP. A cohort that keeps failing notifies when
it starts failing, then at most once per recipient's `repeat_every`, and
recipients who hear about failures hear when it recovers (owed()). A
notification that cannot be sent is logged and recorded with its reason;
it never fails or repeats the sync.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

import requests

from ..config import NOTIFY_TIMEOUT_VAR, ConfigError, SmtpSettings, is_loopback, positive_number
from ..run.history import HistoryRow

log = logging.getLogger(__name__)

DEFAULT_WHEN = frozenset({"success", "failed", "blocked"})  # not_due and dry_run never notify
FAILING = frozenset({"failed", "blocked"})
DEFAULT_REPEAT = timedelta(hours=24)  # a cohort that keeps failing: at most one notification a day
#: How far back a run looks for notifications that a run which died queued and never sent.
NOTIFY_CATCH_UP = timedelta(hours=24)


class NotificationError(Exception):
    """A notification was not accepted; the message says why, without secrets."""


@dataclass(frozen=True)
class Recipient:
    """Who hears about a cohort's imports, and about which outcomes."""

    channel: str  # 'email' or 'webhook'
    address: str  # an email address, or the environment variable holding the webhook URL
    when: frozenset[str] = DEFAULT_WHEN  # outcomes, plus 'changed': a success that changed members
    repeat_every: timedelta = DEFAULT_REPEAT  # while the cohort keeps failing, at most one notification per

    @property
    def label(self) -> str:
        """As recorded and logged: the address, or $VARIABLE (never a webhook URL)."""
        return self.address if self.channel == "email" else f"${self.address}"

    @classmethod
    def from_label(cls, channel: str, label: str) -> Recipient:
        """The recipient a notification record names."""
        return cls(channel, label[1:] if channel == "webhook" else label)

    def wants(self, row: HistoryRow) -> bool:
        """partial (delivered, but Braze rejected some changes) is news to those
        who hear successes and to those who hear failures."""
        if row.status in self.when or (row.status == "partial" and self.when & {"success", "failed"}):
            return True
        return row.status in ("success", "partial") and "changed" in self.when and bool(row.added or row.removed)


def recipients_from_json(text: str | None) -> tuple[Recipient, ...]:
    """The recipients of cohort_sync_cohorts.notify, as the package's macro wrote them."""
    return tuple(
        Recipient(
            channel="email" if "email" in entry else "webhook",
            address=entry.get("email") or entry["webhook"],
            when=frozenset(entry.get("when") or DEFAULT_WHEN),
            repeat_every=(timedelta(minutes=int(entry["repeat_every_minutes"]))
                          if entry.get("repeat_every_minutes") else DEFAULT_REPEAT),
        )
        for entry in json.loads(text or "[]")
    )


@dataclass(frozen=True)
class Streak:
    """The cohort's failing streak before this run: the statuses of its failed
    or blocked rows since its last success (empty: it is not failing), and
    when each recipient (channel, label) was last notified of it: a failure
    notification sent, or queued and not settled yet."""

    statuses: frozenset[str] = frozenset()
    notified: Mapping[tuple[str, str], datetime] = field(default_factory=dict)


def owed(recipients: Iterable[Recipient], row: HistoryRow, streak: Streak, now: datetime) -> list[tuple[Recipient, str]]:
    """The notifications a cohort's outcome owes, as (recipient, outcome).

    A recipient hears the outcomes in its `when`, except that while the
    cohort keeps failing (its last outcome before this one was a failure
    too) a failure is sent only if the recipient was not notified of the
    streak within its `repeat_every`. The success that ends a streak is a
    'recovered' notification to recipients who hear about the streak's
    outcomes (instead of 'success', for those who hear both).
    """
    notifications = []
    seen: set[tuple[str, str]] = set()
    for recipient in recipients:
        if (recipient.channel, recipient.label) in seen:  # listed twice: notified once
            continue
        seen.add((recipient.channel, recipient.label))
        if row.status == "success" and recipient.when & streak.statuses:
            notifications.append((recipient, "recovered"))
        elif not recipient.wants(row):
            continue
        elif row.status in FAILING and streak.statuses:
            last = streak.notified.get((recipient.channel, recipient.label))
            if last is None or now - last >= recipient.repeat_every:
                notifications.append((recipient, row.status))
        else:
            notifications.append((recipient, row.status))
    return notifications


@dataclass(frozen=True)
class NotificationRecord:
    """One row of cohort_sync_notification_log."""

    run_id: str
    cohort_id: str
    outcome: str  # the cohort's status, or 'recovered'
    channel: str
    recipient: str
    status: str  # 'pending' (queued with the history row), then 'sent' or 'failed'
    error: str | None
    sent_at: datetime  # when it was queued, or attempted


def summary_text(row: HistoryRow, outcome: str | None = None) -> str:
    """One line for people: what the import did, with its counts."""
    cohort = f"'{row.cohort_name}' ({row.cohort_id})"
    members = f"{row.members_after or 0:,} members in Braze"
    counts = f"{row.added:,} added, {row.removed:,} removed"
    if outcome == "recovered":
        text = f"cohort {cohort} recovered: synced to Braze again: {counts}, {members}."
    elif row.status == "success":
        text = f"cohort {cohort} synced to Braze: {counts}, {members}."
    elif row.status == "partial":
        text = (f"cohort {cohort} synced to Braze except {row.rejected:,} change(s) Braze rejected "
                f"(not retried; fix their data): {counts}, {members}. {row.error}.")
    elif row.status == "blocked":
        text = f"cohort {cohort} was blocked and not synced: {row.error}. {members}."
    else:
        text = f"cohort {cohort} failed to sync to Braze: {row.error}. {counts} before the failure, {members}."
    return f"cohort_sync: {text} Run {row.run_id} ({row.entry_point})."


def summary_payload(row: HistoryRow, outcome: str | None = None) -> dict[str, Any]:
    """The webhook's JSON: Slack's `text` (with &, <, > escaped as Slack wants), the
    notification's `outcome` (the status, or 'recovered'), and the history row's fields."""

    def value(v: Any) -> Any:
        return f"{v.isoformat()}Z" if isinstance(v, datetime) else v

    text = summary_text(row, outcome).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return {"text": text, "outcome": outcome or row.status, **{f.name: value(getattr(row, f.name)) for f in fields(row)}}


def email_message(row: HistoryRow, sender: str, to: str, outcome: str | None = None) -> EmailMessage:
    counts = (
        f" (+{row.added:,} / -{row.removed:,}, {row.members_after or 0:,} members)"
        if row.status in ("success", "partial") else ""
    )
    message = EmailMessage()
    name = " ".join(row.cohort_name.split())  # no line breaks in a header
    message["Subject"] = f"[cohort_sync] {name}: {outcome or row.status}{counts}"
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="cohort-sync.invalid")
    details = [
        ("Cohort", f"{row.cohort_name} ({row.cohort_id})"),
        ("Status", row.status),
        ("Added", f"{row.added:,}"),
        ("Removed", f"{row.removed:,}"),
        ("Rejected", f"{row.rejected:,} (by Braze)"),
        ("Members after", f"{row.members_after or 0:,}"),
        ("Requests", f"{row.requests:,} ({row.retries:,} retries)"),
        ("Started", f"{row.started_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("Finished", f"{row.finished_at:%Y-%m-%d %H:%M:%S} UTC" if row.finished_at else "-"),
        ("Run", f"{row.run_id} ({row.entry_point})"),
    ]
    if row.error:
        details.append(("Error", row.error))
    table = "\n".join(f"{label + ':':<15}{text}" for label, text in details)
    message.set_content(
        f"{summary_text(row, outcome)}\n\n{table}\n\n"
        "Every run is in the cohort_sync_import_history model.\n"
    )
    return message


class Notifier:
    """Sends a run's notifications; settings are read from the environment when first needed."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if environ is None else environ
        self._smtp: SmtpSettings | None = None
        self._smtp_down: str | None = None  # why the mail server failed in this run
        self._secrets: set[str] = set()

    def send(self, recipients: Iterable[Recipient], row: HistoryRow, at: datetime) -> list[NotificationRecord]:
        """Notify each recipient that wants this outcome; one record each, sent or failed."""
        return [self.deliver(recipient, row, row.status, at) for recipient in recipients if recipient.wants(row)]

    def deliver(self, recipient: Recipient, row: HistoryRow, outcome: str, at: datetime) -> NotificationRecord:
        """Send one notification of `outcome` (the row's status, or 'recovered'); its record, sent or failed."""
        status, error = "sent", None
        try:
            if recipient.channel == "email":
                self._email(recipient, row, outcome)
            else:
                self._webhook(recipient, row, outcome)
        except (NotificationError, ConfigError) as exc:
            status, error = "failed", self._redact(str(exc))
        except Exception as exc:  # noqa: BLE001 - a notification never fails the sync
            status, error = "failed", self._redact(f"{type(exc).__name__}: {exc}")
        if error:
            log.warning("cohort '%s': notification to %s failed: %s", row.cohort_id, recipient.label, error)
        else:
            log.info("cohort '%s': notified %s of %s", row.cohort_id, recipient.label, outcome)
        return NotificationRecord(
            run_id=row.run_id, cohort_id=row.cohort_id, outcome=outcome, channel=recipient.channel,
            recipient=recipient.label, status=status, error=error, sent_at=at,
        )

    def _email(self, recipient: Recipient, row: HistoryRow, outcome: str) -> None:
        if self._smtp_down:  # one dead server costs one timeout per run, not one per email
            raise NotificationError(f"{self._smtp_down} (the mail server failed earlier in this run; not tried again)")
        if self._smtp is None:
            self._smtp = SmtpSettings.from_env(self._env)
            if self._smtp.password:
                self._secrets.add(self._smtp.password)
        smtp = self._smtp
        message = email_message(row, smtp.sender, recipient.address, outcome)
        try:
            refused = self._deliver(smtp, message, recipient.address)
        except smtplib.SMTPRecipientsRefused as exc:
            raise NotificationError(f"the mail server refused {recipient.address}: {exc.recipients}") from None
        except OSError as exc:  # connection, TLS, login, sender: the same for every email of the run
            self._smtp_down = f"{type(exc).__name__}: {exc}"
            raise
        if refused:
            raise NotificationError(f"the mail server refused {recipient.address}: {refused}")

    def _deliver(self, smtp: SmtpSettings, message: EmailMessage, to: str) -> dict:
        # The system's trust store, or the file of the standard SSL_CERT_FILE variable.
        context = ssl.create_default_context(cafile=self._env.get("SSL_CERT_FILE") or None)
        local = socket.gethostname()  # not getfqdn(): no DNS lookup
        if smtp.security == "ssl":
            server = smtplib.SMTP_SSL(smtp.host, smtp.port, local_hostname=local,
                                      timeout=smtp.timeout_seconds, context=context)
        else:
            server = smtplib.SMTP(smtp.host, smtp.port, local_hostname=local, timeout=smtp.timeout_seconds)
        with server:
            if smtp.security == "starttls":
                server.starttls(context=context)
            if smtp.user:
                server.login(smtp.user, smtp.password or "")
            return server.send_message(message, to_addrs=[to])

    def _webhook(self, recipient: Recipient, row: HistoryRow, outcome: str) -> None:
        url = self._env.get(recipient.address, "").strip()
        if not url:
            raise NotificationError(f"environment variable {recipient.address} (the webhook URL) is not set")
        self._secrets.add(url)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NotificationError(f"{recipient.label} is not an http(s) URL")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise NotificationError(f"{recipient.label} must use https:// (plain http only for loopback addresses)")
        for part in (parts.path, parts.query):  # Slack's token is in the path, others' in the query
            if len(part) > 1:
                self._secrets.add(part)
        timeout = positive_number(self._env, NOTIFY_TIMEOUT_VAR, 10.0, float)
        try:
            response = requests.post(url, json=summary_payload(row, outcome), timeout=timeout, allow_redirects=False)
        except requests.RequestException as exc:
            # The exception's text quotes the URL (re-encoded): say what happened without it.
            raise NotificationError(f"{recipient.label}: {_failure(exc, timeout)}") from None
        if not 200 <= response.status_code < 300:
            body = self._redact(response.text.strip())[:200]
            raise NotificationError(f"{recipient.label} answered HTTP {response.status_code}: {body}")

    def _redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "****")
        return text


def _failure(exc: requests.RequestException, timeout: float) -> str:
    """What went wrong with a webhook request, in words that carry no part of its URL."""
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s ({type(exc).__name__})"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed: is the server's certificate trusted? (SSLError)"
    if isinstance(exc, requests.ConnectionError):
        return f"could not connect ({type(exc).__name__})"
    return type(exc).__name__
