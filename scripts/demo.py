"""`make demo`: the seed document's flow on the embedded local environment.

Brings up hub + spoke1 + spoke2 + ingress (real API servers), joins the spokes with
`hmls cluster join`, starts the controller in the background, creates the seed's
`hmls-sample` with kubectl and prints its status once it is FullyApplied and Ready.
With ``--gated-rollout`` (and Debian's ``prometheus`` installed), a Prometheus scrapes the
MLService simulator's request metrics, the controller gets ``--prometheus-url``, and the
sample is rolled out progressively under an error-ratio gate: a bad revision halts in
spoke1's soak and rolls back, the next good one reaches both clusters.
Everything keeps running afterwards; `make demo-down` stops it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from hmls_devenv.environment import Environment

REPO = Path(__file__).resolve().parents[1]


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    print("$", " ".join(argv), flush=True)
    res = subprocess.run(argv, text=True, capture_output=True, check=False)
    if res.stdout:
        print(res.stdout.rstrip(), flush=True)
    if check and res.returncode != 0:
        print(res.stderr, file=sys.stderr)
        raise SystemExit(f"demo step failed: {' '.join(argv)}")
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default=".hmls-env/demo")
    parser.add_argument("--metrics-port", type=int, default=18080)
    parser.add_argument("--prometheus-port", type=int, default=19090)
    parser.add_argument("--gated-rollout", action="store_true",
                        help="end with a progressive rollout gated on an error ratio")
    args = parser.parse_args()
    if args.gated_rollout and not shutil.which("prometheus"):
        raise SystemExit("--gated-rollout needs Debian's prometheus: apt-get install prometheus")
    env = Environment(Path(args.dir))
    env.up(spokes=2)
    hub = str(env.kubeconfig("hub"))
    hmls = [sys.executable, "-m", "hmls"]
    analysis = []
    if args.gated_rollout:
        analysis = ["--prometheus-url", start_prometheus(env, args.prometheus_port)]
    for spoke in env.spokes():
        run(*hmls, "cluster", "join", spoke, "--kubeconfig", hub,
            "--cluster-kubeconfig", str(env.kubeconfig(spoke)))
    run(*hmls, "cluster", "list", "--kubeconfig", hub)
    env.start_process("controller", [*hmls, "controller", "--kubeconfig", hub,
                                     "--metrics-bind-address", f"127.0.0.1:{args.metrics_port}",
                                     *analysis])
    # the seed's flow: the namespace on the hub only (hmls creates it on the spokes)
    run("kubectl", "--kubeconfig", hub, "create", "namespace", "demo", check=False)
    sample = str(REPO / "config" / "samples" / "hmls-sample.yaml")
    run("kubectl", "--kubeconfig", hub, "apply", "-f", sample)
    started = time.monotonic()
    run("kubectl", "--kubeconfig", hub, "wait", "hmls", "-n", "demo", "hmls-sample",
        "--for=condition=Ready", "--timeout=60s")
    print(f"# FullyApplied and Ready {time.monotonic() - started:.2f}s after kubectl apply")
    run("kubectl", "--kubeconfig", hub, "get", "hmls", "-n", "demo")
    run("kubectl", "--kubeconfig", hub, "get", "hmls", "-n", "demo", "hmls-sample", "-o", "yaml")
    run(*hmls, "status", "demo/hmls-sample", "--kubeconfig", hub)

    print("\n# HeadIngress: route traffic 30/70 from the ingress cluster (seed: created by hand)")
    ingress = str(env.kubeconfig("ingress"))
    run(*hmls, "cluster", "join", "ingress", "--kubeconfig", hub,
        "--cluster-kubeconfig", ingress)
    traffic = {"spec": {"traffic": {"ingressCluster": "ingress",
                                    "weights": {"spoke1": 30, "spoke2": 70}}}}
    run("kubectl", "--kubeconfig", hub, "patch", "hmls", "-n", "demo", "hmls-sample",
        "--type=merge", "-p", json.dumps(traffic))
    run("kubectl", "--kubeconfig", hub, "wait", "hmls", "-n", "demo", "hmls-sample",
        "--for=condition=TrafficReady", "--timeout=60s")
    run("kubectl", "--kubeconfig", ingress, "get", "serviceentries,virtualservices", "-n", "demo")
    run("kubectl", "--kubeconfig", ingress, "get", "serviceentries,virtualservices", "-n", "demo",
        "-o", "yaml")
    run("kubectl", "--kubeconfig", hub, "get", "hmls", "-n", "demo", "hmls-sample",
        "-o", "jsonpath={.status.traffic}")
    if args.gated_rollout:
        gated_rollout(hub, hmls)
    print("\nThe environment keeps running. Reach each cluster with kubectl:")
    for name in env.state().clusters:
        print(f"  kubectl --kubeconfig {env.kubeconfig(name)} get ns")
    print(f"  kubectl --kubeconfig {env.kubeconfig('spoke1')} get mlservices -A")
    print(f"Controller log: {env.log_path('controller')}; "
          f"metrics: http://127.0.0.1:{args.metrics_port}/metrics")
    print(f"Stop everything: make demo-down   (or: hmls dev down --dir {env.dir})")
    return 0


def start_prometheus(env: Environment, port: int) -> str:
    """A Prometheus scraping the simulator's request metrics every second."""
    target = urllib.parse.urlsplit(env.simulator_metrics_url)
    config = env.dir / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "mlservice-simulator", "metrics_path": target.path,
                            "static_configs": [{"targets": [target.netloc]}]}]}))
    env.start_process("prometheus", ["prometheus", f"--config.file={config}",
                                     f"--storage.tsdb.path={env.dir / 'prometheus-data'}",
                                     f"--web.listen-address=127.0.0.1:{port}"])
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                return url
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"prometheus did not get ready: {env.log_path('prometheus')}")


