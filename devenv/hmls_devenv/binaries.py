"""Control-plane binaries (kube-apiserver, etcd), the tests' kstatus client and helm, built from
the Go module proxy.

The local environment needs real API servers, and the Go module proxy is the one
registry that serves their sources.  Each binary is built from a small wrapper Go module
under ``scripts/controlplane/<name>/`` (go.mod and go.sum are committed) into a cache
directory outside the repository, keyed by version, so a second run builds nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = REPO_ROOT / "scripts" / "controlplane"


class BuildError(RuntimeError):
    """A control-plane binary could not be built; the message says why and what to do."""


@dataclass(frozen=True)
class Binary:
    name: str
    version: str
    package: str
    ldflags: str

    @property
    def module_dir(self) -> Path:
        return SOURCES / self.name


KUBE_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"

KUBE_APISERVER = Binary(
    name="kube-apiserver",
    version=KUBE_VERSION,
    package="k8s.io/kubernetes/cmd/kube-apiserver",
    ldflags=(
        "-s -w"
        f" -X k8s.io/component-base/version.gitVersion={KUBE_VERSION}"
        " -X k8s.io/component-base/version.gitMajor=1"
        " -X k8s.io/component-base/version.gitMinor=34"
        " -X k8s.io/component-base/version.gitTreeState=clean"
    ),
)
ETCD = Binary(
    name="etcd",
    version=ETCD_VERSION,
    package="go.etcd.io/etcd/server/v3",
    ldflags="-s -w",
)
KSTATUS = Binary(  # a real kstatus client for the tests (wrapper main.go: stdin JSON -> verdict)
    name="kstatus",
    version="v0.37.2",  # sigs.k8s.io/cli-utils
    package="hmls.local/controlplane/kstatus",
    ldflags="-s -w",
)
# the chart's tests install the chart with a real helm
HELM_VERSION = "v4.3.2"
HELM = Binary(
    name="helm",
    version=HELM_VERSION,
    package="helm.sh/helm/v4/cmd/helm",
    ldflags=f"-s -w -X helm.sh/helm/v4/internal/version.version={HELM_VERSION}"
            " -X helm.sh/helm/v4/internal/version.gitTreeState=clean",
)
ALL = (ETCD, KUBE_APISERVER, KSTATUS, HELM)


@dataclass(frozen=True)
class ModuleFiles:
    """Files shipped inside a Go module (e.g. CRD YAML), fetched from the module proxy."""

    module: str
    version: str
    files: tuple[str, ...]


ISTIO_CRDS = ModuleFiles("istio.io/api", "v1.24.2",
                         ("kubernetes/customresourcedefinitions.gen.yaml",))
GATEWAY_API_CRDS = ModuleFiles("sigs.k8s.io/gateway-api", "v1.4.1", tuple(
    f"config/crd/standard/gateway.networking.k8s.io_{kind}.yaml"
    for kind in ("gatewayclasses", "gateways", "httproutes", "referencegrants")))


def module_files(spec: ModuleFiles) -> list[Path]:
    """Download (once; Go caches it) the module and return the requested files."""
    go = shutil.which("go")
    if go is None:
        raise BuildError(f"cannot fetch {spec.module}@{spec.version}: 'go' is not on PATH")
    with tempfile.TemporaryDirectory() as scratch:
        res = subprocess.run([go, "mod", "download", "-json", f"{spec.module}@{spec.version}"],
                             cwd=scratch, capture_output=True, text=True, check=False,
                             env={**os.environ, "GOFLAGS": "-mod=mod"})
    try:
        info = json.loads(res.stdout)
    except ValueError:
        info = {}
    if res.returncode != 0 or "Dir" not in info:
        raise BuildError(f"go mod download {spec.module}@{spec.version} failed: "
                         f"{info.get('Error') or res.stderr.strip()}")
    paths = [Path(info["Dir"]) / f for f in spec.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise BuildError(f"{spec.module}@{spec.version} does not contain {', '.join(missing)}")
    return paths


def cache_dir() -> Path:
    """Where built binaries live: ``$HMLS_CACHE_DIR`` or ``~/.cache/hmls/bin``."""
    env = os.environ.get("HMLS_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "hmls" / "bin"


def cached_path(binary: Binary) -> Path:
    return cache_dir() / f"{binary.name}-{binary.version}"


def ensure(binary: Binary, *, log: TextIO = sys.stderr) -> Path:
    """Return the cached binary, building it first if it is not there yet."""
    target = cached_path(binary)
    if target.is_file() and os.access(target, os.X_OK):
        return target
    _build(binary, target, log)
    return target


def ensure_all() -> dict[str, Path]:
    return {b.name: ensure(b) for b in ALL}


def _say(log: TextIO, text: str) -> None:
    print(f"[hmls build] {text}", file=log, flush=True)


def _build(binary: Binary, target: Path, log: TextIO) -> None:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            f"cannot build {binary.name} {binary.version}: the 'go' command is not on PATH. "
            "Install Go >= 1.24 (https://go.dev/dl) or put a prebuilt binary at "
            f"{target}."
        )
    if not (binary.module_dir / "go.mod").is_file():
        raise BuildError(f"wrapper module {binary.module_dir} is missing (run from a checkout)")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    cmd = [
        go, "build", "-v", "-trimpath", "-o", str(partial),
        "-ldflags", binary.ldflags, binary.package,
    ]
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false"}
    _say(log, f"building {binary.name} {binary.version} from the Go module proxy into "
              f"{target} (first run only; several minutes on 2 cores)")
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=binary.module_dir, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    tail: list[str] = []
    compiled = [0]
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(30):
            _say(log, f"  {binary.name}: {compiled[0]} packages compiled, "
                      f"{time.monotonic() - started:.0f}s elapsed")

    ticker = threading.Thread(target=heartbeat, daemon=True)
    ticker.start()
    try:
        for line in proc.stdout:
            compiled[0] += 1
            tail = [*tail[-30:], line.rstrip()]
        code = proc.wait()
    finally:
        stop.set()
    if code != 0:
        partial.unlink(missing_ok=True)
        hint = ""
        text = "\n".join(tail)
        if "proxy" in text or "dial tcp" in text or "no such host" in text:
            hint = "\nThe Go module proxy could not be reached (check GOPROXY and the network)."
        raise BuildError(
            f"go build of {binary.name} {binary.version} failed (exit {code}):\n{text}{hint}"
        )
    partial.chmod(0o755)
    partial.replace(target)
    _say(log, f"built {binary.name} {binary.version} in {time.monotonic() - started:.0f}s")
