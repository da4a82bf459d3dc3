from __future__ import annotations

import bisect

import pytest

from cohort_sync.braze.client import RateLimiter, observe_rate_headers


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        """Epoch seconds: 1,000,000 ahead of the monotonic clock."""
        return self.now + 1_000_000

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_requests_are_spaced_to_stay_under_the_hourly_limit():
    time = FakeTime()
    limiter = RateLimiter(3600, clock=time.clock, sleep=time.sleep)  # one a second
    for _ in range(4):
        limiter.acquire()
    assert time.slept == [1.0, 1.0, 1.0]
    assert time.now == 103.0


def test_braze_default_allows_at_most_250000_starts_an_hour():
    time = FakeTime()
    limiter = RateLimiter(250_000, clock=time.clock, sleep=time.sleep)
    starts = 0
    while time.now < 100.0 + 3600:
        limiter.acquire()
        starts += 1
    # one start every 14.4 ms: the 250,001st is exactly an hour after the first,
    # so no hour (start inclusive, end exclusive) holds more than 250,000
    assert starts == 250_001


def test_time_already_spent_elsewhere_counts():
    time = FakeTime()
    limiter = RateLimiter(3600, clock=time.clock, sleep=time.sleep)
    limiter.acquire()
    time.now += 5  # the request itself took 5 s
    assert limiter.acquire() == 0
    assert time.slept == []


def limiter_for(time: FakeTime, *limits: tuple[float, float]) -> RateLimiter:
    return RateLimiter.from_limits(limits, clock=time.clock, sleep=time.sleep, wall=time.wall)


def test_several_limits_are_kept_by_spacing_at_the_strictest():
    time = FakeTime()
    assert limiter_for(time, (3000, 3.0)).interval == pytest.approx(0.001)
    assert limiter_for(time, (3000, 3.0), (3600, 3600.0)).interval == pytest.approx(1.0)
    assert limiter_for(time, (3000, 3.0), (36_000_000, 3600.0)).interval == pytest.approx(0.001)
    with pytest.raises(ValueError, match="positive"):
        limiter_for(time, (0, 3.0))
    with pytest.raises(ValueError, match="positive"):
        limiter_for(time)


def test_braze_3000_per_3_seconds_allows_at_most_3000_starts_in_any_window():
    time = FakeTime()
    limiter = limiter_for(time, (3000, 3.0))
    starts = []
    while time.now < 100.0 + 6:
        limiter.acquire()
        starts.append(time.now)
    # the most starts in a window [s, s + 3) opening at any start s
    assert max(bisect.bisect_left(starts, s + 3.0) - i for i, s in enumerate(starts)) == 3000


def test_no_more_starts_than_the_server_says_remain_before_its_reset():
    time = FakeTime()
    limiter = limiter_for(time, (3600, 3600.0))  # one a second
    limiter.acquire()
    limiter.observe(remaining=2, reset_at=time.wall() + 10)
    assert [limiter.acquire() for _ in range(3)] == [1.0, 1.0, 8.0]
    assert time.now == 110.0  # the third started as the window reset
    assert limiter.acquire() == 1.0  # then the even spacing again


def test_remaining_zero_waits_until_the_reset():
    time = FakeTime()
    limiter = limiter_for(time, (3000, 3.0))
    limiter.observe(remaining=0, reset_at=time.wall() + 2.5)
    assert limiter.acquire() == 2.5
    assert limiter.acquire() == pytest.approx(0.001)


def test_a_late_answer_from_an_earlier_window_changes_nothing():
    time = FakeTime()
    limiter = limiter_for(time, (3000, 3.0))
    limiter.observe(remaining=5, reset_at=time.wall() + 3)
    limiter.observe(remaining=0, reset_at=time.wall() + 1)  # older window, arriving late
    limiter.observe(remaining=9, reset_at=time.wall() + 3)  # same window: the smaller budget holds
    waits = [limiter.acquire() for _ in range(6)]
    assert waits[:5] == [0, pytest.approx(0.001), pytest.approx(0.001), pytest.approx(0.001), pytest.approx(0.001)]
    assert waits[5] == pytest.approx(3 - 0.004)


def test_a_budget_whose_reset_has_passed_is_forgotten():
    time = FakeTime()
    limiter = limiter_for(time, (3000, 3.0))
    limiter.observe(remaining=0, reset_at=time.wall() - 1)
    assert limiter.acquire() == 0
    limiter.observe(remaining=0, reset_at=time.wall() + 1)
    time.now += 5  # the request took longer than the window
    assert limiter.acquire() == 0


def test_rate_headers_are_read_case_insensitively_and_only_when_both_are_given():
    from requests.structures import CaseInsensitiveDict

    time = FakeTime()
    limiter = limiter_for(time, (3000, 3.0))
    observe_rate_headers(limiter, CaseInsensitiveDict({"x-ratelimit-remaining": "0"}))
    observe_rate_headers(limiter, CaseInsensitiveDict({"x-ratelimit-remaining": "x", "x-ratelimit-reset": "1"}))
    assert limiter.acquire() == 0
    reset = str(int(time.wall()) + 2)
    observe_rate_headers(limiter, CaseInsensitiveDict({"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}))
    assert limiter.acquire() == pytest.approx(2.0)
