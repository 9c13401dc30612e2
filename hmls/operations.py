"""Operator commands behind the CLI: cluster join/list/unjoin and ``hmls status``.

Each function talks to the hub (and, for join/list, the spoke) through ``ClusterClient``
and returns text for the terminal or raises ``OperationError`` with a precise message.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from hmls.domain.kubeconfig import KubeconfigPolicy, KubeconfigRefused, vet
from hmls.domain.models import CLUSTER_LABEL
from hmls.domain.status import StatusView
from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.registry import HEALTH_CONFIGMAP, recorded_health, registration
from hmls.kube.resources import CONFIGMAPS, HMLS, NAMESPACES, SECRETS, Resource

SSAR = Resource("authorization.k8s.io/v1", "SelfSubjectAccessReview",
                "selfsubjectaccessreviews", namespaced=False)
CLI_MANAGER = "hmls-cli"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# What the controller does on a spoke: (verb, group, resource).
NEEDED = [(verb, group, res) for group, res in (
    ("tensorstack.dev", "mlservices"), ("tensorstack.dev", "mlserviceruntimes"), ("", "secrets"))
    for verb in ("get", "list", "watch", "patch", "delete")] + [
    (verb, "", "namespaces") for verb in ("get", "list", "watch", "create")]


class OperationError(RuntimeError):
    """Refused or failed; the message is meant for the terminal."""


@asynccontextmanager
async def hub_client(kubeconfig: str | None) -> AsyncIterator[ClusterClient]:
    client = await ClusterClient.for_hub(kubeconfig)
    try:
        yield client
    finally:
        await client.close()


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _secret_name(cluster: str) -> str:
    return f"cluster-{cluster}"


async def _probe(client: ClusterClient) -> tuple[str, list[str]]:
    """(gitVersion, missing permissions) of the cluster; raises KubeError."""
    try:
        version = await client.version()
        missing = []
        for verb, group, res in NEEDED:
            review = await client.create(SSAR, None, {
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": res}}})
            if not (review.get("status") or {}).get("allowed"):
                missing.append(f"{verb} {res}{'.' + group if group else ''}")
        return str(version.get("gitVersion", "")), missing
    finally:
        await client.close()


def _check_name(name: str) -> None:
    if not _NAME.match(name) or len(name) > 63:
        raise OperationError(f"cluster name {name!r} must be a DNS label (a-z, 0-9, '-')")


async def join(name: str, *, hub: str | None, cluster_kubeconfig: str, namespace: str,
               policy: KubeconfigPolicy) -> str:
    _check_name(name)
    try:
        raw = Path(cluster_kubeconfig).read_bytes()  # noqa: ASYNC240 - small local file
    except OSError as exc:
        raise OperationError(f"cannot read {cluster_kubeconfig}: {exc.strerror}") from None
    try:
        cfg = vet(raw, policy)
    except KubeconfigRefused as exc:
        raise OperationError(f"{cluster_kubeconfig}: {exc}") from None
    try:
        client = await ClusterClient.from_kubeconfig(name, cfg, timeout=5.0)
    except errors.KubeError as exc:
        raise OperationError(f"{cluster_kubeconfig}: {exc.message}") from None
    try:
        version, missing = await _probe(client)
    except errors.KubeError as exc:
        raise OperationError(f"cannot reach cluster {name} at "
                             f"{cfg['clusters'][0]['cluster']['server']}: {exc.message}") from None
    if missing:
        raise OperationError(f"the kubeconfig for {name} lacks permissions hmls needs: "
                             + ", ".join(missing))
    async with hub_client(hub) as client:
        try:
            await client.apply({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": namespace}},
                               field_manager=CLI_MANAGER, resource=NAMESPACES)
            existing, _ = await client.list(SECRETS, namespace=namespace,
                                            label_selector=f"{CLUSTER_LABEL}={name}")
            clash = [s["metadata"]["name"] for s in existing
                     if s["metadata"]["name"] != _secret_name(name)]
            if clash:
                raise OperationError(f"cluster {name} is already registered by Secret "
                                     f"{namespace}/{clash[0]}")
            data = base64.b64encode(yaml.safe_dump(cfg).encode()).decode()
            await client.apply({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": _secret_name(name), "namespace": namespace,
                             "labels": {CLUSTER_LABEL: name}},
                "data": {"kubeconfig": data},
            }, field_manager=CLI_MANAGER, resource=SECRETS, force=True)
        except errors.KubeError as exc:
            raise OperationError(f"writing the cluster Secret on the hub failed: {exc.message}"
                                 ) from None
    return (f"cluster {name} joined ({version}); Secret {namespace}/{_secret_name(name)} "
            f"written")


def _uses(hmls: list[Obj], cluster: str) -> list[str]:
    out = []
    for obj in hmls:
        clusters = {c for w in (obj.get("spec") or {}).get("workloads") or []
                    for c in w.get("clusters") or []}
        if cluster in clusters:
            out.append(f"{obj['metadata']['namespace']}/{obj['metadata']['name']}")
    return out


def _row(secret: Obj, hmls: list[Obj], policy: KubeconfigPolicy,
         verdicts: dict[str, dict[str, Any]]) -> list[str]:
    """One line of ``cluster list``: the registration as the controller sees it, with its
    health probe's verdict as the controller recorded it on the hub."""
    name = secret["metadata"]["labels"][CLUSTER_LABEL]
    used = str(len(_uses(hmls, name)))
    reg = registration(secret, policy)
    if reg is None or reg.kubeconfig is None:
        return [name, "-", "no", "-", "-", "-", used, reg.error if reg else "-"]
    server = str(reg.kubeconfig["clusters"][0]["cluster"]["server"])
    verdict = verdicts.get(name)
    if verdict is None:
        return [name, server, "unknown", "-", "-", "-", used, "no probe recorded yet (is the "
                "controller running?)"]
    reachable = verdict.get("reachable")
    state = "yes" if reachable else "no"
    last_seen = "now" if reachable else str(verdict.get("lastSeen") or "never")
    return [name, server, state, str(verdict.get("since") or "-"), last_seen,
            str(verdict.get("version") or "-"), used, str(verdict.get("lastError") or "-")]


