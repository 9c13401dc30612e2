"""Unit tests for the EventRecorder's deduplication (a fake hub records the creates)."""

from __future__ import annotations

from typing import Any

from hmls.kube.events import EventRecorder


class Hub:
    def __init__(self) -> None:
        self.created: list[tuple[str, str]] = []

    async def create(self, resource: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append((body["involvedObject"]["uid"], body["reason"]))
        return body


def obj(uid: str) -> dict[str, Any]:
    return {"apiVersion": "tensorstack.dev/v1beta1", "kind": "HyperMLService",
            "metadata": {"name": f"cr-{uid}", "namespace": "ns", "uid": uid}}


async def test_an_identical_event_is_sent_once_per_period_and_per_object() -> None:
    hub, now = Hub(), [0.0]
    rec = EventRecorder(hub, dedupe_seconds=10, clock=lambda: now[0])  # type: ignore[arg-type]
    for _ in range(3):
        await rec.emit(obj("a"), type_="Warning", reason="Stuck", message="m")
    await rec.emit(obj("b"), type_="Warning", reason="Stuck", message="m")
    await rec.emit(obj("a"), type_="Warning", reason="Stuck", message="other")
    assert hub.created == [("a", "Stuck"), ("b", "Stuck"), ("a", "Stuck")]
    now[0] = 10.5
    await rec.emit(obj("a"), type_="Warning", reason="Stuck", message="m")
    assert len(hub.created) == 4  # the period is over: sent again


async def test_entries_age_out_and_a_forgotten_object_takes_its_own_with_it() -> None:
    hub, now = Hub(), [0.0]
    rec = EventRecorder(hub, dedupe_seconds=10, clock=lambda: now[0])  # type: ignore[arg-type]
    for i in range(100):
        await rec.emit(obj(f"u{i}"), type_="Normal", reason="Applied", message="m")
    rec.forget("u0")
    assert "u0" not in rec._recent and len(rec._recent) == 99
    await rec.emit(obj("u0"), type_="Normal", reason="Applied", message="m")
    assert len(hub.created) == 101  # forgotten: not deduplicated
    now[0] = 11.0
    await rec.emit(obj("fresh"), type_="Normal", reason="Applied", message="m")
    assert list(rec._recent) == ["fresh"]  # the aged-out entries are pruned
