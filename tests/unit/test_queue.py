"""Unit tests for hmls.engine.queue.WorkQueue (asyncio, small real delays)."""

from __future__ import annotations

import asyncio

import pytest

from hmls.engine.queue import WorkQueue

BASE = 0.01


async def get_soon(q: WorkQueue, timeout: float = 1.0) -> str:
    return await asyncio.wait_for(q.get(), timeout)


async def test_get_returns_keys_in_fifo_order() -> None:
    q = WorkQueue()
    for key in ("a", "b", "c"):
        q.add(key)
    assert [await get_soon(q) for _ in range(3)] == ["a", "b", "c"]


async def test_adds_are_deduplicated_while_waiting() -> None:
    depths: list[int] = []
    q = WorkQueue(on_depth=depths.append)
    q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    assert depths == [1, 2]
    assert await get_soon(q) == "a"
    assert depths == [1, 2, 1]
    assert await get_soon(q) == "b"
    assert len(q) == 0


async def test_key_added_while_processing_is_requeued_after_done() -> None:
    q = WorkQueue()
    q.add("a")
    assert await get_soon(q) == "a"
    q.add("a")
    q.add("a")
    assert len(q) == 0  # never handed to a second worker while being processed
    q.done("a")
    assert len(q) == 1
    assert await get_soon(q) == "a"
    q.done("a")
    assert len(q) == 0  # not dirty any more: done does not requeue again


async def test_done_without_new_add_does_not_requeue() -> None:
    q = WorkQueue()
    q.add("a")
    await get_soon(q)
    q.done("a")
    assert len(q) == 0


async def test_key_can_be_added_again_after_it_was_taken() -> None:
    q = WorkQueue()
    q.add("a")
    await get_soon(q)
    q.done("a")
    q.add("a")
    assert len(q) == 1


async def test_add_after_fires_later() -> None:
    q = WorkQueue()
    loop = asyncio.get_running_loop()
    start = loop.time()
    q.add_after("a", 0.05)
    assert len(q) == 0
    await asyncio.sleep(0.01)
    assert len(q) == 0
    assert await get_soon(q) == "a"
    assert loop.time() - start >= 0.045


@pytest.mark.parametrize("delay", [0, -1])
async def test_add_after_non_positive_delay_adds_now(delay: float) -> None:
    q = WorkQueue()
    q.add_after("a", delay)
    assert len(q) == 1


async def test_add_after_keeps_the_earlier_deadline() -> None:
    q = WorkQueue()
    q.add_after("a", 0.02)
    q.add_after("a", 10)  # later: ignored
    assert await get_soon(q, 1.0) == "a"
    q.done("a")

    q.add_after("b", 10)
    q.add_after("b", 0.02)  # earlier: replaces the later timer
    assert await get_soon(q, 1.0) == "b"
    q.done("b")
    q.shutdown()


async def test_add_cancels_a_pending_delayed_add() -> None:
    q = WorkQueue()
    q.add_after("a", 0.03)
    q.add("a")
    assert await get_soon(q) == "a"
    q.done("a")
    await asyncio.sleep(0.08)
    assert len(q) == 0  # the timer did not fire a second time


async def test_add_after_while_processing_requeues_after_done() -> None:
    q = WorkQueue()
    q.add("a")
    await get_soon(q)
    q.add_after("a", 0.01)
    await asyncio.sleep(0.05)
    assert len(q) == 0  # fired, but the key is being processed: only marked dirty
    q.done("a")
    assert await get_soon(q) == "a"


async def test_rate_limited_backoff_doubles_and_is_capped() -> None:
    q = WorkQueue(base_delay=BASE, max_delay=0.05)
    delays = [q.add_rate_limited("a") for _ in range(6)]
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.05, 0.05, 0.05])
    assert q.add_rate_limited("b") == pytest.approx(BASE)  # another key starts over
    q.shutdown()


