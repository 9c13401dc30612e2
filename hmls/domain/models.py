"""The HyperMLService as it arrives on the wire, and the names every layer shares.

Pure: no I/O.  The CRD's OpenAPI schema already rejects most bad input at admission; these
models re-check what the reconciler relies on so that an object written before a schema
change still gets a precise condition instead of an exception.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

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
REVISION_HISTORY_ANNOTATION = "hmls.tensorstack.dev/revision-history"
"""On a ControllerRevision: the numbers it had before it was renumbered (comma-separated)."""
"""On a HyperMLService being deleted: comma-separated clusters (or ``*``) whose objects are
left in place so the deletion can finish while they are unreachable."""


_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def label_problem(key: str, value: str | None) -> str | None:
    """Why a label key (and value, unless None) is not valid in Kubernetes, or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"key prefix {prefix!r} must be a DNS subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return (f"key name {name!r} must be 1-63 characters of letters, digits, '-', '_' and "
                "'.', starting and ending with a letter or digit")
    if value is not None and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return (f"value {value!r} must be at most 63 characters of letters, digits, '-', '_' "
                "and '.', starting and ending with a letter or digit")
    return None


class Requirement(BaseModel):
    """One ``matchExpressions`` entry of a Kubernetes LabelSelector."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Requirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        return (self.key in labels) == (self.operator == "Exists")

    def __str__(self) -> str:
        if self.operator in ("In", "NotIn"):
            return f"{self.key} {self.operator.lower()} ({','.join(self.values)})"
        return self.key if self.operator == "Exists" else f"!{self.key}"


class LabelSelector(BaseModel):
    """A Kubernetes LabelSelector over cluster labels; empty selects every cluster."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: list[Requirement] = Field(default_factory=list, alias="matchExpressions")

    def matches(self, labels: Mapping[str, str]) -> bool:
        return (all(labels.get(k) == v for k, v in self.match_labels.items())
                and all(r.matches(labels) for r in self.match_expressions))

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.match_labels.items())]
        return ",".join(parts + [str(r) for r in self.match_expressions]) or "(every cluster)"


class OverrideTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str | None = None
    name: str | None = None


