"""HeadIngress: weighted, health-aware routes on the ingress cluster, from live status.

Pure.  ``plan`` takes the spec's traffic section, the spokes' item results (MLService status
with its URLs), each cluster's reachability, the previous ``status.traffic`` and the time, and
returns the objects to apply on the ingress cluster, the new ``status.traffic`` and the
``TrafficReady`` condition.

Rules:
- a cluster whose MLService is not applied, not Ready, has no URL for the routed release, or
  whose cluster is unreachable (status stale) gets weight 0; the others share 100 in the
  ratio of their configured weights (largest-remainder rounding, so integers sum to 100);
- a cluster that lost its traffic is ``damped``: it must stay healthy for
  ``recoverySeconds`` before it gets traffic back; going out is immediate, and a cluster that
  never had traffic gets it as soon as it is healthy;
- with ``tiers``, only the first tier (in spec order) with an eligible cluster gets traffic,
  split by weight within it; the clusters of the tiers below stand by.  A rollout's drain and
  a recovery's damping make a cluster ineligible, so traffic goes back to a recovered higher
  tier only after ``recoverySeconds``; clusters in no tier form a last tier;
- if no cluster is eligible, the previous routes are kept and the condition says why.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hmls.domain.conditions import Condition
from hmls.domain.models import Owner, TrafficSpec, parse_timestamp, timestamp
from hmls.domain.render import Desired, materialize
from hmls.domain.status import ItemResult, Route, TrafficStatus

ISTIO_API = "networking.istio.io/v1beta1"
HTTPROUTE_API = "gateway.networking.k8s.io/v1"
INGRESS_RANK = 10
"""Backends (ServiceEntry, Service) are applied before the route that uses them."""


@dataclass(frozen=True)
class Backend:
    cluster: str
    url: str | None
    healthy: bool
    reason: str


@dataclass(frozen=True)
class Plan:
    objects: list[Desired]
    status: TrafficStatus
    condition: Condition
    requeue_after: float | None


def host_of(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0].split(":", 1)[0]


def distribute(weights: dict[str, int], eligible: set[str]) -> dict[str, int]:
    """Integer shares of 100 for the eligible clusters in the ratio of their weights.

    Largest-remainder rounding (ties broken by name): the result sums to exactly 100 when
    any eligible cluster has a positive weight, and is all zeros otherwise."""
    base = {c: w for c, w in weights.items() if c in eligible and w > 0}
    total = sum(base.values())
    out = dict.fromkeys(weights, 0)
    if total == 0:
        return out
    exact = {c: 100 * w / total for c, w in base.items()}
    for c, x in exact.items():
        out[c] = int(x)
    missing = 100 - sum(out.values())
    for c in sorted(base, key=lambda c: (-(exact[c] - int(exact[c])), c))[:missing]:
        out[c] += 1
    return out


def routed_mlservice(spec_mlservice: str | None, items: list[ItemResult]) -> str:
    """The MLService name to route: the configured one, or the only one in the workloads."""
    if spec_mlservice:
        return spec_mlservice
    names = sorted({i.ref.name for i in items if i.ref.kind == "MLService"})
    if len(names) != 1:
        raise ValueError(f"traffic.mlservice must be set: the workloads have {len(names)} "
                         f"MLServices ({', '.join(names) or 'none'})")
    return names[0]


def backends(traffic: TrafficSpec, items: list[ItemResult], reachable: Mapping[str, bool | None]
             ) -> list[Backend]:
    name = routed_mlservice(traffic.mlservice, items)
    by_cluster = {i.cluster: i for i in items if i.ref.kind == "MLService" and i.ref.name == name}
    clusters = list(traffic.weights) or list(by_cluster)
    out = []
    for cluster in clusters:
        item = by_cluster.get(cluster)
        if item is None:
            out.append(Backend(cluster, None, False, f"MLService {name} is not deployed to {cluster}"))
            continue
        status = item.status or {}
        release = traffic.release or status.get("defaultRelease") or ""
        url = next((r.get("url") for r in status.get("releases") or []
                    if r.get("name") == release and r.get("url")), None)
        health = item.health
        if reachable.get(cluster) is False:
            out.append(Backend(cluster, url, False, "cluster unreachable (status stale)"))
        elif not item.applied:
            out.append(Backend(cluster, url, False, f"not applied: {item.message}"))
        elif health is not None and not health.ready:
            out.append(Backend(cluster, url, False, f"MLService not ready: {health.reason}"))
        elif url is None:
            out.append(Backend(cluster, None, False, f"release {release!r} has no URL yet"))
        else:
            out.append(Backend(cluster, url, True, ""))
    return out


def _name(owner_ns: str, owner_name: str, *parts: str) -> str:
    """Deterministic, collision-free (hash of the full identity), at most 63 characters."""
    digest = hashlib.sha256("/".join((owner_ns, owner_name, *parts)).encode()).hexdigest()[:8]
    stem = "-".join(("hmls", owner_name, *parts))[:63 - 9].rstrip("-.")
    return f"{stem}-{digest}"


def _gateway_ref(gateway: str) -> dict[str, str]:
    """``ns/name`` or Istio's ``name.namespace`` as a Gateway API parentRef."""
    if "/" in gateway:
        ns, name = gateway.split("/", 1)
        return {"name": name, "namespace": ns}
    name, _, ns = gateway.partition(".")
    return {"name": name, "namespace": ns} if ns else {"name": name}


