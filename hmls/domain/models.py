"""The HyperMLService as it arrives on the wire, and the names every layer shares.

Pure: no I/O.  The CRD's OpenAPI schema already rejects most bad input at admission; these
models re-check what the reconciler relies on so that an object written before a schema
change still gets a precise condition instead of an exception.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

GROUP = "tensorstack.dev"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "HyperMLService"
PLURAL = "hypermlservices"

FINALIZER = "tensorstack.dev/hypermlservice-controller"
FIELD_MANAGER = "hmls-controller"
CLUSTER_LABEL = "hmls.tensorstack.dev/cluster"
OWNER_NAMESPACE = "hmls.tensorstack.dev/owner-namespace"
OWNER_NAME = "hmls.tensorstack.dev/owner-name"
OWNER_UID = "hmls.tensorstack.dev/owner-uid"
HASH_ANNOTATION = "hmls.tensorstack.dev/applied-hash"
DEFAULT_GATEWAY = "t9k.t9k-system"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""Kubernetes' RFC 3339 timestamps at second precision (conditions, Events, status)."""
ORPHAN_ANNOTATION = "hmls.tensorstack.dev/orphan-clusters"
"""On a HyperMLService being deleted: comma-separated clusters (or ``*``) whose objects are
left in place so the deletion can finish while they are unreachable."""


class Workload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    clusters: list[str] = Field(min_length=1)
    manifests: list[dict[str, Any]] = Field(min_length=1)

    @field_validator("clusters")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        dupes = sorted({c for c in value if value.count(c) > 1})
        if dupes:
            raise ValueError(f"cluster names in a workload must be unique: {', '.join(dupes)}")
        return value


class TrafficSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    ingress_cluster: str = Field(alias="ingressCluster")
    provider: Literal["Istio", "GatewayAPI"] = "Istio"
    namespace: str | None = None
    gateways: list[str] = Field(default_factory=lambda: [DEFAULT_GATEWAY])
    hosts: list[str] = Field(default_factory=lambda: ["*"])
    path_prefix: str | None = Field(None, alias="pathPrefix")
    mlservice: str | None = None
    release: str | None = None
    weights: dict[str, int] = Field(default_factory=dict)
    recovery_seconds: int = Field(30, alias="recoverySeconds", ge=0)


class Spec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    workloads: list[Workload] = Field(min_length=1)
    deletion_policy: Literal["Delete", "Orphan"] = Field("Delete", alias="deletionPolicy")
    traffic: TrafficSpec | None = None
    take_over: bool = Field(False, alias="takeOver")
    """Force server-side apply: take fields that another field manager owns on a spoke."""
    drift_policy: Literal["Correct", "Report"] = Field("Correct", alias="driftPolicy")
    """What to do when a field hmls applied is changed on a spoke by someone else."""

    @model_validator(mode="after")
    def _weights_name_workload_clusters(self) -> Spec:
        if self.traffic:
            known = {c for w in self.workloads for c in w.clusters}
            unknown = sorted(set(self.traffic.weights) - known)
            if unknown:
                raise ValueError(f"traffic.weights names clusters in no workload: {', '.join(unknown)}")
            negative = sorted(c for c, w in self.traffic.weights.items() if w < 0)
            if negative:
                raise ValueError(f"traffic.weights must not be negative: {', '.join(negative)}")
        return self


class InvalidSpec(ValueError):
    """spec cannot be used; the message is written to the FullyApplied condition."""


def parse_spec(raw: Any) -> Spec:
    try:
        return Spec.model_validate(raw or {})
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            parts.append(f"spec.{loc}: {err['msg']}")
        raise InvalidSpec("; ".join(parts)) from None


@dataclass(frozen=True)
class Owner:
    """The hub HyperMLService that owns spoke objects."""

    namespace: str
    name: str
    uid: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Owner:
        meta = obj["metadata"]
        return cls(meta["namespace"], meta["name"], meta["uid"])


def timestamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime(TIME_FORMAT)


def parse_timestamp(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=dt.UTC)
