"""Placing rows in a finished hierarchy without moving it: ``Run.assign``, the model's
``transform``. The rule is ``update``'s: the nearest level-1 centroid (with the level's
own assignment settings, the centroid index when K is large), then each level's parent.
Nothing is written; the result is a lazy DataFrame (O(K x D) in the driver: the level-1
centroids it ships to the tasks)."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from curation_spark.curation import hierarchy
from curation_spark.engine import kmeans
from curation_spark.io.runfolder import RunFolder
from curation_spark.io.tables import POINT_ID, check_columns, to_points

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: The output column with the cluster id at every level, level 1 first.
CLUSTER_PATH = "cluster_path"


def assign_down(run: RunFolder, df: DataFrame, id_col: str | None = None,
                embedding_col: str | None = None) -> DataFrame:
    """``id_col, cluster_path, distance`` for every row of ``df``: ``cluster_path`` is
    array<long> (levels 1..L), ``distance`` the one to the level-1 centroid (``1 - cos``
    for cosine runs). Columns default to the run's ``input.id_col`` / ``input.embedding_col``;
    a missing one or a wrong type is one :class:`~curation_spark.errors.InputError` line."""
    from pyspark.sql import functions as F

    from curation_spark.curation.update import level_one_centroids, run_dimension

    meta = run.metadata
    assert meta is not None
    id_col = id_col or meta.config.input.id_col
    embedding_col = embedding_col or meta.config.input.embedding_col
    check_columns(df, id_col, embedding_col)
    dim = run_dimension(run)
    centroids = level_one_centroids(run, dim)
    clustering = dataclasses.replace(meta.config.clustering, distance=meta.distance)
    params = hierarchy.level_params(clustering, 1, len(centroids))
    assigned = kmeans.assign_points(to_points(df, id_col, embedding_col), centroids, meta.distance,
                                    stage="assign", params=params)
    out = assigned.select(F.col(POINT_ID), F.col("cluster_id").cast("long").alias("_c1"), "distance")
    n_levels = run.n_levels_done()
    for level in range(1, n_levels):
        parents = run.read_centroids(level).select(F.col("cluster_id").cast("long").alias(f"_c{level}"),
                                                   F.col("parent_id").cast("long").alias(f"_c{level + 1}"))
        out = out.join(parents, f"_c{level}", "left")
    path = F.array(*[F.col(f"_c{level}") for level in range(1, n_levels + 1)])
    return out.select(F.col(POINT_ID).alias(id_col), path.alias(CLUSTER_PATH), "distance")
