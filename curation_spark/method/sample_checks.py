"""The exact checks the index path decides on (numpy/faiss only, no Spark).

Before a block is searched, each option (a prior width, a probe count) is tried on a sample
of the block's rows whose exact nearest centroids are known, and taken only if its misses
there are within what the agreement target allows at a stated confidence
(:func:`allowed_misses`). This module holds the samples: a new strided one each call
(:func:`agreement_rows`, :func:`sample_shift`) and the nested wider checks built only when
an option needs them (:class:`SampleChecks`). Which options are tried, in which order, and
when a wider check pays is :mod:`curation_spark.method.centroid_index`'s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from curation_spark.method.candidate_search import nearest

#: Rows of the first exact check per block and iteration (cost: rows x K x D): 5 misses
#: allowed pass an option at 0.996 in 3 checks of 4 and one at 0.989 in 1 of 50 (512 rows
#: allow 1 miss: an option at 0.996 passed in half the checks).
AGREEMENT_SAMPLE_ROWS = 1024
#: Rows of the wider checks an option gets, in turn, when the one before leaves it in reach
#: of the target (the prior's early iterations at K >= 20,000 sit at 0.991-0.994: 512 rows
#: cannot tell that from 0.99, 16,384 can; the 512-row check alone kept K = 100,000 on the
#: probe path for five iterations, a 4,096-row one for three and again in the sixth; 4,096
#: rows pass an option at 0.995 in nearly every check, for a quarter of the widest's cost).
WIDER_SAMPLE_ROWS = (4096, 16384)
#: One-sided z of the sample tests: an option is on target when its sampled misses are
#: this many standard errors below what the target allows (95 % confidence that the whole
#: block is on target; 5 misses of 1,024. At 1.28 and 2 of 512, a kept graph at 0.989 passed
#: the same fixed sample in every iteration).
SAMPLE_Z = 1.645
#: The wider checks are cut to this share of the block (their exact search costs that share
#: of an exact iteration; a 10,000-row block's whole iteration is a few milliseconds).
WIDE_CHECK_MAX_SHARE = 0.05


def allowed_misses(rows: float, target: float) -> float:
    """Most sampled misses with which a path is taken as on target for its whole block:
    the binomial's mean at the target less ``SAMPLE_Z`` standard errors."""
    miss = 1.0 - target
    return miss * rows - SAMPLE_Z * math.sqrt(rows * miss * target)


def spread_rows(n: int, m: int, shift: float = 0.0) -> np.ndarray:
    """``m`` rows of ``n`` spread evenly, the first ``m`` of one sequence for every ``m`` (a
    base-2 van der Corput sequence shifted by ``shift`` modulo 1, scaled to ``n``), so
    smaller sets are subsets of larger ones. Sorted."""
    m = max(0, min(m, n))
    i = np.arange(m, dtype=np.uint64)
    reversed_bits = np.zeros(m, dtype=np.uint64)
    for bit in range(32):
        reversed_bits |= ((i >> np.uint64(bit)) & np.uint64(1)) << np.uint64(31 - bit)
    spread = np.mod(reversed_bits.astype(np.float64) / 2.0**32 + shift, 1.0)
    return np.unique(np.minimum((spread * n).astype(np.int64), n - 1))


def agreement_rows(n: int, max_rows: int = AGREEMENT_SAMPLE_ROWS, shift: float = 0.0) -> np.ndarray:
    """An evenly strided sample of a block's rows for the per-iteration exact check, its
    start ``shift`` (0-1) of a stride into the block."""
    if n <= max_rows:
        return np.arange(n)
    return np.minimum(((np.arange(max_rows) + shift) * (n / max_rows)).astype(np.int64), n - 1)


def sample_shift(call: int) -> float:
    """Where call ``call``'s samples start (the golden-ratio sequence): a new sample every
    iteration, so a sample that happens to flatter an option does not do so every time (a
    fixed one passed a kept graph at 0.989 in iteration after iteration)."""
    return math.fmod(call * 0.6180339887498949, 1.0)


