"""A cluster's request budget: how fast hmls may send it requests.

Where this sits: each ``ClusterClient`` of a spoke takes a token from its ``Budget`` before
every request but a health probe, so a fleet-wide burst (every HyperMLService reconciled at
once after a restart) cannot flood one cluster's API server however many reconciles run.
It is client-go's token bucket (``--cluster-qps`` tokens a second, up to ``--cluster-burst``
saved), plus backpressure: a ``429 Too Many Requests`` (a rate limit, or API Priority and
Fairness rejecting the request) pauses every request to that cluster for its
``Retry-After`` and spends the saved burst, so the requests held back go out at ``qps``, then
the request is sent again.  Being throttled is slowing down, never an
item failure and never "unreachable".

Waiting for a token reserves it at once (the bucket may go below zero), as Go's
``rate.Limiter.Wait`` does, so concurrent takers are served in order without a lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Budget:
    def __init__(self, qps: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """``qps`` <= 0: no rate limit (a 429's pause still holds)."""
        self.qps, self.burst = qps, max(1, burst)
        self._clock, self._sleep = clock, sleep
        self._tokens = float(self.burst)
        self._at = clock()
        self._paused_until = 0.0

    def _reserve(self) -> float:
        """Take a token; the seconds until it is ours (and any pause is over)."""
        now = self._clock()
        start = max(now, self._paused_until)
        if self.qps <= 0:
            return start - now
        if start > self._at:
            self._tokens = min(float(self.burst), self._tokens + (start - self._at) * self.qps)
            self._at = start
        self._tokens -= 1.0
        return start - now + max(0.0, -self._tokens) / self.qps

    async def take(self) -> float:
        """Wait for a token; returns the seconds waited."""
        wait = self._reserve()
        if wait > 0:
            await self._sleep(wait)
        return wait

    def pause(self, seconds: float) -> None:
        """The cluster asked for a pause (``Retry-After``): no request before it is over,
        and then no burst: the saved tokens are gone, so the requests held back go out one
        every 1/qps seconds instead of all at once (which would be turned away again)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self._tokens = min(self._tokens, 0.0)
        self._at = max(self._at, self._paused_until)
