"""The HyperMLService as it arrives on the wire, and the names every layer shares.

Pure: no I/O.  The CRD's OpenAPI schema already rejects most bad input at admission; these
models re-check what the reconciler relies on so that an object written before a schema
change still gets a precise condition instead of an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class Spec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    workloads: list[Workload] = Field(min_length=1)
    deletion_policy: Literal["Delete", "Orphan"] = Field("Delete", alias="deletionPolicy")


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
