"""The controller image (make image-test; not part of make test: a cold build takes minutes).

The unmodified Dockerfile is built with podman (hmls_devenv.image), without and then with the
layer cache, and the image is run as config/manager/deployment.yaml runs it in a cluster: user
65532, read-only root with only /tmp writable, no capabilities, the hub reached through the
in-cluster configuration (the ServiceAccount's token and CA at the standard path,
KUBERNETES_SERVICE_HOST/PORT) with the Deployment's own arguments. The seed sample, created on
the local hub beforehand, becomes Ready through it. The figures go to
``.hmls-env/podman/figures.json``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import free_port
from hmls_devenv.image import IMAGE, Build, Podman

from hmls.kube.client import ClusterClient
from tests.helpers import (
    CONFIG_NAMESPACE,
    hmls_cli,
    kubectl,
    load_sample,
    one,
    render,
    service_account_credentials,
    wait_condition,
)

CONTAINER = "hmls-image-test"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
FIGURES: dict[str, float | int | str] = {}


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    podman = Podman()
    yield podman
    figures = podman.state / "figures.json"
    figures.write_text(json.dumps(FIGURES, indent=2))
    print(f"\n{figures}: {json.dumps(FIGURES)}")


@pytest.fixture(scope="module")
def builds(podman: Podman) -> tuple[Build, Build]:
    cold = podman.build(no_cache=True)
    cached = podman.build()
    FIGURES.update(image=IMAGE, size_mb=round(cold.size_bytes / 1e6),
                   base_size_mb=round(cold.base_size_bytes / 1e6),
                   base_made_s=round(cold.base_seconds, 1),
                   cold_build_s=round(cold.seconds, 1), cached_build_s=round(cached.seconds, 1))
    return cold, cached


def test_the_dockerfile_builds_and_a_rebuild_uses_the_cache(podman: Podman,
                                                             builds: tuple[Build, Build]) -> None:
    cold, cached = builds
    assert cached.image_id == cold.image_id  # nothing changed, every layer reused
    log = (podman.state / "build.log").read_text()
    assert log.count("Using cache") >= 8, log[-3000:]
    assert cached.seconds < cold.seconds / 2, (cold, cached)
    config = json.loads(podman.run("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["hmls"] and config["Cmd"] == ["controller"]


@pytest.fixture
def in_cluster(env: Environment, tmp_path: Path) -> list[str]:
    """config/default on the hub, and what a pod of its ServiceAccount is given: the token,
    CA and namespace files, the service host and port."""
    kubectl(env, "hub", "apply", "--server-side", "-f", "-",
            input=yaml.safe_dump_all(render("default")))
    token, server, ca = service_account_credentials(env, CONFIG_NAMESPACE, "hmls-controller")
    secrets = tmp_path / "serviceaccount"
    secrets.mkdir(mode=0o755)
    for name, text in (("token", token), ("ca.crt", base64.b64decode(ca).decode()),
                       ("namespace", CONFIG_NAMESPACE)):
        (secrets / name).write_text(text)
        (secrets / name).chmod(0o644)
    url = urlsplit(server)
    return ["--volume", f"{secrets}:{SA_DIR}:ro",
            "--env", f"KUBERNETES_SERVICE_HOST={url.hostname}",
            "--env", f"KUBERNETES_SERVICE_PORT={url.port}"]


def _deployment_args(port: int) -> list[str]:
    """The Deployment's container arguments, the metrics port moved off 8080 (host network)."""
    [container] = one(render("default"), "Deployment", "hmls-controller")[
        "spec"]["template"]["spec"]["containers"]
    return [f"0.0.0.0:{port}" if a == "0.0.0.0:8080" else a for a in container["args"]]


async def test_the_image_run_as_in_a_cluster_makes_the_seed_sample_ready(
        env: Environment, clients: dict[str, ClusterClient], podman: Podman,
        builds: tuple[Build, Build], in_cluster: list[str]) -> None:
    for spoke in env.spokes():  # the walkthrough's join: an identity minted on each spoke
        hmls_cli("cluster", "join", spoke, "--kubeconfig", str(env.kubeconfig("hub")),
                 "--cluster-kubeconfig", str(env.kubeconfig(spoke)))
    sample = load_sample()
    namespace, name = sample["metadata"]["namespace"], sample["metadata"]["name"]
    kubectl(env, "hub", "create", "namespace", namespace, check=False)
    kubectl(env, "hub", "create", "-f", "-", input=yaml.safe_dump(sample))
    podman.run("rm", "--force", CONTAINER)
    started = time.monotonic()
    podman.run("run", "--detach", "--name", CONTAINER, "--network=host",
               "--user=65532:65532", "--read-only", "--read-only-tmpfs=false",
               "--tmpfs=/tmp:rw,size=16m,mode=1777", "--cap-drop=ALL",
               "--security-opt=no-new-privileges", *in_cluster, IMAGE,
               *_deployment_args(free_port()))
    try:
        ready = await wait_condition(clients["hub"], namespace, name, "Ready", timeout=120)
        FIGURES["run_to_ready_s"] = round(time.monotonic() - started, 1)
        assert all(i["applied"] for i in ready["status"]["aggregatedStatus"]), ready["status"]

        def inside(code: str) -> str:
            res = podman.run("exec", CONTAINER, "python", "-c", code, check=False)
            return (res.stdout + res.stderr).strip()
        assert inside("import os; print(os.getuid(), os.getgid())") == "65532 65532"
        assert "Read-only file system" in inside("open('/opt/hmls/x', 'w')")
        assert inside("open('/tmp/x', 'w').write('ok'); print(open('/tmp/x').read())") == "ok"
    finally:
        podman.run("stop", "--time=30", CONTAINER, check=False)
        res = podman.run("logs", CONTAINER, check=False)
        logs = res.stdout + res.stderr
        code = podman.run("inspect", "--format", "{{.State.ExitCode}}", CONTAINER,
                          check=False).stdout.strip()
        podman.run("rm", "--force", CONTAINER, check=False)
    assert code == "0", logs[-3000:]  # SIGTERM: a clean stop
    assert "forbidden" not in logs.lower(), logs[-3000:]
    assert "released Lease hmls-system/hmls-controller" in logs, logs[-3000:]
