"""dbt integration: `dbt run` on DuckDB publishes to the local endpoint.

Each test builds a throwaway project that installs the package with
`local:`, runs real dbt, and checks the endpoint over its socket.
"""

from __future__ import annotations

import pytest

from tests.sync_project import failure_text

pytestmark = pytest.mark.dbt

CHURN = {"model": "churn_audience", "name": "Churn risk"}


def ids(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(start, stop)]


def last_history(project, cohort_id: str) -> dict:
    return [row for row in project.history() if row["cohort_id"] == cohort_id][-1]


def user_requests(braze, since: int = 0) -> list[dict]:
    return [r for r in braze.requests()[since:] if r["endpoint"] == "users" and "fault" not in r]


def test_first_sync_then_five_leave_and_five_join(make_project, braze):
    project = make_project([CHURN])
    members = ids("u", 0, 2500)
    project.set_audience("churn_audience", {"external_id": members})

    assert project.run().success
    held = braze.cohorts()["churn_audience"]
    assert held["name"] == "Churn risk"
    assert held["user_ids"] == sorted(members)
    first = braze.requests()
    assert [r["endpoint"] for r in first] == ["cohorts", "users", "users", "users"]
    # batches go out concurrently, in any order: the sizes, whatever order they arrived in
    assert sorted((r["identifiers"] for r in first[1:]), reverse=True) == [1000, 1000, 500]
    assert project.published("churn_audience") == {f"external_id:{m}" for m in members}

    leavers, joiners = members[:5], ids("new", 0, 5)
    now = members[5:] + joiners
    project.set_audience("churn_audience", {"external_id": now})
    assert project.run().success

    second = braze.requests()[len(first):]
    assert len(second) == 1, second
    assert second[0]["endpoint"] == "users"
    assert (second[0]["adds"], second[0]["removes"]) == (5, 5)
    assert braze.cohorts()["churn_audience"]["user_ids"] == sorted(now)
    assert project.published("churn_audience") == {f"external_id:{m}" for m in now}
    assert not set(leavers) & set(braze.cohorts()["churn_audience"]["user_ids"])


def test_2001_additions_go_out_as_three_requests(make_project, braze):
    project = make_project([CHURN])
    project.set_audience("churn_audience", {"external_id": ids("u", 0, 2001)})
    assert project.run().success
    sizes = sorted((r["identifiers"] for r in user_requests(braze)), reverse=True)  # sent concurrently
    assert sizes == [1000, 1000, 1]
    assert len(braze.cohorts()["churn_audience"]["user_ids"]) == 2001


@pytest.mark.parametrize(("members", "expected_sizes"), [(1000, [1000]), (1001, [1000, 1])])
def test_batch_split_at_1000(make_project, braze, members, expected_sizes):
    project = make_project([CHURN])
    project.set_audience("churn_audience", {"external_id": ids("u", 0, members)})
    assert project.run().success
    assert sorted((r["identifiers"] for r in user_requests(braze)), reverse=True) == expected_sizes
    batches = project.query(
        "select batch_number, count(*) from cohort_sync_changes group by 1 order by 1"
    )
    assert [count for _, count in batches] == expected_sizes


def test_run_straight_after_a_successful_run_sends_nothing(make_project, braze):
    project = make_project([CHURN])
    project.set_audience("churn_audience", {"external_id": ids("u", 0, 30)})
    assert project.run().success
    sent = len(braze.requests())
    assert project.run().success
    assert len(braze.requests()) == sent
    last = last_history(project, "churn_audience")
    assert (last["status"], last["requests"], last["added"], last["removed"], last["members_after"]) == (
        "success", 0, 0, 0, 30,
    )


