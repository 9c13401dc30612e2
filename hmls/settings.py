"""Frozen controller settings, built once from command-line flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from hmls.domain.kubeconfig import KubeconfigPolicy


@dataclass(frozen=True)
class PrometheusConfig:
    """The operator's Prometheus, which rollout analysis queries."""

    url: str
    bearer_token_file: str | None = None
    """Read at every query (a rotated token is picked up)."""
    ca_file: str | None = None
    timeout: float = 5.0


@dataclass(frozen=True)
class Settings:
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = "hmls-system"
    """Where cluster Secrets live (and the leader-election Lease)."""
    watch_namespaces: tuple[str, ...] = ()
    """Hub namespaces whose HyperMLServices are reconciled; empty means all."""
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080
    workers: int = 32
    """Reconciles at once.  A reconcile waiting on a far-away cluster costs a coroutine, so
    32 hides round trips (each cluster is protected by its budget; the RSS creep this
    concurrency showed in the churn soak was glibc's dynamic mmap threshold, see
    hmls.allocator)."""
    per_cluster_concurrency: int = 32
    cluster_qps: float = 50.0
    """Requests a second hmls sends one cluster (a token bucket; 0: unlimited)."""
    cluster_burst: int = 100
    probe_interval: float = 10.0
    probe_timeout: float = 5.0
    """A probe that has no answer after this long has failed (a black-holed cluster answers
    nothing: without it a probe would wait for the request timeout)."""
    probe_failure_threshold: int = 3
    """Consecutive failed probes before a reachable cluster counts as unreachable."""
    resync_period: float = 600.0
    """Every HyperMLService is reconciled again from the caches about this often (each at
    its own random moment of the period): a safety net that costs no request when nothing
    changed."""
    batch_window: float = 0.1
    """Seconds a spoke event waits before its HyperMLService is reconciled, so that changes
    arriving together (several spokes turning Ready) cost one reconcile and one status write."""
    request_timeout: float = 10.0
    kubeconfig_policy: KubeconfigPolicy = field(default_factory=KubeconfigPolicy)
    leader_elect: bool = False
    shards: int = 1
    """HyperMLServices are split by a stable hash of their key over this many shard Leases;
    each replica reconciles the shards it holds (more than one implies leader election)."""
    leader_election_namespace: str | None = None
    """Where the Lease lives; defaults to ``namespace``."""
    lease_seconds: float = 15.0
    renew_deadline: float = 10.0
    retry_seconds: float = 2.0
    prometheus: PrometheusConfig | None = None
    """Where rollout analysis queries (None: its measurements are inconclusive)."""
