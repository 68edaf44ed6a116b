"""Water-filling budget split and leaf copy allocation for hierarchical balanced sampling.

Hierarchical balanced sampling (Vo et al., 2024) walks the cluster tree from the
root down. At each parent, its sample budget is split among its child clusters
as evenly as their capacities allow ("water-filling"): small clusters are taken
whole, and what they cannot absorb goes to the larger ones. At the bottom
(level-1 clusters) a cluster's target is turned into per-point copy counts.

This module is the pure-numpy kernel of that procedure. :mod:`curation_spark.curation.sampling`
calls :func:`water_fill` once per parent group (in a grouped pandas UDF, or in the
driver for small hierarchies) and allocates a leaf's copies with a ``row_number()``
window (``t // s`` copies each, one more for the first ``t % s`` rows).
:func:`leaf_copies` states that rule in numpy and :func:`water_fill_cut` the cut
water-filling finds; both are the specification the tests check, not called by the
Spark code.

Everything is integer (``int64``) arithmetic: the budget and the capacities are
counts of points, and exactness (the targets sum to exactly the budget) is a
property the rest of the pipeline relies on.

Reproducibility: every random draw takes an explicit
:class:`numpy.random.Generator`. Use :func:`seeded_rng` with the run seed plus
keys identifying the group (e.g. level and parent cluster id), so a group's draw
is the same whatever order, partition or executor it is processed in.
"""
from __future__ import annotations

import operator

import numpy as np

from curation_spark.method.seeds import seeded_rng  # re-exported: its first home

__all__ = ["water_fill", "water_fill_cut", "seeded_rng", "leaf_copies"]

_INT64_MAX = int(np.iinfo(np.int64).max)
_INT64_MIN = int(np.iinfo(np.int64).min)
_STRATEGIES = ("r", "c")


# --------------------------------------------------------------------------- validation


def _as_nonneg_int(value: object, name: str) -> int:
    """Return ``value`` as a Python int, rejecting negatives and non-integers.

    ``operator.index`` accepts Python and numpy integers but not floats or
    strings, so a float budget computed upstream (e.g. ``0.1 * n``) fails loudly
    here instead of being truncated silently.
    """
    try:
        out = operator.index(value)  # type: ignore[arg-type]  # any object: its TypeError is the check
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}: {value!r}") from None
    if out < 0:
        raise ValueError(f"{name} must be >= 0, got {out}")
    return int(out)


def _as_capacities(capacities: object) -> np.ndarray:
    """Validate ``capacities`` and return it as a 1-D ``int64`` array (a copy).

    Float arrays are accepted when every value is a finite whole number, because
    pandas upcasts integer columns to float in some group-by/merge paths; any
    fractional, NaN or infinite value is an error rather than being rounded.
    """
    arr = np.asarray(capacities)
    if arr.ndim != 1:
        raise ValueError(f"capacities must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    kind = arr.dtype.kind
    if kind == "b" or kind not in "iuf":
        raise ValueError(f"capacities must be integers, got dtype {arr.dtype}")
    if kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.floor(arr)):
            raise ValueError("capacities must be whole numbers (got fractional, NaN or inf values)")
    if arr.min() < 0:
        raise ValueError(f"capacities must be >= 0, got min {arr.min()}")
    if arr.max() > _INT64_MAX:
        raise ValueError(f"capacities must fit in int64, got max {arr.max()}")
    out = arr.astype(np.int64, copy=True)
    # The cut search forms partial sums bounded by the total, so the total must fit.
    if int(out.max()) * out.size > _INT64_MAX and sum(int(v) for v in out.tolist()) > _INT64_MAX:
        raise ValueError("sum of capacities overflows int64")
    return out


# --------------------------------------------------------------------------- water-filling


