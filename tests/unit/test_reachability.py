"""Unit tests for hmls.domain.reachability: the probe's verdict, its threshold and its record."""

from __future__ import annotations

from hmls.domain.reachability import Reachability

T = [f"2026-01-01T00:00:{s:02d}Z" for s in range(60)]


def probes(*results: bool, threshold: int = 3) -> list[Reachability]:
    state, out = Reachability(), []
    for i, ok in enumerate(results):
        state = state.after_probe(ok=ok, now=T[i], error="" if ok else f"refused {i}",
                                  version="v1.34.4", threshold=threshold)
        out.append(state)
    return out


def test_unknown_until_the_first_probe_then_reachable() -> None:
    assert Reachability().reachable is None
    first = probes(True)[0]
    assert (first.reachable, first.since, first.last_seen, first.version) == (
        True, T[0], T[0], "v1.34.4")


def test_a_cluster_that_never_answered_is_unreachable_at_once() -> None:
    first = probes(False)[0]
    assert (first.reachable, first.since, first.last_error) == (False, T[0], "refused 0")


def test_a_reachable_cluster_flips_only_after_the_threshold() -> None:
    states = probes(True, False, False, False, False)
    assert [s.reachable for s in states] == [True, True, True, False, False]
    assert states[3].since == T[3] and states[4].since == T[3]
    assert states[3].last_seen == T[0]
    assert states[4].last_error == "refused 4"


def test_a_blip_below_the_threshold_resets() -> None:
    states = probes(True, False, False, True, False, False)
    assert all(s.reachable for s in states)
    assert states[-1].since == T[0]  # never changed


def test_one_success_makes_it_reachable_again() -> None:
    states = probes(True, False, False, False, True)
    assert (states[-1].reachable, states[-1].since, states[-1].last_error) == (True, T[4], "")


def test_the_record_changes_only_on_transitions_and_new_errors() -> None:
    states = probes(True, True, True, False, False, False, False)
    records = [s.record() for s in states]
    assert records[0] == records[1] == records[2] == records[3] == {
        "reachable": True, "since": T[0], "version": "v1.34.4"}
    assert records[5] == {"reachable": False, "since": T[5], "version": "v1.34.4",
                          "lastSeen": T[2], "lastError": "refused 5"}


def test_a_restart_resumes_from_the_record_and_rewrites_nothing() -> None:
    settled = probes(True, True)[-1]
    resumed = Reachability.from_record(settled.record())
    after = resumed.after_probe(ok=True, now=T[30], version="v1.34.4")
    assert after.record() == settled.record()
    down = probes(True, False, False, False)[-1]
    resumed_down = Reachability.from_record(down.record())
    assert (resumed_down.reachable, resumed_down.last_error) == (False, "refused 3")
    assert Reachability.from_record({"reachable": "garbage"}).reachable is None
