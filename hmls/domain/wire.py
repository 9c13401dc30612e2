"""Readers of stored values: each takes whatever a user or an older controller may have
written at a place in a status and returns the type hmls expects there, or its empty value.
Pure, and the lowest layer of the status (conditions, rollout state, status)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def opt_text(value: Any) -> str | None:
    """A non-empty string, or None."""
    return value if isinstance(value, str) and value else None


def number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def mappings(value: Any) -> list[Mapping[str, Any]]:
    """The objects of a list (anything else in it is skipped)."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