ERROR_RATIO = ('sum(rate(mlservice_requests_total{cluster="${cluster.name}",'
               'namespace="${namespace}",code="500"}[5s])) / '
               'sum(rate(mlservice_requests_total{cluster="${cluster.name}",'
               'namespace="${namespace}"}[5s]))')
"""Over a window no longer than the interval: each measurement sees only the revision
being soaked (the first comes an interval into the soak)."""


def gated_rollout(hub: str, hmls: list[str]) -> None:
    print("\n# Progressive rollout gated on the error ratio each spoke's MLService answers "
          "(the simulator's error-ratio knob plays a bad model)")
    kubectl = ["kubectl", "--kubeconfig", hub]
    rollout = {"strategy": "Progressive", "soakSeconds": 10, "order": ["spoke1", "spoke2"],
               "analysis": {"intervalSeconds": 5, "metrics": [{
                   "name": "error-ratio", "query": ERROR_RATIO,
                   "thresholdRange": {"max": 0.05}}]}}
    run(*kubectl, "patch", "hmls", "-n", "demo", "hmls-sample", "--type=merge",
        "-p", json.dumps({"spec": {"rollout": rollout}}))
    sample = json.loads(subprocess.run([*kubectl, "get", "hmls", "-n", "demo", "hmls-sample",
                                        "-o", "json"], text=True, capture_output=True,
                                       check=True).stdout)
    manifests = sample["spec"]["workloads"][0]["manifests"]
    service = next(i for i, m in enumerate(manifests) if m["kind"] == "MLService")

    def revision(knob: str | None, replicas: int) -> None:
        patch = [{"op": "replace", "path": f"/spec/workloads/0/manifests/{service}/spec/"
                  "releases/0/predictor/minReplicas", "value": replicas}]
        patch.append({"op": "add" if knob else "remove",
                      "path": f"/spec/workloads/0/manifests/{service}/metadata/annotations",
                      **({"value": {"simulator.hmls.tensorstack.dev/error-ratio": knob}}
                         if knob else {})})
        run(*kubectl, "patch", "hmls", "-n", "demo", "hmls-sample", "--type=json",
            "-p", json.dumps(patch))

    run(*hmls, "rollout", "status", "demo/hmls-sample", "--watch", "--kubeconfig", hub)
    print("\n# a new model that answers 30 % errors: it halts in spoke1's soak and rolls back")
    revision("0.3", 2)
    run(*hmls, "rollout", "status", "demo/hmls-sample", "--watch", "--kubeconfig", hub,
        check=False)
    run(*kubectl, "get", "hmls", "-n", "demo")
    print("\n# the fixed model: it rolls out everywhere")
    revision(None, 3)
    run(*hmls, "rollout", "status", "demo/hmls-sample", "--watch", "--kubeconfig", hub)
    run(*kubectl, "get", "hmls", "-n", "demo")


if __name__ == "__main__":
    raise SystemExit(main())
