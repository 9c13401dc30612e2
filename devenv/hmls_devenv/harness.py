"""The one harness of the tests, the benchmarks and the soak: the pieces each of them needs
around a running local environment, written once.

- :class:`Controller`: an ``hmls controller`` process against the environment's hub, started
  and stopped with the environment (``Environment.start_process``), ready when /readyz says so;
- :func:`parse` and :func:`total`: the Prometheus text reader (the controller's /metrics, the
  API servers' and the simulator's);
- :func:`requests` and the counters over it: the API servers' own count of the requests they
  served (``apiserver_request_total``), by verb and resource: the request-counting hook;
- :func:`eventually`: the one way to wait for a condition;
- :func:`free_port` (from the environment, which picks its own ports with it).

Where it sits: on top of :mod:`hmls_devenv.environment`; the tests' fixtures, the benchmark
suite and the soak import it; the controller never does.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from hmls_devenv.environment import Environment, free_port

__all__ = ["MUTATING", "Controller", "Requests", "Sample", "eventually", "free_port",
           "mutating", "parse", "requests", "requests_delta", "total", "wait_http"]

MUTATING = frozenset(("POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"))
"""The verbs ``apiserver_request_total`` counts a write under."""


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0,
                     interval: float = 0.1, what: str = "condition") -> Any:
    """Poll until check() returns a truthy value and return it; fail with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


# ----- Prometheus text -------------------------------------------------------------------
_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float
    key: str
    """The sample as written, without its value: ``name{a="b"}``."""


def parse(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition (comments and blank lines skipped)."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append(Sample(m["name"], dict(_LABEL.findall(m["labels"] or "")),
                              float(m["value"]), line.rpartition(" ")[0]))
    return out


