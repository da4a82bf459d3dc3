"""Same inputs, same answers, on DuckDB, PostgreSQL and Spark.

Each scenario runs on every engine: real dbt (in-process) builds the plan,
and the publisher sends it to the local endpoint: inside `dbt run` on
DuckDB, through `cohort-sync publish` on the others, as a scheduler would.
After every sync the test asserts the expected changes, endpoint
membership and published state, and that they are identical to what the
DuckDB run of the same scenario produced.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from typing import Any

import pytest

from cohort_sync.cli import main as cli_main
from cohort_sync.warehouse.ledger import Ledger, StaleSchemaError
from cohort_sync.warehouse.target import open_ledger, resolve_target
from tests.endpoint_requests import received_twice
from tests.sync_project import SyncProject, failure_text
from tests.warehouses import ENGINES, PostgresWarehouse, SparkOwnProcesses, Warehouse, free_port

pytestmark = pytest.mark.dbt

CHURN = {"model": "churn_audience", "name": "Churn risk"}

#: Fingerprints of each scenario's syncs on the first engine that ran it (DuckDB).
SEEN: dict[str, tuple[str, list[Any]]] = {}


def ids(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(start, stop)]


def fingerprint(project: SyncProject, braze) -> dict[str, Any]:
    """What a sync left behind, engine-independent: the plan, Braze, the published state."""
    return {
        "changes": [
            (c, int(b), int(n), bool(r), k) for c, b, n, r, k in project.query(
                "select cohort_id, batch_number, change_number, should_remove, member_key "
                "from cohort_sync_changes order by cohort_id, batch_number, change_number, should_remove"
            )
        ],
        "braze": {cohort_id: {k: v for k, v in held.items() if k != "created_at"}
                  for cohort_id, held in braze.cohorts().items()},
        "published": project.query(
            "select cohort_id, member_key, identifier_type, external_id, alias_name, alias_label, device_id "
            "from cohort_sync_published_state order by cohort_id, member_key"
        ),
    }


class Scenario:
    """Syncs a project and records each sync's fingerprint for the cross-engine check."""

    def __init__(self, name: str, project: SyncProject, braze) -> None:
        self.name, self.project, self.braze = name, project, braze
        self.fingerprints: list[dict[str, Any]] = []

    def sync(self, **vars: Any) -> dict[str, Any]:
        assert self.project.sync(vars=vars or None), f"sync failed on {self.project.warehouse.name}"
        self.fingerprints.append(fingerprint(self.project, self.braze))
        return self.fingerprints[-1]

    def requests(self, since: int = 0) -> list[dict]:
        return [r for r in self.braze.requests()[since:] if "fault" not in r]

    def check_same_as_first_engine(self) -> None:
        """Identical to the DuckDB run of the scenario (which runs first in a full session)."""
        engine = self.project.warehouse.name
        if engine == "duckdb":
            SEEN[self.name] = (engine, self.fingerprints)
        elif self.name in SEEN:
            assert self.fingerprints == SEEN[self.name][1], f"{engine} differs from duckdb"
        else:
            warnings.warn(f"{self.name}: no DuckDB run in this session to compare {engine} with", stacklevel=2)


@pytest.fixture
def scenario(request, make_engine_project, braze):
    def make(cohorts) -> Scenario:
        return Scenario(request.node.originalname, make_engine_project(cohorts), braze)

    return make


def test_first_sync_then_five_leave_and_five_join(scenario):
    s = scenario([CHURN])
    members = ids("u", 0, 2500)
    s.project.set_audience("churn_audience", {"external_id": members})
    first = s.sync()
    first_requests = [(r["endpoint"], r.get("identifiers")) for r in s.requests()]
    # the name call first; then the batches, sent concurrently, in any order
    assert first_requests[0] == ("cohorts", None)
    assert sorted(first_requests[1:], reverse=True) == [("users", 1000), ("users", 1000), ("users", 500)]
    assert [(b, r) for _, b, _, r, _ in first["changes"]].count((3, False)) == 500
    assert first["braze"]["churn_audience"]["user_ids"] == members
    assert [row[1] for row in first["published"]] == [f"external_id:{m}" for m in members]

    sent = len(s.requests())
    now = members[5:] + ids("new", 0, 5)
    s.project.set_audience("churn_audience", {"external_id": now})
    second = s.sync()
    [request] = s.requests(sent)
    assert (request["endpoint"], request["adds"], request["removes"]) == ("users", 5, 5)
    assert [(k, r) for _, _, _, r, k in second["changes"]] == (
        [(f"external_id:{m}", True) for m in members[:5]] + [(f"external_id:new{n:05d}", False) for n in range(5)]
    )
    assert second["braze"]["churn_audience"]["user_ids"] == sorted(now)
    assert {row[1] for row in second["published"]} == {f"external_id:{m}" for m in now}
    s.check_same_as_first_engine()