@dataclass
class SampleCheck:
    """Rows of a block checked against exact search: their indices, vectors and exact
    nearest centroids, and what the options tried on them share (``memo``: their coarse
    lists, previous centroids, the previous centroids' graph; computed once per check)."""

    rows: np.ndarray
    xs: np.ndarray
    exact: np.ndarray
    memo: dict = field(default_factory=dict)


class SampleChecks:
    """The exact checks of one assignment: this call's sample of the block, and wider ones
    (:data:`WIDER_SAMPLE_ROWS`, each a superset of the one before) built only when an
    option needs them."""

    def __init__(self, x: np.ndarray, centroids: np.ndarray, distance: str, sample: np.ndarray,
                 shift: float = 0.0) -> None:
        self.x, self.centroids, self.distance = x, centroids, distance
        self.small = self._check(sample)
        #: The wider checks' rows: the sample and a prefix of :func:`spread_rows` (so
        #: each level holds the one before), at most ``WIDE_CHECK_MAX_SHARE`` of the block
        #: (the blocks of a barrier stage each check their share); a level no larger than
        #: the one before is left out (a cut level under twice the one before replaces it).
        cap = int(WIDE_CHECK_MAX_SHARE * len(x))
        sizes: list[int] = []
        for wanted in WIDER_SAMPLE_ROWS:
            size = min(wanted, cap)
            if size <= len(sample):
                continue
            if sizes and size < 2 * sizes[-1]:
                sizes[-1] = max(sizes[-1], size)
            else:
                sizes.append(size)
        self._level_rows = [np.union1d(sample, spread_rows(len(x), size, shift)) for size in sizes]
        self._levels: list[SampleCheck] = []
        #: Rows of each wider check (known before it is built, for the blocks' common decision).
        self.wider_rows = [len(r) for r in self._level_rows]

    def _check(self, rows: np.ndarray) -> SampleCheck:
        xs = self.x[rows]
        return SampleCheck(rows, xs, nearest(xs, self.centroids, self.distance)[:, 0])

    def built(self, level: int) -> bool:
        return level < len(self._levels) or level >= len(self.wider_rows)

    def rows_at(self, level: int) -> int:
        """Rows of wider check ``level`` (of the widest this block has, beyond its levels)."""
        return self.wider_rows[min(level, len(self.wider_rows) - 1)] if self.wider_rows else len(self.small.rows)

    def new_rows(self, level: int) -> int:
        """Rows whose exact centroid building ``level`` still has to search."""
        if level >= len(self.wider_rows):
            return 0
        return self.wider_rows[level] - (self.wider_rows[level - 1] if level else len(self.small.rows))

    def wider(self, level: int) -> SampleCheck:
        """Wider check ``level`` (the widest this block has, beyond its levels: a block of a
        barrier stage decides with the others); the exact centroids of the rows it shares
        with the level before are reused."""
        if not self.wider_rows:
            return self.small
        level = min(level, len(self.wider_rows) - 1)
        while len(self._levels) <= level:
            base = self._levels[-1] if self._levels else self.small
            rows = self._level_rows[len(self._levels)]
            new = np.setdiff1d(rows, base.rows, assume_unique=True)
            exact = np.empty(len(rows), dtype=np.int64)
            exact[np.searchsorted(rows, base.rows)] = base.exact
            exact[np.searchsorted(rows, new)] = nearest(self.x[new], self.centroids, self.distance)[:, 0]
            self._levels.append(SampleCheck(rows, self.x[rows], exact))
        return self._levels[level]

    @property
    def wide_rows(self) -> int:
        """Rows of the widest check (the fixed sample's where there is none)."""
        return self.wider_rows[-1] if self.wider_rows else len(self.small.rows)

    def wide(self) -> SampleCheck:
        """The widest check."""
        return self.wider(len(self.wider_rows) - 1)
