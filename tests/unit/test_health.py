"""Unit tests for hmls.domain.health: MLService readiness and unknown kinds."""

from __future__ import annotations

from typing import Any

import pytest

from hmls.domain.health import Health, condition, has_health, health, mlservice

API = "tensorstack.dev/v1beta1"


def status(*conds: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"conditions": list(conds), **extra}


READY = {"type": "Ready", "status": "True"}
NOT_PAUSED = {"type": "Paused", "status": "False"}


def test_ready_mlservice() -> None:
    assert health(API, "MLService", status(NOT_PAUSED, READY)) == Health(True, "Ready")


def test_ready_without_paused_condition() -> None:
    assert mlservice(status(READY)) == Health(True, "Ready")


def test_any_version_of_the_group_is_recognised() -> None:
    assert health("tensorstack.dev/v1", "MLService", status(READY)) == Health(True, "Ready")


def test_not_ready_uses_message() -> None:
    cond = {"type": "Ready", "status": "False", "reason": "PredictorNotReady",
            "message": "0 of 1 replicas ready"}
    assert mlservice(status(NOT_PAUSED, cond)) == Health(False, "0 of 1 replicas ready")


def test_not_ready_falls_back_to_reason() -> None:
    cond = {"type": "Ready", "status": "False", "reason": "PredictorNotReady"}
    assert mlservice(status(cond)) == Health(False, "PredictorNotReady")


@pytest.mark.parametrize("value", ["False", "Unknown"])
def test_not_ready_falls_back_to_status(value: str) -> None:
    assert mlservice(status({"type": "Ready", "status": value})) == Health(
        False, f"Ready is {value}")


def test_paused_wins_over_ready() -> None:
    assert mlservice(status({"type": "Paused", "status": "True"}, READY)) == Health(
        False, "paused")


@pytest.mark.parametrize("st", [None, {}])
def test_no_status(st: dict[str, Any] | None) -> None:
    assert health(API, "MLService", st) == Health(False, "no status reported yet")


@pytest.mark.parametrize("st", [
    status(NOT_PAUSED),
    {"address": {"url": "http://x"}},
    {"conditions": None, "releases": []},
    status("garbage", {"type": "Other", "status": "True"}),  # type: ignore[arg-type]
])
def test_no_ready_condition(st: dict[str, Any]) -> None:
    assert mlservice(st) == Health(False, "no Ready condition reported yet")


@pytest.mark.parametrize(("api_version", "kind"), [
    ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("tensorstack.dev/v1beta1", "MLServiceRuntime"),
    ("example.com/v1", "MLService"),  # right kind, wrong group
    ("v1", "MLService"),
])
def test_unknown_kinds_return_none(api_version: str, kind: str) -> None:
    assert health(api_version, kind, status(READY)) is None
    assert health(api_version, kind, None) is None
    assert has_health(api_version, kind) is False


def test_has_health_for_mlservice() -> None:
    assert has_health(API, "MLService") is True


def test_condition_lookup() -> None:
    st = status(NOT_PAUSED, READY)
    assert condition(st, "Ready") is READY
    assert condition(st, "Missing") is None
    assert condition(None, "Ready") is None
