"""``hmls cluster …``: join, rotate, label, list, unjoin and grant, with the operator's
kubeconfig for the spoke (never stored) and the hub's for the registration Secrets.

Each function talks to the hub (and, for join/list/grant, the spoke) through
``ClusterClient`` and returns text for the terminal or raises ``OperationError`` with a
precise message.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from hmls import identity, permissions
from hmls.commands.common import CLI_MANAGER, OperationError, hub_client, table
from hmls.domain.access import (
    AWAITS_GRANT,
    TENANCY,
    TENANT_ROLE,
    AccessPolicy,
    tenant_user,
)
from hmls.domain.kubeconfig import KubeconfigPolicy, KubeconfigRefused, vet
from hmls.domain.models import (
    CLUSTER_LABEL,
    InvalidSpec,
    label_problem,
    parse_spec,
)
from hmls.domain.status import Status
from hmls.engine.spokes import NamespaceView
from hmls.kube import errors
from hmls.kube.client import ClusterClient, Obj
from hmls.kube.registry import HEALTH_CONFIGMAP, Profile, profile, recorded_health, registration
from hmls.kube.resources import (
    CLUSTER_PROFILES,
    CONFIGMAPS,
    HMLS,
    NAMESPACES,
    SECRETS,
    Resource,
)

SSAR = Resource("authorization.k8s.io/v1", "SelfSubjectAccessReview",
                "selfsubjectaccessreviews", namespaced=False)
IDENTITY = "hmls.tensorstack.dev/identity"
"""On a cluster Secret: ``as-is`` (the operator's kubeconfig was stored) or the namespace/name
of the ServiceAccount join minted on the cluster."""
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

def _secret_name(cluster: str) -> str:
    return f"cluster-{cluster}"


async def _probe(client: ClusterClient, needed: list[permissions.Access]
                 ) -> tuple[str, list[permissions.Access]]:
    """(gitVersion, what of ``needed`` these credentials may not do); raises KubeError."""
    async def allowed(access: permissions.Access) -> bool:
        review = await client.create(SSAR, None, {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": access.attributes()}})
        return bool((review.get("status") or {}).get("allowed"))

    try:
        version = await client.version()
        answers = await asyncio.gather(*(allowed(a) for a in needed))
        return str(version.get("gitVersion", "")), [a for a, ok in zip(needed, answers, strict=True)
                                                     if not ok]
    finally:
        await client.close()


def _check_name(name: str) -> None:
    if not _NAME.match(name) or len(name) > 63:
        raise OperationError(f"cluster name {name!r} must be a DNS label (a-z, 0-9, '-')")


def _read_kubeconfig(path: str, policy: KubeconfigPolicy) -> Obj:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise OperationError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return vet(raw, policy)
    except KubeconfigRefused as exc:
        raise OperationError(f"{path}: {exc}") from None


async def _client(name: str, cfg: Obj, path: str) -> ClusterClient:
    try:
        return await ClusterClient.from_kubeconfig(name, cfg, timeout=5.0)
    except errors.KubeError as exc:
        raise OperationError(f"{path}: {exc.message}") from None


def _server(cfg: Obj) -> str:
    return str(cfg["clusters"][0]["cluster"]["server"])


async def _checked(name: str, cfg: Obj, path: str, needed: list[permissions.Access], *,
                   settle: float = 0.0) -> str:
    """The cluster's version, once these credentials may do what hmls needs (RBAC just
    written may take ``settle`` seconds to be seen)."""
    deadline = time.monotonic() + settle
    while True:
        try:
            version, missing = await _probe(await _client(name, cfg, path), needed)
        except errors.KubeError as exc:
            raise OperationError(f"cannot reach cluster {name} at {_server(cfg)}: "
                                 f"{exc.message}") from None
        if not missing:
            return version
        if time.monotonic() >= deadline:
            raise OperationError(f"the kubeconfig for {name} lacks permissions hmls needs: "
                                 + permissions.describe(missing))
        await asyncio.sleep(0.2)


async def _mint(name: str, path: str, policy: KubeconfigPolicy, *, tenant: bool
                ) -> tuple[Obj, str]:
    """hmls's own identity on the cluster, made with the operator's kubeconfig (whose exec
    plugin or files may be used here, on the operator's machine, and are never stored):
    (the token kubeconfig to store, a note for the terminal)."""
    operator = _read_kubeconfig(path, replace(policy, allow_exec=True, allow_files=True))
    client = await _client(name, operator, path)
    try:
        await identity.install(client, name, tenant=tenant)
        secret, expires = await identity.token(client, name)
    except errors.KubeError as exc:
        raise OperationError(f"could not make hmls's identity on cluster {name} at "
                             f"{_server(operator)} with {path}: {exc.message}") from None
    finally:
        await client.close()
    try:
        stored = identity.token_kubeconfig(operator, name, secret)
    except OSError as exc:
        raise OperationError(f"cannot read the CA of {path}: {exc.strerror}") from None
    return stored, (f"ServiceAccount {identity.NAMESPACE}/{identity.service_account(name)}, "
                    f"token valid until {expires}")


async def join(name: str, *, hub: str | None, context: str | None = None,
               cluster_kubeconfig: str, namespace: str,
               policy: KubeconfigPolicy, labels: list[str] | None = None,
               as_is: bool = False, trusted: bool = False) -> str:
    """Register a cluster.  By default with an identity of its own minted on the cluster and
    in tenant mode; ``as_is`` stores the given kubeconfig instead, ``trusted`` writes with the
    registration's credentials for every hub namespace."""
    _check_name(name)
    extra = {k: v for k, v in parse_labels(labels or [], removals=False).items() if v is not None}
    needed = permissions.checks(permissions.spoke(tenant=not trusted))
    if as_is:
        stored, note = _read_kubeconfig(cluster_kubeconfig, policy), "kubeconfig stored as given"
        version = await _checked(name, stored, cluster_kubeconfig, needed)
    else:
        stored, note = await _mint(name, cluster_kubeconfig, policy, tenant=not trusted)
        version = await _checked(name, stored, cluster_kubeconfig, needed, settle=5.0)
    annotations = {TENANCY: "trusted" if trusted else "tenant",
                   IDENTITY: "as-is" if as_is else
                   f"{identity.NAMESPACE}/{identity.service_account(name)}"}
    await _write_secret(hub, context, namespace, name, stored, labels=extra, annotations=annotations)
    mode = "trusted: every hub namespace writes with these credentials" if trusted else "tenant"
    return (f"cluster {name} joined ({version}, {mode}); Secret {namespace}/{_secret_name(name)} "
            f"written ({note})")


async def _write_secret(hub: str | None, context: str | None, namespace: str, name: str, kubeconfig: Obj, *,
                        labels: dict[str, str] | None = None,
                        annotations: dict[str, str] | None = None) -> None:
    meta: Obj = {"name": _secret_name(name), "namespace": namespace}
    if labels is not None:
        meta["labels"] = {**labels, CLUSTER_LABEL: name}
    if annotations:
        meta["annotations"] = annotations
    async with hub_client(hub, context) as client:
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
            data = base64.b64encode(yaml.safe_dump(kubeconfig).encode()).decode()
            body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta,
                    "data": {"kubeconfig": data}}
            if labels is None:  # a new token only: the other fields stay as they are
                await client.patch(SECRETS, namespace, _secret_name(name),
                                   {"data": body["data"]}, field_manager=CLI_MANAGER)
            else:
                await client.apply(body, field_manager=CLI_MANAGER, resource=SECRETS,
                                   force=True)
        except errors.KubeError as exc:
            raise OperationError(f"writing the cluster Secret on the hub failed: {exc.message}"
                                 ) from None


