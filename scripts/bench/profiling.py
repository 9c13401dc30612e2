"""Where the controller spends its CPU: py-spy attached to the controller process (sampling,
``--nonblocking``, idle threads excluded, so samples are CPU time), or — if ptrace is refused
here — the controller run under ``python -m cProfile -o``.  Both give the top functions by own
time (py-spy: samples in which the function is the innermost frame)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pstats
import re
import shutil
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from common import proc_stats

RATE = 100
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


async def ptrace_refusal() -> str | None:
    """None if py-spy can read a sibling process here, else why not."""
    exe = shutil.which("py-spy")
    if exe is None:
        return "py-spy is not installed (pip install py-spy)"
    proc = await asyncio.create_subprocess_exec(
        exe, "dump", "--pid", str(os.getpid()), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    return None if proc.returncode == 0 else f"py-spy dump failed: {err.decode().strip()[:300]}"


class PySpy:
    """``py-spy record`` on one pid until ``stop``; collapsed stacks go to ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, pid: int) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "py-spy", "record", "--pid", str(pid), "--rate", str(RATE), "--nonblocking",
            "--format", "raw", "--output", str(self.out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)

    async def stop(self) -> float:
        """Stop sampling (py-spy writes its output on SIGINT); returns py-spy's CPU seconds."""
        assert self.proc is not None
        cpu = proc_stats(self.proc.pid).cpu_s
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = await asyncio.wait_for(self.proc.communicate(), 60)
        except TimeoutError:
            self.proc.kill()
            _, err = await self.proc.communicate()
        if self.proc.returncode != 0 or not self.out.exists():
            raise RuntimeError(f"py-spy record failed: {err.decode(errors='replace')[-500:]}")
        return cpu


def _frame(text: str) -> tuple[str, str]:
    m = _FRAME.match(text.strip())
    if not m:
        return text.strip(), ""
    return m["func"], m["file"]


def _short(path: str) -> str:
    for marker in ("site-packages/", "python3.11/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _ours(path: str) -> bool:
    """hmls code, but not its entry points (they hold everything the main thread does)."""
    rel = path[path.find("hmls/"):] if "hmls/" in path else ""
    return bool(rel) and rel not in ("hmls/cli.py", "hmls/__main__.py")


def top_pyspy(raw: Path, n: int = 15) -> dict[str, Any]:
    """Top functions by own samples and the hmls functions by inclusive samples."""
    own: Counter[tuple[str, str]] = Counter()
    inclusive: Counter[tuple[str, str]] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        if not frames:
            continue
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for f in set(frames):
            inclusive[f] += samples
    return {
        "tool": "py-spy", "samples": total, "rate_hz": RATE,
        "top_own": [{"function": f, "file": _short(p), "samples": c, "pct": 100 * c / total}
                    for (f, p), c in own.most_common(n)],
        "top_hmls_inclusive": [
            {"function": f, "file": _short(p), "samples": c, "pct": 100 * c / total}
            for (f, p), c in inclusive.most_common() if _ours(p)][:n],
    }


def top_cprofile(stats_path: Path, n: int = 15) -> dict[str, Any]:
    st = pstats.Stats(str(stats_path))
    rows = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in rows.values()) or 1.0
    by_own = sorted(rows.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    by_cum = sorted(((k, v) for k, v in rows.items() if "/hmls/" in k[0]),
                    key=lambda kv: kv[1][3], reverse=True)[:n]
    return {
        "tool": "cProfile", "total_s": total,
        "top_own": [{"function": k[2], "file": f"{_short(k[0])}:{k[1]}", "seconds": v[2],
                     "pct": 100 * v[2] / total} for k, v in by_own],
        "top_hmls_inclusive": [{"function": k[2], "file": f"{_short(k[0])}:{k[1]}",
                                "seconds": v[3], "pct": 100 * v[3] / total} for k, v in by_cum],
    }
