"""The informer store's write-response rule (hmls.kube.watching.Informer.observe)."""

from __future__ import annotations

from typing import Any

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
    """Churn regression (scripts/bench/churn.py): the finalizer patch's answer often arrives
    after the watch's DELETED event; kept, it stayed in the store for good (≈ 8 KB per
    HyperMLService lifecycle)."""
    inf = informer()
    final = cr("9", deletionTimestamp="2026-12-02T21:00:00Z", finalizers=[])
    assert inf.observe(final) == final  # the caller still gets it
    assert inf.store == {}
    waiting = cr("8", deletionTimestamp="2026-12-02T21:00:00Z", finalizers=["x"])
    inf.observe(waiting)
    assert inf.get("demo", "svc") == waiting  # a deletion still waiting is a live object
