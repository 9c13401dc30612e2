"""The stable hash that assigns HyperMLServices to shards."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hmls.domain.sharding import shard_of

KEYS = [f"team-{i % 37}/service-{i}" for i in range(20_000)]


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 8, 16])
def test_keys_spread_evenly_over_the_shards(shards: int) -> None:
    counts = [0] * shards
    for key in KEYS:
        counts[shard_of(key, shards)] += 1
    mean = len(KEYS) / shards
    assert all(abs(c - mean) < 0.06 * mean for c in counts), counts


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 7, 15])
def test_adding_a_shard_moves_about_one_in_n_keys_and_only_to_the_new_shard(
        shards: int) -> None:
    moved = [key for key in KEYS if shard_of(key, shards) != shard_of(key, shards + 1)]
    assert all(shard_of(key, shards + 1) == shards for key in moved)
    expected = len(KEYS) / (shards + 1)
    assert abs(len(moved) - expected) < 0.08 * expected, (len(moved), expected)


def test_every_process_computes_the_same_shard() -> None:
    """Python's own str hash is salted per process; the shard must not be."""
    code = ("from hmls.domain.sharding import shard_of; "
            "print([shard_of(f'ns/cr-{i}', 5) for i in range(50)])")
    outs = {subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                           text=True, env={"PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2")}
    assert outs == {str([shard_of(f"ns/cr-{i}", 5) for i in range(50)]) + "\n"}


def test_shards_must_be_positive() -> None:
    with pytest.raises(ValueError):
        shard_of("ns/name", 0)