async def _registration(client: ClusterClient, name: str, namespace: str) -> Obj:
    secrets, _ = await client.list(SECRETS, namespace=namespace,
                                   label_selector=f"{CLUSTER_LABEL}={name}")
    if not secrets:
        raise OperationError(f"cluster {name} is not registered in namespace {namespace}")
    return secrets[0]


async def rotate(name: str, *, hub: str | None, context: str | None = None, namespace: str,
                 policy: KubeconfigPolicy) -> str:
    """Renew the token of a cluster's minted identity, with that identity itself."""
    _check_name(name)
    async with hub_client(hub, context) as client:
        secret = await _registration(client, name, namespace)
    reg = registration(secret, policy)
    minted = ((secret["metadata"].get("annotations") or {}).get(IDENTITY) or "as-is") != "as-is"
    if reg is None or reg.kubeconfig is None or not minted:
        raise OperationError(f"cluster {name} has no identity minted by hmls cluster join "
                             "to renew" + (f" ({reg.error})" if reg and reg.error else ""))
    spoke = await _client(name, reg.kubeconfig, f"Secret {namespace}/{_secret_name(name)}")
    try:
        secret_token, expires = await identity.token(spoke, name)
    except errors.KubeError as exc:
        raise OperationError(f"could not renew the token on cluster {name}: {exc.message} "
                             "(an expired token cannot renew itself: join again)") from None
    finally:
        await spoke.close()
    cfg = reg.kubeconfig
    cfg["users"][0]["user"] = {"token": secret_token}
    await _write_secret(hub, context, namespace, name, cfg)
    return f"cluster {name}: token renewed, valid until {expires}"