async def list_clusters(*, hub: str | None, namespace: str, policy: KubeconfigPolicy) -> str:
    async with hub_client(hub) as client:
        secrets, _ = await client.list(SECRETS, namespace=namespace, label_selector=CLUSTER_LABEL)
        hmls, _ = await client.list(HMLS)
        verdicts = recorded_health(await client.get(CONFIGMAPS, namespace, HEALTH_CONFIGMAP))
    if not secrets:
        return f"no clusters registered in namespace {namespace}"
    table = [["NAME", "SERVER", "REACHABLE", "SINCE", "LAST SEEN", "VERSION", "HYPERMLSERVICES",
              "LAST ERROR"]]
    table += sorted(_row(s, hmls, policy, verdicts) for s in secrets)
    return _table(table)


async def unjoin(name: str, *, hub: str | None, namespace: str, force: bool) -> str:
    _check_name(name)
    async with hub_client(hub) as client:
        secrets, _ = await client.list(SECRETS, namespace=namespace,
                                       label_selector=f"{CLUSTER_LABEL}={name}")
        if not secrets:
            raise OperationError(f"cluster {name} is not registered in namespace {namespace}")
        hmls, _ = await client.list(HMLS)
        users = _uses(hmls, name)
        if users and not force:
            raise OperationError(f"cluster {name} is still targeted by {', '.join(users)}; "
                                 "remove it from their workloads first, or pass --force")
        for s in secrets:
            await client.delete(SECRETS, namespace, s["metadata"]["name"])
    return f"cluster {name} unjoined" + (f" (still targeted by {', '.join(users)})" if users else "")


def _status_rows(obj: Obj) -> Iterator[list[str]]:
    for item in StatusView.of(obj).items:
        res = item.get("resource") or {}
        status = item.get("status") or {}
        ready = item.get("ready")
        yield [
            item.get("cluster", ""),
            f"{res.get('kind')}/{res.get('name')}",
            "yes" if item.get("applied") else "no",
            "-" if ready is None else ("yes" if ready else "no"),
            str((status.get("address") or {}).get("url") or "-"),
            "" if item.get("applied") and ready is not False else str(item.get("appliedMessage")),
        ]


async def show_status(ref: str, *, hub: str | None, output: str) -> str:
    namespace, _, name = ref.rpartition("/")
    async with hub_client(hub) as client:
        obj = await client.get(HMLS, namespace or "default", name)
    if obj is None:
        raise OperationError(f"HyperMLService {namespace or 'default'}/{name} not found")
    view = StatusView.of(obj)
    if output == "json":
        return json.dumps(view.raw, indent=2)
    if output == "yaml":
        return yaml.safe_dump(dict(view.raw), sort_keys=False).rstrip()
    lines = [_table([["CLUSTER", "RESOURCE", "APPLIED", "READY", "URL", "MESSAGE"],
                     *_status_rows(obj)])] if view.items else ["no status yet"]
    for cond in view.conditions:
        lines.append(f"{cond.get('type')}={cond.get('status')} ({cond.get('reason')}): "
                     f"{cond.get('message')}")
    return "\n".join(lines)
