"""`make demo`: the seed document's flow on the embedded local environment.

Brings up hub + spoke1 + spoke2 + ingress (real API servers), joins the spokes with
`hmls cluster join`, starts the controller in the background, creates the seed's
`hmls-sample` with kubectl and prints its status once it is FullyApplied and Ready.
Everything keeps running afterwards; `make demo-down` stops it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from hmls.devenv.environment import Environment

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
    args = parser.parse_args()
    env = Environment(Path(args.dir))
    env.up(spokes=2)
    hub = str(env.kubeconfig("hub"))
    hmls = [sys.executable, "-m", "hmls"]
    for spoke in env.spokes():
        run(*hmls, "cluster", "join", spoke, "--kubeconfig", hub,
            "--cluster-kubeconfig", str(env.kubeconfig(spoke)))
    run(*hmls, "cluster", "list", "--kubeconfig", hub)
    env.start_process("controller", [*hmls, "controller", "--kubeconfig", hub,
                                     "--metrics-bind-address", f"127.0.0.1:{args.metrics_port}"])
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
    print("\nThe environment keeps running. Reach each cluster with kubectl:")
    for name in env.state().clusters:
        print(f"  kubectl --kubeconfig {env.kubeconfig(name)} get ns")
    print(f"  kubectl --kubeconfig {env.kubeconfig('spoke1')} get mlservices -A")
    print(f"Controller log: {env.log_path('controller')}; "
          f"metrics: http://127.0.0.1:{args.metrics_port}/metrics")
    print(f"Stop everything: make demo-down   (or: hmls dev down --dir {env.dir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
