"""The tests' kstatus client (tests.conftest.kstatus) runs cli-utils' own status rules: the
real binary, built from the Go module proxy, classifies hand-written objects as kstatus does."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import kstatus


def _obj(generation: int = 1, observed: int | None = 1, **conditions: str) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [
        {"type": t, "status": s, "reason": f"{t}Reason", "message": f"{t} says why"}
        for t, s in conditions.items()]}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"apiVersion": "tensorstack.dev/v1beta1", "kind": "HyperMLService",
            "metadata": {"name": "svc", "namespace": "demo", "generation": generation},
            "status": status}


@pytest.mark.parametrize(("obj", "want"), [
    (_obj(), ("Current", "Resource is current")),
    (_obj(Stalled="False", Reconciling="False"), ("Current", "Resource is current")),
    (_obj(Reconciling="True"), ("InProgress", "Reconciling says why")),
    (_obj(Stalled="True"), ("Failed", "Stalled says why")),
    # both true: the first of the two in the list decides (kstatus reads them in order)
    (_obj(Stalled="True", Reconciling="True"), ("Failed", "Stalled says why")),
    (_obj(Reconciling="True", Stalled="True"), ("InProgress", "Reconciling says why")),
    (_obj(generation=3, observed=2, Stalled="True"),
     ("InProgress", "HyperMLService generation is 3, but latest observed generation is 2")),
    ({"apiVersion": "apps/v1", "kind": "Deployment",
      "metadata": {"name": "web", "namespace": "demo", "generation": 2},
      "spec": {"replicas": 1}, "status": {"observedGeneration": 1}},
     ("InProgress", "Deployment generation is 2, but latest observed generation is 1")),
    ({**_obj(), "metadata": {"name": "svc", "generation": 1,
                             "deletionTimestamp": "2026-12-07T00:00:00Z"}},
     ("Terminating", "Resource scheduled for deletion")),
])
def test_kstatus_classifies_as_cli_utils_does(obj: dict[str, Any], want: tuple[str, str]) -> None:
    assert kstatus(obj) == want


def test_an_object_kstatus_cannot_read_is_unknown() -> None:
    status, message = kstatus({**_obj(), "status": {"conditions": "not a list"}})
    assert status == "Unknown" and message
