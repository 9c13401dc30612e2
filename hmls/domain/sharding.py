"""Which shard reconciles a HyperMLService: a stable hash of its ``namespace/name`` key.

Jump consistent hashing (Lamping & Veach, 2014): ``shard_of(key, n)`` is uniform over
``range(n)``, needs no table, and going from n to n + 1 shards moves exactly the keys that
land on the new shard — about 1/(n + 1) of them — while every other key keeps its shard.
The key is hashed with BLAKE2b rather than Python's ``hash`` (which is salted per process),
so every replica computes the same answer.
"""

from __future__ import annotations

import hashlib

_MULTIPLIER = 2862933555777941757
_MASK = (1 << 64) - 1


def shard_of(key: str, shards: int) -> int:
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    bucket, candidate = -1, 0
    while candidate < shards:
        bucket = candidate
        h = (h * _MULTIPLIER + 1) & _MASK
        candidate = int((bucket + 1) * ((1 << 31) / ((h >> 33) + 1)))
    return bucket