def _cut_and_total(caps: np.ndarray, budget: int) -> tuple[int, int]:
    """Return ``(x, total)``: the water-filling cut and ``sum(caps)``.

    Notes
    -----
    Let ``f(x) = sum(min(x, cap_i))``; it is non-decreasing and piecewise linear
    with breakpoints at the capacities. With capacities sorted ascending
    ``c_1 <= ... <= c_n`` and prefix sums ``P_j``, ``f(c_j) = P_j + c_j (n - j)``
    (ties are harmless: equal capacities contribute the same either way). Let
    ``k`` be the number of ``j`` with ``f(c_j) <= T``. On ``[c_k, c_{k+1}]`` the
    first ``k`` clusters are full and the rest receive ``x`` each, so the largest
    feasible cut is ``(T - P_k) // (n - k)``, which lies below ``c_{k+1}``.
    Cost: one sort, ``O(n log n)``, independent of ``T``. No intermediate exceeds
    the total capacity, because ``c_j (n - j) <= sum_{i > j} c_i``.
    """
    n = caps.size
    if n == 0:
        return 0, 0
    total = int(caps.sum())
    if total <= budget:
        # Every cut >= max(cap) is feasible; report the smallest such one, which
        # is where the targets stop changing (all clusters are at capacity).
        return int(caps.max()), total
    c = np.sort(caps)
    prefix = np.cumsum(c)  # P_1 .. P_n
    remaining = np.arange(n - 1, -1, -1, dtype=np.int64)  # n - j for j = 1 .. n
    f_at_caps = prefix + c * remaining  # non-decreasing
    k = int(np.searchsorted(f_at_caps, budget, side="right"))  # k < n since f(c_n) = total > T
    p_k = int(prefix[k - 1]) if k > 0 else 0
    return (budget - p_k) // (n - k), total


def water_fill_cut(capacities: np.ndarray, budget: int) -> int:
    """Return the water-filling cut: the largest ``x >= 0`` with ``sum(min(x, cap)) <= budget``.

    This is the deterministic part of :func:`water_fill`, exposed so it can be
    tested against a brute-force oracle.

    Parameters
    ----------
    capacities : array_like of int, shape (n,)
        Per-cluster capacities (``multiplier * flat_size``), all ``>= 0``.
    budget : int
        Total number of samples to distribute, ``>= 0``.

    Returns
    -------
    int
        The cut ``x``. When ``sum(capacities) <= budget`` every cut at or above
        ``max(capacities)`` is feasible, so the smallest of those, ``max(capacities)``
        (``0`` for no clusters), is returned: it is the point where every cluster
        is at capacity and larger values change nothing.

    Raises
    ------
    ValueError
        If ``capacities`` is not 1-D whole numbers ``>= 0`` or ``budget < 0``.
    TypeError
        If ``budget`` is not an integer.
    """
    budget = _as_nonneg_int(budget, "budget")
    caps = _as_capacities(capacities)
    return _cut_and_total(caps, budget)[0]