def test_removal_below_the_guard(scenario):
    s = scenario([CHURN])
    s.project.set_audience("churn_audience", {"external_id": ids("u", 0, 30)})
    s.sync()
    s.project.set_audience("churn_audience", {"external_id": ids("u", 0, 20)})
    after = s.sync()
    assert [(r["adds"], r["removes"]) for r in s.requests() if r["endpoint"] == "users"][-1] == (0, 10)
    assert after["braze"]["churn_audience"]["user_ids"] == ids("u", 0, 20)
    assert len(after["published"]) == 20
    s.check_same_as_first_engine()


def test_notifications_are_sent_and_recorded(scenario, webhook, monkeypatch):
    monkeypatch.setenv("CHURN_WEBHOOK", webhook.url())
    monkeypatch.delenv("COHORT_SYNC_SMTP_HOST", raising=False)
    s = scenario([{**CHURN, "notify": [
        {"webhook": "$CHURN_WEBHOOK", "when": ["changed"]},
        {"email": "o'brien@example.com"},  # a quote through the cohorts model's JSON literal
    ]}])
    s.project.set_audience("churn_audience", {"external_id": ids("u", 0, 3)})
    s.sync()
    s.sync()  # nothing changed: the webhook hears nothing
    assert [(p["status"], p["added"], p["members_after"]) for _, p in webhook.posts] == [("success", 3, 3)]
    log = s.project.query(
        "select outcome, channel, recipient, status, error from cohort_sync_notification_log "
        "where status <> 'pending' order by sent_at, channel"
    )
    # Each was queued with its cohort's history row, and settled by one attempt.
    queued = s.project.query(
        "select outcome, channel, recipient from cohort_sync_notification_log where status = 'pending' "
        "order by sent_at, channel"
    )
    assert queued == [row[:3] for row in log]
    smtp_unset = "SMTP configuration: COHORT_SYNC_SMTP_HOST is not set; COHORT_SYNC_SMTP_FROM is not set"
    assert log == [
        ("success", "email", "o'brien@example.com", "failed", smtp_unset),
        ("success", "webhook", "$CHURN_WEBHOOK", "sent", None),
        ("success", "email", "o'brien@example.com", "failed", smtp_unset),
    ]
    if not s.project.warehouse.publishes_in_dbt:  # DuckDB's: test_notifications.py (in-process dbt holds the file)
        ledger = open_ledger(resolve_target(s.project.root, s.project.root))
        try:
            runs = {row["run_id"] for row in s.project.history()}
            assert [(r.channel, r.status, r.error) for r in ledger.notifications(runs)] == [
                (channel, status, error) for _, channel, _, status, error in log
            ]
        finally:
            ledger.close()
    s.check_same_as_first_engine()


def test_rename_calls_the_name_endpoint_only(scenario):
    s = scenario([CHURN])
    s.project.set_audience("churn_audience", {"external_id": ids("u", 0, 3)})
    s.sync()
    sent = len(s.requests())
    s.project.declare([{**CHURN, "name": "Churn risk (v2)"}])
    after = s.sync()
    assert [r["endpoint"] for r in s.requests(sent)] == ["cohorts"]
    assert after["braze"]["churn_audience"]["name"] == "Churn risk (v2)"
    assert s.project.query("select cohort_name from cohort_sync_published_cohorts") == [("Churn risk (v2)",)]
    s.check_same_as_first_engine()


