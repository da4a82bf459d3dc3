from __future__ import annotations

from cohort_sync.client import RateLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

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