def _uses(hmls: list[Obj], cluster: str, labels: dict[str, str]) -> list[str]:
    """The HyperMLServices whose workloads go to this cluster (by name or by selector)."""
    out = []
    for obj in hmls:
        try:
            spec = parse_spec(obj.get("spec"))
        except InvalidSpec:
            continue
        if any(cluster in w.targets({cluster: labels}) for w in spec.workloads):
            out.append(f"{obj['metadata']['namespace']}/{obj['metadata']['name']}")
    return out


def _shown_labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != CLUSTER_LABEL) or "-"


def parse_labels(specs: list[str], *, removals: bool) -> dict[str, str | None]:
    """``k=v`` (and, with removals, ``k-``) arguments as a labels merge patch."""
    out: dict[str, str | None] = {}
    for spec in specs:
        if removals and spec.endswith("-") and "=" not in spec:
            key, value = spec[:-1], None
        elif "=" in spec:
            key, value = spec.split("=", 1)
        else:
            raise OperationError(f"label {spec!r} must be KEY=VALUE" + (" or KEY-" if removals
                                                                         else ""))
        if key == CLUSTER_LABEL:
            raise OperationError(f"label {CLUSTER_LABEL} names the cluster; it cannot be set")
        problem = label_problem(key, value)
        if problem:
            raise OperationError(f"label {spec!r}: {problem}")
        out[key] = value
    return out


def _awaiting_grant(hmls: list[Obj], cluster: str, secret: Obj | None) -> str:
    """Tenant mode: how many items on this cluster wait for its owner's grant (``grant``)."""
    if _mode(secret) != "tenant":
        return "-"
    return str(sum(1 for obj in hmls for item in Status.of(obj).items
                   if item.cluster == cluster and not item.applied
                   and AWAITS_GRANT in item.message))


def _profile_state(found: Profile | None) -> str:
    if found is None:
        return "-"
    state = {None: "reported", True: "healthy", False: "unhealthy"}[found.healthy]
    return f"{state} ({found.namespace})"


