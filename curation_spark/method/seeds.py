"""One rule for every seed and random stream of a run (numpy only).

A run has one seed (``clustering.seed``, ``sampling.seed``); every unit of random work
gets its own stream keyed by what identifies it: a purpose tag, the level, the
resampling step, the parent cluster. Adding offsets instead (``seed + 1000 * level +
step``, ``seed + 31 * level + parent``) made different units collide: with the old
rules a level-1 split of parent 31 and a level-2 split of parent 0 drew the same
stream. Here distinct key tuples always give distinct entropy (fixed-width words and a
length prefix, see :func:`seeded_rng`), so they get independent streams.

* :func:`seeded_rng` — a generator for work done in numpy;
* :func:`derive_seed` — a plain non-negative integer for the places that take one
  (the k-means parameters, faiss, Spark's ``xxhash64`` orderings), drawn from the same
  keyed entropy.
"""
from __future__ import annotations

import operator

import numpy as np

_INT64_MAX = int(np.iinfo(np.int64).max)
_INT64_MIN = int(np.iinfo(np.int64).min)

#: Purpose tags: the first key of every derived seed, so streams of different kinds of
#: work never coincide whatever their other keys.
KMEANS = 1
RESAMPLING_ORDER = 2
SPLIT = 3
DEDUP = 4
DEDUP_BLOCKS = 5
DEDUP_KEEP = 6

__all__ = ["seeded_rng", "derive_seed", "for_parent", "KMEANS", "RESAMPLING_ORDER", "SPLIT", "DEDUP",
           "DEDUP_BLOCKS", "DEDUP_KEEP"]


def _int64_words(value: int, name: str) -> tuple[int, int]:
    """Encode an int64 as two uint32 words (two's complement, little-endian)."""
    v = operator.index(value)
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise ValueError(f"{name} must fit in int64, got {v}")
    u = v & 0xFFFF_FFFF_FFFF_FFFF
    return u & 0xFFFF_FFFF, u >> 32


def seeded_rng(seed: int, *keys: int) -> np.random.Generator:
    """Return a generator determined by ``seed`` and integer ``keys`` alone.

    Use one generator per unit of random work, keyed by what identifies it (for
    example ``seeded_rng(seed, level, parent_cluster_id)``), so its draws are the
    same regardless of processing order, partitioning or which executor runs it.

    Parameters
    ----------
    seed : int
        Run seed; any value that fits in int64.
    *keys : int
        Identifying integers (int64 range; negative ids such as ``-1`` for a root
        are allowed).

    Returns
    -------
    numpy.random.Generator
        A PCG64 generator seeded through :class:`numpy.random.SeedSequence`.

    Notes
    -----
    The entropy is ``[count, lo(seed), hi(seed), lo(k1), hi(k1), ...]`` in uint32
    words, with ``count = 1 + len(keys)``. Passing ``[seed, *keys]`` to
    ``default_rng`` directly would be ambiguous: SeedSequence pads its pool with
    zeros, so ``(seed,)`` and ``(seed, 0)`` collide, and ints of 2**32 or more
    are split into a variable number of words, so ``(s, a, b)`` can collide with
    ``(s, a + b * 2**32)``. A fixed width per value plus a length prefix makes
    distinct key tuples give distinct entropy.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(_words(seed, keys))))


def _words(seed: int, keys: tuple[int, ...]) -> list[int]:
    words = [1 + len(keys)]
    words.extend(_int64_words(seed, "seed"))
    for i, key in enumerate(keys):
        words.extend(_int64_words(key, f"keys[{i}]"))
    return words


def derive_seed(seed: int, *keys: int) -> int:
    """A seed in [0, 2^62) determined by ``seed`` and ``keys`` alone (the entropy of
    :func:`seeded_rng`), for the APIs that take an integer seed. Distinct key tuples
    give independent values (a collision has probability ~2^-62 per pair)."""
    state = np.random.SeedSequence(_words(seed, keys)).generate_state(2, dtype=np.uint32)
    return int(state[0]) | (int(state[1]) & 0x3FFF_FFFF) << 32


def for_parent(base: int, parent: int) -> int:
    """The seed of the work under one parent cluster (its split), from the level's base
    seed: ``derive_seed(base, parent)``, never ``base + parent`` (which let level 1's
    parent 31 and level 2's parent 0 share a stream)."""
    return derive_seed(base, parent)