async def test_rate_limited_keys_back_off_independently() -> None:
    q = WorkQueue(base_delay=BASE, max_delay=1.0)
    q.add_rate_limited("a")
    q.add_rate_limited("a")
    assert q.add_rate_limited("b") == pytest.approx(BASE)
    assert q.add_rate_limited("a") == pytest.approx(4 * BASE)
    q.shutdown()


async def test_forget_resets_backoff() -> None:
    q = WorkQueue(base_delay=BASE, max_delay=1.0)
    for _ in range(3):
        q.add_rate_limited("a")
    assert q.add_rate_limited("a") == pytest.approx(8 * BASE)
    q.forget("a")
    assert q.add_rate_limited("a") == pytest.approx(BASE)
    q.forget("never-seen")  # no error
    q.shutdown()


async def test_rate_limited_key_is_delivered_after_its_delay() -> None:
    q = WorkQueue(base_delay=0.03, max_delay=1.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    q.add_rate_limited("a")
    assert len(q) == 0
    assert await get_soon(q) == "a"
    assert loop.time() - start >= 0.025


async def test_shutdown_cancels_pending_timers() -> None:
    q = WorkQueue()
    q.add_after("a", 0.01)
    q.add_after("b", 0.02)
    q.shutdown()
    await asyncio.sleep(0.05)
    assert len(q) == 0


async def test_backoff_survives_many_failures() -> None:
    q = WorkQueue(base_delay=BASE, max_delay=0.05)
    try:
        for _ in range(1100):
            delay = q.add_rate_limited("a")
        assert delay == pytest.approx(0.05)
    finally:
        q.shutdown()


async def test_keys_of_other_shards_are_dropped_when_added_and_when_taken() -> None:
    mine = {"a", "b", "c"}
    q = WorkQueue(accept=lambda key: key in mine)
    q.add("x")
    q.add_after("y", 0.01)
    q.add("a")
    q.add("b")
    mine.discard("a")  # its shard was lost while it waited
    await asyncio.sleep(0.02)
    assert await get_soon(q) == "b"
    with pytest.raises(TimeoutError):
        await get_soon(q, timeout=0.05)


async def _failed(q: WorkQueue, key: str, times: int) -> None:
    """``key`` failed ``times`` times and is taken again, as a worker takes it (its backoff
    timers replaced by an add)."""
    for _ in range(times):
        q.add_rate_limited(key)
    q.add(key)
    assert await get_soon(q) == key
    q.done(key)


async def test_a_failed_key_with_a_timer_of_its_own_comes_back_at_the_timer() -> None:
    """A rollout soaking while its traffic is not ready is not converged: the backoff grows,
    but the soak's end must still wake it (the demo's rollout soaked minutes past its 8 s)."""
    q = WorkQueue(base_delay=BASE, max_delay=10.0)
    await _failed(q, "a", 8)  # its backoff is at 2.56 s now
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert q.requeue("a", converged=False, after=0.05) == pytest.approx(2.56)
    assert await get_soon(q) == "a"
    assert 0.04 <= loop.time() - start < 1.0
    q.shutdown()


async def test_a_failed_key_asked_back_at_once_comes_back_at_once() -> None:
    """A rollout step that started (its cluster drained or its revision to apply) while the
    HyperMLService fails elsewhere goes on now, not after the backoff."""
    q = WorkQueue(base_delay=BASE, max_delay=10.0)
    await _failed(q, "a", 8)
    assert q.requeue("a", converged=False, after=0.0) == pytest.approx(2.56)
    assert len(q) == 1
    assert await get_soon(q) == "a"
    q.shutdown()


async def test_a_converged_key_forgets_its_backoff_and_keeps_its_timer() -> None:
    q = WorkQueue(base_delay=BASE, max_delay=1.0)
    await _failed(q, "a", 3)
    assert q.requeue("a", converged=True, after=0.0) is None
    assert await get_soon(q) == "a"  # at once
    assert q.add_rate_limited("a") == pytest.approx(BASE)  # forgotten
    q.shutdown()