def test_emptying_a_cohort_is_blocked_until_allowed_for_one_run(make_project, braze):
    other = {"model": "other_audience", "name": "Other"}
    project = make_project([CHURN, other])
    project.set_audience("churn_audience", {"external_id": ids("u", 0, 3)})
    project.set_audience("other_audience", {"external_id": ["o1"]})
    assert project.run().success
    sent = len(braze.requests())

    project.set_audience("churn_audience", {"external_id": []})
    project.set_audience("other_audience", {"external_id": ["o1", "o2"]})
    result = project.run()
    assert not result.success  # a scheduler notices
    assert "did not complete" in failure_text(result)
    assert braze.cohorts()["churn_audience"]["user_ids"] == ids("u", 0, 3)
    assert braze.cohorts()["other_audience"]["user_ids"] == ["o1", "o2"]  # the other cohort proceeded
    assert len(braze.requests()) == sent + 1
    churn = last_history(project, "churn_audience")
    assert churn["status"] == "blocked"
    assert "would leave the cohort empty (removing all 3 members)" in churn["error"]
    assert "cohort_sync_allow_removals: ['churn_audience']" in churn["error"]

    result = project.run(vars={"cohort_sync_allow_removals": ["churn_audience"]})
    assert result.success, failure_text(result)
    assert braze.cohorts()["churn_audience"]["user_ids"] == []
    assert project.published("churn_audience") == set()
    removes = user_requests(braze)[-1]
    assert (removes["adds"], removes["removes"]) == (0, 3)


def test_mass_removal_above_the_share_is_blocked_below_the_minimum_it_is_not(make_project, braze):
    project = make_project([CHURN])
    project.set_audience("churn_audience", {"external_id": ids("u", 0, 300)})
    assert project.run().success

    project.set_audience("churn_audience", {"external_id": ids("u", 0, 140)})  # 160 of 300 leave: 53%
    assert not project.run().success
    assert len(braze.cohorts()["churn_audience"]["user_ids"]) == 300
    row = last_history(project, "churn_audience")
    assert row["status"] == "blocked"
    assert "would remove 160 of 300 members (53.3%), more than the 50% limit" in row["error"]

    assert project.run(vars={"cohort_sync_max_removal_share": 0.6}).success
    assert len(braze.cohorts()["churn_audience"]["user_ids"]) == 140

    project.set_audience("churn_audience", {"external_id": ids("u", 0, 50)})  # 90 of 140 leave: below 100
    assert project.run().success
    assert len(braze.cohorts()["churn_audience"]["user_ids"]) == 50


def test_a_retired_cohort_keeps_its_members_until_cleared_and_allowed(make_project, braze):
    other = {"model": "other_audience", "name": "Other"}
    project = make_project([CHURN, other])
    project.set_audience("churn_audience", {"external_id": ids("u", 0, 4)})
    project.set_audience("other_audience", {"external_id": ["o1"]})
    assert project.run().success
    sent = len(braze.requests())

    project.declare([other])
    assert project.run().success
    assert len(braze.requests()) == sent  # kept: nothing removed
    assert braze.cohorts()["churn_audience"]["user_ids"] == ids("u", 0, 4)
    tested = project.dbt("test", "--select", "cohort_sync_cohorts")
    statuses = {r.node.name: str(r.status) for r in tested.result.results}
    assert statuses["cohort_sync_undeclared_cohorts_kept"] == "warn"

    project.declare([other], cohort_sync_clear_cohorts=["churn_audience"])
    assert not project.run().success  # clearing empties it: guarded
    assert braze.cohorts()["churn_audience"]["user_ids"] == ids("u", 0, 4)
    assert last_history(project, "churn_audience")["status"] == "blocked"

    assert project.run(vars={"cohort_sync_allow_removals": ["churn_audience"]}).success
    assert braze.cohorts()["churn_audience"]["user_ids"] == []
    assert project.published("churn_audience") == set()


def test_rename_calls_the_name_endpoint_only(make_project, braze):
    project = make_project([CHURN])
    project.set_audience("churn_audience", {"external_id": ids("u", 0, 3)})
    assert project.run().success
    created_at = braze.cohorts()["churn_audience"]["created_at"]
    before = len(braze.requests())

    project.declare([{**CHURN, "name": "Churn risk (v2)"}])
    assert project.run().success
    after = braze.requests()[before:]
    assert [r["endpoint"] for r in after] == ["cohorts"]
    held = braze.cohorts()["churn_audience"]
    assert held["name"] == "Churn risk (v2)"
    assert held["created_at"] == created_at
    assert project.query("select cohort_name from cohort_sync_published_cohorts") == [("Churn risk (v2)",)]
    assert project.run().success
    assert len(braze.requests()) == before + 1


