"""Cohorts as profile attributes through /users/track, with a REST API key
only, on DuckDB: `dbt run` publishes to the local endpoint, whose profiles
are read back and compared with the audiences."""

from __future__ import annotations

import pytest
import requests

from tests.sync_project import failure_text

pytestmark = pytest.mark.dbt

PARTNER_VARS = ("BRAZE_PARTNER_NAME", "BRAZE_PARTNER_API_KEY", "BRAZE_DATA_IMPORT_KEY")


def ids(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(start, stop)]


def aliases(start: int, stop: int) -> list[tuple[str, str]]:
    return [(f"anon{n:04d}", "crm") for n in range(start, stop)]


@pytest.fixture
def rest_only(braze_env, monkeypatch):
    """Only BRAZE_REST_ENDPOINT and BRAZE_REST_API_KEY: no partner variable."""
    for name in PARTNER_VARS:
        monkeypatch.delenv(name, raising=False)
    return braze_env


def seed(braze, external_ids=(), alias_pairs=()) -> None:
    braze.seed_profiles(
        [{"external_id": value} for value in external_ids]
        + [{"user_alias": {"alias_name": name, "alias_label": label}} for name, label in alias_pairs]
    )


def flagged(braze, attribute: str) -> set[str]:
    """The profiles whose attribute is true, as external ids or alias_name|alias_label."""
    held = set()
    for profile in braze.profiles():
        if profile["attributes"].get(attribute) is True:
            alias = profile.get("user_alias")
            held.add(profile["external_id"] if profile.get("external_id") else f"{alias['alias_name']}|{alias['alias_label']}")
    return held


def track_requests(braze, since: int = 0) -> list[dict]:
    return [r for r in braze.requests()[since:] if r["endpoint"] == "track" and "fault" not in r]


def history(project, cohort_id: str) -> dict:
    return [row for row in project.history() if row["cohort_id"] == cohort_id][-1]


def test_a_rest_key_alone_syncs_external_ids_and_aliases_then_only_the_changes(make_project, braze, rest_only):
    members, anonymous = ids("u", 0, 2500), aliases(0, 300)
    seed(braze, members + ids("new", 0, 5), anonymous)
    project = make_project()
    project.declare([  # every cohort an attribute, by the project-wide var: no partner setting anywhere
        {"model": "buyers", "name": "Buyers", "cohort_id": "buyers"},
        {"model": "visitors", "name": "Visitors", "cohort_id": "visitors", "attribute": "visited_twice"},
    ], cohort_sync_delivery="attribute")
    project.set_audience("buyers", {"external_id": members})
    project.set_audience("visitors", {"alias_name": [n for n, _ in anonymous], "alias_label": [lb for _, lb in anonymous]})

    result = project.run()
    assert result.success, failure_text(result)
    assert flagged(braze, "cohort_buyers") == set(members)
    assert flagged(braze, "visited_twice") == {f"{n}|{lb}" for n, lb in anonymous}
    first = track_requests(braze)
    assert max(r["objects"] for r in first) == 75
    assert sum(r["objects"] for r in first) == 2800
    assert {history(project, c)["status"] for c in ("buyers", "visitors")} == {"success"}
    assert not [r for r in braze.requests() if r["endpoint"] in ("users", "cohorts")]

    now = members[5:] + ids("new", 0, 5)
    project.set_audience("buyers", {"external_id": now})
    start = len(braze.requests())
    assert project.run().success
    second = track_requests(braze, start)
    assert [r["objects"] for r in second] == [10]
    assert flagged(braze, "cohort_buyers") == set(now)
    row = history(project, "buyers")
    assert (row["added"], row["removed"], row["requests"]) == (5, 5, 1)
    assert history(project, "visitors")["requests"] == 0


def test_160_changes_go_out_as_75_75_10(make_project, braze, rest_only):
    members = ids("u", 0, 160)
    seed(braze, members)
    project = make_project([{"model": "buyers", "name": "Buyers", "delivery": "attribute"}])
    project.set_audience("buyers", {"external_id": members})
    assert project.run().success
    assert sorted((r["objects"] for r in track_requests(braze)), reverse=True) == [75, 75, 10]
    assert flagged(braze, "cohort_buyers") == set(members)


def test_a_member_of_three_changing_cohorts_is_one_object(make_project, braze, rest_only):
    seed(braze, ["shared", "only_a"])
    project = make_project([
        {"model": f"audience_{name}", "name": name.upper(), "cohort_id": name, "delivery": "attribute"}
        for name in ("a", "b", "c")
    ])
    project.set_audience("audience_a", {"external_id": ["shared", "only_a"]})
    project.set_audience("audience_b", {"external_id": ["shared"]})
    project.set_audience("audience_c", {"external_id": ["shared"]})
    assert project.run().success
    requests = track_requests(braze)
    assert [r["objects"] for r in requests] == [2]
    shared = next(p for p in braze.profiles() if p.get("external_id") == "shared")
    assert {k: v for k, v in shared["attributes"].items() if k.startswith("cohort_")} == {
        "cohort_a": True, "cohort_b": True, "cohort_c": True}

    # all three leave at once: one object, three nulls
    for name in ("a", "b", "c"):
        project.set_audience(f"audience_{name}", {"external_id": ["only_a"] if name == "a" else []})
    start = len(braze.requests())
    assert project.run(vars={"cohort_sync_allow_removals": ["b", "c"]}).success
    assert [r["objects"] for r in track_requests(braze, start)] == [1]
    shared = next(p for p in braze.profiles() if p.get("external_id") == "shared")
    assert not [k for k in shared["attributes"] if k.startswith("cohort_")]