def total(text: str | list[Sample], name: str, **labels: str) -> float:
    """The sum of one metric's samples (exact name) whose labels include ``labels``."""
    samples = parse(text) if isinstance(text, str) else text
    return sum(s.value for s in samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def get(url: str, *, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return str(r.read().decode())


def wait_http(url: str, alive: Callable[[], bool], log: Path, *, timeout: float) -> None:
    """Wait until url answers 200; fail with the log's tail if the process behind it is no
    longer ``alive`` or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise AssertionError(f"{log.stem} exited: {log.read_text()[-3000:]}")
        try:
            get(url, timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} not ready after {timeout:.0f}s: {log.read_text()[-3000:]}")


# ----- requests the API servers served ---------------------------------------------------
Requests = dict[str, Counter[tuple[str, str]]]
"""cluster -> (verb, resource[/subresource]) -> apiserver_request_total."""


async def requests(env: Environment, clusters: Iterable[str] | None = None, *,
                   session: aiohttp.ClientSession | None = None) -> Requests:
    """``apiserver_request_total`` of every (or some) API server, by (verb, resource): what
    each server itself counted, whoever asked. ``session``: one to reuse (its TLS must be
    ``env.admin_tls()``), else one is made for the call."""
    st = env.state()
    names = list(clusters or st.clusters)
    own = session is None
    http = session or aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=env.admin_tls()))

    async def one(cluster: str) -> Counter[tuple[str, str]]:
        async with http.get(f"{st.clusters[cluster].server}/metrics") as resp:
            resp.raise_for_status()
            text = await resp.text()
        counts: Counter[tuple[str, str]] = Counter()
        for s in parse(text):
            if s.name == "apiserver_request_total":
                res = s.labels.get("resource") or "(non-resource)"
                if s.labels.get("subresource"):
                    res += "/" + s.labels["subresource"]
                counts[(s.labels.get("verb", ""), res)] += int(s.value)
        return counts

    try:
        counted = await asyncio.gather(*(one(c) for c in names))
    finally:
        if own:
            await http.close()
    return dict(zip(names, counted, strict=True))


def requests_delta(after: Requests, before: Requests) -> Requests:
    return {c: counts - before.get(c, Counter()) for c, counts in after.items()}


def mutating(counts: Counter[tuple[str, str]], *, leases: bool = True,
             resources: Iterable[str] | None = None) -> int:
    """Writes among counts; leases=False leaves out Lease renewals (the API servers' own and
    leader election's); resources: only those to these resources (and their subresources)."""
    only = set(resources) if resources is not None else None
    return int(sum(v for (verb, res), v in counts.items()
                   if verb in MUTATING and (leases or res != "leases")
                   and (only is None or res.partition("/")[0] in only)))


# ----- the controller process ------------------------------------------------------------
class Controller:
    """One ``hmls controller`` process against ``env``'s hub, logged to
    ``env.log_path(name)`` and stopped with the environment.

    flags: more controller flags (a later one wins, so ``--kubeconfig`` may be replaced);
    namespaces: ``--watch-namespaces`` (each measurement sees only its own CRs);
    source: a directory holding another ``hmls`` package to run instead of the installed one
    (an earlier revision, for before/after runs)."""

    def __init__(self, env: Environment, *flags: str, name: str | None = None,
                 namespaces: Sequence[str] = (), source: Path | None = None) -> None:
        self.env, self.flags, self.namespaces, self.source = env, flags, namespaces, source
        self.port = free_port()
        self.name = name or f"controller-{self.port}"
        self.pid = 0
        self.started = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    @property
    def log(self) -> Path:
        return self.env.log_path(self.name)

    def argv(self) -> list[str]:
        if self.source:
            wrap = ["-c", f"import runpy, sys; sys.path.insert(0, {str(self.source)!r}); "
                     "runpy.run_module('hmls', run_name='__main__', alter_sys=True)"]
        else:
            wrap = ["-m", "hmls"]
        watch = ["--watch-namespaces", ",".join(self.namespaces)] if self.namespaces else []
        return [sys.executable, *wrap, "controller", "--kubeconfig",
                str(self.env.kubeconfig("hub")), "--metrics-bind-address",
                f"127.0.0.1:{self.port}", *watch, *self.flags]

    def start(self, *, wait: bool = True) -> int:
        """Spawn (on the same port each time); with ``wait``, return once /readyz answers."""
        assert not self.running(), f"{self.name} runs already"
        self.started = time.perf_counter()
        self.pid = self.env.start_process(self.name, self.argv())
        if wait:
            self.wait_ready()
        return self.pid

    def running(self) -> bool:
        return bool(self.pid) and not self.env.exited(self.pid)

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from spawn until /readyz answered 200; fails with the log's tail if the
        process exits or time runs out."""
        wait_http(f"{self.url}/readyz", self.running, self.log, timeout=timeout)
        return time.perf_counter() - self.started

    async def ready(self, timeout: float = 60.0) -> float:
        """``wait_ready`` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_ready, timeout)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Send sig and wait for the process to end (SIGKILL after 20 s): its exit code."""
        pid, self.pid = self.pid, 0
        return self.env.stop_process(pid, sig) if pid else None

    async def halt(self) -> int | None:
        """``stop`` without blocking the event loop."""
        return await asyncio.to_thread(self.stop)

    def metrics_text(self) -> str:
        return get(self.metrics_url)

    def metrics(self) -> dict[str, float]:
        """Current samples as {'name{labels}': value}."""
        return {s.key: s.value for s in parse(self.metrics_text())}

    async def counters(self) -> dict[str, float]:
        """The controller's own counts of its work (without blocking the event loop)."""
        samples = parse(await asyncio.to_thread(self.metrics_text))
        return {"applied": total(samples, "hmls_apply_total", result="applied"),
                "unchanged": total(samples, "hmls_apply_total", result="unchanged"),
                "apply_failed": total(samples, "hmls_apply_total", result="failed"),
                "status_writes": total(samples, "hmls_status_writes_total"),
                "reconciles": total(samples, "hmls_reconcile_total"),
                "reconcile_s": total(samples, "hmls_reconcile_duration_seconds_sum"),
                "queue_depth": total(samples, "hmls_queue_depth")}

    async def settle(self, *, quiet: float = 2.0, timeout: float = 300.0,
                     min_reconciles: int = 0) -> dict[str, float]:
        """Wait until the queue is empty and nothing was written (applied, failed to apply,
        status) for ``quiet`` seconds.  Reconciles that write nothing do not count: past the
        resync period a large fleet has some every second."""
        await self.ready(timeout)
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            now = await self.counters()
            moving = {k: now[k] for k in ("applied", "apply_failed", "status_writes")}
            if moving != last:
                last, since = moving, time.monotonic()
            elif (now["queue_depth"] == 0 and now["reconciles"] >= min_reconciles
                  and time.monotonic() - since >= quiet):
                return now
            await asyncio.sleep(0.25)
        raise TimeoutError(f"{self.name} did not settle within {timeout:.0f}s")
