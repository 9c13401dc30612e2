"""The controller image, built on this machine from the unmodified Dockerfile, with no Docker
daemon and nothing written outside the project.

Debian's podman (runtime runc, cgroup manager cgroupfs) builds it. Its configuration and
storage live in a folder of the project's (``.hmls-env/podman``: containers.conf,
storage.conf, registries.conf, the overlay storage), handed to podman through
``CONTAINERS_CONF``, ``CONTAINERS_STORAGE_CONF`` and ``CONTAINERS_REGISTRIES_CONF``. The
Dockerfile's base, ``python:3.11-slim``, is not pulled from a registry: a Debian bookworm root
filesystem with python3 made by mmdebstrap stands in for it, imported under that name
(``podman build --pull=never`` then finds it locally). Build steps run with the host's
network and the host's CA bundle mounted, so pip works behind a TLS-intercepting proxy.

    python -m hmls_devenv.image build [--no-cache]      (make image)

tests/image/ runs the image as it runs in a cluster (make image-test).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hmls import __version__
from hmls_devenv.binaries import REPO_ROOT

IMAGE = f"ghcr.io/tensorstack/hmls:{__version__}"
BASE = "docker.io/library/python:3.11-slim"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# what the Dockerfile needs of its base: `python` (python-is-python3) with venv and pip
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3")
# documentation and translations are left out, as the slim images leave them out
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                 "/usr/share/locale/*", "/usr/share/lintian/*")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_STATE = REPO_ROOT / ".hmls-env" / "podman"
TOOLS = ("podman", "runc", "mmdebstrap")  # Debian packages and commands alike


class ImageError(RuntimeError):
    """The image could not be built or run; the message says why and what to do."""


@dataclass(frozen=True)
class Build:
    """What one build took: seconds (the base's included when it was made), the image's id
    and size in bytes, and whether the layer cache was used."""

    image: str
    image_id: str
    size_bytes: int
    seconds: float
    base_seconds: float
    base_size_bytes: int
    cached: bool


class Podman:
    """podman with its configuration and storage under ``state`` (nothing in /etc or /var)."""

    def __init__(self, state: Path = DEFAULT_STATE) -> None:
        self.state = state.resolve()

    def env(self) -> dict[str, str]:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise ImageError(f"{', '.join(missing)} not on PATH: apt-get install -y "
                             f"{' '.join(TOOLS)} (Debian's packages; .ci/run installs them)")
        self._configure()
        return {**os.environ,
                "CONTAINERS_CONF": str(self.state / "containers.conf"),
                "CONTAINERS_STORAGE_CONF": str(self.state / "storage.conf"),
                "CONTAINERS_REGISTRIES_CONF": str(self.state / "registries.conf"),
                "TMPDIR": str(self.state / "tmp")}

    def _configure(self) -> None:
        for sub in ("tmp", "networks"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        # podman's default ulimits (nofile 1048576) exceed a sandbox's hard limits, and runc
        # may not raise a limit without CAP_SYS_RESOURCE (it failed here even at the hard
        # limit itself): a build and the controller need far fewer than 4096 of either
        ulimits = ", ".join(f'"{name}={limit}:{limit}"' for name, limit in (
            ("nofile", _modest(resource.RLIMIT_NOFILE)), ("nproc", _modest(resource.RLIMIT_NPROC))))
        files = {
            "containers.conf": f"""\
[containers]
default_ulimits = [{ulimits}]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{self.state}/events.log"
tmp_dir = "{self.state}/run/libpod"
[network]
network_config_dir = "{self.state}/networks"
""",
            "storage.conf": f"""\
[storage]
driver = "overlay"
graphroot = "{self.state}/storage"
runroot = "{self.state}/run"
""",
            # only local images are used (--pull=never); short names mean docker.io
            "registries.conf": 'unqualified-search-registries = ["docker.io"]\n',
        }
        for name, text in files.items():
            path = self.state / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)

    def run(self, *args: str, check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["podman", *args], env=self.env(), capture_output=True, text=True,
                             check=False, timeout=timeout)
        if check and res.returncode != 0:
            raise ImageError(f"podman {' '.join(args)} failed (exit {res.returncode}): "
                             f"{res.stderr.strip()[-3000:]}")
        return res

    def exists(self, ref: str) -> bool:
        return self.run("image", "exists", ref, check=False).returncode == 0

    def size(self, ref: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())

    def ensure_base(self, log: Path) -> float:
        """Make the stand-in for python:3.11-slim unless it exists; the seconds it took."""
        if self.exists(BASE):
            return 0.0
        started = time.monotonic()
        rootfs = self.state / "base.tar"
        cmd = ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
               *(f"--dpkgopt=path-exclude={p}" for p in DPKG_EXCLUDES),
               "--format=tar", SUITE, str(rootfs), MIRROR]
        _logged(cmd, log, env=self.env(), timeout=1800)
        self.run("import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]',
                 str(rootfs), BASE, timeout=600)
        rootfs.unlink()
        return time.monotonic() - started

    def build(self, *, no_cache: bool = False) -> Build:
        log = self.state / "build.log"
        self.state.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        base_seconds = self.ensure_base(log)
        mounts = ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"] \
            if HOST_CA_BUNDLE.is_file() else []
        if no_cache:  # the old image and its layers (the cache) go: storage stays bounded
            self.run("image", "rm", "--ignore", IMAGE)
            self.run("image", "prune", "--force")
        started = time.monotonic()
        _logged(["podman", "build", "--pull=never", "--network=host", *mounts,
                 *(["--no-cache"] if no_cache else []), "--tag", IMAGE, str(REPO_ROOT)],
                log, env=self.env(), timeout=1800)
        seconds = time.monotonic() - started
        image_id = self.run("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
        return Build(image=IMAGE, image_id=image_id, size_bytes=self.size(IMAGE),
                     seconds=seconds + base_seconds, base_seconds=base_seconds,
                     base_size_bytes=self.size(BASE), cached=not no_cache)


def _modest(which: int) -> int:
    """4096, or half this process's hard limit when that is lower."""
    hard = resource.getrlimit(which)[1]
    return 4096 if hard == resource.RLIM_INFINITY else min(4096, hard // 2)


def _logged(cmd: list[str], log: Path, *, env: dict[str, str], timeout: float) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        res = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False,
                             timeout=timeout)
    if res.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise ImageError(f"{cmd[0]} {cmd[1]} failed (exit {res.returncode}); the end of {log}:\n"
                         f"{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hmls_devenv.image",
                                     description="build the controller image with podman")
    sub = parser.add_subparsers(dest="verb", required=True)
    build = sub.add_parser("build", help=f"build {IMAGE} from the Dockerfile")
    build.add_argument("--no-cache", action="store_true",
                       help="drop the image and its cached layers, then build every layer")
    build.add_argument("--state", type=Path, default=DEFAULT_STATE,
                       help="podman's configuration and storage (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        result = Podman(args.state).build(no_cache=args.no_cache)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
