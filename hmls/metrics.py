"""Every Prometheus metric hmls exports, defined once, and the HTTP endpoint that serves them
with the health probes (/metrics, /healthz, /readyz)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    """One instance per process, passed to whoever records (no module-level globals)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconcile_total = Counter(
            "hmls_reconcile_total", "Reconciles by result (success, error, requeue).",
            ["result"], registry=r)
        self.reconcile_duration = Histogram(
            "hmls_reconcile_duration_seconds", "Duration of one reconcile.", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.apply_total = Counter(
            "hmls_apply_total",
            "Manifest applies by cluster and result (applied, unchanged, failed).",
            ["cluster", "result"], registry=r)
        self.prune_total = Counter(
            "hmls_prune_total", "Objects deleted from clusters (prune and cleanup).",
            ["cluster"], registry=r)
        self.status_writes = Counter(
            "hmls_status_writes_total", "Status subresource writes to the hub.", registry=r)
        self.queue_depth = Gauge(
            "hmls_queue_depth", "HyperMLService keys waiting to be reconciled.", registry=r)
        self.cluster_reachable = Gauge(
            "hmls_cluster_reachable",
            "1 if the cluster's health probe says it is reachable, 0 once it has failed "
            "--probe-failure-threshold probes in a row.", ["cluster"], registry=r)
        self.clusters = Gauge(
            "hmls_clusters", "Registered clusters by state (ready, refused).", ["state"],
            registry=r)
        self.not_fully_applied = Gauge(
            "hmls_hypermlservices_not_fully_applied",
            "HyperMLServices whose FullyApplied condition is not True (as last reconciled).",
            registry=r)
        self.leader = Gauge(
            "hmls_leader", "1 while this replica holds the leader Lease or at least one shard "
            "Lease (or runs without leader election), 0 on a standby.", registry=r)
        self.shards = Gauge(
            "hmls_shards", "Shards the HyperMLServices are split over (--shards; 1 without "
            "sharding).", registry=r)
        self.shards_held = Gauge(
            "hmls_shards_held", "Shard Leases this replica holds (1 without sharding while it "
            "works); a fleet of N shards sums to N when every shard has a replica.", registry=r)
        self.drift_corrected = Counter(
            "hmls_drift_corrected_total",
            "Spoke objects put back after a field hmls applied was changed by someone else.",
            ["cluster"], registry=r)
        self.spoke_task_restarts = Counter(
            "hmls_spoke_task_restarts_total",
            "Supervised per-cluster tasks (probe, watches) restarted after an unexpected error.",
            ["cluster", "task"], registry=r)
        self.rollout_steps = Counter(
            "hmls_rollout_steps_total",
            "Progressive rollout steps finished, by result (done, failed, rolled_back, superseded).",
            ["result"], registry=r)
        self.rollout_step_duration = Histogram(
            "hmls_rollout_step_duration_seconds",
            "Duration of a progressive rollout step, from the apply of its revision to its "
            "end, by result.", ["result"], registry=r,
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800))
        self.analysis_total = Counter(
            "hmls_rollout_analysis_total",
            "Metric measurements of rollout steps, by result (Successful, Failed, "
            "Inconclusive).", ["result"], registry=r)
        self.analysis_query_seconds = Histogram(
            "hmls_rollout_analysis_query_seconds",
            "Duration of one Prometheus query of a rollout step's analysis.", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.cluster_throttled = Counter(
            "hmls_cluster_throttled_total",
            "429 answers (rate limits, API Priority and Fairness rejections) by cluster: each "
            "paused the cluster's requests for its Retry-After.", ["cluster"], registry=r)
        self.watch_restarts = Counter(
            "hmls_watch_restarts_total", "Watches restarted, by cluster, resource and reason.",
            ["cluster", "resource", "reason"], registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def serve(metrics: Metrics, *, host: str, port: int,
                ready: Callable[[], tuple[bool, str]]) -> web.AppRunner:
    """Start the HTTP endpoint; the caller cleans up the returned runner."""

    async def metrics_handler(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        ok, why = ready()
        return web.Response(text=why or "ok", status=200 if ok else 503)

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics_handler), web.get("/healthz", healthz),
                    web.get("/readyz", readyz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