def test_each_identifier_type_precedence_and_cast(scenario):
    s = scenario([
        {"model": "known_users", "name": "Known users", "cohort_id": "known"},
        {"model": "crm_leads", "name": "CRM leads"},
        {"model": "anonymous_devices", "name": "Anonymous devices"},
        {"model": "numeric_ids", "name": "Numeric ids"},
    ])
    s.project.set_audience("known_users", {
        "external_id": ["u1", "u2", None],
        "alias_name": ["a-ignored", None, "lead-9"],
        "alias_label": ["crm", None, "crm"],
        "device_id": ["d-ignored", "d-ignored-2", "d-ignored-3"],
    })
    s.project.set_audience("crm_leads", {"alias_name": ["lead-1", "lead-2"], "alias_label": ["crm", "crm"]})
    s.project.set_audience("anonymous_devices", {"device_id": ["dev-1", "dev-2", "dev-3"]})
    s.project.set_audience("numeric_ids", {"external_id": [101, 102]}, types={"external_id": "bigint"})
    held = s.sync()["braze"]
    assert held["known"]["user_ids"] == ["u1", "u2"]
    assert held["known"]["aliases"] == [{"alias_name": "lead-9", "alias_label": "crm"}]
    assert held["known"]["device_ids"] == []
    assert held["crm_leads"]["aliases"] == [
        {"alias_name": "lead-1", "alias_label": "crm"}, {"alias_name": "lead-2", "alias_label": "crm"},
    ]
    assert held["anonymous_devices"]["device_ids"] == ["dev-1", "dev-2", "dev-3"]
    assert held["numeric_ids"]["user_ids"] == ["101", "102"]
    assert s.project.published("crm_leads") == {"alias:6:lead-1:crm", "alias:6:lead-2:crm"}
    s.check_same_as_first_engine()


#: Every character of Unicode's White_Space property, as the README lists them.
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


def test_surrounding_whitespace_of_every_kind_is_trimmed_and_whitespace_only_ids_are_rejected(scenario):
    """Tabs, line breaks and Unicode spaces around an identifier are trimmed
    (those inside are kept); an identifier of whitespace only is absent."""
    s = scenario([CHURN])
    blank = ["\t", "\n", "\u00a0", "\u3000\u2003 \x0b\x0c\r", WHITE_SPACE]  # tab, newline, no-break space...
    s.project.set_audience("churn_audience", {
        "external_id": ["\tabc\n", "\r\n def \x0b\x0c", "\u00a0ghi\u2003", "\u3000j k\u205f", None, None,
                        WHITE_SPACE + "all" + WHITE_SPACE, "\u200bzero-width\u200b", *blank, "\t"],
        "alias_name": [None, None, None, None, "\u00a0lead-1\t", None, None, None, *[None] * len(blank), "\n"],
        "alias_label": [None, None, None, None, " crm\n", None, None, None, *[None] * len(blank), "crm"],
        "device_id": [None, None, None, None, None, "\u2028dev-1\u0085", None, None, *[None] * len(blank), None],
    })
    held = s.sync()["braze"]["churn_audience"]
    # U+200B (zero width space) is not White_Space: kept, as Python's str.strip() keeps it.
    assert held["user_ids"] == ["abc", "all", "def", "ghi", "j k", "\u200bzero-width\u200b"]
    assert held["aliases"] == [{"alias_name": "lead-1", "alias_label": "crm"}]
    assert held["device_ids"] == ["dev-1"]
    assert s.project.published("churn_audience") == {
        "external_id:abc", "external_id:all", "external_id:def", "external_id:ghi", "external_id:j k",
        "external_id:\u200bzero-width\u200b", "alias:6:lead-1:crm", "device_id:dev-1",
    }
    rejects = s.project.query(
        "select reject_reason, external_id, alias_name, alias_label, device_id, source_rows from cohort_sync_rejects"
    )
    assert sorted((r[:5] + (int(r[5]),) for r in rejects), key=repr) == sorted([
        *(("no_identifier", value, None, None, None, 1) for value in blank),
        ("alias_label_without_alias_name", "\t", "\n", "crm", None, 1),
    ], key=repr)
    s.check_same_as_first_engine()