def _row(name: str, secret: Obj | None, found: Profile | None, hmls: list[Obj],
         policy: KubeconfigPolicy, verdicts: dict[str, dict[str, Any]]) -> list[str]:
    """One line of ``cluster list``: the registration as the controller sees it, with its
    health probe's verdict as the controller recorded it on the hub, and what a
    ClusterProfile of the same name says."""
    labels = {**(found.labels if found else {}),
              **{str(k): str(v) for k, v in ((secret or {}).get("metadata", {}).get("labels")
                                             or {}).items()}}
    used = str(len(_uses(hmls, name, labels)))
    waiting = _awaiting_grant(hmls, name, secret)
    head = [name, "-", _shown_labels(labels), _mode(secret), _profile_state(found)]
    if secret is None:
        detail = f"no registration Secret: hmls has no credentials ({found.message})" if (
            found and found.message) else "no registration Secret: hmls has no credentials"
        return [*head, "no", "-", "-", found.version if found and found.version else "-", used,
                waiting, detail]
    reg = registration(secret, policy)
    if reg is None or reg.kubeconfig is None:
        return [*head, "no", "-", "-", "-", used, waiting, (reg.error if reg else None) or "-"]
    head[1] = str(reg.kubeconfig["clusters"][0]["cluster"]["server"])
    verdict = verdicts.get(name)
    if verdict is None:
        return [*head, "unknown", "-", "-", "-", used, waiting, "no probe recorded yet (is "
                "the controller running?)"]
    reachable = verdict.get("reachable")
    state = "yes" if reachable else "no"
    last_seen = "now" if reachable else str(verdict.get("lastSeen") or "never")
    return [*head, state, str(verdict.get("since") or "-"), last_seen,
            str(verdict.get("version") or "-"), used, waiting, str(verdict.get("lastError") or "-")]


async def _profiles(client: ClusterClient) -> dict[str, Profile]:
    """ClusterProfiles by cluster name (first namespace wins), if the hub serves them."""
    try:
        listed, _ = await client.list(CLUSTER_PROFILES)
    except errors.NotFound:
        return {}
    out: dict[str, Profile] = {}
    for found in sorted((profile(o) for o in listed), key=lambda p: p.namespace):
        out.setdefault(found.name, found)
    return out


async def list_clusters(*, hub: str | None, context: str | None = None, namespace: str,
                        policy: KubeconfigPolicy) -> str:
    async with hub_client(hub, context) as client:
        secrets, _ = await client.list(SECRETS, namespace=namespace, label_selector=CLUSTER_LABEL)
        hmls, _ = await client.list(HMLS)
        verdicts = recorded_health(await client.get(CONFIGMAPS, namespace, HEALTH_CONFIGMAP))
        profiles = await _profiles(client)
    by_name = {s["metadata"]["labels"][CLUSTER_LABEL]: s for s in secrets}
    if not by_name and not profiles:
        return f"no clusters registered in namespace {namespace}"
    rows = [["NAME", "SERVER", "LABELS", "MODE", "PROFILE", "REACHABLE", "SINCE", "LAST SEEN",
             "VERSION", "HYPERMLSERVICES", "AWAITING GRANT", "LAST ERROR"]]
    rows += [_row(n, by_name.get(n), profiles.get(n), hmls, policy, verdicts)
             for n in sorted(set(by_name) | set(profiles))]
    trusted = sorted(n for n, s in by_name.items() if _mode(s) == "trusted")
    warning = (f"\n\nwarning: trusted clusters ({', '.join(trusted)}) write every hub "
               "namespace's manifests with the registration's own credentials, under their "
               "kind policy only; join them again without --trust-hub-namespaces for tenant "
               "mode") if trusted else ""
    return table(rows) + warning


def _mode(secret: Obj | None) -> str:
    if secret is None:
        return "-"
    return "tenant" if AccessPolicy.from_annotations(
        secret["metadata"].get("annotations")).tenant else "trusted"


async def unjoin(name: str, *, hub: str | None, context: str | None = None, namespace: str, force: bool,
                 cluster_kubeconfig: str | None = None,
                 policy: KubeconfigPolicy | None = None) -> str:
    """Remove a registration; with the operator's ``cluster_kubeconfig``, also the identity
    join minted on the cluster."""
    _check_name(name)
    async with hub_client(hub, context) as client:
        secrets, _ = await client.list(SECRETS, namespace=namespace,
                                       label_selector=f"{CLUSTER_LABEL}={name}")
        if not secrets:
            raise OperationError(f"cluster {name} is not registered in namespace {namespace}")
        hmls, _ = await client.list(HMLS)
        users = _uses(hmls, name, secrets[0]["metadata"].get("labels") or {})
        if users and not force:
            raise OperationError(f"cluster {name} is still targeted by {', '.join(users)}; "
                                 "remove it from their workloads first, or pass --force")
        removed = ""
        if cluster_kubeconfig:
            operator = _read_kubeconfig(cluster_kubeconfig, replace(
                policy or KubeconfigPolicy(), allow_exec=True, allow_files=True))
            spoke = await _client(name, operator, cluster_kubeconfig)
            try:
                removed = "; removed " + (", ".join(await identity.remove(spoke, name))
                                          or "nothing") + " from the cluster"
            except errors.KubeError as exc:
                raise OperationError(f"could not remove hmls's identity from cluster {name}: "
                                     f"{exc.message}") from None
            finally:
                await spoke.close()
        for s in secrets:
            await client.delete(SECRETS, namespace, s["metadata"]["name"])
    return (f"cluster {name} unjoined" + (f" (still targeted by {', '.join(users)})" if users
                                          else "") + removed)


