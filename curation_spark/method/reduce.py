"""Reduce-scatter of sparse per-cluster partial sums, and the all-gather of the result.

Each Lloyd iteration every task has float64 partial sums and counts for the clusters its
block touched. Instead of sending them all to one task (which would receive tasks x K x D
x 8 bytes), cluster ids are split into T contiguous ranges and task r *owns* range r:

1. every task sends each owner only the touched clusters in the owner's range
   (:func:`split_by_owner`, then :meth:`TaskGroup.all_to_all
   <curation_spark.engine.exchange.TaskGroup.all_to_all>`);
2. each owner sums what it received, in rank order, into dense arrays of its range
   (:func:`reduce_owned`) and computes the new centroids of its range;
3. the float32 centroid rows are all-gathered (:func:`all_gather_rows`) so every task
   holds the full (K, D) centroids for the next assignment.

Bytes per task per iteration: a task sends about (touched clusters) x (8D + 12) bytes
(plus a 16-byte header per owner) and receives from every task at most its K/T share,
i.e. at most K/T x (8D + 12) bytes per peer and K x (8D + 12) bytes in total, however many
tasks there are. The all-gather then moves K x D x 4 bytes: each task sends its K/T rows
to every peer and receives the other (K - K/T) rows. No task ever receives K x D x 8
bytes from one peer, and the load is the same on every task.

The module is numpy only (no Spark, no sockets): the socket half is
:mod:`curation_spark.engine.exchange`; :func:`reduce_scatter` and :func:`all_gather_rows` only
glue the two together.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Protocol

import numpy as np

BytesLike = bytes | bytearray | memoryview


class Collective(Protocol):
    """The collectives of a group of tasks these functions need (a barrier stage's
    :class:`~curation_spark.engine.exchange.TaskGroup`, or threads in tests)."""

    rank: int
    size: int

    def all_to_all(self, payloads: Sequence[BytesLike]) -> list[BytesLike]: ...

    def all_gather(self, payload: BytesLike) -> list[BytesLike]: ...

# Payload layout: header (m, d) as two int64, then sums (m, d) float64, counts (m,) int64,
# idx (m,) int32 -- widest types first so every array starts 8-byte aligned.
_HEADER = struct.Struct("<qq")


def owner_bounds(n_clusters: int, n_tasks: int) -> np.ndarray:
    """Boundaries of the cluster-id range each task owns.

    Ranges are contiguous and differ in size by at most one, so the reduce and the
    all-gather cost the same on every task; when ``n_clusters < n_tasks`` some are empty.

    Returns
    -------
    bounds : (n_tasks + 1,) int64, non-decreasing, ``bounds[0] == 0`` and
        ``bounds[-1] == n_clusters``; task r owns ``[bounds[r], bounds[r + 1])``.
    """
    if n_tasks < 1 or n_clusters < 0:
        raise ValueError(f"need n_tasks >= 1 and n_clusters >= 0, got {n_tasks} and {n_clusters}")
    return np.arange(n_tasks + 1, dtype=np.int64) * n_clusters // n_tasks


def split_by_owner(idx: np.ndarray, counts: np.ndarray, sums: np.ndarray, bounds: np.ndarray) -> list[bytes]:
    """One compact payload per owner with only this block's clusters in its range.

    Parameters
    ----------
    idx
        (m,) sorted unique cluster ids this block touched (int32).
    counts
        (m,) int64 points per cluster.
    sums
        (m, D) float64 sums of the points per cluster.
    bounds
        Owner ranges from :func:`owner_bounds`.

    Returns
    -------
    One payload per rank, ``16 + m_r x (8D + 12)`` bytes; a rank owning none of the
    block's clusters gets a well-formed empty payload.
    """
    idx = np.asarray(idx)
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    if sums.ndim != 2 or len(idx) != len(sums) or len(idx) != len(counts):
        raise ValueError(f"idx {idx.shape}, counts {counts.shape} and sums {sums.shape} do not match")
    if len(idx) and (np.any(np.diff(idx) <= 0) or idx[0] < bounds[0] or idx[-1] >= bounds[-1]):
        raise ValueError("idx must be sorted, unique cluster ids inside the owner bounds")
    dim = sums.shape[1]
    cuts = np.searchsorted(idx, bounds)
    payloads = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):  # bytes.join takes the arrays' buffers: one copy each
        payloads.append(b"".join((  # type: ignore[arg-type]  # ndarrays are buffers (stubs say so for 3.12+)
            _HEADER.pack(b - a, dim),
            np.ascontiguousarray(sums[a:b]),
            np.ascontiguousarray(counts[a:b]),
            np.ascontiguousarray(idx[a:b], dtype=np.int32),
        )))
    return payloads


def _decode(payload: BytesLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m, dim = _HEADER.unpack_from(payload, 0)
    off = _HEADER.size
    sums = np.frombuffer(payload, dtype=np.float64, count=m * dim, offset=off).reshape(m, dim)
    off += 8 * m * dim
    counts = np.frombuffer(payload, dtype=np.int64, count=m, offset=off)
    off += 8 * m
    idx = np.frombuffer(payload, dtype=np.int32, count=m, offset=off)
    return idx, counts, sums


def reduce_owned(payloads: Sequence[BytesLike], lo: int, hi: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense sums and counts of the owned clusters ``[lo, hi)`` from every rank's payload.

    Payloads are added **in the given (rank) order, starting from zeros**, so the result
    is bit-for-bit equal to ``total = zeros; for r in ranks: total = total + dense_r`` over
    the ranks' dense partial-sum arrays: a cluster absent from a payload would add +0.0,
    which leaves a running total that started at +0.0 unchanged. This makes the
    centroids independent of how many tasks own the ranges and of message arrival order.

    Returns
    -------
    sums : (hi - lo, dim) float64
    counts : (hi - lo,) int64
    """
    total_sums = np.zeros((hi - lo, dim), dtype=np.float64)
    total_counts = np.zeros(hi - lo, dtype=np.int64)
    for payload in payloads:
        idx, counts, sums = _decode(payload)
        if len(idx) == 0:
            continue
        if sums.shape[1] != dim or idx[0] < lo or idx[-1] >= hi:
            raise ValueError(f"payload of clusters [{idx[0]}, {idx[-1]}] x {sums.shape[1]} "
                             f"is not for [{lo}, {hi}) x {dim}")
        rows = idx.astype(np.intp) - lo
        total_sums[rows] += sums  # ids are unique: one plain add per touched row
        total_counts[rows] += counts
    return total_sums, total_counts


