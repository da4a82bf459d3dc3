"""Schedules on a simulated clock: two months of 15-minute scheduler ticks."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from cohort_sync.run.schedule import Schedule

START = datetime(2026, 1, 1, 0, 0)  # naive UTC, as stored
TICK = timedelta(minutes=15)
TICKS = 4 * 24 * (31 + 28)  # January and February


def fire_times(schedule: Schedule, start: datetime = START, ticks: int = TICKS, skip=()) -> list[datetime]:
    """The ticks at which a scheduler running every 15 minutes publishes the cohort.

    A tick in `skip` is a scheduler outage: nothing runs then.
    """
    last_success = None
    fired = []
    for n in range(ticks):
        now = start + n * TICK
        if now in skip:
            continue
        if schedule.is_due(last_success, now):
            fired.append(now)
            last_success = now  # the sync starts at the tick and succeeds
    return fired


def test_every_run_fires_at_every_tick():
    assert len(fire_times(Schedule())) == TICKS


def test_once_fires_at_the_first_tick_only():
    assert fire_times(Schedule("once")) == [START]


def test_hourly_fires_once_an_hour_at_its_minute():
    fired = fire_times(Schedule("hourly", minute=30))
    assert fired[0] == START  # never synced: due at once
    assert fired[1:] == [START + timedelta(minutes=30) + n * timedelta(hours=1) for n in range(24 * 59)]


def test_daily_fires_at_its_time_each_day_in_utc():
    fired = fire_times(Schedule("daily", hour=6))
    assert fired == [START] + [datetime(2026, 1, 1, 6) + timedelta(days=n) for n in range(59)]


def test_daily_in_a_timezone_follows_its_local_time():
    # 09:00 in New York is 14:00 UTC in winter (the period has no DST change there).
    fired = fire_times(Schedule("daily", hour=9, timezone="America/New_York"))
    assert fired[1:] == [datetime(2026, 1, 1, 14) + timedelta(days=n) for n in range(59)]


def test_daily_across_a_daylight_saving_change_keeps_local_time():
    start = datetime(2026, 3, 20)
    fired = fire_times(Schedule("daily", hour=6, timezone="Europe/Paris"), start, 4 * 24 * 14)
    assert datetime(2026, 3, 28, 5) in fired  # 06:00 CET
    assert datetime(2026, 3, 29, 4) in fired  # 06:00 CEST, after the change that night
    assert len(fired) == 1 + 14


def test_weekly_fires_on_its_weekday():
    fired = fire_times(Schedule("weekly", hour=7, minute=45, weekday=0))  # Mondays
    assert fired[0] == START
    assert fired[1:] == [datetime(2026, 1, 5, 7, 45) + timedelta(weeks=n) for n in range(8)]
    assert all(moment.weekday() == 0 for moment in fired[1:])


def test_monthly_on_the_31st_fires_on_the_last_day_of_shorter_months():
    fired = fire_times(Schedule("monthly", hour=23, day=31))
    assert fired == [START, datetime(2026, 1, 31, 23), datetime(2026, 2, 28, 23)]


def test_a_missed_slot_is_caught_up_once_not_once_per_missed_slot():
    # The scheduler is down from Jan 3 to Jan 6 (four 06:00 slots missed).
    outage = {datetime(2026, 1, 3) + n * TICK for n in range(4 * 24 * 4)}
    fired = fire_times(Schedule("daily", hour=6), skip=outage)
    after = [moment for moment in fired if datetime(2026, 1, 2, 7) < moment < datetime(2026, 1, 7, 7)]
    assert after == [datetime(2026, 1, 7, 0), datetime(2026, 1, 7, 6)]


def test_a_failed_sync_stays_due_until_one_succeeds():
    schedule = Schedule("daily", hour=6)
    synced = datetime(2026, 1, 1, 6)
    assert not schedule.is_due(synced, datetime(2026, 1, 2, 5, 45))
    assert schedule.is_due(synced, datetime(2026, 1, 2, 6))
    assert schedule.is_due(synced, datetime(2026, 1, 2, 6, 15))  # the 06:00 run failed: still due


@pytest.mark.parametrize("bad", [{"every": "fortnightly"}, {"every": "daily", "timezone": "Mars/Olympus"}])
def test_unknown_schedules_and_zones_are_refused(bad):
    with pytest.raises(Exception, match="unknown|No time zone"):
        Schedule(**bad)


def test_columns_round_trip():
    schedule = Schedule.from_columns("weekly", "07:45", "friday", None, "Europe/Paris")
    assert (schedule.hour, schedule.minute, schedule.weekday, schedule.timezone) == (7, 45, 4, "Europe/Paris")
    assert schedule.describe() == "weekly on friday at 07:45 Europe/Paris"
    assert Schedule.from_columns(None, None, None, None, None) == Schedule()