def test_each_identifier_type_and_precedence(make_project, braze):
    project = make_project([
        {"model": "known_users", "name": "Known users", "cohort_id": "known"},
        {"model": "crm_leads", "name": "CRM leads"},
        {"model": "anonymous_devices", "name": "Anonymous devices"},
    ])
    # external_id wins over alias and device_id on the same row; alias over device_id.
    project.set_audience("known_users", {
        "external_id": ["u1", "u2", None],
        "alias_name": ["a-ignored", None, "lead-9"],
        "alias_label": ["crm", None, "crm"],
        "device_id": ["d-ignored", "d-ignored-2", "d-ignored-3"],
    })
    project.set_audience("crm_leads", {"alias_name": ["lead-1", "lead-2"], "alias_label": ["crm", "crm"]})
    project.set_audience("anonymous_devices", {"device_id": ["dev-1", "dev-2", "dev-3"]})
    assert project.run().success

    held = braze.cohorts()
    assert held["known"]["user_ids"] == ["u1", "u2"]
    assert held["known"]["aliases"] == [{"alias_name": "lead-9", "alias_label": "crm"}]
    assert held["known"]["device_ids"] == []
    assert held["crm_leads"]["aliases"] == [
        {"alias_name": "lead-1", "alias_label": "crm"},
        {"alias_name": "lead-2", "alias_label": "crm"},
    ]
    assert held["crm_leads"]["user_ids"] == [] and held["crm_leads"]["device_ids"] == []
    assert held["anonymous_devices"]["device_ids"] == ["dev-1", "dev-2", "dev-3"]
    assert project.published("crm_leads") == {"alias:6:lead-1:crm", "alias:6:lead-2:crm"}


def test_a_run_with_nothing_declared_sends_nothing(make_project, braze):
    project = make_project([])
    result = project.run()
    assert result.success, failure_text(result)
    assert braze.requests() == []
    assert project.query("select count(*) from cohort_sync_publish") == [(0,)]


def test_missing_data_import_key_stops_before_any_request(make_project, braze, monkeypatch):
    project = make_project([CHURN])
    project.set_audience("churn_audience", {"external_id": ids("u", 0, 10)})
    assert project.run().success
    state_before = project.query("select * from cohort_sync_published_state order by member_key")
    sent = len(braze.requests())

    project.set_audience("churn_audience", {"external_id": ids("u", 5, 20)})
    monkeypatch.delenv("BRAZE_DATA_IMPORT_KEY")
    result = project.run()
    assert not result.success
    assert "BRAZE_DATA_IMPORT_KEY is not set" in failure_text(result)
    assert len(braze.requests()) == sent
    assert project.query("select * from cohort_sync_published_state order by member_key") == state_before


def test_rejected_rows_are_kept_with_their_reason_and_never_sent(make_project, braze):
    project = make_project([CHURN])
    project.set_audience("churn_audience", {
        "external_id": ["  u1  ", "u1", "", "   ", None, None, None, "x" * 600],
        "alias_name": [None, None, None, None, "lonely", None, None, None],
        "alias_label": [None, None, None, None, None, "label-only", None, None],
    })
    assert project.run().success
    assert braze.cohorts()["churn_audience"]["user_ids"] == ["u1"]
    assert project.query("select source_rows from cohort_sync_membership") == [(2,)]
    rejects = project.query(
        "select reject_reason, sum(source_rows) from cohort_sync_rejects group by 1 order by 1"
    )
    assert rejects == [
        ("alias_label_without_alias_name", 1),
        ("alias_name_without_alias_label", 1),
        ("identifier_too_long", 1),
        ("no_identifier", 3),
    ]
    tested = project.dbt("test", "--select", "cohort_sync_rejects")
    statuses = {r.node.name: str(r.status) for r in tested.result.results}
    assert statuses["cohort_sync_has_no_rows_cohort_sync_rejects_"] == "warn"


def test_dbt_unit_tests_of_the_diff_pass(make_project):
    project = make_project([CHURN])
    project.set_audience("churn_audience", {"external_id": ["u1"]})
    assert project.dbt("run", "--exclude", "cohort_sync_publish").success
    result = project.dbt("test", "--select", "test_type:unit")
    assert result.success, failure_text(result)
    names = {r.node.name for r in result.result.results}
    assert {
        "changes_add_new_member", "changes_remove_departed_member",
        "changes_unchanged_member_sends_nothing", "changes_readd_after_removal",
        "changes_empty_audience_removes_everyone", "changes_identifier_switch",
        "changes_member_in_two_cohorts", "membership_collapses_duplicates",
        "changes_batches_split_at_batch_size", "changes_undeclared_cohort_is_left_alone",
    } <= names


