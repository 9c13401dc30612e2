"""The README's Layout section names every module of the product package and of the local
environment's, in its folder, so a newcomer finds each room (and a module added without a
line there fails here)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def named_in_layout() -> set[str]:
    """Module paths the Layout block names: ``hmls/x.py`` (or ``devenv/hmls_devenv/x.py``)
    lines, and ``  y.py`` lines under the ``hmls/folder/`` line above them."""
    text = (REPO / "README.md").read_text()
    block = text.split("\n## Layout", 1)[1].split("```", 2)[1]
    named, folder = set(), ""
    for line in block.splitlines():
        if m := re.match(r"^((?:hmls|devenv/hmls_devenv)/(?:[a-z_]+/)?)([a-z_]+\.py)?\s", line + " "):
            folder = m.group(1) if not m.group(2) else ""
            if m.group(2):
                named.add(m.group(1) + m.group(2))
        elif m := re.match(r"^  ([a-z_]+\.py)\s", line):
            if folder:
                named.add(folder + m.group(1))
        elif line and not line.startswith(" "):
            folder = ""
    return named


def test_every_module_is_named_in_the_readme_layout() -> None:
    modules = {str(p.relative_to(REPO))
               for package in ("hmls", "devenv/hmls_devenv") for p in (REPO / package).rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    missing = sorted(modules - named_in_layout())
    assert not missing, f"modules the README's Layout section does not name: {missing}"
    gone = sorted(named_in_layout() - modules)
    assert not gone, f"the README's Layout section names modules that are gone: {gone}"
