"""The status write as a property: any status value survives its wire form, and writing B
over a stored A leaves exactly B (no key of A survives at any depth unless B has it).  The
same property against a real API server is tests/integration/test_status_write.py."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings

from hmls.domain.patch import merge_patch
from hmls.domain.status import Status, status_patch
from tests.strategies import statuses


def nulls(value: Any) -> bool:
    if isinstance(value, dict):
        return any(v is None or nulls(v) for v in value.values())
    if isinstance(value, list):
        return any(nulls(v) for v in value)
    return False


@settings(max_examples=300, derandomize=True)
@given(statuses)
def test_a_status_survives_its_wire_form(status: Status) -> None:
    wire = status.to_wire()
    assert not nulls(wire)  # a null would be taken for a deletion by the merge patch
    assert Status.from_wire(wire) == status


@settings(max_examples=500, derandomize=True)
@given(statuses, statuses)
def test_writing_b_over_a_leaves_exactly_b(a: Status, b: Status) -> None:
    stored, wanted = a.to_wire(), b.to_wire()
    patch = status_patch(stored, wanted)
    if stored == wanted:
        assert patch is None  # nothing changed: nothing is written
        return
    assert patch is not None
    assert merge_patch(stored, patch) == wanted
    assert Status.from_wire(merge_patch(stored, patch)) == b


def test_a_nested_key_the_new_status_lacks_is_deleted() -> None:
    """Issue 27, bug 1: a halt of revision 2 survived into the status of revision 3."""
    stored = {"rollout": {"currentRevision": 2, "halted": "revision 2 halted: spoke1 ...",
                          "clusters": []}}
    wanted = {"rollout": {"currentRevision": 3, "clusters": []}}
    assert status_patch(stored, wanted) == {"rollout": {"currentRevision": 3, "halted": None}}


@settings(max_examples=200, derandomize=True)
@given(statuses)
def test_the_clusters_read_from_the_wire_are_those_of_the_value(status: Status) -> None:
    """The hub cache's cheap read agrees with the typed value's."""
    wire = status.to_wire()
    ingress = {status.traffic.ingress_cluster} if status.traffic else set()
    assert Status.clusters_of({"status": wire}) == (
        {i.cluster for i in status.items} | {p.cluster for p in status.pending_deletions}
        | ingress) - {""}