async def grant(name: str, *, namespace: str, cluster_kubeconfig: str, revoke: bool = False
                ) -> str:
    """Tenant mode, in a namespace the cluster's owner made: let the HyperMLServices of hub
    namespace ``namespace`` write there (the tenant ServiceAccount and its RoleBinding to
    ``hmls-tenant``, as hmls makes them in the namespaces it creates), or with ``revoke`` take
    that away; with the owner's kubeconfig of the cluster (as join)."""
    _check_name(name)
    if not _NAME.match(namespace) or len(namespace) > 63:
        raise OperationError(f"namespace {namespace!r} must be a DNS label (a-z, 0-9, '-')")
    operator = _read_kubeconfig(cluster_kubeconfig, KubeconfigPolicy(allow_exec=True,
                                                                      allow_files=True))
    spoke = await _client(name, operator, cluster_kubeconfig)
    try:
        found = await spoke.get(NAMESPACES, None, namespace)
        if revoke:
            gone = await identity.revoke(spoke, namespace)
            return (f"revoked on cluster {name}: deleted {', '.join(gone)}" if gone
                    else f"nothing to revoke in namespace {namespace} on cluster {name}")
        if found is None:
            raise OperationError(
                f"namespace {namespace} does not exist on cluster {name}: hmls creates a missing "
                "namespace itself, and lets the tenant write there; grant is for namespaces the "
                "cluster's owner made")
        if NamespaceView.of(found).created_by_hmls:
            return (f"namespace {namespace} on cluster {name} was made by hmls, which let its "
                    "tenant write there already: nothing to grant")
        done = await identity.grant(spoke, namespace)
    except errors.KubeError as exc:
        raise OperationError(f"could not {'revoke' if revoke else 'grant'} on cluster {name} "
                             f"at {_server(operator)}: {exc.message}") from None
    finally:
        await spoke.close()
    return (f"granted on cluster {name}: {', '.join(done)}; HyperMLServices of hub namespace "
            f"{namespace} write there as {tenant_user(namespace)}, with what the ClusterRole "
            f"{TENANT_ROLE} allows")


async def label(name: str, changes: list[str], *, hub: str | None, context: str | None = None,
                namespace: str) -> str:
    """Set (``k=v``) or remove (``k-``) labels of a cluster's registration Secret."""
    _check_name(name)
    patch = parse_labels(changes, removals=True)
    if not patch:
        raise OperationError("give at least one KEY=VALUE or KEY-")
    async with hub_client(hub, context) as client:
        secrets, _ = await client.list(SECRETS, namespace=namespace,
                                       label_selector=f"{CLUSTER_LABEL}={name}")
        if not secrets:
            raise OperationError(f"cluster {name} is not registered in namespace {namespace}")
        secret = secrets[0]["metadata"]["name"]
        try:
            updated = await client.patch(SECRETS, namespace, secret,
                                         {"metadata": {"labels": patch}},
                                         field_manager=CLI_MANAGER)
        except errors.KubeError as exc:
            raise OperationError(f"labelling Secret {namespace}/{secret} failed: "
                                 f"{exc.message}") from None
    return f"cluster {name} labelled: {_shown_labels(updated['metadata'].get('labels') or {})}"
