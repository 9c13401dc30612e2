"""A cluster's request budget (hmls.kube.budget): client-go's token bucket with a pause for a
429's Retry-After, on a fake clock."""

from __future__ import annotations

import asyncio

from hmls.kube.budget import Budget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def budget(qps: float, burst: int) -> tuple[Budget, Clock]:
    clock = Clock()
    return Budget(qps, burst, clock=clock, sleep=clock.sleep), clock


async def test_the_burst_goes_at_once_then_one_token_every_one_over_qps() -> None:
    b, clock = budget(qps=10, burst=3)
    waits = [await b.take() for _ in range(6)]
    # concurrent takers reserve in order: the 4th waits 0.1 s, the 5th 0.2 s, ...
    assert [round(w, 6) for w in waits] == [0, 0, 0, 0.1, 0.2, 0.3]
    clock.now = 10.0  # tokens come back, up to the burst
    assert [await b.take() for _ in range(3)] == [0, 0, 0]


async def test_concurrent_takers_are_spaced_without_a_lock() -> None:
    b, clock = budget(qps=4, burst=1)
    waits = await asyncio.gather(*(b.take() for _ in range(4)))
    assert sorted(round(w, 6) for w in waits) == [0, 0.25, 0.5, 0.75]
    assert clock.slept == [0.25, 0.5, 0.75]


async def test_a_pause_holds_every_request_until_it_is_over() -> None:
    b, clock = budget(qps=0, burst=1)  # no rate limit: only the pause
    assert await b.take() == 0
    b.pause(2.0)
    clock.now = 0.5
    assert await b.take() == 1.5
    b.pause(0.1)  # a shorter pause does not cut a longer one
    assert await b.take() == 1.5
    clock.now = 3.0
    assert await b.take() == 0


async def test_after_a_pause_the_held_requests_go_out_at_qps_not_as_a_burst() -> None:
    b, clock = budget(qps=10, burst=100)
    b.pause(1.0)  # a 429: the 100 saved tokens are spent
    waits = await asyncio.gather(*(b.take() for _ in range(4)))
    assert [round(w, 6) for w in waits] == [1.1, 1.2, 1.3, 1.4]
    clock.now = 100.0  # and the burst comes back with time
    assert [await b.take() for _ in range(3)] == [0, 0, 0]