def istio_objects(*, namespace: str, owner_ns: str, owner_name: str, traffic: TrafficSpec,
                  prefix: str, routes: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
    """ServiceEntry per spoke host and one weighted VirtualService (the seed's shapes)."""
    objs: list[dict[str, Any]] = [{
        "apiVersion": ISTIO_API, "kind": "ServiceEntry",
        "metadata": {"name": _name(owner_ns, owner_name, cluster), "namespace": namespace},
        "spec": {"hosts": [host], "location": "MESH_EXTERNAL",
                 "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                 "resolution": "DNS"},
    } for cluster, host, _ in routes]
    objs.append({
        "apiVersion": ISTIO_API, "kind": "VirtualService",
        "metadata": {"name": _name(owner_ns, owner_name), "namespace": namespace},
        "spec": {
            "gateways": list(traffic.gateways), "hosts": list(traffic.hosts),
            "http": [{
                "match": [{"uri": {"prefix": prefix}}],
                "route": [{"destination": {"host": host},
                           "headers": {"request": {"set": {"Host": host}}},
                           "weight": weight} for _, host, weight in routes if weight > 0],
            }],
        },
    })
    return objs


def gateway_api_objects(*, namespace: str, owner_ns: str, owner_name: str, traffic: TrafficSpec,
                        prefix: str, routes: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
    """An ExternalName Service per spoke host and one HTTPRoute with weighted backendRefs."""
    objs: list[dict[str, Any]] = [{
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": _name(owner_ns, owner_name, cluster), "namespace": namespace},
        "spec": {"type": "ExternalName", "externalName": host,
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    } for cluster, host, _ in routes]
    route_spec: dict[str, Any] = {
        "parentRefs": [_gateway_ref(g) for g in traffic.gateways],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": prefix.rstrip("/") or "/"}}],
            "backendRefs": [{
                "name": _name(owner_ns, owner_name, cluster), "port": 80, "weight": weight,
                "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
                    "set": [{"name": "Host", "value": host}]}}],
            } for cluster, host, weight in routes if weight > 0],
        }],
    }
    hostnames = [h for h in traffic.hosts if h != "*"]
    if hostnames:
        route_spec["hostnames"] = hostnames
    objs.append({"apiVersion": HTTPROUTE_API, "kind": "HTTPRoute",
                 "metadata": {"name": _name(owner_ns, owner_name), "namespace": namespace},
                 "spec": route_spec})
    return objs