class ClusterChoice(BaseModel):
    """Clusters by name and/or by label selector (a cluster is chosen by either)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    WHAT: ClassVar[str] = "a cluster choice"

    clusters: list[str] = Field(default_factory=list)
    cluster_selector: LabelSelector | None = Field(None, alias="clusterSelector")

    @model_validator(mode="after")
    def _chooses(self) -> ClusterChoice:
        if not self.clusters and self.cluster_selector is None:
            raise ValueError(f"{self.WHAT} needs clusters or clusterSelector")
        return self

    def selects(self, cluster: str, labels: Mapping[str, str]) -> bool:
        return cluster in self.clusters or (
            self.cluster_selector is not None and self.cluster_selector.matches(labels))


class Override(ClusterChoice):
    """A patch of some manifests for some clusters of a workload."""

    WHAT: ClassVar[str] = "an override"

    target: OverrideTarget | None = None
    merge_patch: dict[str, Any] | None = Field(None, alias="mergePatch")
    json_patch: list[Any] | None = Field(None, alias="jsonPatch")

    @model_validator(mode="after")
    def _one_patch(self) -> Override:
        if (self.merge_patch is None) == (self.json_patch is None):
            raise ValueError("an override needs exactly one of mergePatch and jsonPatch")
        return self

    def targets(self, kind: str, name: str) -> bool:
        t = self.target
        return t is None or ((t.kind is None or t.kind == kind)
                             and (t.name is None or t.name == name))


class Workload(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    clusters: list[str] = Field(default_factory=list)
    cluster_selector: LabelSelector | None = Field(None, alias="clusterSelector")
    manifests: list[dict[str, Any]] = Field(min_length=1)
    overrides: list[Override] = Field(default_factory=list)

    @field_validator("clusters")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        dupes = sorted({c for c in value if value.count(c) > 1})
        if dupes:
            raise ValueError(f"cluster names in a workload must be unique: {', '.join(dupes)}")
        return value

    @model_validator(mode="after")
    def _targets_something(self) -> Workload:
        if not self.clusters and self.cluster_selector is None:
            raise ValueError("a workload needs clusters or clusterSelector")
        return self

    def targets(self, fleet: Mapping[str, Mapping[str, str]]) -> list[str]:
        """The clusters this workload goes to: those it names, in its order, then those of
        the registered clusters (name -> labels) its selector chooses, by name."""
        chosen = list(self.clusters)
        if self.cluster_selector is not None:
            named = set(chosen)
            chosen += [c for c in sorted(fleet)
                       if c not in named and self.cluster_selector.matches(fleet[c])]
        return chosen


class Tier(ClusterChoice):
    """A priority tier of the HeadIngress."""

    WHAT: ClassVar[str] = "a tier"


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
    tiers: list[Tier] = Field(default_factory=list, max_length=16)
    """Priority tiers: the first with a healthy cluster takes all the traffic (clusters in
    no tier form a last one)."""

    @field_validator("tiers")
    @classmethod
    def _disjoint(cls, value: list[Tier]) -> list[Tier]:
        named = [c for t in value for c in t.clusters]
        twice = sorted({c for c in named if named.count(c) > 1})
        if twice:
            raise ValueError(f"a cluster is named in more than one tier: {', '.join(twice)}")
        return value

    def tier_of(self, cluster: str, labels: Mapping[str, str]) -> int:
        """The index of the first tier that chooses the cluster (``len(tiers)``: none)."""
        return next((i for i, t in enumerate(self.tiers) if t.selects(cluster, labels)),
                    len(self.tiers))


_PERCENT = re.compile(r"^([1-9][0-9]?|100)%$")
ANALYSIS_PLACEHOLDER = re.compile(r"\$(\$?)\{([^}]*)\}")
"""``${name}`` in an analysis query (``$${name}`` is a literal ``${name}``)."""
_ANALYSIS_NAME = re.compile(r"^(cluster\.name|cluster\.labels\.[A-Za-z0-9._/-]+|revision|"
                            r"namespace|name)$")


class ThresholdRange(BaseModel):
    """The values a measurement may take and succeed (bounds included)."""

    model_config = ConfigDict(extra="ignore")

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _a_bound(self) -> ThresholdRange:
        if self.min is None and self.max is None:
            raise ValueError("thresholdRange needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"thresholdRange min {self.min} is above max {self.max}")
        return self

    def __str__(self) -> str:
        return (f"[{'' if self.min is None else f'{self.min:g}'}, "
                f"{'' if self.max is None else f'{self.max:g}'}]")


class MetricSpec(BaseModel):
    """One Prometheus query judged while a rollout step soaks."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field(min_length=1, max_length=63)
    query: str = Field(min_length=1, max_length=2048)
    threshold_range: ThresholdRange = Field(alias="thresholdRange")
    failure_limit: int = Field(0, alias="failureLimit", ge=0)
    """Failed measurements tolerated per step."""
    inconclusive_limit: int = Field(3, alias="inconclusiveLimit", ge=1)
    """Inconclusive measurements in a row after which the step says it waits for data."""

    @field_validator("query")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        unknown = sorted({m.group(2) for m in ANALYSIS_PLACEHOLDER.finditer(value)
                          if not m.group(1) and not _ANALYSIS_NAME.match(m.group(2))})
        if unknown:
            raise ValueError(
                f"unknown placeholder {', '.join('${' + u + '}' for u in unknown)}: use "
                "${cluster.name}, ${cluster.labels.KEY}, ${revision}, ${namespace} or ${name}")
        return value


class AnalysisSpec(BaseModel):
    """Metric analysis as a gate of each rollout step (Prometheus at the address the
    controller's operator gives: ``hmls controller --prometheus-url``)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    interval_seconds: int = Field(10, alias="intervalSeconds", ge=1)
    metrics: list[MetricSpec] = Field(min_length=1, max_length=16)
    on_inconclusive: Literal["Wait", "Fail"] = Field("Wait", alias="onInconclusive")
    """Past a metric's inconclusiveLimit: wait for data (and say so), or fail the step."""

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, value: list[MetricSpec]) -> list[MetricSpec]:
        names = [m.name for m in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"metric names must be unique: {', '.join(twice)}")
        return value