def test_members_unknown_to_braze_create_no_profile(make_project, braze, rest_only):
    seed(braze, ["known"])
    project = make_project([{"model": "buyers", "name": "Buyers", "delivery": "attribute"}])
    project.set_audience("buyers", {"external_id": ["known", "stranger"], "email": ["k@example.com", "s@example.com"]})
    assert project.run().success
    assert [p.get("external_id") for p in braze.profiles()] == ["known"]
    assert flagged(braze, "cohort_buyers") == {"known"}
    (request,) = track_requests(braze)
    assert (request["objects"], request["created"]) == (2, 0)


def test_braze_rejecting_2_of_75_objects_records_those_2_and_delivers_73_once(make_project, braze, rest_only):
    members = ids("u", 0, 75)
    seed(braze, members)
    braze.set_track_rejects([members[3], members[40]], "invalid external_id")
    project = make_project([{"model": "buyers", "name": "Buyers", "delivery": "attribute"}])
    project.set_audience("buyers", {"external_id": members})

    result = project.run()
    assert not result.success  # partial: the run exits non-zero, so a scheduler notices
    delivered = set(members) - {members[3], members[40]}
    assert flagged(braze, "cohort_buyers") == delivered
    row = history(project, "buyers")
    assert (row["status"], row["added"], row["rejected"]) == ("partial", 73, 2)
    assert "invalid external_id (2)" in row["error"]
    assert project.published("buyers") == {f"external_id:{m}" for m in delivered}
    rejected = project.query(
        "select member_key, should_remove, error_type from cohort_sync_rejected_changes order by member_key")
    assert rejected == [(f"external_id:{members[3]}", False, "invalid external_id"),
                        (f"external_id:{members[40]}", False, "invalid external_id")]

    start = len(braze.requests())
    assert project.run().success  # the plan no longer holds them: nothing to send
    assert track_requests(braze, start) == []
    assert history(project, "buyers")["status"] == "success"


def test_device_ids_are_rejected_with_their_reason_in_an_attribute_cohort(make_project, braze, rest_only):
    seed(braze, ["u1"])
    project = make_project([{"model": "buyers", "name": "Buyers", "delivery": "attribute"}])
    project.set_audience("buyers", {"external_id": ["u1", None, None, None],
                                    "device_id": [None, "dev-1", None, None],
                                    "email": [None, None, " Ann@Example.COM ", "not-an-email"]})
    braze.seed_profiles([{"email": "ann@example.com"}])
    assert project.run().success
    reasons = dict(project.query("select reject_reason, sum(source_rows) from cohort_sync_rejects group by reject_reason"))
    assert reasons == {"device_id_not_addressable": 1, "invalid_email": 1}
    held = {p.get("external_id") or p.get("email") for p in braze.profiles() if p["attributes"].get("cohort_buyers")}
    assert held == {"u1", "ann@example.com"}


def test_switching_delivery_moves_every_member_under_the_guard(make_project, braze, braze_env):
    members = ids("u", 0, 120)
    seed(braze, members)
    project = make_project([{"model": "buyers", "name": "Buyers"}])
    project.set_audience("buyers", {"external_id": members})
    assert project.run().success
    assert braze.cohorts()["buyers"]["user_ids"] == members

    project.declare([{"model": "buyers", "name": "Buyers", "delivery": "attribute"}])
    start = len(braze.requests())
    assert not project.run().success  # moving 120 members removes them all from the cohort: guarded
    assert history(project, "buyers")["status"] == "blocked"
    assert braze.requests()[start:] == []

    assert project.run(vars={"cohort_sync_allow_removals": ["buyers"]}).success
    assert braze.cohorts()["buyers"]["user_ids"] == []
    assert flagged(braze, "cohort_buyers") == set(members)
    assert {row[0] for row in project.query("select distinct delivery from cohort_sync_published_state")} == {"attribute"}

    start = len(braze.requests())
    assert project.run().success
    assert braze.requests()[start:] == []


