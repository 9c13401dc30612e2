"""What every ``hmls`` command shares: the hub client, the error meant for the terminal, the
table printer, and the field manager the commands write with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from hmls import identity
from hmls.kube import errors
from hmls.kube.client import ClusterClient

CLI_MANAGER = identity.MANAGER


class OperationError(RuntimeError):
    """Refused or failed; the message is meant for the terminal."""


@asynccontextmanager
async def hub_client(kubeconfig: str | None, context: str | None = None
                     ) -> AsyncIterator[ClusterClient]:
    try:
        client = await ClusterClient.for_hub(kubeconfig, context=context)
    except errors.KubeError as exc:
        raise OperationError(str(exc)) from None
    try:
        yield client
    except errors.KubeError as exc:
        unserved = isinstance(exc, errors.NotFound) and "page not found" in exc.message
        raise OperationError(f"hub {client.server}: {exc.message}" + (
            " (is it the hub? is the HyperMLService CRD installed?)" if unserved else "")
        ) from None
    finally:
        await client.close()


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)