class RolloutSpec(BaseModel):
    """How a new revision of the workloads reaches the clusters."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    strategy: Literal["All", "Progressive"] = "All"
    max_concurrency: int | str = Field(1, alias="maxConcurrency")
    order: list[str] = Field(default_factory=list)
    soak_seconds: int = Field(60, alias="soakSeconds", ge=0)
    progress_deadline_seconds: int = Field(600, alias="progressDeadlineSeconds", ge=1)
    max_failures: int = Field(0, alias="maxFailures", ge=0)
    auto_rollback: bool = Field(True, alias="autoRollback")
    paused: bool = False
    revision_history_limit: int = Field(10, alias="revisionHistoryLimit", ge=1)
    analysis: AnalysisSpec | None = None

    @field_validator("max_concurrency")
    @classmethod
    def _count_or_percent(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("maxConcurrency must be at least 1")
        if isinstance(value, str) and not _PERCENT.match(value):
            raise ValueError(f"maxConcurrency {value!r} must be an integer or a percentage "
                             "such as '25%'")
        return value

    def concurrency(self, clusters: int) -> int:
        """Clusters updated at once out of this many (a percentage rounds down, at least 1)."""
        if isinstance(self.max_concurrency, int):
            return self.max_concurrency
        return max(1, clusters * int(self.max_concurrency[:-1]) // 100)


DeletionPolicy = Literal["Delete", "Orphan"]


def deletion_policy(spec: Any) -> DeletionPolicy:
    """What a deleted HyperMLService asks for its objects, read from the raw spec because the
    finalizer must clean up after a CR whose spec is invalid elsewhere: ``Orphan`` only when
    the spec says so (the CRD's enum admits nothing else), otherwise ``Delete``."""
    return "Orphan" if isinstance(spec, dict) and spec.get("deletionPolicy") == "Orphan" else "Delete"


class Spec(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    workloads: list[Workload] = Field(min_length=1)
    rollout: RolloutSpec = Field(default_factory=lambda: RolloutSpec.model_validate({}))
    deletion_policy: DeletionPolicy = Field("Delete", alias="deletionPolicy")
    """Validated here (a bad value is the CR's error); read, at deletion, by ``deletion_policy``."""
    traffic: TrafficSpec | None = None
    take_over: bool = Field(False, alias="takeOver")
    """Force server-side apply: take fields that another field manager owns on a spoke."""
    drift_policy: Literal["Correct", "Report"] = Field("Correct", alias="driftPolicy")
    """What to do when a field hmls applied is changed on a spoke by someone else."""

    @property
    def follows_fleet(self) -> bool:
        """True when a selector chooses clusters: membership changes with the fleet."""
        return any(w.cluster_selector is not None for w in self.workloads)

    @model_validator(mode="after")
    def _weights_name_workload_clusters(self) -> Spec:
        if self.traffic and not self.follows_fleet:
            known = {c for w in self.workloads for c in w.clusters}
            unknown = sorted(set(self.traffic.weights) - known)
            if unknown:
                raise ValueError(f"traffic.weights names clusters in no workload: {', '.join(unknown)}")
        if self.traffic:
            negative = sorted(c for c, w in self.traffic.weights.items() if w < 0)
            if negative:
                raise ValueError(f"traffic.weights must not be negative: {', '.join(negative)}")
        return self


def named_clusters(raw_spec: Any) -> set[str]:
    """The clusters a stored spec names in its workloads (cheap: no validation)."""
    return {c for w in _raw_workloads(raw_spec) for c in w.get("clusters") or []
            if isinstance(c, str)}


def named_kinds(raw_spec: Any) -> set[tuple[str, str]]:
    """(apiVersion, kind) of the manifests a stored spec names (cheap: no validation)."""
    return {(str(m["apiVersion"]), str(m["kind"])) for w in _raw_workloads(raw_spec)
            for m in w.get("manifests") or []
            if isinstance(m, dict) and m.get("apiVersion") and m.get("kind")}


def follows_labels(raw_spec: Any) -> bool:
    """True when a stored spec's rendering depends on cluster labels (a selector of a
    workload or an override, or a ``${cluster.labels.…}`` placeholder), so that a joined,
    relabelled or removed cluster may change it."""
    return any(w.get("clusterSelector") is not None
               or any(isinstance(o, dict) and (o.get("clusterSelector") is not None
                                               or "${cluster.labels." in repr(o))
                      for o in w.get("overrides") or [])
               for w in _raw_workloads(raw_spec))


def _raw_workloads(raw_spec: Any) -> list[dict[str, Any]]:
    workloads = raw_spec.get("workloads") if isinstance(raw_spec, dict) else None
    return [w for w in workloads or [] if isinstance(w, dict)]


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
    parsed = dt.datetime.fromisoformat(text)  # 50x strptime's speed; reads TIME_FORMAT and more
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
