"""Hypothesis strategies for the values the controller stores: random ``Status`` values, each
one as the domain could build it (optional fields absent or set, nested optional fields
included), for the status write's property tests (tests/unit/test_status_write.py and
tests/integration/test_status_write.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import strategies as st

from hmls.domain.conditions import Stamped
from hmls.domain.render import ResourceRef
from hmls.domain.rollout import ACTIVE, DONE, FAILED, PENDING, ROLLED_BACK, State, Step
from hmls.domain.status import (
    Item,
    Pending,
    Placement,
    RolloutStatus,
    Route,
    Status,
    Summary,
    TrafficStatus,
)

CLUSTERS = ["spoke1", "spoke2", "spoke3"]
names = st.sampled_from(["a", "svc", "s3-secret", "rt"])
texts = st.text(st.sampled_from("abc xyz:"), min_size=1, max_size=6)
maybe_text = st.none() | texts
times = st.sampled_from(["2026-12-01T00:00:00Z", "2026-12-02T12:30:00Z"])
moments = st.sampled_from([dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
                           dt.datetime(2026, 12, 2, 12, 30, tzinfo=dt.UTC)])
revisions = st.integers(1, 4)

refs = st.builds(ResourceRef, st.sampled_from(["v1", "tensorstack.dev/v1beta1"]),
                 st.sampled_from(["Secret", "MLService"]), st.sampled_from(["", "demo"]), names)
json_leaf = st.integers(0, 3) | st.booleans() | texts
spoke_status: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.sampled_from(["phase", "url", "conditions", "address"]),
    json_leaf | st.dictionaries(st.sampled_from(["url", "ready"]), json_leaf, max_size=2)
    | st.lists(st.dictionaries(st.sampled_from(["type", "status"]), texts, max_size=2),
               max_size=2), max_size=3)

items = st.builds(Item, st.sampled_from(CLUSTERS), refs, st.booleans(), texts,
                  created=st.booleans(), ready=st.none() | st.booleans(),
                  ready_message=maybe_text, drift=maybe_text, status=st.none() | spoke_status)
stamped = st.builds(Stamped, st.sampled_from(["FullyApplied", "Ready", "RolledOut"]),
                    st.sampled_from(["True", "False", "Unknown"]), texts, texts,
                    st.integers(0, 3), times)
routes = st.builds(Route, st.sampled_from(CLUSTERS), texts, st.integers(0, 100),
                   st.integers(0, 100), st.none() | times, st.booleans(), maybe_text)
traffic = st.builds(TrafficStatus, st.sampled_from(["ingress"]), st.sampled_from(["Istio"]),
                    st.sampled_from(["/p/"]), st.lists(routes, max_size=3).map(tuple),
                    st.lists(refs, max_size=2).map(tuple))
steps = st.builds(
    lambda cluster, revision, phase, since, target, started: Step(
        cluster, revision, phase, since, target if phase in ACTIVE else None,
        started if phase in ACTIVE else None),
    st.sampled_from(CLUSTERS), st.none() | revisions,
    st.sampled_from(sorted(ACTIVE | {PENDING, DONE, FAILED, ROLLED_BACK})),
    st.none() | moments, st.none() | revisions, st.none() | moments)


@st.composite
def rollouts(draw: st.DrawFn) -> RolloutStatus:
    chosen = draw(st.lists(steps, max_size=3, unique_by=lambda s: s.cluster))
    state = State(draw(revisions), draw(st.none() | revisions), draw(maybe_text),
                  {s.cluster: s for s in chosen})
    return RolloutStatus(state, tuple(s.cluster for s in chosen))


statuses = st.builds(
    Status, st.none() | st.integers(1, 5),
    st.none() | st.builds(Summary, st.integers(0, 3), texts, texts),
    st.lists(items, max_size=3).map(tuple),
    st.lists(stamped, max_size=3, unique_by=lambda c: c.type).map(tuple),  # a list map by type
    st.lists(st.builds(Pending, st.sampled_from(CLUSTERS), refs, texts),
             max_size=2).map(tuple),
    st.none() | traffic,
    st.lists(st.tuples(st.sampled_from(CLUSTERS), names), max_size=2).map(tuple),
    st.lists(st.builds(Placement, st.integers(0, 2), texts,
                       st.lists(st.sampled_from(CLUSTERS), max_size=2).map(tuple)),
             max_size=2).map(tuple),
    st.none() | rollouts(), maybe_text)