@pytest.mark.parametrize(("members", "sizes"), [(1000, [1000]), (1001, [1000, 1])])
def test_batch_split_at_1000(scenario, members, sizes):
    s = scenario([CHURN])
    s.project.set_audience("churn_audience", {"external_id": ids("u", 0, members)})
    after = s.sync()
    assert sorted((r["identifiers"] for r in s.requests() if r["endpoint"] == "users"), reverse=True) == sizes
    assert [sum(1 for c in after["changes"] if c[1] == n) for n in range(1, len(sizes) + 1)] == sizes
    assert len(after["braze"]["churn_audience"]["user_ids"]) == members
    s.name += f"[{members}]"
    s.check_same_as_first_engine()


def test_nothing_to_do_sends_nothing(scenario):
    s = scenario([CHURN])
    s.project.set_audience("churn_audience", {"external_id": ids("u", 0, 30)})
    s.sync()
    sent = len(s.requests())
    after = s.sync()
    assert s.requests(sent) == []
    assert after["changes"] == []
    last = [row for row in s.project.history() if row["cohort_id"] == "churn_audience"][-1]
    assert (last["status"], last["requests"], last["added"], last["removed"], last["members_after"]) == (
        "success", 0, 0, 0, 30,
    )
    s.check_same_as_first_engine()


def test_a_retired_cohort_emptied_by_clearing_is_not_warned_about_again(scenario, caplog):
    """Kept members are warned about at each run; once cleared, nothing is kept, and
    neither the publisher nor the package's test warns when it leaves the clear list."""
    other = {"model": "other_audience", "name": "Other"}
    s = scenario([CHURN, other])
    s.project.set_audience("churn_audience", {"external_id": ids("u", 0, 4)})
    s.project.set_audience("other_audience", {"external_id": ["o1"]})
    s.sync()
    kept = "cohort 'churn_audience' is no longer declared: its Braze members are kept"

    def warnings_of(**vars: Any) -> tuple[str, str]:
        """The publisher's log of a sync, and the status of the package's test of kept cohorts."""
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cohort_sync"):
            s.sync(**vars)
        tested = s.project.dbt("test", "--select", "cohort_sync_cohorts")
        statuses = {r.node.name: str(r.status) for r in tested.result.results}
        return caplog.text, statuses["cohort_sync_undeclared_cohorts_kept"]

    s.project.declare([other])
    log, test = warnings_of()
    assert kept in log and test == "warn"
    assert s.braze.cohorts()["churn_audience"]["user_ids"] == ids("u", 0, 4)

    s.project.declare([other], cohort_sync_clear_cohorts=["churn_audience"])
    s.sync(cohort_sync_allow_removals=["churn_audience"])
    assert s.braze.cohorts()["churn_audience"]["user_ids"] == []

    for cohorts, listed in (([other], ["churn_audience"]), ([other], [])):  # still listed, then not
        s.project.declare(cohorts, cohort_sync_clear_cohorts=listed)
        sent = len(s.requests())
        log, test = warnings_of()
        assert "no longer declared" not in log and test == "pass", (listed, log)
        assert s.requests(sent) == []
        assert s.project.query("select cohort_id from cohort_sync_cohorts") == [("other_audience",)]
    s.check_same_as_first_engine()


#: What `dbt run` says, where it does not publish, about the step that does.
PUBLISH_NOTICE = "does not publish them on this adapter: run `cohort-sync publish`"


def test_dbt_run_says_once_that_cohort_sync_publish_publishes_where_dbt_does_not(make_engine_project, braze, capsys):
    project = make_engine_project([CHURN])
    project.set_audience("churn_audience", {"external_id": ids("u", 0, 3)})

    def said(**vars: Any) -> str:
        capsys.readouterr()
        result = project.run(vars=vars or None)
        assert result.success, failure_text(result)
        return capsys.readouterr().out

    out = said()
    if project.warehouse.publishes_in_dbt:
        assert "cohort_sync publish run" in out and PUBLISH_NOTICE not in out, out
        assert braze.cohorts()["churn_audience"]["user_ids"] == ids("u", 0, 3)
    else:
        assert out.count(PUBLISH_NOTICE) == 1, out
        engine = project.warehouse.name
        assert f"cohort_sync: this run planned the changes of 1 cohort on {engine} but {PUBLISH_NOTICE}" in out
        assert braze.requests() == []
    assert PUBLISH_NOTICE not in said(cohort_sync_publish_on_run=False)  # the CLI publishes: nothing to say
    project.declare([])
    assert PUBLISH_NOTICE not in said()  # no cohorts, nothing to publish


