"""The ``hmls`` command: controller, cluster registration, status, rollouts and diff (``hmls dev``
hands over to the local environment of a checkout, when it is installed)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from hmls.domain.kubeconfig import KubeconfigPolicy
from hmls.settings import PrometheusConfig, Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _dev(args: argparse.Namespace) -> int:
    """The local environment lives beside the product, in a checkout's ``devenv`` package."""
    try:
        from hmls_devenv.cli import main as dev_main
    except ImportError:
        print("hmls dev: the local environment is not installed; it is not part of the hmls "
              "package. It comes with a checkout of the hmls repository: run 'make deps' there "
              "(or pip install -e ./devenv), then 'hmls dev up --dir DIR'.", file=sys.stderr)
        return 1
    return dev_main(args.dev_args)


def _policy(args: argparse.Namespace) -> KubeconfigPolicy:
    return KubeconfigPolicy(allow_exec=args.allow_exec_kubeconfig,
                            allow_files=args.allow_file_kubeconfig,
                            allow_insecure=args.allow_insecure_kubeconfig,
                            allow_proxy=args.allow_proxy_kubeconfig)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _controller(args: argparse.Namespace) -> int:
    from hmls.allocator import fix_thresholds
    from hmls.engine.manager import run_until_signalled

    fix_thresholds()
    host, _, port = args.metrics_bind_address.rpartition(":")
    settings = Settings(
        kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace,
        watch_namespaces=tuple(n for n in args.watch_namespaces.split(",") if n),
        metrics_host=host or "0.0.0.0", metrics_port=int(port),
        workers=args.workers, per_cluster_concurrency=args.per_cluster_concurrency,
        cluster_qps=args.cluster_qps, cluster_burst=args.cluster_burst,
        probe_interval=args.probe_interval, probe_timeout=args.probe_timeout,
        batch_window=args.batch_window,
        resync_period=args.resync_period,
        probe_failure_threshold=args.probe_failure_threshold,
        kubeconfig_policy=_policy(args),
        leader_elect=args.leader_elect, shards=args.shards,
        leader_election_namespace=args.leader_election_namespace or None,
        lease_seconds=args.lease_seconds, renew_deadline=args.lease_seconds * 2 / 3,
        retry_seconds=max(0.2, args.lease_seconds / 7.5),
        prometheus=PrometheusConfig(args.prometheus_url, args.prometheus_bearer_token_file,
                                    args.prometheus_ca_file) if args.prometheus_url else None)
    asyncio.run(run_until_signalled(settings))
    return 0


