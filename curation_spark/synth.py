"""Synthetic embedding pools with known ground truth.

The curation algorithm only reads ``id`` and ``embedding``; the ``label``
column is the ground truth used by tests and experiments to measure how
balanced a curated subset is (see
:func:`curation_spark.method.balance.label_entropy`).

Two generators are provided:

* :func:`make_rings` -- the 2-D toy data of the paper: five rings of very
  different sizes, so an unbalanced pool can be checked for balance after
  curation.
* :func:`make_gaussian_mixture` / :func:`iter_gaussian_mixture_batches` -- a
  long-tailed mixture of isotropic Gaussians in ``dim`` dimensions, generated
  in bounded-memory batches so 10M-point pools can be written to Parquet.

All randomness comes from explicitly seeded ``numpy.random.Generator``
objects; no global random state is used.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

# Re-exported for existing callers; it lives in the method layer so the report and the demo
# can measure balance without importing this generator.

__all__ = [
    "RING_SIZES",
    "RING_CENTERS",
    "SCHEMA",
    "make_rings",
    "make_gaussian_mixture",
    "iter_gaussian_mixture_batches",
]

RING_SIZES: tuple[int, ...] = (20000, 200, 1000, 500, 8000)
RING_CENTERS: tuple[tuple[float, float], ...] = (
    (-2.2, 1.0),
    (0.0, 1.0),
    (2.2, 1.0),
    (-1.2, 0.2),
    (1.2, 0.2),
)

#: Schema shared by every generator in this module.
SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("embedding", pa.list_(pa.float32())),
        pa.field("label", pa.int32()),
    ]
)

# Default mixture geometry.  Means ~ N(0, spread^2 I) and points are
# mean + noise * N(0, I).  Both the distance between two means
# (~ spread * sqrt(2 dim)) and the radius of a component (~ noise * sqrt(dim))
# grow like sqrt(dim), so the separation is governed by spread / noise = 4:
# in dim=128 two means are ~16 apart while points lie ~2.8 from their mean
# (and ~4 from each other), so components overlap very little even with
# thousands of components (nearest-true-mean accuracy 1.0 for 1000 components
# in dim=128, and for 100 components in dim=16).  In very low dimension
# (dim <= ~8) random means can land close together and components overlap.
DEFAULT_SPREAD: float = 1.0
DEFAULT_NOISE: float = 0.25
DEFAULT_BATCH_SIZE: int = 1_000_000

# Rows are generated in fixed chunks whose random streams depend only on
# (seed, chunk index).  Batches are assembled from chunks, so the data does not
# depend on batch_size nor on how many batches a consumer reads.
_CHUNK_ROWS: int = 1 << 16
_MAX_LIST_VALUES: int = 2**31 - 1  # int32 offsets of pa.list_

# spawn_key prefixes keep the stream for the means and the streams for each
# chunk (labels and noise separately) statistically independent.
_KEY_MEANS = 0
_KEY_CHUNK = 1
_SUB_LABELS = 0
_SUB_NOISE = 1


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _finite_float(name: str, value: object, *, min_value: float | None = None) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]  # any object: its TypeError is the check
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if min_value is not None and out < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {value!r}")
    return out


def _embedding_array(values: np.ndarray) -> pa.ListArray:
    """Wrap a C-contiguous (rows, dim) float32 array as ``list<float32>``.

    Zero-copy for the values; only the int32 offsets are allocated.
    """
    rows, dim = values.shape
    if rows * dim > _MAX_LIST_VALUES:
        raise ValueError(
            f"batch of {rows} rows x {dim} dims exceeds the int32 offsets of list<float32>"
        )
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    offsets = pa.array(np.arange(0, (rows + 1) * dim, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, flat)


def _record_batch(ids: np.ndarray, values: np.ndarray, labels: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array(ids.astype(np.int64, copy=False)),
            _embedding_array(values),
            pa.array(labels.astype(np.int32, copy=False)),
        ],
        schema=SCHEMA,
    )


# --------------------------------------------------------------------------
# rings
# --------------------------------------------------------------------------


def make_rings(
    seed: int = 0,
    sizes: Sequence[int] = RING_SIZES,
    centers: Sequence[Sequence[float]] = RING_CENTERS,
    r_min: float = 0.7,
    r_max: float = 1.0,
) -> pa.Table:
    """Generate the paper's 2-D toy pool: rings of very unequal sizes.

    Ring ``k`` has ``sizes[k]`` points whose distance to ``centers[k]`` is
    uniform in ``[r_min, r_max]`` and whose angle is uniform in ``[0, 2*pi)``.
    Rows are shuffled so that ``id`` order (and hence Spark partitioning by
    id) carries no information about the ring.

    Parameters
    ----------
    seed : int
        Seed of the ``numpy.random.Generator``; same seed, same table.
    sizes : sequence of int
        Number of points per ring (all > 0).
    centers : sequence of (x, y)
        Ring centres, one per size.
    r_min, r_max : float
        Radius range, ``0 <= r_min <= r_max``.

    Returns
    -------
    pyarrow.Table
        Columns ``id`` (int64, 0..N-1), ``embedding`` (list<float32> of
        length 2) and ``label`` (int32 ring index), ``N = sum(sizes)``.
    """
    sizes_list = [_positive_int(f"sizes[{i}]", s) for i, s in enumerate(sizes)]
    if not sizes_list:
        raise ValueError("sizes must contain at least one ring")
    try:
        centers_arr = np.asarray(centers, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("centers must be a sequence of (x, y) pairs") from None
    if centers_arr.ndim != 2 or centers_arr.shape[1] != 2:
        raise ValueError(f"centers must have shape (k, 2), got {centers_arr.shape}")
    if not np.all(np.isfinite(centers_arr)):
        raise ValueError("centers must be finite")
    if len(sizes_list) != len(centers_arr):
        raise ValueError(
            f"len(sizes)={len(sizes_list)} must equal len(centers)={len(centers_arr)}"
        )
    r_min = _finite_float("r_min", r_min, min_value=0.0)
    r_max = _finite_float("r_max", r_max)
    if r_min > r_max:
        raise ValueError(f"r_min={r_min} must be <= r_max={r_max}")

    rng = np.random.default_rng(seed)
    sizes_arr = np.asarray(sizes_list, dtype=np.int64)
    total = int(sizes_arr.sum())
    labels = np.repeat(np.arange(len(sizes_arr), dtype=np.int32), sizes_arr)
    radius = rng.uniform(r_min, r_max, size=total)
    angle = rng.uniform(0.0, 2.0 * np.pi, size=total)
    points = centers_arr[labels] + radius[:, None] * np.stack(
        [np.cos(angle), np.sin(angle)], axis=1
    )
    perm = rng.permutation(total)
    return pa.Table.from_batches(
        [
            _record_batch(
                np.arange(total, dtype=np.int64),
                points[perm].astype(np.float32),
                labels[perm],
            )
        ],
        schema=SCHEMA,
    )


# --------------------------------------------------------------------------
# long-tailed Gaussian mixture
# --------------------------------------------------------------------------


def _power_law_weights(n_components: int, alpha: float) -> np.ndarray:
    w = np.arange(1, n_components + 1, dtype=np.float64) ** (-alpha)
    return w / w.sum()


def _fill_chunk(
    out: np.ndarray,
    labels_out: np.ndarray,
    seed: int,
    chunk: int,
    offset: int,
    means: np.ndarray,
    cdf: np.ndarray,
    noise: float,
) -> None:
    """Write rows ``offset .. offset+len(out)`` of chunk ``chunk`` into ``out``.

    Labels and noise use separate streams, each consumed sequentially from the
    start of the chunk, so a row's value depends only on (seed, chunk, row);
    in particular it does not depend on the total ``n``.
    """
    stop = offset + out.shape[0]
    lab_rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(_KEY_CHUNK, chunk, _SUB_LABELS))
    )
    u = lab_rng.random(stop)[offset:]
    labels = np.searchsorted(cdf, u, side="right")
    np.minimum(labels, len(cdf) - 1, out=labels)  # guard against cdf[-1] < 1
    labels_out[:] = labels

    noise_rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(_KEY_CHUNK, chunk, _SUB_NOISE))
    )
    if offset == 0:
        noise_rng.standard_normal(out=out, dtype=np.float32)
    else:  # partial chunk: regenerate the prefix to stay consistent
        tmp = noise_rng.standard_normal(size=(stop, out.shape[1]), dtype=np.float32)
        out[:] = tmp[offset:]
    out *= np.float32(noise)
    out += means[labels]


def iter_gaussian_mixture_batches(
    n: int,
    dim: int,
    n_components: int,
    seed: int = 0,
    alpha: float = 1.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    spread: float = DEFAULT_SPREAD,
    noise: float = DEFAULT_NOISE,
    start: int = 0,
) -> Iterator[pa.RecordBatch]:
    """Yield a long-tailed Gaussian mixture pool in bounded-memory batches.

    Component ``k`` has weight ``w_k ∝ (k+1)^(-alpha)``, mean drawn once from
    ``N(0, spread^2 I)`` with the base seed, and points
    ``mean_k + noise * N(0, I)``.  Rows are produced in fixed internal chunks
    whose random streams depend only on ``(seed, chunk index)``, so the data
    is identical whatever ``batch_size`` is and however many batches are
    consumed; the pool for ``n`` is a prefix of the pool for any larger ``n``.

    Parameters
    ----------
    n : int
        Total number of points (> 0).
    dim : int
        Embedding dimension (> 0).
    n_components : int
        Number of mixture components (> 0).
    seed : int
        Base seed.
    alpha : float
        Power-law exponent (>= 0); 0 gives equal weights, larger is more
        long-tailed.
    batch_size : int
        Rows per yielded batch (the last one may be shorter);
        ``batch_size * dim`` must fit in int32 list offsets.
    spread : float
        Standard deviation of the component means (>= 0).
    noise : float
        Standard deviation of the isotropic noise around a mean (>= 0).
        The default ``spread / noise = 4`` keeps components well separated
        in any dimension (see module notes).
    start : int
        First row to yield (0 <= start <= n): rows ``start..n-1`` of the
        same pool, so separate workers can each generate one id range.

    Returns
    -------
    Iterator[pyarrow.RecordBatch]
        Batches with schema :data:`SCHEMA`; ``id`` runs contiguously
        start..n-1 across batches, ``label`` is the component index.
    """
    n = _positive_int("n", n)
    dim = _positive_int("dim", dim)
    n_components = _positive_int("n_components", n_components)
    batch_size = _positive_int("batch_size", batch_size)
    alpha = _finite_float("alpha", alpha, min_value=0.0)
    spread = _finite_float("spread", spread, min_value=0.0)
    noise = _finite_float("noise", noise, min_value=0.0)
    if min(batch_size, n) * dim > _MAX_LIST_VALUES:
        raise ValueError(
            f"batch_size={batch_size} x dim={dim} exceeds {_MAX_LIST_VALUES} list values per batch"
        )
    if not 0 <= int(start) <= n:
        raise ValueError(f"start must be in [0, n={n}], got {start!r}")
    seed = int(seed)
    return _mixture_batches(n, dim, n_components, seed, alpha, batch_size, spread, noise, int(start))


def _mixture_batches(
    n: int,
    dim: int,
    n_components: int,
    seed: int,
    alpha: float,
    batch_size: int,
    spread: float,
    noise: float,
    first: int = 0,
) -> Iterator[pa.RecordBatch]:
    # Separate generator function so argument errors raise at call time.
    means_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_KEY_MEANS,)))
    means = (means_rng.standard_normal((n_components, dim)) * spread).astype(np.float32)
    cdf = np.cumsum(_power_law_weights(n_components, alpha))

    for start in range(first, n, batch_size):
        stop = min(start + batch_size, n)
        values = np.empty((stop - start, dim), dtype=np.float32)
        labels = np.empty(stop - start, dtype=np.int32)
        row = start
        while row < stop:
            chunk, offset = divmod(row, _CHUNK_ROWS)
            end = min(stop, (chunk + 1) * _CHUNK_ROWS)
            _fill_chunk(
                values[row - start : end - start],
                labels[row - start : end - start],
                seed,
                chunk,
                offset,
                means,
                cdf,
                noise,
            )
            row = end
        yield _record_batch(np.arange(start, stop, dtype=np.int64), values, labels)


def make_gaussian_mixture(
    n: int,
    dim: int,
    n_components: int,
    seed: int = 0,
    alpha: float = 1.0,
    spread: float = DEFAULT_SPREAD,
    noise: float = DEFAULT_NOISE,
) -> pa.Table:
    """Materialise the long-tailed Gaussian mixture as one table.

    Concatenates :func:`iter_gaussian_mixture_batches` (zero-copy, one chunk
    per batch) so both functions always return the same data.

    Parameters
    ----------
    n, dim, n_components, seed, alpha, spread, noise
        See :func:`iter_gaussian_mixture_batches`.

    Returns
    -------
    pyarrow.Table
        ``n`` rows with schema :data:`SCHEMA`.
    """
    batches = iter_gaussian_mixture_batches(
        n, dim, n_components, seed=seed, alpha=alpha, spread=spread, noise=noise
    )
    return pa.Table.from_batches(list(batches), schema=SCHEMA)
