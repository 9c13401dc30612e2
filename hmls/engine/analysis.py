"""Metric analysis: the Prometheus queries of a rollout step (I/O).

Where this sits: a reconcile of a Progressive HyperMLService with ``spec.rollout.analysis``
asks its rollout which metrics are due (``Rollout.due``), and ``measure`` runs them here,
concurrently, as instant queries (``GET /api/v1/query``) against the Prometheus the
controller's **operator** names (``--prometheus-url``, with an optional bearer-token file and
CA file).  A HyperMLService never names an address: a CR-given URL would let any hub tenant
make the controller send requests anywhere.  The pure part (rendering, judging, counting) is
``hmls.domain.analysis``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from hmls.domain.analysis import Measurement, Unrenderable, query_for
from hmls.domain.models import MetricSpec, Owner
from hmls.metrics import Metrics
from hmls.settings import PrometheusConfig

NOT_CONFIGURED = ("no Prometheus to ask: the controller runs without --prometheus-url "
                  "(its operator sets it)")


class Prometheus:
    """One HTTP client of the operator's Prometheus; ``close`` it."""

    def __init__(self, config: PrometheusConfig, metrics: Metrics) -> None:
        self.config, self.metrics = config, metrics
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            context = ssl.create_default_context(cafile=self.config.ca_file) \
                if self.config.ca_file else None
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context) if context else None,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def value(self, query: str) -> tuple[float | None, str]:
        """The single number an instant query answers, or None with why not."""
        headers = {}
        if self.config.bearer_token_file:
            token = await asyncio.to_thread(Path(self.config.bearer_token_file).read_text)
            headers["Authorization"] = f"Bearer {token.strip()}"
        url = self.config.url.rstrip("/") + "/api/v1/query"
        try:
            async with self._client().get(url, params={"query": query},
                                          headers=headers) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    return None, f"Prometheus answered HTTP {resp.status}, not JSON"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return None, f"Prometheus did not answer: {type(exc).__name__}: {exc}".rstrip(": ")
        return sample(body)

    async def measure(self, metric: MetricSpec, query: str, now: dt.datetime) -> Measurement:
        started = time.perf_counter()
        value, why = await self.value(query)
        self.metrics.analysis_query_seconds.observe(time.perf_counter() - started)
        return Measurement.of(metric, value, now, why)


def sample(body: Any) -> tuple[float | None, str]:
    """The one number of a Prometheus query answer, or None with why it is inconclusive."""
    if not isinstance(body, Mapping):
        return None, "Prometheus answered something other than a JSON object"
    if body.get("status") != "success":
        return None, f"query failed: {body.get('errorType', 'error')}: {body.get('error', '')}"
    data = body.get("data")
    kind = data.get("resultType") if isinstance(data, Mapping) else None
    result = data.get("result") if isinstance(data, Mapping) else None
    pair: Any = None
    if kind == "scalar" and isinstance(result, list):
        pair = result
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return None, "the query returned no sample"
        if len(result) > 1:
            return None, f"the query returned {len(result)} series, not one"
        pair = result[0].get("value") if isinstance(result[0], Mapping) else None
    else:
        return None, f"the query returned a {kind}, not a number (an instant vector of one " \
                     "series, or a scalar)"
    try:
        return float(pair[1]), ""
    except (TypeError, ValueError, IndexError, KeyError):
        return None, "the sample is not a number"


async def measure(prometheus: Prometheus | None, due: Mapping[str, tuple[int, list[MetricSpec]]],
                  *, owner: Owner, labels: Mapping[str, Mapping[str, str]], now: dt.datetime,
                  metrics: Metrics) -> dict[str, list[Measurement]]:
    """Every due metric of every cluster, measured concurrently."""
    async def one(cluster: str, revision: int, metric: MetricSpec) -> Measurement:
        try:
            query = query_for(metric, cluster=cluster, labels=labels.get(cluster, {}),
                              revision=revision, namespace=owner.namespace, name=owner.name)
        except Unrenderable as exc:
            return Measurement.of(metric, None, now, f"query cannot be rendered: {exc}")
        if prometheus is None:
            return Measurement.of(metric, None, now, NOT_CONFIGURED)
        return await prometheus.measure(metric, query, now)

    jobs = [(c, m) for c, (_, ms) in due.items() for m in ms]
    done = await asyncio.gather(*(one(c, due[c][0], m) for c, m in jobs))
    out: dict[str, list[Measurement]] = {}
    for (cluster, _), m in zip(jobs, done, strict=True):
        metrics.analysis_total.labels(m.result).inc()
        out.setdefault(cluster, []).append(m)
    return out
