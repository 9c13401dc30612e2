"""The informer store's write-response rule (hmls.kube.watching.Informer.observe), and its
report of a list that succeeds after failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from hmls.kube import errors
from hmls.kube.client import WatchEvent
from hmls.kube.resources import HMLS
from hmls.kube.watching import Informer


def cr(rv: str, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "demo", "name": "svc", "resourceVersion": rv, **meta}}


def informer() -> Informer[dict[str, Any]]:
    return Informer(None, HMLS, on_event=lambda *_: None)  # type: ignore[arg-type]


def test_a_write_response_is_kept_unless_the_watch_has_newer() -> None:
    inf = informer()
    inf.observe(cr("5"))
    assert inf.get("demo", "svc") == cr("5")
    inf.observe(cr("4"))
    assert inf.get("demo", "svc") == cr("5")


def test_the_response_that_removes_the_last_finalizer_is_not_kept() -> None:
    """Churn regression (found by an in-process churn driver): the finalizer patch's answer often arrives
    after the watch's DELETED event; kept, it stayed in the store for good (≈ 8 KB per
    HyperMLService lifecycle)."""
    inf = informer()
    final = cr("9", deletionTimestamp="2026-12-02T21:00:00Z", finalizers=[])
    assert inf.observe(final) == final  # the caller still gets it
    assert inf.store == {}
    waiting = cr("8", deletionTimestamp="2026-12-02T21:00:00Z", finalizers=["x"])
    inf.observe(waiting)
    assert inf.get("demo", "svc") == waiting  # a deletion still waiting is a live object


class FlakyLists:
    """Lists fail ``failures`` times, then answer empty; watches wait forever."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures

    async def pages(self, *_: Any, **__: Any) -> AsyncIterator[tuple[list[Any], str]]:
        if self.failures:
            self.failures -= 1
            raise errors.Unreachable("connection refused")
        yield [], "7"

    async def watch(self, *_: Any, **__: Any) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield


async def recoveries(failures: int) -> int:
    seen: list[None] = []
    inf: Informer[Any] = Informer(FlakyLists(failures), HMLS,  # type: ignore[arg-type]
                                  on_event=lambda *_: None,
                                  on_recovered=lambda: seen.append(None))
    task = asyncio.create_task(inf.run())
    await asyncio.wait_for(inf.synced.wait(), 5)
    task.cancel()
    return len(seen)


async def test_a_list_that_succeeds_after_failures_reports_the_recovery() -> None:
    """The cluster's HyperMLServices are re-enqueued on it: reconciles refused meanwhile for
    want of this cache would otherwise wait out their backoff, since an object that is
    missing brings no event (found by the soak, seed 3192005745)."""
    assert await recoveries(2) == 1
    assert await recoveries(0) == 0


class Events:
    """A watch that delivers the given objects as MODIFIED events, then ends."""

    name = "events"

    def __init__(self, objs: list[dict[str, Any]]) -> None:
        self.objs = objs

    async def watch(self, *_: Any, **__: Any) -> AsyncIterator[WatchEvent]:
        for obj in self.objs:
            yield WatchEvent("MODIFIED", obj)


async def test_the_watch_echo_of_a_stored_write_response_is_not_transformed_again() -> None:
    transformed: list[str] = []

    def transform(obj: dict[str, Any]) -> str:
        rv = str(obj["metadata"]["resourceVersion"])
        transformed.append(rv)
        return rv

    events: list[tuple[str | None, str | None]] = []
    inf: Informer[str] = Informer(Events([cr("5"), cr("6")]), HMLS,  # type: ignore[arg-type]
                                  transform=transform,
                                  on_event=lambda _, old, new: events.append((old, new)))
    inf.observe(cr("5"))
    await inf._watch()
    assert transformed == ["5", "6"]  # the echo of "5" reused the stored value
    assert events == [("5", "5"), ("5", "6")]  # and is still delivered (an echo to its reader)


async def test_a_cancel_that_lands_as_a_retry_is_asked_for_ends_the_informer() -> None:
    """The backoff between attempts waits on ``retry_now`` with asyncio.timeout: Python 3.11's
    asyncio.wait_for returns instead of raising when the cancel lands as the awaited event
    completes, and the informer went on for good (the chaos soak's checker loop, which waited
    the same way, hung CI for an hour after its last step)."""
    for _ in range(20):
        inf: Informer[Any] = Informer(FlakyLists(1000), HMLS,  # type: ignore[arg-type]
                                      on_event=lambda *_: None)
        task = asyncio.create_task(inf.run())
        await inf.attempted.wait()
        await asyncio.sleep(0)  # in its backoff
        inf.retry_now()
        await asyncio.sleep(0)  # the retry's waiter completes ...
        task.cancel()  # ... as the cancel lands
        done, _ = await asyncio.wait([task], timeout=2)
        assert done == {task}, "the informer did not end on cancel"


async def test_a_list_is_cached_page_by_page() -> None:
    """Each page is turned into the cache's view before the next is read: a large list (a
    restart on 10,000 HyperMLServices) is never held whole as parsed objects."""
    viewed: list[str] = []
    asked_with: list[int] = []

    class Pages:
        name = "paged"

        async def pages(self, *_: Any, **__: Any) -> AsyncIterator[tuple[list[Any], str]]:
            for page in (["a", "b"], ["c"]):
                asked_with.append(len(viewed))  # views made when this page is read
                yield [cr("3", name=n) for n in page], "3"

        async def watch(self, *_: Any, **__: Any) -> AsyncIterator[Any]:
            await asyncio.Event().wait()
            yield

    def view(obj: dict[str, Any]) -> str:
        viewed.append(obj["metadata"]["name"])
        return str(obj["metadata"]["name"])

    inf = Informer(Pages(), HMLS, on_event=lambda *_: None,  # type: ignore[arg-type]
                   transform=view)
    task = asyncio.create_task(inf.run())
    await inf.synced.wait()
    task.cancel()
    assert asked_with == [0, 2] and viewed == ["a", "b", "c"]
    assert inf.store == {("demo", n): n for n in "abc"}
