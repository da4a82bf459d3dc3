"""When a declaration's full_resync_every calls for a full resync."""

from datetime import datetime, timedelta

from cohort_sync.warehouse.ledger import CohortPlan

NOW = datetime(2026, 12, 1, 12, 0)


def plan(minutes, last):
    return CohortPlan("facts", "facts", "publish", "ok", None, None, None, delivery="profile", sync_mode="update",
                      full_resync_minutes=minutes, last_full_resync=last)


def test_a_full_resync_is_due_once_the_period_has_passed_since_the_last_one():
    assert plan(7 * 1440, NOW - timedelta(days=7)).resync_due(NOW)
    assert not plan(7 * 1440, NOW - timedelta(days=6, hours=23)).resync_due(NOW)


def test_never_without_the_setting_nor_before_the_first_sync():
    assert not plan(None, NOW - timedelta(days=30)).resync_due(NOW)
    assert not plan(60, None).resync_due(NOW)  # the first sync sends everything anyway


def test_a_sync_is_told_apart_from_cohorts():
    assert plan(None, None).is_sync and plan(None, None).tracked
    cohort = CohortPlan("c", "C", "publish", "ok", None, None, None)
    assert not cohort.is_sync and not cohort.tracked