def test_dry_run_plans_and_full_resync_repairs_drift_in_an_attribute_cohort(make_project, braze, rest_only, keys):
    members = ids("u", 0, 80)
    seed(braze, members)
    project = make_project([{"model": "buyers", "name": "Buyers", "delivery": "attribute"}])
    project.set_audience("buyers", {"external_id": members})
    assert project.run(vars={"cohort_sync_dry_run": True}).success
    row = history(project, "buyers")
    assert (row["status"], row["added"], row["requests"]) == ("dry_run", 80, 2)
    assert track_requests(braze) == []

    assert project.run().success
    # Someone clears the attribute of three profiles in Braze: drift the published state cannot see.
    drift = {"attributes": [{"external_id": m, "cohort_buyers": None} for m in members[:3]]}
    answer = requests.post(f"{braze.url}/users/track", json=drift, timeout=10,
                           headers={"Authorization": f"Bearer {keys['rest_api_key']}"})
    assert answer.status_code == 201
    assert flagged(braze, "cohort_buyers") == set(members[3:])

    start = len(braze.requests())
    assert project.run(vars={"cohort_sync_full_resync": True}).success
    assert flagged(braze, "cohort_buyers") == set(members)
    assert sorted(r["objects"] for r in track_requests(braze, start)) == [5, 75]
    assert history(project, "buyers")["status"] == "success"


def test_a_member_known_by_phone_who_signs_up_keeps_the_attribute(make_project, braze, rest_only):
    """The plan removes the phone member and adds the external id member, one
    person: the null by phone goes (acknowledged) before the true by external id."""
    braze.seed_profiles([{"external_id": "u1", "phone": "+14155550100"}, {"external_id": "u2"}])
    project = make_project([{"model": "buyers", "name": "Buyers", "delivery": "attribute"}])
    project.set_audience("buyers", {"external_id": [None, "u2"], "phone": ["+1 (415) 555-0100", None]})
    assert project.run().success
    assert flagged(braze, "cohort_buyers") == {"u1", "u2"}

    project.set_audience("buyers", {"external_id": ["u1", "u2"], "phone": ["+1 (415) 555-0100", None]})
    start = len(braze.requests())
    assert project.run().success
    assert [r["objects"] for r in track_requests(braze, start)] == [1, 1]  # the null first, then the true
    assert flagged(braze, "cohort_buyers") == {"u1", "u2"}
    assert project.published("buyers") == {"external_id:u1", "external_id:u2"}


def test_a_full_resync_that_fails_fails_the_cohort(make_project, braze, rest_only, monkeypatch):
    monkeypatch.setenv("COHORT_SYNC_MAX_ATTEMPTS", "2")
    seed(braze, ["u1"])
    project = make_project([{"model": "buyers", "name": "Buyers", "delivery": "attribute"}])
    project.set_audience("buyers", {"external_id": ["u1"]})
    assert project.run().success
    braze.set_faults([{"endpoint": "track", "times": 5, "status": 503, "retry_after": 0}])
    assert not project.run(vars={"cohort_sync_full_resync": True}).success
    row = history(project, "buyers")
    assert row["status"] == "failed" and "HTTP 503" in row["error"]


def test_publishing_only_partner_cohorts_needs_no_rest_key(make_project, braze, braze_env, monkeypatch):
    monkeypatch.delenv("BRAZE_REST_API_KEY")
    seed(braze, ["u1"])
    project = make_project([
        {"model": "buyers", "name": "Buyers", "delivery": "attribute"},
        {"model": "churn", "name": "Churn"},
    ])
    project.set_audience("buyers", {"external_id": ["u1"]})
    project.set_audience("churn", {"external_id": ["u1"]})
    built = project.cli("dbt", "run", "--vars", '{"cohort_sync_publish_on_run": false}')
    assert built.returncode == 0, built.stdout
    publish = project.cli("cohort-sync", "publish")
    assert publish.returncode == 2 and "BRAZE_REST_API_KEY is not set" in publish.stderr
    assert braze.requests() == []
    only = project.cli("cohort-sync", "publish", "--cohort", "churn")
    assert only.returncode == 0, only.stderr
    assert braze.cohorts()["churn"]["user_ids"] == ["u1"]


def test_a_cohort_declared_with_full_resync_every_sets_every_member_again_once_due(make_project, braze, rest_only):
    """full_resync_every on a cohort: once the last full resync (else the first
    sync) is that old, the run sets the attribute on every member again,
    counted in its data points; not before, and not on the run after."""
    members = ids("u", 0, 120)
    seed(braze, members)
    project = make_project()
    project.declare([{"model": "buyers", "name": "Buyers", "delivery": "attribute", "full_resync_every": "1h"}])
    project.set_audience("buyers", {"external_id": members})
    assert project.run().success
    assert (history(project, "buyers")["data_points"], history(project, "buyers")["full_resync"]) == (120, False)

    sent = len(braze.requests())
    assert project.run().success  # not due: nothing to send
    assert track_requests(braze, sent) == [] and not history(project, "buyers")["full_resync"]

    project.query("update cohort_sync_run_history set started_at = started_at - interval 2 hour, "
                  "finished_at = finished_at - interval 2 hour")
    sent = len(braze.requests())
    assert project.run().success
    row = history(project, "buyers")
    assert (row["full_resync"], row["data_points"], row["added"]) == (True, 120, 120)
    assert sum(r["objects"] for r in track_requests(braze, sent)) == 120
    assert flagged(braze, "cohort_buyers") == set(members)

    sent = len(braze.requests())
    assert project.run().success  # the resync restarted the period
    assert track_requests(braze, sent) == [] and not history(project, "buyers")["full_resync"]