def test_dbt_build_with_every_data_and_unit_test_passes(make_engine_project):
    """The package's hook, models, data tests and unit tests, unchanged, on each engine."""
    project = make_engine_project([CHURN, {"model": "crm_leads", "name": "CRM leads"}])
    project.set_audience("churn_audience", {"external_id": ids("u", 0, 10)})
    project.set_audience("crm_leads", {"alias_name": ["lead-1"], "alias_label": ["crm"]})
    result = project.dbt("build", "--exclude", "cohort_sync_publish")
    assert result.success, failure_text(result)
    kinds = [getattr(r.node.resource_type, "value", r.node.resource_type) for r in result.result.results]
    # the hooks (on-run-start, on-run-end), two audiences and ten package models, its 19 unit tests and its data tests
    assert kinds.count("operation") == 2 and kinds.count("model") == 12, kinds
    assert kinds.count("unit_test") == 19 and kinds.count("test") > 30, kinds


def profile_flags(braze) -> dict[str, list[str]]:
    """Per cohort attribute, the profiles (external id, alias or email) where it is true."""
    flags: dict[str, list[str]] = {}
    for profile in braze.profiles():
        alias = profile.get("user_alias")
        who = profile.get("external_id") or (f"{alias['alias_name']}|{alias['alias_label']}" if alias else profile.get("email"))
        for name, value in profile["attributes"].items():
            if value is True:
                flags.setdefault(name, []).append(who)
    return {name: sorted(people) for name, people in sorted(flags.items())}


def test_attribute_cohorts_through_users_track(scenario, braze, monkeypatch):
    """The REST path on every engine, with a REST API key only: two attribute
    cohorts sharing members, then changes in one object per member, a
    partial rejection, and a partner cohort switched to an attribute."""
    for name in ("BRAZE_PARTNER_NAME", "BRAZE_PARTNER_API_KEY", "BRAZE_DATA_IMPORT_KEY"):
        monkeypatch.delenv(name)
    buyers, anonymous = ids("u", 0, 200), [f"anon{n}" for n in range(30)]
    braze.seed_profiles([{"external_id": m} for m in buyers + ids("new", 0, 5)]
                        + [{"user_alias": {"alias_name": a, "alias_label": "crm"}} for a in anonymous]
                        + [{"email": "ann@example.com"}])
    s = scenario([
        {"model": "buyers", "name": "Buyers", "delivery": "attribute"},
        {"model": "visitors", "name": "Visitors", "delivery": "attribute", "attribute": "visited"},
    ])
    s.project.set_audience("buyers", {"external_id": buyers})
    s.project.set_audience("visitors", {
        "external_id": buyers[:10] + [None] * 31, "alias_name": [None] * 10 + anonymous + [None],
        "alias_label": [None] * 10 + ["crm"] * 30 + [None], "email": [None] * 40 + [" Ann@Example.com"]})
    s.sync()
    assert profile_flags(braze) == {"cohort_buyers": sorted(buyers),
                                    "visited": sorted(buyers[:10] + [f"{a}|crm" for a in anonymous] + ["ann@example.com"])}
    # 200 + 31 objects (the 10 shared buyers are one object each): 231 in 4 requests
    assert sorted((r["objects"] for r in s.requests() if r["endpoint"] == "track"), reverse=True) == [75, 75, 75, 6]

    sent = len(s.requests())
    now = buyers[5:] + ids("new", 0, 5)
    s.project.set_audience("buyers", {"external_id": now})
    s.sync()
    [request] = s.requests(sent)
    assert (request["endpoint"], request["objects"]) == ("track", 10)
    assert profile_flags(braze)["cohort_buyers"] == sorted(now)

    braze.set_track_rejects(["new00001"], "invalid external_id")
    s.project.set_audience("buyers", {"external_id": now[:-5] + ids("new", 2, 5)})
    assert not s.project.sync()  # partial: exit 1
    last = s.project.history()[-1]["run_id"]
    history = {row["cohort_id"]: row for row in s.project.history() if row["run_id"] == last}
    assert (history["buyers"]["status"], history["buyers"]["removed"], history["buyers"]["rejected"]) == ("partial", 1, 1)
    assert s.project.query("select member_key, should_remove from cohort_sync_rejected_changes") == [
        ("external_id:new00001", True)]
    braze.set_track_rejects([], "")

    s.project.declare([
        {"model": "buyers", "name": "Buyers", "delivery": "attribute"},
        {"model": "visitors", "name": "Visitors", "delivery": "attribute", "attribute": "seen"},
    ])
    s.sync()  # the attribute renamed: 41 members move from visited to seen
    flags = profile_flags(braze)
    assert "visited" not in flags and len(flags["seen"]) == 41
    assert s.project.query("select count(*) from cohort_sync_published_state where attribute_name = 'visited'") == [(0,)]
    s.check_same_as_first_engine()


