"""A real Prometheus scraping the MLService simulator of the session's local environment: a
Ready MLService's simulated requests grow at the simulator's rate, the error ratio and the
latency follow the knobs annotated on it, and its series end when it is deleted."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import yaml
from hmls_devenv.environment import Environment
from hmls_devenv.harness import eventually
from hmls_devenv.simulator import ERROR_RATIO_KNOB, LATENCY_KNOB, RATE

from tests.helpers import Prometheus, kubectl, mlservice

NS = "t-simulator-metrics"
SERIES = f'cluster="spoke1",namespace="{NS}",mlservice="svc"'


@pytest.fixture(scope="module")
def prometheus(env: Environment, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Prometheus]:
    with Prometheus(tmp_path_factory.mktemp("prometheus"),
                    {"mlservice-simulator": env.simulator_metrics_url}) as prom:
        yield prom


async def counts(prom: Prometheus, when: Callable[[dict[str, float]], bool]
                 ) -> dict[str, float] | None:
    """svc's scraped requests by code, once both codes' series are there and ``when`` holds."""
    out = {r["metric"]["code"]: float(r["value"][1])
           for r in prom.query(f"mlservice_requests_total{{{SERIES}}}")}
    return out if set(out) == {"200", "500"} and when(out) else None


def rate(metric: str, matchers: str = "") -> str:
    return f"sum(rate({metric}{{{SERIES}{matchers}}}[3s]))"


async def test_prometheus_sees_the_simulated_requests_follow_the_knobs(
        env: Environment, prometheus: Prometheus) -> None:
    kubectl(env, "spoke1", "create", "namespace", NS, check=False)
    obj = mlservice("svc")
    obj["metadata"]["namespace"] = NS
    kubectl(env, "spoke1", "create", "-f", "-", input=yaml.safe_dump(obj))
    try:
        # Ready: the requests grow at the simulator's rate, none of them fails
        first = await eventually(lambda: counts(prometheus, lambda c: c["200"] > 0),
                                 timeout=30, what="simulated requests in Prometheus")
        later = await eventually(
            lambda: counts(prometheus, lambda c: c["200"] >= first["200"] + 4 * RATE),
            timeout=15, what="the requests to grow")
        assert later["500"] == 0
        assert prometheus.value(rate("mlservice_requests_total")) == pytest.approx(RATE, rel=0.25)

        # the knobs: a quarter of the requests fail, each takes 0.3 s
        kubectl(env, "spoke1", "annotate", "mlservice", "-n", NS, "svc",
                f"{ERROR_RATIO_KNOB}=0.25", f"{LATENCY_KNOB}=0.3")
        start = await eventually(lambda: counts(prometheus, lambda c: c["500"] > 0),
                                 timeout=15, what="errors after the knob")
        end = await eventually(
            lambda: counts(prometheus, lambda c: sum(c.values()) >= sum(start.values()) + 5 * RATE),
            timeout=15, what="more requests under the knob")
        total = sum(end.values()) - sum(start.values())
        assert abs((end["500"] - start["500"]) - 0.25 * total) <= 1, (start, end)
        # the PromQL a rollout analysis runs
        requests, errors = rate("mlservice_requests_total"), rate("mlservice_requests_total",
                                                                  ',code=~"5.."')
        assert prometheus.value(f"{errors} / {requests}") == pytest.approx(0.25, abs=0.01)
        seconds = rate("mlservice_request_duration_seconds_sum")
        observed = rate("mlservice_request_duration_seconds_count")
        assert prometheus.value(f"{seconds} / {observed}") == pytest.approx(0.3, abs=0.01)
    finally:
        kubectl(env, "spoke1", "delete", "mlservice", "-n", NS, "svc", "--ignore-not-found")

    async def ended() -> bool:  # Prometheus marks the series stale once the simulator drops them
        return not prometheus.query(f"mlservice_requests_total{{{SERIES}}}") and \
            not prometheus.query(f"mlservice_request_duration_seconds_count{{{SERIES}}}")
    await eventually(ended, timeout=15, what="the deleted MLService's series to end")
