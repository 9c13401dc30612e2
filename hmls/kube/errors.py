"""API errors translated into a few typed outcomes.

Everything above ``hmls.kube`` sees these classes, never ``ApiException`` or aiohttp errors,
so a failure is handled by what it means (object missing, conflict, cluster unreachable...).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


class KubeError(Exception):
    """An API call failed. ``status`` is the HTTP status (0 when no response came back)."""

    status: int = 0

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class NotFound(KubeError):
    status = 404


class Conflict(KubeError):
    status = 409


class Gone(KubeError):
    """The requested resourceVersion is too old (410): the caller must re-list."""

    status = 410


class Invalid(KubeError):
    status = 422


class Forbidden(KubeError):
    status = 403


class Unreachable(KubeError):
    """No answer from the cluster at all: connection refused or reset, TLS failure, timeout.

    Only a transport failure is this; any HTTP answer, even a 5xx, is about the request."""


class ServerError(KubeError):
    """A 5xx answer: the API server failed this request (an apply that cannot build its typed
    patch answers 500, an aggregated API that is down answers 503).  It says nothing about
    the cluster as a whole; the cluster's own health probe does."""


class Malformed(KubeError):
    """The server's answer could not be understood (not JSON, or missing required keys)."""


class Throttled(KubeError):
    """429: the server asks to retry shortly (a rate limit, API Priority and Fairness
    rejecting the request, or a watch cache still initializing), after ``retry_after``
    seconds when it says (its ``Retry-After``)."""

    status = 429

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class UnknownKind(KubeError):
    """The cluster does not serve this apiVersion/kind (no such CRD, or wrong group)."""

    status = 404


_BY_STATUS: dict[int, type[KubeError]] = {
    401: Forbidden, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Gone, 422: Invalid,
}


def status_message(raw: bytes | str | dict[str, Any] | None, fallback: str) -> str:
    """The human message of a metav1.Status body, or fallback."""
    body: Any = raw
    if isinstance(raw, bytes | str):
        try:
            body = json.loads(raw)
        except ValueError:
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            return text.strip()[:500] or fallback
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return fallback


def from_status(code: int, body: bytes | str | dict[str, Any] | None, reason: str = "",
                retry_after: str | None = None) -> KubeError:
    """The typed error of an answer; ``retry_after``: its Retry-After header (seconds)."""
    message = status_message(body, reason or f"HTTP {code}")
    if code == 429:
        try:
            after = float(retry_after) if retry_after else None
        except ValueError:  # an HTTP date: not what Kubernetes sends
            after = None
        return Throttled(message, status=code, retry_after=after)
    if code >= 500:
        return ServerError(message, status=code)
    cls = _BY_STATUS.get(code, KubeError)
    return cls(message, status=code)


def translate(exc: BaseException) -> KubeError:
    """Map any exception raised by a call into the cluster to a KubeError."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return Unreachable("request timed out")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return Unreachable(f"TLS verification failed: {exc.certificate_error}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or exc.os_error
        return Unreachable(f"cannot connect to {exc.host}:{exc.port}: {reason}")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return Unreachable(f"{type(exc).__name__}: {exc}".rstrip(": "))
    return KubeError(f"{type(exc).__name__}: {exc}")