def reduce_scatter(group: Collective, idx: np.ndarray, counts: np.ndarray, sums: np.ndarray, n_clusters: int,
                   dim: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Sum every task's sparse partials; this task gets the dense totals of its own range.

    Returns
    -------
    lo, hi
        The owned cluster-id range ``[lo, hi)`` (see :func:`owner_bounds`).
    sums : (hi - lo, dim) float64
    counts : (hi - lo,) int64
    """
    bounds = owner_bounds(n_clusters, group.size)
    sums = np.asarray(sums, dtype=np.float64).reshape(len(idx), dim)
    received = group.all_to_all(split_by_owner(idx, counts, sums, bounds))
    lo, hi = int(bounds[group.rank]), int(bounds[group.rank + 1])
    total_sums, total_counts = reduce_owned(received, lo, hi, dim)
    return lo, hi, total_sums, total_counts


def all_gather_rows(group: Collective, owned_rows: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The full (K, D) float32 array from every task's owned rows; identical on every task.

    Parameters
    ----------
    owned_rows
        (hi - lo, D) rows of this task's range ``[bounds[rank], bounds[rank + 1])``.
    bounds
        Owner ranges from :func:`owner_bounds` (the same on every task).
    """
    rows = np.ascontiguousarray(owned_rows, dtype=np.float32)
    lo, hi = int(bounds[group.rank]), int(bounds[group.rank + 1])
    if rows.ndim != 2 or len(rows) != hi - lo:
        raise ValueError(f"task {group.rank} owns {hi - lo} rows, got an array of shape {rows.shape}")
    dim = rows.shape[1]
    full = np.empty((int(bounds[-1]), dim), dtype=np.float32)
    for r, piece in enumerate(group.all_gather(memoryview(rows))):  # type: ignore[arg-type]  # an ndarray is a buffer
        full[bounds[r]:bounds[r + 1]] = np.frombuffer(piece, dtype=np.float32).reshape(-1, dim)
    return full


def all_gather_values(group: Collective, values: Sequence[float]) -> np.ndarray:
    """Small per-task float64 statistics (objective terms, timings) from every task.

    Returns
    -------
    (T, len(values)) float64, row r from rank r; every task passes the same number.
    """
    mine = np.ascontiguousarray(values, dtype=np.float64)
    return np.stack([np.frombuffer(p, dtype=np.float64) for p in group.all_gather(mine.tobytes())])
