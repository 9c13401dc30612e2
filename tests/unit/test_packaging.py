"""What ``pip install hmls`` gets: the wheel carries the controller's package and nothing of
the local environment (clusters, simulator, proxy, image build: the ``hmls_devenv`` package
in devenv/), no dev dependency, and ``hmls dev`` in it tells its user where the environment is."""

from __future__ import annotations

import email
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # the machine's setuptools, no download: the build is offline
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    (path,) = out.glob("hmls-*.whl")
    return path


def test_the_wheel_carries_the_product_package_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert packages == {"hmls"}, packages
    modules = {n for n in names if n.endswith(".py")}
    sources = {str(p.relative_to(REPO)) for p in (REPO / "hmls").rglob("*.py")}
    assert modules == sources, modules ^ sources
    for forbidden in ("devenv", "simulator", "proxy", "bench", "soak", "pki"):
        assert not [n for n in names if forbidden in n], forbidden


def test_the_wheel_declares_no_dev_dependency(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        (points,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        message = email.message_from_bytes(zf.read(meta))
        entry_points = zf.read(points).decode()
    requires = [r for r in message.get_all("Requires-Dist") or [] if "extra ==" not in r]
    names = {r.split(">")[0].split("=")[0].split("<")[0].strip() for r in requires}
    assert names == {"kubernetes-asyncio", "pydantic", "pyyaml", "tenacity", "prometheus-client",
                     "aiohttp"}, names
    assert "hmls = hmls.cli:main" in entry_points and "kubectl-hmls" in entry_points


def test_hmls_dev_from_the_wheel_says_where_the_environment_is(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path)
    # the wheel's files first on the path; hmls_devenv and cryptography made unimportable, as
    # they are where only the wheel is installed
    code = ("import sys; sys.modules['hmls_devenv'] = None; sys.modules['cryptography'] = None; "
            "import hmls; assert hmls.__file__.startswith(sys.argv[1]), hmls.__file__; "
            "import hmls.engine.manager, hmls.commands.cluster, hmls.commands.diff; "
            "from hmls.cli import main; sys.exit(main(['dev', 'up', '--dir', '/nonexistent']))")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=False, cwd=tmp_path, timeout=60,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 1, res.stderr
    assert "not part of the hmls package" in res.stderr and "make deps" in res.stderr, res.stderr


def test_hmls_dev_in_a_checkout_hands_over_to_the_environment() -> None:
    res = subprocess.run([sys.executable, "-m", "hmls", "dev", "down", "--dir", "/nonexistent"],
                         capture_output=True, text=True, check=False, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "nothing to stop" in res.stderr, res.stderr
    res = subprocess.run([sys.executable, "-m", "hmls", "dev", "-h"], capture_output=True,
                         text=True, check=False, cwd=REPO, timeout=60)
    assert res.returncode == 0 and "simulate" in res.stdout, res.stdout + res.stderr
