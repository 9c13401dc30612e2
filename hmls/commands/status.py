"""``hmls status``: a HyperMLService's items, per cluster, and its conditions."""

from __future__ import annotations

import json
from collections.abc import Iterator

import yaml

from hmls.commands.common import OperationError, hub_client, table
from hmls.domain.status import Status
from hmls.kube.client import Obj
from hmls.kube.resources import (
    HMLS,
)


def _status_rows(obj: Obj) -> Iterator[list[str]]:
    for item in Status.of(obj).items:
        address = (item.status or {}).get("address")
        yield [
            item.cluster,
            f"{item.resource.kind}/{item.resource.name}",
            "yes" if item.applied else "no",
            "-" if item.ready is None else ("yes" if item.ready else "no"),
            str((address if isinstance(address, dict) else {}).get("url") or "-"),
            "" if item.applied and item.ready is not False else item.message,
        ]


async def show_status(ref: str, *, hub: str | None, context: str | None = None, output: str) -> str:
    namespace, _, name = ref.rpartition("/")
    async with hub_client(hub, context) as client:
        obj = await client.get(HMLS, namespace or "default", name)
    if obj is None:
        raise OperationError(f"HyperMLService {namespace or 'default'}/{name} not found")
    view = Status.of(obj)
    if output == "json":
        return json.dumps(view.to_wire(), indent=2)
    if output == "yaml":
        return yaml.safe_dump(view.to_wire(), sort_keys=False).rstrip()
    lines = [table([["CLUSTER", "RESOURCE", "APPLIED", "READY", "URL", "MESSAGE"],
                     *_status_rows(obj)])] if view.items else ["no status yet"]
    for cond in view.conditions:
        lines.append(f"{cond.type}={cond.status} ({cond.reason}): {cond.message}")
    return "\n".join(lines)