@pytest.mark.parametrize(
    ("cohorts", "message"),
    [
        ([{"model": "churn_audience"}], "cohort 'churn_audience' (cohort_sync_cohorts[0]): field 'name' is required"),
        ([{"model": "churn_audience", "name": "  "}], "field 'name' is required and must not be empty"),
        ([CHURN, {**CHURN, "name": "Again"}], "field 'cohort_id' duplicates cohort_sync_cohorts[0]"),
        ([{**CHURN, "scheduel": "daily"}], "cohort 'churn_audience' (cohort_sync_cohorts[0]): unknown setting 'scheduel'"),
        ([{**CHURN, "schedule": ["daily", "weekly"]}], "field 'schedule' must be one schedule"),
        ([{**CHURN, "schedule": "fortnightly"}], "field 'schedule' must be one of every_run, hourly"),
        ([{**CHURN, "schedule": {"every": "daily", "at": 360}}], "'at' must be quoted text such as \"06:30\""),
        ([{**CHURN, "schedule": {"every": "daily", "at": "25:00"}}], "'at' must be a time of day as \"HH:MM\""),
        ([{**CHURN, "schedule": {"every": "weekly", "weekday": "funday"}}], "'weekday' must be one of monday"),
        ([{**CHURN, "schedule": {"every": "daily", "day": 3}}], "'day' applies to monthly schedules only"),
        ([{**CHURN, "schedule": {"every": "monthly", "day": 32}}], "'day' must be a day of the month from 1 to 31"),
        ([{**CHURN, "schedule": {"every": "daily", "timezone": "Mars/Base"}}], "'timezone' must be an IANA time zone"),
        ([{**CHURN, "schedule": {"every": "once", "at": "06:00"}}], "'once' takes no 'at'"),
        ([{**CHURN, "notify": "team@example.com"}], "field 'notify' must be a list of recipients"),
        ([{**CHURN, "notify": [{"email": "a@example.com", "webhook": "$HOOK"}]}],
         "field 'notify' item 0 must have exactly one of 'email' or 'webhook'"),
        ([{**CHURN, "notify": [{"email": "a@example.com, b@example.com"}]}], "'email' must be one address"),
        ([{**CHURN, "notify": [{"webhook": "https://hooks.slack.com/services/T1/B2/token"}]}],
         "'webhook' must name the environment variable holding the URL, as $SLACK_GROWTH_WEBHOOK: webhook URLs are secrets"),
        ([{**CHURN, "notify": [{"email": "a@example.com", "when": ["sucess"]}]}],
         "'when' must list outcomes among success, changed, failed, blocked, got: sucess"),
        ([{**CHURN, "notify": [{"email": "a@example.com", True: ["failed"]}]}],  # an unquoted `on:`
         "YAML reads an unquoted 'on' as true; write 'when' instead"),
        ([{**CHURN, "notify": [{"email": "https://hooks.slack.com/services/T1/B2/token"}]}],
         "'email' must be one address such as team@example.com (one item per address) (the value is not shown"),
        ([{**CHURN, "notify": ["https://hooks.slack.com/services/T1/B2/token"]}],
         "item 0 must be a mapping with 'email' or 'webhook' (the value is not shown: it looks like a URL)"),
        ([{**CHURN, "notify": [{"webhook": "${HOOK"}]}], "'webhook' must name the environment variable"),
        ([{**CHURN, "notify": [{"email": "a@example.com", "cc": "b@example.com"}]}], "has an unknown setting 'cc'"),
        ([{**CHURN, "notify": [{"email": "a@example.com", "repeat_every": "soon"}]}],
         "'repeat_every' must be a period such as 30m, 6h or 1d (minutes, hours or days), got: soon"),
        ([{**CHURN, "notify": [{"email": "a@example.com", "repeat_every": 6}]}],
         "'repeat_every' must be a period such as 30m, 6h or 1d (minutes, hours or days), got: 6"),
        ([{**CHURN, "delivery": "sms"}], "field 'delivery' must be one of cohort_import, attribute, got: sms"),
        ([{**CHURN, "attribute": "in_churn"}],
         "field 'attribute' applies to delivery: attribute only (this cohort's delivery is cohort_import)"),
        ([{**CHURN, "delivery": "attribute", "attribute": "$churn"}], "must not start with $ (Braze's rules"),
        ([{**CHURN, "delivery": "attribute", "attribute": "x" * 256}], "must be at most 255 characters"),
        ([{**CHURN, "delivery": "attribute", "attribute": "Email"}], "'Email' is an identifier or standard profile"),
        ([{**CHURN, "delivery": "attribute", "attribute": " churn"}], "must be a name without surrounding spaces"),
        ([{**CHURN, "delivery": "attribute", "attribute": "flag"},
          {**CHURN, "cohort_id": "other", "delivery": "attribute", "attribute": "FLAG"}],
         "field 'attribute' 'FLAG' is already the attribute of cohort 'churn_audience'"),
        ([{"name": "No model"}], "cohort_sync_cohorts[0]: field 'model' is required"),
        ([{**CHURN, "cohort_id": ""}], "field 'cohort_id' must not be empty"),
        # dbt's own parse error: it names the missing model, not the cohort
        ([{"model": "no_such_model", "name": "X"}], "depends on a node named 'no_such_model'"),
    ],
)
def test_malformed_declarations_fail_compilation_naming_cohort_and_field(make_project, braze, cohorts, message):
    project = make_project([])
    project.set_audience("churn_audience", {"external_id": ["u1"]})
    project.declare(cohorts)
    result = project.run()
    assert not result.success
    assert message in failure_text(result)
    assert "token" not in failure_text(result)  # a webhook URL is never echoed
    assert braze.requests() == []


