"""Drift: how well a fitted hierarchy still covers the rows an update adds.

The fit's baseline (its own rows' mean distance to their level-1 centroid and the 99th
percentile of it) is measured when level 1 is written — from the driver's arrays for an
in-process level, one aggregate job otherwise — so that no update pays for it (runs made
before the baseline was recorded get it at their first update). Each update compares its
new rows with it: about 1 % of rows from the fit's own distribution lie beyond the fit's
99th percentile; many more mean the input moved away from the centroids.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from curation_spark.io.run_metadata import DriftBaseline, DriftCheck

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row

#: Accuracy of the fit's 99th-percentile distance on Spark (``percentile_approx``: relative
#: rank error 1 / this).
PERCENTILE_ACCURACY = 10_000
#: The percentile the new rows are compared against.
TAIL_QUANTILE = 0.99


def baseline_of_distances(distances: np.ndarray) -> DriftBaseline:
    """The baseline of distances held in the driver (an in-process level); the percentile
    is the smallest distance with 99 % of the rows at or below it, as ``percentile_approx``
    defines it."""
    d = np.asarray(distances, dtype=np.float64)
    if not len(d):
        return DriftBaseline(rows=0, mean_distance=0.0, p99_distance=0.0)
    p99 = float(np.quantile(d, TAIL_QUANTILE, method="inverted_cdf"))
    return DriftBaseline(rows=int(len(d)), mean_distance=float(d.mean()), p99_distance=p99)


def baseline_of_assignments(assignments: DataFrame) -> DriftBaseline:
    """The baseline of a level-1 assignments table (``distance`` column), one job."""
    from pyspark.sql import functions as F

    row: Row = assignments.agg(F.count(F.lit(1)).alias("n"), F.avg("distance").alias("mean"),  # type: ignore[assignment]  # an aggregate: one row
                          F.percentile_approx("distance", TAIL_QUANTILE, PERCENTILE_ACCURACY).alias("p99")).first()
    n = int(row["n"])
    return DriftBaseline(rows=n, mean_distance=float(row["mean"]) if n else 0.0,
                         p99_distance=float(row["p99"]) if n else 0.0)


def judge(new_rows: int, distance_sum: float, beyond_p99: int, baseline: DriftBaseline,
          threshold: float) -> DriftCheck:
    """The drift of ``new_rows`` rows whose distances add up to ``distance_sum``, of which
    ``beyond_p99`` lie beyond the baseline's 99th percentile; due for a re-cluster when
    that share exceeds ``threshold``."""
    share = beyond_p99 / new_rows if new_rows else 0.0
    return DriftCheck(new_rows=new_rows, new_mean_distance=distance_sum / new_rows if new_rows else 0.0,
                      old_mean_distance=baseline.mean_distance, old_p99_distance=baseline.p99_distance,
                      share_beyond_p99=share, threshold=threshold, recluster_due=bool(new_rows and share > threshold))

