"""Shared fixtures: one real local environment per test session (etcd + kube-apiservers for
hub, spoke1, spoke2 and ingress, plus the MLService simulator), the spokes joined to the hub,
and one hmls controller process that tests can stop and restart."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hmls_devenv import binaries
from hmls_devenv.environment import Environment, _set_pdeathsig, running

from hmls.domain.kubeconfig import vet
from hmls.kube.client import ClusterClient

REPO = Path(__file__).resolve().parents[1]
ENV_DIR = Path(os.environ.get("HMLS_TEST_ENV_DIR", REPO / ".hmls-env" / "pytest"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def env() -> Iterator[Environment]:
    with running(ENV_DIR, spokes=2, audit=True) as environment:  # Lease terms and writers
        yield environment


@pytest.fixture(autouse=True)
def _all_clusters_up(request: pytest.FixtureRequest) -> None:
    """A fault test that could not restart an API server must not fail every later test."""
    if "env" in request.fixturenames:
        restarted = request.getfixturevalue("env").heal()
        if restarted:
            print(f"restarted API servers left down by an earlier test: {restarted}")


def kubectl(env: Environment, cluster: str, *args: str, input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["kubectl", "--kubeconfig", str(env.kubeconfig(cluster)), *args],
                         input=input, capture_output=True, text=True, check=False, timeout=60)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {res.stderr}")
    return res


def kstatus(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) that kstatus' own rules (sigs.k8s.io/cli-utils status.Compute, as
    Flux, Argo CD and kpt read objects) give obj: status is Current, InProgress, Failed,
    Terminating or Unknown (what Compute cannot read is Unknown with its error)."""
    res = subprocess.run([str(binaries.ensure(binaries.KSTATUS))], input=json.dumps(obj),
                         capture_output=True, text=True, check=False, timeout=30)
    if res.returncode != 0:
        raise AssertionError(f"kstatus failed on {obj.get('kind')}: {res.stderr}")
    out = json.loads(res.stdout)
    return out["status"], out["message"]


def hmls_cli(*args: str, check: bool = True, input: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    """``hmls ARGS`` (``input``: its standard input, as ``-f -`` reads it)."""
    res = subprocess.run([sys.executable, "-m", "hmls", *args], input=input,
                         capture_output=True, text=True, check=False, timeout=60)
    if check and res.returncode != 0:
        raise AssertionError(f"hmls {' '.join(args)} failed: {res.stderr}")
    return res


@pytest.fixture(scope="session")
async def clients(env: Environment) -> AsyncIterator[dict[str, ClusterClient]]:
    out = {}
    for name in env.state().clusters:
        out[name] = await ClusterClient.from_kubeconfig(
            name, vet(env.kubeconfig(name).read_bytes()))
    yield out
    for c in out.values():
        await c.close()


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0,
                     interval: float = 0.1, what: str = "condition") -> Any:
    """Poll until check() returns a truthy value; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http_ok(proc: subprocess.Popen[bytes], url: str, log: Path, *, timeout: float) -> None:
    """Wait until url answers 200; fail with the log's tail if proc exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout}s: {log.read_text()[-3000:]}")


class Controller:
    """An ``hmls controller`` subprocess against the session's hub."""

    def __init__(self, env: Environment, port: int, *extra: str) -> None:
        self.env, self.port, self.extra = env, port, extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = env.log_path(f"controller-{port}")

    def start(self, *, wait: bool = True) -> None:
        """Spawn; with ``wait``, return once /readyz answers (else call ``wait_ready``)."""
        assert self.proc is None
        logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hmls", "controller",
             "--kubeconfig", str(self.env.kubeconfig("hub")),
             "--metrics-bind-address", f"127.0.0.1:{self.port}",
             "--probe-interval", "1", *self.extra],
            stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        assert self.proc is not None
        wait_http_ok(self.proc, f"http://127.0.0.1:{self.port}/readyz", self.log, timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=20)
        self.proc = None
        return code

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def metrics(self) -> dict[str, float]:
        """Current samples as {'name{labels}': value}."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out


class Prometheus:
    """A real Prometheus (Debian's /usr/bin/prometheus) with its own config, storage and port,
    scraping every second and evaluating rules every second; it dies with the tests.

    ``scrape`` maps a job name to the metrics URL it scrapes (e.g. ``Controller.metrics_url``,
    ``Environment.simulator_metrics_url``); ``rules`` are rule files to load.  Use it as a
    context manager (started on entry, stopped on exit)."""

    def __init__(self, workdir: Path, scrape: dict[str, str], *, rules: Sequence[Path] = ()) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).is_file():
            pytest.fail("prometheus is not installed: install Debian's `prometheus` package "
                        "(apt-get install -y prometheus); .ci/run installs it in CI")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self.config = workdir / "prometheus.yml"
        jobs = []
        for job, url in scrape.items():
            parts = urllib.parse.urlsplit(url)
            jobs.append({"job_name": job, "scheme": parts.scheme, "metrics_path": parts.path,
                         "static_configs": [{"targets": [parts.netloc]}]})
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(r) for r in rules],
            "scrape_configs": jobs,
        }))
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        with self.log.open("wb") as logf:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_set_pdeathsig)
        try:
            wait_http_ok(self.proc, f"{self.url}/-/ready", self.log, timeout=60)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def api(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The single sample of an instant query, or None when it has no result."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


AS_IS = ("--kubeconfig-as-is", "--trust-hub-namespaces")
"""How the session's clusters are joined: the admin kubeconfig stored, trusted mode (tests of
the minted identity and of tenant mode join clusters of their own)."""


@pytest.fixture(scope="session")
def joined(env: Environment) -> list[str]:
    spokes = env.spokes()
    for name in spokes:
        hmls_cli("cluster", "join", name, "--kubeconfig", str(env.kubeconfig("hub")),
                 "--cluster-kubeconfig", str(env.kubeconfig(name)), *AS_IS)
    return spokes


@pytest.fixture(scope="session")
def slo_prometheus(env: Environment, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Prometheus]:
    """The operator's Prometheus of the session: it scrapes the MLService simulator's request
    metrics, and the session's controller queries it for rollout analysis."""
    with Prometheus(tmp_path_factory.mktemp("slo-prometheus"),
                    {"mlservice-simulator": env.simulator_metrics_url}) as prom:
        yield prom


@pytest.fixture(scope="session")
def controller(env: Environment, joined: list[str], slo_prometheus: Prometheus
               ) -> Iterator[Controller]:
    ctl = Controller(env, free_port(), "--prometheus-url", slo_prometheus.url)
    ctl.start()
    yield ctl
    if ctl.proc is not None:
        ctl.stop()


def load_sample(namespace: str | None = None) -> dict[str, Any]:
    """The seed's hmls-sample (a fresh copy), moved with its manifests to namespace if given."""
    data: dict[str, Any] = yaml.safe_load((REPO / "config" / "samples" / "hmls-sample.yaml").read_text())
    if namespace:
        data["metadata"]["namespace"] = namespace
        for m in data["spec"]["workloads"][0]["manifests"]:
            m["metadata"]["namespace"] = namespace
    return data


@pytest.fixture(scope="session")
def ingress(env: Environment, joined: list[str]) -> str:
    hmls_cli("cluster", "join", "ingress", "--kubeconfig", str(env.kubeconfig("hub")),
             "--cluster-kubeconfig", str(env.kubeconfig("ingress")), *AS_IS, check=False)
    return "ingress"