def test_dry_run_var_plans_in_dbt_run_without_sending(make_project, braze):
    project = make_project([CHURN])
    project.set_audience("churn_audience", {"external_id": ids("u", 0, 1500)})
    result = project.run(vars={"cohort_sync_dry_run": True})
    assert result.success, failure_text(result)
    assert braze.requests() == []
    assert project.published("churn_audience") == set()
    summary = project.query("select status, added, removed, requests from cohort_sync_publish")
    assert summary == [("dry_run", 1500, 0, 3)]  # the name call and two batches


def test_publish_on_run_var_false_leaves_publishing_to_the_cli(make_project, braze):
    project = make_project([CHURN])
    project.set_audience("churn_audience", {"external_id": ids("u", 0, 5)})
    result = project.run(vars={"cohort_sync_publish_on_run": False})
    assert result.success, failure_text(result)
    assert "cohort_sync_publish" not in {r.node.name for r in result.result.results}
    assert braze.requests() == []
    assert project.query("select count(*) from cohort_sync_changes") == [(5,)]


def test_non_string_identifiers_are_cast_and_the_same_person_may_be_in_two_cohorts(make_project, braze):
    project = make_project([CHURN, {"model": "vip_audience", "name": "VIP"}])
    project.set_audience("churn_audience", {"external_id": [101, 102]}, types={"external_id": "bigint"})
    project.set_audience("vip_audience", {"external_id": ["101"]})
    assert project.run().success
    assert braze.cohorts()["churn_audience"]["user_ids"] == ["101", "102"]
    assert braze.cohorts()["vip_audience"]["user_ids"] == ["101"]


def test_invalid_guard_and_list_vars_fail_naming_the_var(make_project, braze):
    project = make_project([CHURN])
    project.set_audience("churn_audience", {"external_id": ["u1"]})
    for vars_, message in (
        ({"cohort_sync_max_removal_share": 2}, "var 'cohort_sync_max_removal_share' must be a number from 0 to 1"),
        ({"cohort_sync_allow_removals": [{"a": 1}]}, "var 'cohort_sync_allow_removals' must be a list of cohort ids"),
        ({"cohort_sync_clear_cohorts": ["churn_audience"]}, "both declared in cohort_sync_cohorts and listed in cohort_sync_clear_cohorts"),
        ({"cohort_sync_batch_size": 1001}, "var 'cohort_sync_batch_size' must be a whole number from 1 to 1000"),
        ({"cohort_sync_users_track_batch_size": 76},
         "var 'cohort_sync_users_track_batch_size' must be a whole number from 1 to 75"),
        ({"cohort_sync_delivery": "sms"}, "var 'cohort_sync_delivery' must be one of cohort_import, attribute"),
        ({"cohort_sync_retry_rejected": "yes"}, "var 'cohort_sync_retry_rejected' must be true or false"),
    ):
        result = project.run(vars=vars_)
        assert not result.success
        assert message in failure_text(result)
    assert braze.requests() == []
