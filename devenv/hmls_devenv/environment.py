"""The embedded local environment: real kube-apiservers for a hub, spokes and an ingress
cluster, sharing one etcd (a distinct ``--etcd-prefix`` each), plus the MLService simulator.

``up`` leaves every process running in the background and records pids, ports and log
files in ``DIR/state.json``; ``down`` stops exactly those processes.  Tests use the same
code with ``die_with_parent=True`` so that a crashed test run leaves no orphans.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from hmls_devenv import binaries
from hmls_devenv.pki import CertificateAuthority, KeyPair, service_account_keys

MANIFESTS = binaries.REPO_ROOT / "manifests"
STATE_FILE = "state.json"
READY_TIMEOUT = 180.0
CRD_TIMEOUT = 120.0
"""How long installed CRDs may take to be Established (served)."""


class DevEnvError(RuntimeError):
    """The local environment could not be started or used; the message says why."""


@dataclass
class ClusterState:
    name: str
    role: str
    port: int
    pid: int = 0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@dataclass
class State:
    etcd_port: int
    etcd_peer_port: int
    etcd_pid: int = 0
    simulator_pid: int = 0
    simulator_metrics_port: int = 0
    """Where the MLService simulator serves its simulated requests' metrics."""
    cluster_domain: str = "{cluster}.t9kcloud.cn"
    audit: bool = False
    """The hub's API server writes an audit log of Lease and HyperMLService status writes."""
    memory_limits: dict[str, str] = field(default_factory=dict)
    """role -> the Go soft memory limit (GOMEMLIMIT, e.g. "700MiB") of its API servers."""
    clusters: dict[str, ClusterState] = field(default_factory=dict)
    extras: dict[str, int] = field(default_factory=dict)
    """Other background processes started with ``start_process`` (e.g. the demo's controller)."""

    @classmethod
    def load(cls, path: Path) -> State:
        raw = json.loads(path.read_text())
        clusters = {k: ClusterState(**v) for k, v in raw.pop("clusters").items()}
        return cls(**raw, clusters=clusters)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def set_pdeathsig() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _alive(pid: int, marker: str) -> bool:
    """True if pid runs and its command line mentions marker (guards against pid reuse)."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return marker in cmdline and stat.split(") ", 1)[-1][:1] != "Z"


def _stop_pid(pid: int, marker: str, *, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after timeout; returns only once the process is gone."""
    if not _alive(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid, marker):
        time.sleep(0.1)
    if _alive(pid, marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _alive(pid, marker):  # SIGKILL is delivered asynchronously
            time.sleep(0.05)
    # reap if it is our child; harmless otherwise
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


class Environment:
    """Handle on one local environment rooted at ``directory``."""

    def __init__(self, directory: Path, *, die_with_parent: bool = False,
                 log: Callable[[str], None] | None = None) -> None:
        self.dir = directory.resolve()
        self.die_with_parent = die_with_parent
        self._log = log or (lambda text: print(f"[hmls dev] {text}", file=sys.stderr, flush=True))
        self._marker = str(self.dir)
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ----- paths -------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    def kubeconfig(self, cluster: str) -> Path:
        return self.dir / f"{cluster}.kubeconfig"

    def log_path(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    @property
    def audit_log(self) -> Path:
        return self.dir / "logs" / "hub-audit.log"

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def simulator_metrics_url(self) -> str:
        """The MLService simulator's Prometheus endpoint (mlservice_requests_total, ...)."""
        return f"http://127.0.0.1:{self.state().simulator_metrics_port}/metrics"

    def state(self) -> State:
        if not self.state_path.exists():
            raise DevEnvError(f"no environment in {self.dir} (run: hmls dev up --dir {self.dir})")
        return State.load(self.state_path)

    def spokes(self) -> list[str]:
        return [c.name for c in self.state().clusters.values() if c.role == "spoke"]

    def running(self) -> bool:
        if not self.state_path.exists():
            return False
        st = self.state()
        pids = [st.etcd_pid, st.simulator_pid, *(c.pid for c in st.clusters.values())]
        return all(_alive(p, self._marker) for p in pids)

    # ----- lifecycle ---------------------------------------------------------------
    def up(self, *, spokes: int = 2, cluster_domain: str = "{cluster}.t9kcloud.cn",
           audit: bool = False, memory_limits: Mapping[str, str] | None = None) -> State:
        """audit: the hub's API server logs every Lease write (with its body) and every
        HyperMLService status write (who, when: the user agent names the replica) to
        ``audit_log`` (the soak's one-writer check reads it).

        memory_limits: role ("hub", "spoke", "ingress") -> GOMEMLIMIT of its API servers.  Go
        lets a heap grow to twice what is live before it collects; 18 API servers holding
        490,000 objects (the 10,000 x 16 benchmark) outgrew 23.5 GiB that way."""
        if self.state_path.exists():
            if self.running():
                self._log(f"environment in {self.dir} is already running; nothing to do")
                return self.state()
            self._log(f"environment in {self.dir} is partly stopped; restarting it from scratch")
            self.down()
        started = time.monotonic()
        tools = binaries.ensure_all()
        if shutil.which("kubectl") is None:
            raise DevEnvError("kubectl is not on PATH; it installs the CRDs")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        self.audit_log.unlink(missing_ok=True)  # a new environment, a new audit trail
        names = ["hub", *(f"spoke{i}" for i in range(1, spokes + 1)), "ingress"]
        st = State(etcd_port=free_port(), etcd_peer_port=free_port(),
                   simulator_metrics_port=free_port(), cluster_domain=cluster_domain,
                   audit=audit, memory_limits=dict(memory_limits or {}))
        for name in names:
            role = name if name in ("hub", "ingress") else "spoke"
            st.clusters[name] = ClusterState(name=name, role=role, port=free_port())
        st.save(self.state_path)
        try:
            self._make_pki(names)
            st.etcd_pid = self._start_etcd(tools["etcd"], st)
            st.save(self.state_path)
            self._wait_etcd(st)
            for c in st.clusters.values():
                c.pid = self._start_apiserver(tools["kube-apiserver"], st, c)
                st.save(self.state_path)
            for c in st.clusters.values():
                self._wait_ready(c)
                self._write_kubeconfig(c)
            for c in st.clusters.values():
                self._install_crds(c)
            st.simulator_pid = self._start_simulator()
            st.save(self.state_path)
            self._wait_simulator(st)
        except BaseException:
            self.down()
            raise
        self._log(f"environment up in {time.monotonic() - started:.1f}s: {', '.join(names)}")
        return st

    def down(self) -> None:
        if not self.state_path.exists():
            self._log(f"no environment recorded in {self.dir}; nothing to stop")
            return
        st = self.state()
        # SIGTERM to all but etcd at once, so they shut down side by side; etcd goes last
        servers = [*st.extras.values(), st.simulator_pid, *(c.pid for c in st.clusters.values())]
        for pid in servers:
            if _alive(pid, self._marker):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for pid in [*servers, st.etcd_pid]:
            _stop_pid(pid, self._marker)
        for child in self._children.values():
            with contextlib.suppress(Exception):
                child.wait(timeout=1)
        self._children.clear()
        self.state_path.unlink(missing_ok=True)
        shutil.rmtree(self.dir / "etcd-data", ignore_errors=True)
        self._log(f"environment in {self.dir} stopped")

    def stop_cluster(self, name: str) -> None:
        """Stop one API server (fault tests); its port and certificates are kept."""
        st = self.state()
        _stop_pid(st.clusters[name].pid, self._marker)

    def kill_cluster(self, name: str) -> None:
        st = self.state()
        pid = st.clusters[name].pid
        if _alive(pid, self._marker):
            os.kill(pid, signal.SIGKILL)
        _stop_pid(pid, self._marker)

    def heal(self) -> list[str]:
        """Restart etcd and any API server that is not running (after a fault test); the
        names of those restarted."""
        restarted = []
        if not _alive(self.state().etcd_pid, self._marker):
            self.start_etcd()
            restarted.append("etcd")
        for c in self.state().clusters.values():
            if not _alive(c.pid, self._marker):
                self.start_cluster(c.name)
                restarted.append(c.name)
        return restarted

    def kill_etcd(self) -> None:
        """SIGKILL the shared etcd (every API server loses its storage until start_etcd)."""
        pid = self.state().etcd_pid
        if _alive(pid, self._marker):
            os.kill(pid, signal.SIGKILL)
        _stop_pid(pid, self._marker)

    def start_etcd(self) -> None:
        st = self.state()
        if not _alive(st.etcd_pid, self._marker):
            st.etcd_pid = self._start_etcd(binaries.ensure(binaries.ETCD), st)
            st.save(self.state_path)
        self._wait_etcd(st)

    def start_cluster(self, name: str) -> None:
        st = self.state()
        c = st.clusters[name]
        if not _alive(c.pid, self._marker):
            c.pid = self._start_apiserver(binaries.ensure(binaries.KUBE_APISERVER), st, c)
            st.save(self.state_path)
        self._wait_ready(c)

    def start_process(self, name: str, argv: list[str]) -> int:
        """Run another process in the background, logged and stopped with the environment.

        argv must mention the environment's directory (e.g. a kubeconfig path in it)."""
        if not any(self._marker in a for a in argv):
            raise DevEnvError(f"{name}: argv must mention {self.dir} so 'down' can find it")
        st = self.state()
        old = st.extras.get(name)
        if old:
            _stop_pid(old, self._marker)
        st.extras[name] = self._spawn(name, argv)
        st.save(self.state_path)
        return st.extras[name]

    # ----- pieces ------------------------------------------------------------------
    def stop_process(self, pid: int, sig: int = signal.SIGTERM, *, timeout: float = 20.0
                     ) -> int | None:
        """Send sig to a process ``start_process`` started and wait for it to end (SIGKILL
        after timeout): its exit code (negative: the signal that ended it; the code it had if
        it had already ended); None if it is not a child of this handle."""
        child = self._children.pop(pid, None)
        if child is None:
            return None
        if child.poll() is not None:
            return child.returncode
        child.send_signal(sig)
        try:
            return child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait(timeout=10)

    def _spawn(self, name: str, argv: list[str], *, env: Mapping[str, str] | None = None) -> int:
        logf = self.log_path(name).open("ab")
        proc = subprocess.Popen(
            argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.dir, start_new_session=True, env={**os.environ, **(env or {})},
            preexec_fn=set_pdeathsig if self.die_with_parent else None,
        )
        logf.close()
        self._children[proc.pid] = proc
        return proc.pid

    def exited(self, pid: int) -> bool:
        """True if the process is gone.  A child of ours is asked directly: between fork and
        exec its command line is still ours, so the marker check would be wrong."""
        child = self._children.get(pid)
        if child is not None:
            return child.poll() is not None
        return not _alive(pid, self._marker)

    def _make_pki(self, names: list[str]) -> None:
        ca = CertificateAuthority.create(self.pki)
        service_account_keys(self.pki)
        for name in names:
            ca.serving(KeyPair(self.pki / name / "serving.crt", self.pki / name / "serving.key"))
        ca.client(KeyPair(self.pki / "admin.crt", self.pki / "admin.key"),
                  user="hmls-admin", groups=("system:masters",))

    def _start_etcd(self, binary: Path, st: State) -> int:
        data = self.dir / "etcd-data"
        peer = f"http://127.0.0.1:{st.etcd_peer_port}"
        client = f"http://127.0.0.1:{st.etcd_port}"
        return self._spawn("etcd", [
            str(binary), "--name", "hmls-dev", "--data-dir", str(data),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"hmls-dev={peer}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])

    def _wait_etcd(self, st: State) -> None:
        url = f"http://127.0.0.1:{st.etcd_port}/health"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
                if b'"true"' in resp.read():
                    return
            if self.exited(st.etcd_pid):
                break
            time.sleep(0.2)
        raise DevEnvError(f"etcd did not become healthy; see {self.log_path('etcd')}")

    def _start_apiserver(self, binary: Path, st: State, c: ClusterState) -> int:
        pki = self.pki
        limit = st.memory_limits.get(c.role)
        return self._spawn(c.name, env={"GOMEMLIMIT": limit} if limit else None, argv=[
            str(binary),
            f"--etcd-servers=http://127.0.0.1:{st.etcd_port}",
            f"--etcd-prefix=/hmls/{c.name}",
            f"--cert-dir={self.dir / c.name}",
            f"--tls-cert-file={pki / c.name / 'serving.crt'}",
            f"--tls-private-key-file={pki / c.name / 'serving.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--secure-port={c.port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            "--service-cluster-ip-range=10.96.0.0/16",
            f"--service-account-issuer=https://{c.name}.hmls.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--endpoint-reconciler-type=none",
            # as on usual clusters: privileged Pods are a matter for admission and policy, so
            # the tests that hmls refuses them can fail
            "--allow-privileged=true",
            "--v=1",
            *(self._audit_flags() if st.audit and c.role == "hub" else []),
        ])

    def _audit_flags(self) -> list[str]:
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [
                {"level": "Request", "verbs": ["create", "update"], "namespaces": ["hmls-system"],
                 "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}]},
                {"level": "Metadata", "verbs": ["patch", "update"],
                 "resources": [{"group": "tensorstack.dev",
                                "resources": ["hypermlservices/status"]}]},
                {"level": "None"}]}))
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json", "--audit-log-mode=blocking"]

    def admin_tls(self) -> ssl.SSLContext:
        """TLS with the environment's CA and its admin client certificate (system:masters)."""
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _wait_ready(self, c: ClusterState) -> None:
        ctx = self.admin_tls()
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{c.server}/readyz", context=ctx, timeout=3) as r:
                    if r.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            if self.exited(c.pid):
                raise DevEnvError(
                    f"kube-apiserver for {c.name} exited; see {self.log_path(c.name)}")
            time.sleep(0.25)
        raise DevEnvError(
            f"kube-apiserver for {c.name} not ready after {READY_TIMEOUT:.0f}s ({last}); "
            f"see {self.log_path(c.name)}")

    def _write_kubeconfig(self, c: ClusterState) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": c.name, "cluster": {
                "server": c.server, "certificate-authority-data": b64(self.pki / "ca.crt")}}],
            "users": [{"name": f"{c.name}-admin", "user": {
                "client-certificate-data": b64(self.pki / "admin.crt"),
                "client-key-data": b64(self.pki / "admin.key")}}],
            "contexts": [{"name": c.name, "context": {
                "cluster": c.name, "user": f"{c.name}-admin"}}],
            "current-context": c.name,
        }
        path = self.kubeconfig(c.name)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        path.chmod(0o600)

    def _install_crds(self, c: ClusterState) -> None:
        """hmls' own CRDs from manifests/; on the ingress cluster the real Istio and Gateway
        API CRDs, taken from their Go modules (istio.io/api, sigs.k8s.io/gateway-api)."""
        if c.role == "ingress":
            files = [arg for m in (binaries.ISTIO_CRDS, binaries.GATEWAY_API_CRDS)
                     for p in binaries.module_files(m) for arg in ("-f", str(p))]
        elif (MANIFESTS / c.role / "kustomization.yaml").exists():  # the hub's, as config/crd
            files = ["-k", str(MANIFESTS / c.role)]
        else:
            files = ["-f", str(MANIFESTS / c.role)]
        kc = str(self.kubeconfig(c.name))
        res = subprocess.run(["kubectl", "--kubeconfig", kc, "apply", "--server-side", *files],
                             capture_output=True, text=True, check=False)
        # only the CRDs just installed are there.  Polled rather than `kubectl wait`, which
        # fails outright on a CRD whose status the API server has not written yet: on a busy
        # machine its establishing controller took over 25 s
        deadline = time.monotonic() + CRD_TIMEOUT
        while res.returncode == 0:
            res = subprocess.run(["kubectl", "--kubeconfig", kc, "get", "crd", "-o", "json"],
                                 capture_output=True, text=True, check=False)
            if res.returncode != 0:
                break
            waiting = [crd["metadata"]["name"] for crd in json.loads(res.stdout)["items"]
                       if not any(cond.get("type") == "Established" and cond.get("status") == "True"
                                  for cond in (crd.get("status") or {}).get("conditions") or [])]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise DevEnvError(f"CRDs on {c.name} not Established after {CRD_TIMEOUT:.0f} s: "
                                  f"{', '.join(waiting)}")
            time.sleep(0.2)
        raise DevEnvError(f"installing CRDs on {c.name} failed: {' '.join(res.args)}\n"
                          f"{res.stderr}")

    def _start_simulator(self) -> int:
        return self._spawn("simulator", [
            sys.executable, "-m", "hmls_devenv", "simulate", "--dir", str(self.dir)])

    def _wait_simulator(self, st: State) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    self.simulator_metrics_url, timeout=2):
                return
            if self.exited(st.simulator_pid):
                break
            time.sleep(0.1)
        raise DevEnvError(f"the MLService simulator does not serve {self.simulator_metrics_url}; "
                          f"see {self.log_path('simulator')}")


@contextlib.contextmanager
def running(directory: Path, *, spokes: int = 2, audit: bool = False) -> Iterator[Environment]:
    """Start an environment that dies with this process, and stop it on exit."""
    env = Environment(directory, die_with_parent=True)
    env.down()
    env.up(spokes=spokes, audit=audit)
    try:
        yield env
    finally:
        env.down()