def plan(*, owner: Owner, traffic: TrafficSpec, items: list[ItemResult],
         reachable: Mapping[str, bool | None], previous: TrafficStatus | None,
         now: dt.datetime, drained: Mapping[str, str] | None = None,
         labels: Mapping[str, Mapping[str, str]] | None = None) -> Plan:
    """The HeadIngress objects and ``status.traffic``.  ``drained``: clusters a progressive
    rollout holds at weight 0 (with why); a healthy drained cluster keeps its healthySince, so
    the rollout's soak is not followed by a second recovery wait.  ``labels``: each cluster's,
    for the tiers' clusterSelectors."""
    owner_ns, owner_name = owner.namespace, owner.name
    prev_routes = {r.cluster: r for r in previous.routes} if previous else {}
    found = backends(traffic, items, reachable)
    configured = {b.cluster: traffic.weights.get(b.cluster, 0) if traffic.weights else 1
                  for b in found}
    eligible: set[str] = set()
    since: dict[str, str | None] = {}
    damped: set[str] = set()
    reasons: dict[str, str] = {}
    waits: list[float] = []
    window = dt.timedelta(seconds=traffic.recovery_seconds)
    for b in found:
        prev = prev_routes.get(b.cluster)
        lost = prev is not None and (prev.damped or prev.effective_weight > 0)
        if not b.healthy:
            since[b.cluster], reasons[b.cluster] = None, b.reason
            if lost:  # it had traffic: it must prove itself before getting it back
                damped.add(b.cluster)
            continue
        start = (parse_timestamp(prev.healthy_since) if prev else None) or now
        since[b.cluster] = timestamp(start)
        if drained and b.cluster in drained:
            reasons[b.cluster] = drained[b.cluster]
        elif prev is None or not prev.damped or now - start >= window:
            eligible.add(b.cluster)
        else:
            damped.add(b.cluster)
            remaining = (window - (now - start)).total_seconds()
            waits.append(remaining)
            reasons[b.cluster] = (f"recovering: healthy since {timestamp(start)}, gets traffic "
                                  f"after {traffic.recovery_seconds}s")
    for c in eligible:
        if configured[c] == 0:
            reasons[c] = "configured weight is 0"
    tier = {b.cluster: traffic.tier_of(b.cluster, (labels or {}).get(b.cluster, {}))
            for b in found} if traffic.tiers else {}
    standby: set[str] = set()
    if tier:
        top = min((tier[c] for c in eligible if configured[c] > 0), default=None)
        standby = {c for c in eligible if tier[c] != top}
        eligible -= standby
        for c in standby:
            reasons[c] = f"standby: tier {top} serves"
    shares = distribute(configured, eligible)
    if not any(shares.values()):  # a recovering cluster rather than an unhealthy one
        early = damped & {b.cluster for b in found if b.healthy}
        if tier and early:  # of the first tier that has one
            early = {c for c in early if tier[c] == min(tier[e] for e in early)}
        shares = distribute(configured, early)
        for c in early:
            if shares[c]:  # it serves now: no longer on probation
                damped.discard(c)
                reasons.pop(c, None)
    kept = not any(shares.values()) and bool(prev_routes)
    if kept:
        shares = {c: prev_routes[c].effective_weight if c in prev_routes else 0
                  for c in configured}
    urls = {b.cluster: b.url or (prev_routes[b.cluster].url if b.cluster in prev_routes
                                 else None) for b in found}
    routes_status = [Route(b.cluster, urls[b.cluster] or "", configured[b.cluster],
                           shares.get(b.cluster, 0), since.get(b.cluster),
                           b.cluster in damped, reasons.get(b.cluster), tier.get(b.cluster))
                     for b in found]
    prefix = traffic.path_prefix or f"/t9k/hypermlservices/namespaces/{owner_ns}/{owner_name}/"
    namespace = traffic.namespace or owner_ns
    routes = [(c, host_of(urls[c] or ""), shares.get(c, 0)) for c in configured if urls.get(c)]
    objects: list[Desired] = []
    if any(w > 0 for _, _, w in routes):
        build = istio_objects if traffic.provider == "Istio" else gateway_api_objects
        objects = [materialize(owner, traffic.ingress_cluster, body,
                               rank=INGRESS_RANK + (body["kind"] in ("VirtualService", "HTTPRoute")))
                   for body in build(namespace=namespace, owner_ns=owner_ns, owner_name=owner_name,
                                     traffic=traffic, prefix=prefix, routes=routes)]
    status = TrafficStatus(traffic.ingress_cluster, traffic.provider, prefix,
                           tuple(routes_status), tuple(o.ref for o in objects))
    zeroed = [f"{r.cluster} ({r.reason})" for r in routes_status
              if r.reason and r.cluster not in standby]
    split = ", ".join(f"{r.cluster} {r.effective_weight}%" for r in routes_status
                      if r.effective_weight > 0)
    if not objects:
        cond = Condition("TrafficReady", "False", "NoHealthyCluster",
                         "no route yet: no cluster is healthy: " + "; ".join(zeroed))
    elif kept:
        cond = Condition("TrafficReady", "False", "NoHealthyCluster",
                         f"no cluster is healthy; keeping the last routes ({split}): "
                         + "; ".join(zeroed))
    elif zeroed:
        cond = Condition("TrafficReady", "True", "Degraded",
                         f"routing {split}; weight 0 for " + "; ".join(zeroed))
    else:
        cond = Condition("TrafficReady", "True", "Routed", f"routing {split}" + (
            f"; standing by: {', '.join(sorted(standby))}" if standby else ""))
    return Plan(objects, status, cond, min(waits) if waits else None)
