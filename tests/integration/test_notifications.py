"""Notifications with real dbt, the real publisher, a local SMTP server
(STARTTLS and a login) and a local webhook receiver: each cohort's
recipients hear about the outcomes they listen to, with the run's counts;
a notification that fails is recorded and changes nothing else."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

pytestmark = pytest.mark.dbt

CHURN = {
    "model": "churners", "name": "Churn risk", "cohort_id": "churn",
    "notify": [{"email": "growth@example.com"}, {"webhook": "$GROWTH_WEBHOOK"}],
}
WINBACK = {
    "model": "winback", "name": "Win back", "cohort_id": "winback",
    "notify": [
        {"email": "ops@example.com", "when": ["failed", "blocked"]},
        {"webhook": "${OPS_WEBHOOK}", "when": "changed"},
    ],
}


PLAN_ONLY = "{cohort_sync_publish_on_run: false}"


def dbt_run(project, *args: str) -> bool:
    """`dbt run` as its own process, as a scheduler runs it (the CLI opens the same DuckDB file)."""
    return project.cli("dbt", "run", *args).returncode == 0


def users_requests(braze) -> int:
    return sum(1 for r in braze.requests() if r["endpoint"] == "users" and 200 <= r.get("status", 0) < 300)


def test_recipients_hear_each_outcome_with_its_counts(make_project, braze, mail_server, webhook, monkeypatch):
    for name, value in mail_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GROWTH_WEBHOOK", webhook.url("/growth/secret-growth-token"))
    monkeypatch.setenv("OPS_WEBHOOK", webhook.url("/ops/secret-ops-token"))
    project = make_project([CHURN, WINBACK])

    def payloads(path: str) -> list[dict]:
        return [payload for where, payload in webhook.posts if where.startswith(path)]

    def subjects(address: str) -> list[str]:
        return [mail.message["Subject"].strip() for mail in mail_server.to(address)]

    # 1. First sync (in `dbt run`): 3 and 2 members added.
    project.set_audience("churners", {"external_id": ["u1", "u2", "u3"]})
    project.set_audience("winback", {"external_id": ["w1", "w2"]})
    assert dbt_run(project)
    assert subjects("growth@example.com") == ["[cohort_sync] Churn risk: success (+3 / -0, 3 members)"]
    assert [(p["status"], p["added"], p["removed"], p["members_after"]) for p in payloads("/growth")] == [
        ("success", 3, 0, 3)
    ]
    assert "3 added, 0 removed, 3 members in Braze" in payloads("/growth")[0]["text"]
    assert subjects("ops@example.com") == []  # listens to failed and blocked only
    assert [(p["cohort_id"], p["added"], p["members_after"]) for p in payloads("/ops")] == [("winback", 2, 2)]
    [mail] = mail_server.to("growth@example.com")
    assert mail.tls and mail.login == mail_server.USER

    # 2. Churn changes (+2, -1); emptying winback is blocked by the guard rail.
    project.set_audience("churners", {"external_id": ["u2", "u3", "u4", "u5"]})
    project.set_audience("winback", {"external_id": []})
    assert not dbt_run(project)  # the blocked cohort fails the model, after notifying
    assert subjects("growth@example.com")[1:] == ["[cohort_sync] Churn risk: success (+2 / -1, 4 members)"]
    assert [(p["added"], p["removed"], p["members_after"]) for p in payloads("/growth")][1:] == [(2, 1, 4)]
    [blocked] = mail_server.to("ops@example.com")
    assert blocked.message["Subject"].strip() == "[cohort_sync] Win back: blocked"
    assert "was blocked and not synced: the run would leave the cohort empty (removing all 2 members)" in blocked.body
    assert len(payloads("/ops")) == 1  # blocked is not 'changed'

    # 3. From the CLI, with the webhook answering 500: the sync is done once and
    #    succeeds; the failed notifications are recorded and printed. Winback
    #    recovered: ops, who heard it was blocked, hears that.
    webhook.status = 500
    project.set_audience("winback", {"external_id": ["w1", "w2", "w3"]})
    assert dbt_run(project, "--vars", "{cohort_sync_publish_on_run: false}")
    before = users_requests(braze)
    published = project.cli("cohort-sync", "publish")
    assert published.returncode == 0, published.stderr
    assert "notifications: 2 sent, 2 failed (recorded in cohort_sync_notification_log)" in published.stdout
    assert subjects("ops@example.com")[1:] == ["[cohort_sync] Win back: recovered (+1 / -0, 3 members)"]
    assert "recovered: synced to Braze again: 1 added, 0 removed, 3 members in Braze" in mail_server.to(
        "ops@example.com")[1].body
    assert "churn -> $GROWTH_WEBHOOK (webhook): $GROWTH_WEBHOOK answered HTTP 500: invalid_token" in published.stdout
    assert users_requests(braze) == before + 1  # winback's one add, sent once
    assert "secret-growth-token" not in published.stdout + published.stderr
    assert subjects("growth@example.com")[2:] == ["[cohort_sync] Churn risk: success (+0 / -0, 4 members)"]
    assert [(p["cohort_id"], p["added"], p["members_after"]) for p in payloads("/ops")][1:] == [("winback", 1, 3)]

    # 4. Braze refuses churn's batch: the cohort fails, and its recipients hear it.
    webhook.status = 200
    braze.set_faults([{"endpoint": "users", "times": 1, "status": 400, "message": "bad batch"}])
    project.set_audience("churners", {"external_id": ["u2", "u3", "u4", "u5", "u6"]})
    assert not dbt_run(project)
    failed = mail_server.to("growth@example.com")[3]
    assert failed.message["Subject"].strip() == "[cohort_sync] Churn risk: failed"
    assert "failed to sync to Braze:" in failed.body and "Members after: 4" in failed.body
    assert [(p["status"], p["added"], p["members_after"]) for p in payloads("/growth")][3:] == [("failed", 0, 4)]
    assert payloads("/growth")[3]["error"]

    runs = [row["run_id"] for row in project.history() if row["cohort_id"] == "churn"]
    assert len(runs) == 4 and sum(1 for row in project.history() if row["run_id"] == runs[2]) == 2
    log = project.query(
        "select run_id, cohort_id, outcome, channel, recipient, status, error from cohort_sync_notification_log "
        "where status <> 'pending' order by sent_at, cohort_id, channel"
    )
    # Each was queued with its cohort's history row, and settled by one attempt.
    queued = project.query(
        "select run_id, cohort_id, outcome, channel, recipient, error from cohort_sync_notification_log "
        "where status = 'pending' order by sent_at, cohort_id, channel"
    )
    assert queued == [(*row[:5], None) for row in log]
    by_run = [[row[1:6] for row in log if row[0] == run] for run in runs]
    assert by_run == [
        [("churn", "success", "email", "growth@example.com", "sent"),
         ("churn", "success", "webhook", "$GROWTH_WEBHOOK", "sent"),
         ("winback", "success", "webhook", "$OPS_WEBHOOK", "sent")],
        [("churn", "success", "email", "growth@example.com", "sent"),
         ("churn", "success", "webhook", "$GROWTH_WEBHOOK", "sent"),
         ("winback", "blocked", "email", "ops@example.com", "sent")],
        [("churn", "success", "email", "growth@example.com", "sent"),
         ("churn", "success", "webhook", "$GROWTH_WEBHOOK", "failed"),
         ("winback", "recovered", "email", "ops@example.com", "sent"),
         ("winback", "success", "webhook", "$OPS_WEBHOOK", "failed")],
        [("churn", "failed", "email", "growth@example.com", "sent"),
         ("churn", "failed", "webhook", "$GROWTH_WEBHOOK", "sent")],
    ]
    assert {row[6] for row in log if row[5] == "failed"} == {
        "$GROWTH_WEBHOOK answered HTTP 500: invalid_token", "$OPS_WEBHOOK answered HTTP 500: invalid_token"
    }

    # `cohort-sync status` shows the notifications of the runs it lists, failures in full.
    status = project.cli("cohort-sync", "status", "--limit", "4").stdout.split("\n\n")[-1].splitlines()
    failed_at = [row[7] for row in project.query(
        "select * from cohort_sync_notification_log where status = 'failed' order by cohort_id")]
    assert status == [
        "notifications in these runs: 4 sent, 2 failed (recorded in cohort_sync_notification_log)",
        f"  {failed_at[0]:%Y-%m-%d %H:%M:%S} {runs[2][:8]} churn -> $GROWTH_WEBHOOK (webhook): "
        "$GROWTH_WEBHOOK answered HTTP 500: invalid_token",
        f"  {failed_at[1]:%Y-%m-%d %H:%M:%S} {runs[2][:8]} winback -> $OPS_WEBHOOK (webhook): "
        "$OPS_WEBHOOK answered HTTP 500: invalid_token",
    ]

    # Secrets stay out of the warehouse and of dbt's artifacts.
    stored = repr(project.query("select * from cohort_sync_notification_log"))
    stored += repr(project.query("select * from cohort_sync_cohorts"))
    artifacts = "".join(p.read_text(errors="ignore") for p in (project.root / "target").rglob("*") if p.is_file())
    for secret in ("secret-growth-token", "secret-ops-token", mail_server.PASSWORD):
        assert secret not in stored and secret not in artifacts


class Tarpit:
    """A mail server that accepts connections on 127.0.0.1 and never says a word."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen()
        self.port = self._socket.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self._socket.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self._socket.close()
        for connection in self.accepted:
            connection.close()