def water_fill(capacities: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Split an integer ``budget`` among sibling clusters as evenly as their capacities allow.

    Each cluster receives ``min(x, cap_i)`` where ``x`` is :func:`water_fill_cut`;
    the leftover ``R = budget - sum(min(x, cap_i))`` (always fewer than the number
    of clusters with ``cap_i > x``) is handed out one unit each to ``R`` of those
    clusters, drawn uniformly without replacement from ``rng``. The random
    remainder avoids systematically favouring low cluster ids, which a
    deterministic tie-break would do across the many groups of a large tree.

    Parameters
    ----------
    capacities : array_like of int, shape (n,)
        Per-cluster capacities (``multiplier * flat_size``), all ``>= 0``.
    budget : int
        Total number of samples to distribute, ``>= 0``.
    rng : numpy.random.Generator
        Source of the remainder draw; use :func:`seeded_rng` keyed by the parent
        group so the result does not depend on processing order. Not consumed
        when there is no remainder to draw.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        Targets in the order of ``capacities``. They sum to exactly
        ``min(budget, sum(capacities))``; each is ``<= cap_i`` and
        ``>= min(x, cap_i)``; targets of clusters below capacity differ by at
        most one. If ``budget >= sum(capacities)`` the targets equal the
        capacities.

    Raises
    ------
    ValueError
        If ``capacities`` is not 1-D whole numbers ``>= 0`` or ``budget < 0``.
    TypeError
        If ``budget`` is not an integer.
    """
    budget = _as_nonneg_int(budget, "budget")
    caps = _as_capacities(capacities)
    x, total = _cut_and_total(caps, budget)
    if total <= budget:
        return caps
    targets = np.minimum(caps, np.int64(x))
    remainder = budget - int(targets.sum())
    if remainder > 0:
        eligible = np.flatnonzero(caps > x)
        # Guaranteed by maximality of x: f(x + 1) = f(x) + len(eligible) > budget.
        assert remainder < eligible.size
        chosen = rng.choice(eligible, size=remainder, replace=False, shuffle=False)
        targets[chosen] += 1
    return targets


# --------------------------------------------------------------------------- seeding


# --------------------------------------------------------------------------- leaf allocation


def leaf_copies(
    size: int,
    target: int,
    multiplier: int,
    distances: np.ndarray | None,
    strategy: str,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """Turn a level-1 cluster's target into per-point copy counts.

    Each of the ``size`` points gets ``target // size`` copies and
    ``target % size`` points get one more, so copies are spread as evenly as
    possible and no point exceeds ``multiplier`` copies (its share of the
    cluster's capacity ``multiplier * size``).

    Parameters
    ----------
    size : int
        Number of points in the cluster, ``>= 0``.
    target : int
        Number of samples assigned to the cluster, ``>= 0``. Values at or above
        the capacity ``size * multiplier`` give every point ``multiplier`` copies.
    multiplier : int
        Maximum copies per point, ``>= 0`` (1 = sampling without replacement).
    distances : array_like of float, shape (size,), or None
        Point-to-centroid distances, required for strategy ``'c'`` and ignored
        for ``'r'``.
    strategy : {'r', 'c'}
        Who gets the extra copies: ``'r'`` random points without replacement;
        ``'c'`` the points closest to the centroid first (ascending distance,
        ties broken by lower index, matching an ordered window in Spark).
    rng : numpy.random.Generator or None
        Required for ``'r'`` when there are extra copies to place; unused by ``'c'``.

    Returns
    -------
    numpy.ndarray of int64, shape (size,)
        Copy count per point, in input order. Sums to ``min(target, size * multiplier)``.

    Raises
    ------
    ValueError
        On an unknown strategy, a negative ``size``/``target``/``multiplier``,
        missing, mis-shaped or NaN ``distances`` for ``'c'``, or a missing ``rng``
        for ``'r'``.
    """
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    size = _as_nonneg_int(size, "size")
    target = _as_nonneg_int(target, "target")
    multiplier = _as_nonneg_int(multiplier, "multiplier")

    dist = None
    if strategy == "c":
        if distances is None:
            raise ValueError("distances are required for strategy 'c'")
        dist = np.asarray(distances)
        if dist.shape != (size,):
            raise ValueError(f"distances must have shape ({size},), got {dist.shape}")
        if dist.dtype.kind not in "iuf":
            raise ValueError(f"distances must be numeric, got dtype {dist.dtype}")
        if dist.dtype.kind == "f" and np.isnan(dist).any():
            raise ValueError("distances must not contain NaN")

    if size * multiplier <= target:
        return np.full(size, multiplier, dtype=np.int64)

    base, extra = divmod(target, size)  # size > 0 here; base < multiplier
    copies = np.full(size, base, dtype=np.int64)
    if extra:
        if strategy == "c":
            chosen = np.argsort(dist, kind="stable")[:extra]  # type: ignore[arg-type]  # strategy 'c': set above
        else:
            if rng is None:
                raise ValueError("rng is required for strategy 'r'")
            chosen = rng.choice(size, size=extra, replace=False, shuffle=False)
        copies[chosen] += 1
    return copies
