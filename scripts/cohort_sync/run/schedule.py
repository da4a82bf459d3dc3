"""When a cohort is due: its schedule, and the start of its last successful sync.

A scheduler (cron, Airflow, dbt Cloud) runs the publisher often; each
cohort publishes only when due. A schedule's slots are the moments it names
(every day at 06:00 Europe/Paris, say); a cohort is due when its last
successful sync started before the latest slot, so a run that missed
several slots catches up once, not once per slot. `every_run` is always
due; `once` is due until its first successful sync, then frozen.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

EVERY = ("every_run", "hourly", "daily", "weekly", "monthly", "once")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class Schedule:
    every: str = "every_run"
    hour: int = 0  # daily, weekly, monthly
    minute: int = 0  # hourly too
    weekday: int = 0  # weekly: 0 is Monday
    day: int = 1  # monthly: 1-31, the month's last day in shorter months
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if self.every not in EVERY:
            raise ValueError(f"unknown schedule '{self.every}'; use one of {', '.join(EVERY)}")
        ZoneInfo(self.timezone)  # raises for an unknown zone

    @classmethod
    def from_columns(
        cls, every: str | None, at: str | None, weekday: str | None, day: int | None, tz: str | None
    ) -> Schedule:
        """From cohort_sync_cohorts' schedule columns (null: the defaults)."""
        hour, minute = (int(part or 0) for part in (at or "00:00").split(":"))
        return cls(
            every=every or "every_run",
            hour=hour,
            minute=minute,
            weekday=WEEKDAYS.index(weekday) if weekday else 0,
            day=int(day or 1),
            timezone=tz or "UTC",
        )

    def last_slot(self, now: datetime) -> datetime | None:
        """The latest slot at or before `now` (naive UTC), as naive UTC; None if it has none."""
        if self.every in ("every_run", "once"):
            return None
        zone = ZoneInfo(self.timezone)
        local = now.replace(tzinfo=timezone.utc).astimezone(zone)
        if self.every == "hourly":
            slot = local.replace(minute=self.minute, second=0, microsecond=0)
            if slot > local:
                slot -= timedelta(hours=1)
        elif self.every == "daily":
            slot = self._at(local.year, local.month, local.day, zone)
            if slot > local:
                yesterday = local - timedelta(days=1)
                slot = self._at(yesterday.year, yesterday.month, yesterday.day, zone)
        elif self.every == "weekly":
            back = (local.weekday() - self.weekday) % 7
            date = local - timedelta(days=back)
            slot = self._at(date.year, date.month, date.day, zone)
            if slot > local:
                date -= timedelta(days=7)
                slot = self._at(date.year, date.month, date.day, zone)
        else:  # monthly
            slot = self._on_day(local.year, local.month, zone)
            if slot > local:
                year, month = (local.year, local.month - 1) if local.month > 1 else (local.year - 1, 12)
                slot = self._on_day(year, month, zone)
        return slot.astimezone(timezone.utc).replace(tzinfo=None)

    def is_due(self, last_success: datetime | None, now: datetime) -> bool:
        """Due unless the last successful sync started at or after the latest slot."""
        if self.every == "every_run":
            return True
        if last_success is None:
            return True
        if self.every == "once":
            return False
        slot = self.last_slot(now)
        return slot is not None and last_success < slot

    def describe(self) -> str:
        at = f"{self.hour:02d}:{self.minute:02d}"
        where = "" if self.timezone == "UTC" else f" {self.timezone}"
        return {
            "every_run": "every run",
            "once": "once",
            "hourly": f"hourly at :{self.minute:02d}",
            "daily": f"daily at {at}{where}",
            "weekly": f"weekly on {WEEKDAYS[self.weekday]} at {at}{where}",
            "monthly": f"monthly on day {self.day} at {at}{where}",
        }[self.every]

    def _at(self, year: int, month: int, day: int, zone: ZoneInfo) -> datetime:
        return datetime(year, month, day, self.hour, self.minute, tzinfo=zone)

    def _on_day(self, year: int, month: int, zone: ZoneInfo) -> datetime:
        return self._at(year, month, min(self.day, calendar.monthrange(year, month)[1]), zone)
