"""The installed package carries only what the controller needs: the local environment's
tooling (cryptography for its PKI) is the ``dev`` extra, and every package the product code
imports directly is declared."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _project() -> dict[str, object]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project: dict[str, object] = data["project"]
    return project


def test_cryptography_is_only_in_the_dev_extra() -> None:
    project = _project()
    deps = " ".join(project["dependencies"])  # type: ignore[arg-type]
    assert "cryptography" not in deps and "aiohttp" in deps
    assert any("cryptography" in d for d in project["optional-dependencies"]["dev"])  # type: ignore[index]


def test_the_controller_runs_without_the_dev_extra() -> None:
    code = ("import sys; sys.modules['cryptography'] = None; "
            "import hmls.engine.manager, hmls.commands.cluster, hmls.commands.diff; "
            "from hmls.cli import main; "
            "sys.exit(main(['dev', 'down', '--dir', '/nonexistent']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, cwd=REPO, timeout=60)
    assert res.returncode == 1, res.stderr
    assert "pip install 'hmls[dev]'" in res.stderr, res.stderr