class Crash(Exception):
    """Stands for the process dying mid-cycle (raised where no handler catches it)."""


def test_a_crash_between_applying_and_logging_a_batch_is_repaired(scenario, monkeypatch):
    """The state is written, the delivery log is not (on Spark: appended, not logged):
    the next run sends the batch again and ends exactly at the audience."""
    s = scenario([CHURN])
    members = ids("u", 0, 2500)
    s.project.set_audience("churn_audience", {"external_id": members})
    s.sync()
    now = members[5:] + ids("new", 0, 5)
    s.project.set_audience("churn_audience", {"external_id": now})

    log_acknowledged = Ledger._log_acknowledged

    def crash(self, run_id, plan_id, *args):
        # Every attempt to log a batch dies, as the process would: nothing
        # of this run (not even its own clean-up) gets to log it.
        if plan_id is not None:
            raise Crash
        return log_acknowledged(self, run_id, plan_id, *args)

    monkeypatch.setattr(Ledger, "_log_acknowledged", crash)
    publish = ["publish", "--project-dir", str(s.project.root), "--profiles-dir", str(s.project.root)]
    sent = len(s.requests())
    if s.project.warehouse.publishes_in_dbt:  # DuckDB: the crash is in dbt's publish model
        assert "Crash" in failure_text(s.project.run())
        monkeypatch.setattr(Ledger, "_log_acknowledged", log_acknowledged)
        assert s.project.run().success
    else:  # a scheduler's `cohort-sync publish`, twice on the same plan
        assert s.project.run().success
        with pytest.raises(Crash):
            cli_main(publish)
        monkeypatch.setattr(Ledger, "_log_acknowledged", log_acknowledged)
        assert cli_main(publish) == 0
    batches = [(r["adds"], r["removes"]) for r in s.requests(sent)]
    assert batches == [(5, 5), (5, 5)], (s.requests(sent), s.project.history())  # acknowledged, not logged: sent again
    assert s.braze.cohorts()["churn_audience"]["user_ids"] == sorted(now)
    assert s.project.published("churn_audience") == {f"external_id:{m}" for m in now}
    assert s.project.query("select count(*) from cohort_sync_published_state") == [(len(now),)]
    s.fingerprints.append(fingerprint(s.project, s.braze))
    s.check_same_as_first_engine()