def test_a_run_killed_between_its_sync_and_its_notification_is_notified_once_by_the_next(
    make_project, braze, mail_server, monkeypatch
):
    for name, value in mail_server.env().items():
        monkeypatch.setenv(name, value)
    project = make_project([{"model": "churners", "name": "Churn risk", "cohort_id": "churn",
                             "notify": [{"email": "growth@example.com", "when": ["changed"]}]}])
    project.set_audience("churners", {"external_id": ["u1", "u2", "u3"]})
    assert dbt_run(project, "--vars", PLAN_ONLY)

    # The sync is done and recorded; the publisher dies waiting for the mail server's greeting.
    tarpit = Tarpit()
    try:
        env = {**os.environ, "COHORT_SYNC_SMTP_PORT": str(tarpit.port), "COHORT_SYNC_NOTIFY_TIMEOUT_SECONDS": "60"}
        process = subprocess.Popen(project.command("cohort-sync", "publish"), cwd=project.root, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not tarpit.accepted:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        tarpit.close()
    [synced] = project.history()
    assert (synced["status"], synced["added"]) == ("success", 3)
    assert mail_server.received == []

    # The next run changes nothing (it owes no notification of its own) and sends the one owed.
    again = project.cli("cohort-sync", "publish")
    assert again.returncode == 0, again.stdout + again.stderr
    [mail] = mail_server.to("growth@example.com")
    assert mail.message["Subject"].strip() == "[cohort_sync] Churn risk: success (+3 / -0, 3 members)"
    assert f"Run {synced['run_id']} (cli)." in mail.body
    assert f"1 of them owed by run {synced['run_id'][:8]}, which died before sending them" in again.stdout
    assert project.cli("cohort-sync", "publish").returncode == 0
    assert len(mail_server.received) == 1  # once
    assert project.query("select run_id, outcome, status from cohort_sync_notification_log order by sent_at") == [
        (synced["run_id"], "success", "pending"), (synced["run_id"], "success", "sent")]


def test_a_cohort_failing_five_runs_notifies_once_then_once_when_it_recovers(make_project, braze, mail_server,
                                                                             monkeypatch):
    for name, value in mail_server.env().items():
        monkeypatch.setenv(name, value)
    project = make_project([{"model": "churners", "name": "Churn risk", "cohort_id": "churn", "notify": [
        {"email": "oncall@example.com", "when": ["failed", "blocked"], "repeat_every": "1h"},  # beyond the test
        {"email": "growth@example.com", "when": ["success"]},
    ]}])
    project.set_audience("churners", {"external_id": ["u1", "u2", "u3"]})
    assert dbt_run(project, "--vars", PLAN_ONLY)
    assert json.loads(project.query("select notify from cohort_sync_cohorts")[0][0])[0]["repeat_every_minutes"] == 60

    def subjects(address: str) -> list[str]:
        return [mail.message["Subject"].strip() for mail in mail_server.to(address)]

    braze.set_faults([{"endpoint": "users", "times": 5, "status": 400, "body": '{"message": "bad batch"}'}])
    for _ in range(5):
        assert project.cli("cohort-sync", "publish").returncode == 1
    assert [row["status"] for row in project.history()] == ["failed"] * 5
    assert subjects("oncall@example.com") == ["[cohort_sync] Churn risk: failed"]

    for _ in range(2):  # it succeeds, then stays in step
        assert project.cli("cohort-sync", "publish").returncode == 0
    assert subjects("oncall@example.com") == [
        "[cohort_sync] Churn risk: failed", "[cohort_sync] Churn risk: recovered (+3 / -0, 3 members)"]
    assert subjects("growth@example.com") == [  # hears successes, not the streak
        "[cohort_sync] Churn risk: success (+3 / -0, 3 members)", "[cohort_sync] Churn risk: success (+0 / -0, 3 members)"]
    assert project.query(
        "select outcome, recipient, count(*) from cohort_sync_notification_log where status = 'sent' "
        "group by 1, 2 order by 1, 2") == [
        ("failed", "oncall@example.com", 1), ("recovered", "oncall@example.com", 1),
        ("success", "growth@example.com", 2)]
