"""Deduplicating work queue with per-key exponential backoff (client-go semantics).

A key is in at most one of: waiting, being processed.  Adding a key that is being processed
marks it dirty, and it is queued again when ``done`` is called, so an event never gets lost
and a key is never reconciled by two workers at once.  Keys ``accept`` refuses (another
shard's) are dropped when added and again when taken, in case the answer changed meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class WorkQueue:
    def __init__(self, *, base_delay: float = 0.5, max_delay: float = 300.0,
                 on_depth: Callable[[int], None] | None = None,
                 accept: Callable[[str], bool] = lambda key: True) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._base, self._max = base_delay, max_delay
        self._on_depth = on_depth or (lambda n: None)
        self._accept = accept

    def __len__(self) -> int:
        return self._queue.qsize()

    def add(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()
        if not self._accept(key):
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.put_nowait(key)
        self._on_depth(len(self))

    def add_after(self, key: str, delay: float) -> None:
        if not self._accept(key):
            return
        if delay <= 0:
            self.add(key)
            return
        existing = self._timers.get(key)
        due = asyncio.get_running_loop().time() + delay
        if existing and existing.when() <= due:
            return
        if existing:
            existing.cancel()
        self._timers[key] = asyncio.get_running_loop().call_at(due, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: str) -> float:
        """Requeue after this key's next backoff step; returns the delay."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        delay = min(self._base * 2.0 ** min(n, 64), self._max)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def requeue(self, key: str, *, converged: bool, after: float | None) -> float | None:
        """After a reconcile of ``key``: converged, its backoff is forgotten; not, it comes
        back after its next backoff step.  Either way a timer the reconcile set (``after``
        seconds: a rollout's next step or soak's end, a progress deadline, traffic damping)
        is honoured: backoff paces the retries of what failed, and must not hold back what
        the reconcile has to do next by up to ``max_delay`` (a rollout soaked minutes past
        its ``soakSeconds`` while its HeadIngress had no cluster to route to).  What sets
        such a timer moves on each time, so it cannot loop.  Returns the backoff delay,
        if any."""
        delay = None
        if converged:
            self.forget(key)
        else:
            delay = self.add_rate_limited(key)
        if after is not None:
            self.add_after(key, after)
        return delay

    async def get(self) -> str:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            if self._accept(key):
                break
            self._failures.pop(key, None)
        self._processing.add(key)
        self._on_depth(len(self))
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def shutdown(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