@pytest.mark.parametrize("step", ["applied", "logged"])
def test_resent_batches_are_what_braze_received_twice_after_a_crash_while_recording(scenario, monkeypatch, step):
    """The process dies after Braze acknowledged a batch and the publisher applied it
    to the state (not logged yet), or logged it (its in-flight note not cleared yet).
    Transactional engines roll the cycle back, so the next run sends the batch again
    and counts it; on Spark a logged batch is acknowledged on record: it is not sent
    again and its note does not count."""
    s = scenario([CHURN])
    members = ids("u", 0, 2500)
    s.project.set_audience("churn_audience", {"external_id": members})
    s.sync()
    now = members[5:] + ids("new", 0, 5)
    s.project.set_audience("churn_audience", {"external_id": now})

    name = "_log_acknowledged" if step == "applied" else "_clear_inflight"
    original = getattr(Ledger, name)

    def crash(self, run_id, *args):
        # Every recording of the batch dies, as the process would (the name call's goes through).
        if step == "applied":
            batch = args[0] is not None  # _log_acknowledged(run_id, plan_id, ...)
        else:
            batch = any(request.kind == "users" for request in args[-1])  # _clear_inflight(..., requests)
        if batch:
            raise Crash
        return original(self, run_id, *args)

    monkeypatch.setattr(Ledger, name, crash)
    publish = ["publish", "--project-dir", str(s.project.root), "--profiles-dir", str(s.project.root)]
    starts = [len(s.braze.requests())]
    if s.project.warehouse.publishes_in_dbt:
        assert "Crash" in failure_text(s.project.run())
        monkeypatch.setattr(Ledger, name, original)
        starts.append(len(s.braze.requests()))
        assert s.project.run().success
    else:
        assert s.project.run().success
        with pytest.raises(Crash):
            cli_main(publish)
        monkeypatch.setattr(Ledger, name, original)
        starts.append(len(s.braze.requests()))
        assert cli_main(publish) == 0
    twice = received_twice(s.braze, starts)
    assert twice == [0, 0 if step == "logged" and s.project.warehouse.name == "spark" else 1]
    crashed, last = s.project.history()[-2:]
    assert (crashed["status"], crashed["requests"], crashed["resent_batches"]) == ("failed", 1, 0)
    assert (last["status"], last["resent_batches"]) == ("success", twice[1])
    assert last["requests"] == twice[1]
    assert s.project.query("select count(*) from cohort_sync_inflight") == [(0,)]
    assert s.braze.cohorts()["churn_audience"]["user_ids"] == sorted(now)
    assert s.project.published("churn_audience") == {f"external_id:{m}" for m in now}
    s.fingerprints.append(fingerprint(s.project, s.braze))
    s.name += f"[{step}]"
    s.check_same_as_first_engine()


def test_a_request_refused_with_a_401_is_counted_and_never_counted_as_resent(scenario, monkeypatch):
    """Its note is cleared with the failure: Braze did not apply it."""
    monkeypatch.setenv("COHORT_SYNC_CONCURRENCY", "1")  # batch 2 waits for batch 1, which is refused
    s = scenario([CHURN])
    s.project.set_audience("churn_audience", {"external_id": ids("u", 0, 1500)})
    s.braze.set_faults([{"endpoint": "users", "times": 1, "status": 401}])
    assert not s.project.sync()
    assert s.project.query("select count(*) from cohort_sync_inflight") == [(0,)]
    s.sync()
    assert [(r["status"], r["requests"], r["retries"], r["resent_batches"]) for r in s.project.history()] == [
        ("failed", 2, 0, 0),  # the name call, and batch 1 (401); the run stopped
        ("success", 2, 0, 0),  # batches 1 and 2
    ]
    assert received_twice(s.braze, [0]) == [0]
    s.check_same_as_first_engine()


# DuckDB's case runs through the CLI in test_cli.py: in-process dbt holds its file open.
@pytest.mark.parametrize("warehouse", ["postgres", "spark"], indirect=True)
def test_relations_of_another_version_are_named_by_the_schema_check(make_engine_project):
    project = make_engine_project([CHURN])
    project.set_audience("churn_audience", {"external_id": ids("u", 0, 3)})
    assert project.dbt("run", vars={"cohort_sync_publish_on_run": False}).success
    ledger = open_ledger(resolve_target(project.root, project.root))
    try:
        ledger.check_schema()  # this version's relations, as dbt just built them
        r = ledger.relations
        # Stand-ins for an older warehouse: a cohorts relation without the plan's
        # columns, and a state table that does not exist yet.
        older = Ledger(ledger.engine, replace(r, cohorts=r.published_cohorts,
                                              notification_log=r.events("notification_log")))
        with pytest.raises(StaleSchemaError) as raised:
            older.check_schema()
        message = str(raised.value)
        assert f"{r.published_cohorts} (" in message and f"{r.events('notification_log')} (" in message
        # The engine's reason, unwrapped (Spark's session cursor wraps it): the first
        # plan column the stand-in lacks, and the missing table named again.
        assert "action" in message and message.count("cohort_sync_notification_log_events") == 2, message
        assert all(getattr(r, key) not in message for key in ("changes", "run_history", "lock", "delivery_log"))
        assert "Run `dbt deps` and `dbt run`" in message
        ledger.check_schema()  # the engine's errors left the connection usable
    finally:
        ledger.close()


