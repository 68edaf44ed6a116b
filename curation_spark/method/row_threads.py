"""Splitting a numpy kernel's rows over threads (numpy only, no Spark).

The driver path runs a level's k-means in one Python process, and the index path's
kernels are many small GEMMs, gathers and argmins, each too small for BLAS's own threads
to help. numpy releases the GIL inside all of them, so contiguous slices of the rows (or of
the groups of rows) processed by plain Python threads use every core faiss was given.
Results do not depend on the thread count: each slice writes its own rows, computed
exactly as one thread would.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

#: Below this many multiply-adds a thread pool's start-up (~0.1 ms) is not worth it.
MIN_PARALLEL_WORK = 1 << 20


def balanced_cuts(weights: Sequence[float], parts: int) -> list[int]:
    """Cut positions 0 = c_0 <= ... <= c_parts = len(weights) so that the slices hold
    about equal total weight (for groups of rows of unequal size)."""
    n = len(weights)
    if parts <= 1 or n == 0:
        return [0, n]
    total = float(sum(weights))
    cuts, acc, goal = [0], 0.0, total / parts
    for i, w in enumerate(weights):
        acc += float(w)
        if acc >= goal * len(cuts) and len(cuts) < parts:
            cuts.append(i + 1)
    cuts.append(n)
    return cuts


def run_slices(work: Callable[[int, int], None], cuts: Sequence[int], threads: int) -> None:
    """``work(lo, hi)`` for each slice between consecutive ``cuts``, on up to ``threads``
    threads (inline when one). Exceptions propagate."""
    slices = [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True) if hi > lo]
    if threads <= 1 or len(slices) <= 1:
        for lo, hi in slices:
            work(lo, hi)
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(slices))) as pool:
        for future in [pool.submit(work, lo, hi) for lo, hi in slices]:
            future.result()


def threads_for_work(multiply_adds: float, threads: int) -> int:
    """The threads worth using for a kernel of ``multiply_adds``: one for small ones."""
    return 1 if multiply_adds < MIN_PARALLEL_WORK else max(1, int(threads))


def faiss_threads() -> int:
    """The OpenMP threads faiss runs on here (the driver path sets them per level, a Spark
    task to its cores): the default thread count of every kernel split over threads."""
    import faiss

    return int(faiss.omp_get_max_threads())