def _cluster(args: argparse.Namespace) -> int:
    from hmls.commands import cluster as ops
    from hmls.commands.common import OperationError

    try:
        if args.cluster_command == "join":
            out = asyncio.run(ops.join(args.name, hub=args.kubeconfig, context=args.context,
                                       cluster_kubeconfig=args.cluster_kubeconfig,
                                       namespace=args.namespace, policy=_policy(args),
                                       labels=args.label, as_is=args.kubeconfig_as_is,
                                       trusted=args.trust_hub_namespaces))
        elif args.cluster_command == "rotate":
            out = asyncio.run(ops.rotate(args.name, hub=args.kubeconfig, context=args.context,
                                         namespace=args.namespace, policy=_policy(args)))
        elif args.cluster_command == "label":
            out = asyncio.run(ops.label(args.name, args.labels, hub=args.kubeconfig, context=args.context,
                                        namespace=args.namespace))
        elif args.cluster_command == "grant":
            out = asyncio.run(ops.grant(args.name, namespace=args.namespace,
                                        cluster_kubeconfig=args.cluster_kubeconfig,
                                        revoke=args.revoke))
        elif args.cluster_command == "list":
            out = asyncio.run(ops.list_clusters(hub=args.kubeconfig, context=args.context,
                                                namespace=args.namespace, policy=_policy(args)))
        else:
            out = asyncio.run(ops.unjoin(args.name, hub=args.kubeconfig, context=args.context,
                                         namespace=args.namespace, force=args.force,
                                         cluster_kubeconfig=args.cluster_kubeconfig,
                                         policy=_policy(args)))
    except OperationError as exc:
        print(f"hmls cluster {args.cluster_command}: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


def _status(args: argparse.Namespace) -> int:
    from hmls.commands import status as ops
    from hmls.commands.common import OperationError

    try:
        print(asyncio.run(ops.show_status(args.ref, hub=args.kubeconfig, context=args.context,
                                          output=args.output)))
    except OperationError as exc:
        print(f"hmls status: {exc}", file=sys.stderr)
        return 1
    return 0


def _diff(args: argparse.Namespace) -> int:
    from hmls.commands import diff
    from hmls.commands.common import OperationError

    if bool(args.file) == bool(args.ref):
        print("hmls diff: give either -f FILE or NAMESPACE/NAME", file=sys.stderr)
        return diff.ERROR
    try:
        code, text = asyncio.run(diff.diff(hub=args.kubeconfig, context=args.context,
                                           namespace=args.namespace, policy=_policy(args),
                                           file=args.file, ref=args.ref))
    except OperationError as exc:
        print(f"hmls diff: {exc}", file=sys.stderr)
        return diff.ERROR
    print(text)
    return code


def _rollout(args: argparse.Namespace) -> int:
    from hmls.commands import rollout as ops
    from hmls.commands.common import OperationError

    try:
        if args.rollout_command == "status":
            code, out = asyncio.run(ops.rollout_status(args.ref, hub=args.kubeconfig, context=args.context,
                                                       watch=args.watch))
        elif args.rollout_command in ("pause", "resume"):
            code, out = 0, asyncio.run(ops.rollout_pause(
                args.ref, hub=args.kubeconfig, context=args.context, paused=args.rollout_command == "pause"))
        else:
            code, out = 0, asyncio.run(ops.rollout_undo(args.ref, hub=args.kubeconfig, context=args.context,
                                                        to_revision=args.to_revision))
    except OperationError as exc:
        print(f"hmls rollout {args.rollout_command}: {exc}", file=sys.stderr)
        return 2
    if out:
        print(out)
    return code


def _hub_flags(p: argparse.ArgumentParser, *, namespace: bool = True) -> None:
    p.add_argument("--kubeconfig", help="hub kubeconfig (default: $KUBECONFIG, then the "
                   "in-cluster service account, then ~/.kube/config)")
    p.add_argument("--context", help="context of the hub kubeconfig (default: its "
                   "current-context)")
    if namespace:
        p.add_argument("--namespace", default="hmls-system",
                       help="namespace of the cluster Secrets (default hmls-system)")


def _policy_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kubeconfig policy (everything off by default)")
    g.add_argument("--allow-exec-kubeconfig", action="store_true",
                   help="allow exec and auth-provider plugins in cluster kubeconfigs")
    g.add_argument("--allow-file-kubeconfig", action="store_true",
                   help="allow tokenFile and certificate file paths in cluster kubeconfigs")
    g.add_argument("--allow-insecure-kubeconfig", action="store_true",
                   help="allow insecure-skip-tls-verify in cluster kubeconfigs")
    g.add_argument("--allow-proxy-kubeconfig", action="store_true",
                   help="allow proxy-url in cluster kubeconfigs")


def build_parser(prog: str = "hmls") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=["text", "json"], default="text",
                        help="json: one object per line (time, level, logger, message)")
    sub = parser.add_subparsers(dest="command", required=True)

    ctl = sub.add_parser("controller", help="run the HyperMLService controller")
    _hub_flags(ctl)
    ctl.add_argument("--watch-namespaces", default="",
                     help="comma-separated hub namespaces to reconcile (default: all)")
    ctl.add_argument("--metrics-bind-address", default="0.0.0.0:8080",
                     help="serves /metrics, /healthz and /readyz (default 0.0.0.0:8080)")
    ctl.add_argument("--workers", type=int, default=Settings.workers,
                     help="parallel reconciles (default 32: a reconcile waiting on a far-away "
                          "cluster costs little; --cluster-qps protects each cluster)")
    ctl.add_argument("--cluster-qps", type=float, default=50.0,
                     help="requests a second to one cluster, a token bucket as client-go's "
                          "(default 50; 0: unlimited); a 429 pauses the cluster's requests "
                          "for its Retry-After")
    ctl.add_argument("--cluster-burst", type=int, default=100,
                     help="requests one cluster may get at once above --cluster-qps "
                          "(default 100)")
    ctl.add_argument("--per-cluster-concurrency", type=int,
                     default=Settings.per_cluster_concurrency,
                     help="parallel API writes per cluster (default 32)")
    ctl.add_argument("--probe-interval", type=float, default=10.0,
                     help="seconds between cluster health probes, GET /readyz (default 10)")
    ctl.add_argument("--probe-timeout", type=float, default=5.0,
                     help="seconds a probe may take before it counts as failed; a cluster "
                          "that hangs (packets dropped) is unreachable after threshold such "
                          "timeouts (default 5)")
    ctl.add_argument("--probe-failure-threshold", type=int, default=3,
                     help="failed probes in a row before a cluster counts as unreachable "
                          "(default 3)")
    ctl.add_argument("--batch-window", type=float, default=0.1,
                     help="seconds spoke status changes are gathered before the HyperMLService "
                          "is reconciled, so that changes arriving together cost one status "
                          "write (default 0.1)")
    ctl.add_argument("--resync-period", type=float, default=600.0,
                     help="seconds between reconciles of every HyperMLService from the caches, "
                          "jittered; no request when nothing changed (default 600)")
    ctl.add_argument("--leader-elect", action="store_true",
                     help="run as one of several replicas; only the Lease holder works")
    ctl.add_argument("--shards", type=_positive, default=1,
                     help="split the HyperMLServices over N shard Leases "
                          "'hmls-controller-shard-K'; each replica reconciles the shards it "
                          "holds and takes over those of a replica that died (default 1: "
                          "with --leader-elect, one active replica on Lease 'hmls-controller')")
    ctl.add_argument("--leader-election-namespace", default="",
                     help="namespace of the Leases (default: --namespace)")
    ctl.add_argument("--lease-seconds", type=float, default=15.0,
                     help="Lease duration; renew deadline is 2/3 of it (default 15)")
    ctl.add_argument("--prometheus-url", default="",
                     help="the Prometheus that rollout analysis queries (HTTP API, instant "
                          "queries); without it, analysis measurements are inconclusive")
    ctl.add_argument("--prometheus-bearer-token-file", default=None,
                     help="file with a bearer token for --prometheus-url (read at each query)")
    ctl.add_argument("--prometheus-ca-file", default=None,
                     help="CA bundle that verifies --prometheus-url's TLS certificate")
    _policy_flags(ctl)
    ctl.set_defaults(func=_controller)

    cluster = sub.add_parser("cluster", help="register spoke clusters on the hub")
    csub = cluster.add_subparsers(dest="cluster_command", required=True)
    join = csub.add_parser(
        "join", help="register a cluster: with the operator's kubeconfig, make hmls an identity "
        "of its own there (a ServiceAccount, least-privilege ClusterRoles, a bounded token) and "
        "store only that token on the hub")
    join.add_argument("name")
    join.add_argument("--cluster-kubeconfig", required=True,
                      help="the operator's kubeconfig for the spoke; used here, on this machine "
                      "(its exec plugin may run), never stored unless --kubeconfig-as-is")
    join.add_argument("--kubeconfig-as-is", action="store_true",
                      help="store the given kubeconfig instead (it must pass the allow-list)")
    join.add_argument("--trust-hub-namespaces", action="store_true",
                      help="trusted mode: write every hub namespace's manifests with hmls's "
                      "credentials, under the cluster's kind policy (default: tenant mode, "
                      "each hub namespace writes as its own identity on the spoke)")
    join.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                      help="a cluster label for selectors and overrides (repeatable)")
    _hub_flags(join)
    _policy_flags(join)
    lst = csub.add_parser("list", help="registered clusters and their health")
    _hub_flags(lst)
    _policy_flags(lst)
    lbl = csub.add_parser("label", help="set (KEY=VALUE) or remove (KEY-) cluster labels; "
                          "the labels of the registration Secret, as kubectl label sets them")
    lbl.add_argument("name")
    lbl.add_argument("labels", nargs="+", metavar="KEY=VALUE|KEY-")
    _hub_flags(lbl)
    rot = csub.add_parser("rotate", help="renew the token of the identity join minted")
    rot.add_argument("name")
    _hub_flags(rot)
    _policy_flags(rot)
    grant = csub.add_parser(
        "grant", help="tenant mode: let the HyperMLServices of hub namespace NS write in "
        "namespace NS of the cluster, one its owner made (hmls does it itself in those it "
        "creates): the ServiceAccount hmls-tenant there and its RoleBinding to ClusterRole "
        "hmls-tenant")
    grant.add_argument("name")
    grant.add_argument("--namespace", required=True, metavar="NS",
                       help="the namespace, on the cluster and on the hub")
    grant.add_argument("--cluster-kubeconfig", required=True,
                       help="the owner's kubeconfig for the cluster (used here, never stored)")
    grant.add_argument("--revoke", action="store_true",
                       help="delete the ServiceAccount and RoleBinding grant made")
    unjoin = csub.add_parser("unjoin", help="remove a cluster's registration")
    unjoin.add_argument("name")
    unjoin.add_argument("--cluster-kubeconfig",
                        help="the operator's kubeconfig for the spoke: also remove the identity "
                        "join made there")
    unjoin.add_argument("--force", action="store_true",
                        help="unjoin even while HyperMLServices target the cluster")
    _hub_flags(unjoin)
    _policy_flags(unjoin)
    cluster.set_defaults(func=_cluster)

    status = sub.add_parser("status", help="status of one HyperMLService, cluster by resource")
    status.add_argument("ref", help="NAMESPACE/NAME")
    status.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    _hub_flags(status, namespace=False)
    status.set_defaults(func=_status)

    rollout = sub.add_parser("rollout", help="progressive rollouts (as kubectl rollout)")
    rsub = rollout.add_subparsers(dest="rollout_command", required=True)
    rstatus = rsub.add_parser("status", help="revisions and the phase of each cluster; --watch "
                              "waits until rolled out (exit 0) or halted (exit 1)")
    rstatus.add_argument("--watch", "-w", action="store_true")
    rsub.add_parser("pause", help="start no further cluster (steps under way finish)")
    rsub.add_parser("resume", help="continue a paused rollout")
    undo = rsub.add_parser("undo", help="put an earlier revision's workloads back (default: the "
                           "one before the current)")
    undo.add_argument("--to-revision", type=int)
    for p in rsub.choices.values():
        p.add_argument("ref", help="NAMESPACE/NAME")
        _hub_flags(p, namespace=False)
    rollout.set_defaults(func=_rollout)

    diff = sub.add_parser("diff", help="what applying a HyperMLService would change on each "
                          "cluster (server-side dry run; writes nothing). Exit 0: no change, "
                          "1: changes, 2: error")
    diff.add_argument("ref", nargs="?", help="NAMESPACE/NAME of a stored HyperMLService")
    diff.add_argument("-f", "--file", help="a file holding one HyperMLService ('-': stdin)")
    _hub_flags(diff)
    _policy_flags(diff)
    diff.set_defaults(func=_diff)

    dev = sub.add_parser("dev", help="local environment of a checkout: real API servers on this "
                         "machine (up, down, simulate; 'hmls dev -h' lists them when installed)",
                         add_help=False, prefix_chars="+")
    dev.add_argument("dev_args", nargs=argparse.REMAINDER)
    dev.set_defaults(func=_dev)
    return parser


def main(argv: list[str] | None = None, *, prog: str = "hmls") -> int:
    args = build_parser(prog).parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if args.log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


def plugin_main() -> int:
    """``kubectl hmls …``: kubectl runs ``kubectl-hmls`` (found on PATH) with the arguments after
    the plugin's name and its own environment ($KUBECONFIG), so every verb and flag is hmls's."""
    return main(prog="kubectl hmls")