def test_an_unreachable_postgres_target_is_a_clear_error_without_its_password(
    tmp_path, braze_env, postgres_server, capsys
):
    class Unreachable(PostgresWarehouse):
        def output(self):
            return {**super().output(), "port": free_port(), "password": "PGSECRET-7f3a9c"}

    project = SyncProject(tmp_path / "project", [CHURN], lambda root: Unreachable(root, postgres_server))
    project.set_audience("churn_audience", {"external_id": ["u1"]})
    assert project.dbt("parse").success
    code = cli_main(["publish", "--project-dir", str(project.root), "--profiles-dir", str(project.root)])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot connect to target 'dev' (postgres)" in err
    assert "PGSECRET" not in err


#: Each engine's profile fields given by env_var(), as a user's profile gives them.
ENV_VAR_FIELDS = {
    "duckdb": {"path": "COHORT_SYNC_TEST_DUCKDB_PATH"},
    "postgres": {"host": "COHORT_SYNC_TEST_PGHOST", "user": "COHORT_SYNC_TEST_PGUSER",
                 "password": "DBT_POSTGRES_PASSWORD"},  # the README's name for it
    "spark": {"host": "COHORT_SYNC_TEST_SPARK_HOST", "schema": "COHORT_SYNC_TEST_SPARK_SCHEMA"},
}


@pytest.mark.parametrize("engine", ENGINES)
def test_the_cli_reads_a_profile_whose_fields_call_env_var(engine, request, tmp_path, braze_env, braze, monkeypatch):
    """`dbt run`, then `cohort-sync publish` in its own process, as a scheduler runs
    them, with a profile as the README writes it: the CLI renders env_var() as dbt
    does, a password included, and never prints the password."""
    password = None
    if engine == "postgres":
        server = request.getfixturevalue("postgres_server")

        class PasswordLogin(PostgresWarehouse):
            def output(self):
                nonlocal password
                user, password = server.password_login(self.dbname)
                return {**super().output(), "user": user, "password": password}

        def make(root):
            return PasswordLogin(root, server)
    else:
        make = SparkOwnProcesses if engine == "spark" else Warehouse
    if engine == "spark":
        monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")

    class EnvVarProfile:
        """The engine's profile with ENV_VAR_FIELDS replaced by env_var() calls."""

        def __init__(self, root):
            self.inner = make(root)
            self.name, self.publishes_in_dbt = self.inner.name, False

        def output(self):
            output = self.inner.output()
            for field, variable in ENV_VAR_FIELDS[engine].items():
                monkeypatch.setenv(variable, str(output[field]))
                output[field] = f"{{{{ env_var('{variable}') }}}}"
            return output

    project = SyncProject(tmp_path / "project", [CHURN], EnvVarProfile)
    (project.root / "models" / "churn_audience.sql").write_text(
        "select 'u1' as external_id union all select 'u2' as external_id union all select 'u3' as external_id\n"
    )
    outputs = []
    for command in (("dbt", "run", "--vars", "{cohort_sync_publish_on_run: false}"),
                    ("cohort-sync", "publish"), ("cohort-sync", "status")):
        result = project.cli(*command, timeout=600)
        outputs += [result.stdout, result.stderr]
        assert result.returncode == 0, (command, result.stdout[-3000:], result.stderr[-3000:])
    assert braze.cohorts()["churn_audience"]["user_ids"] == ["u1", "u2", "u3"]
    assert f"({engine} target 'dev')" in outputs[2]
    if password is not None:
        assert all(password not in output for output in outputs)
        monkeypatch.setenv("DBT_POSTGRES_PASSWORD", "PGWRONG-" + password)
        refused = project.cli("cohort-sync", "status")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "cannot connect to target 'dev' (postgres)" in refused.stderr
        assert "password authentication failed" in refused.stderr
        assert password not in refused.stdout + refused.stderr
