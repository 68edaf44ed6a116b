"""Hand-checkable runs (in the style of pyspark.ml's test_clustering): six points, exact
centres, sizes, cost and curated rows, through the whole pipeline on Spark.

Points: A = (0,0), (0,1), (1,0) (ids 1-3) and B = (10,10), (10,11), (11,10) (ids 4-6).
Level 1 (K = 2): centres (1/3, 1/3) and (31/3, 31/3), sizes 3 and 3; each cluster's cost
is 2/9 + 5/9 + 5/9 = 4/3, so the objective is 8/3. Level 2 (K = 1): the mean of the two
centres, (16/3, 16/3), size 2, flat size 6; cost 2 * |(5, 5)|^2 = 100. Balanced sampling
of 2 points with strategy ``c``: one per level-1 cluster (water-filling 2 over capacities
3 and 3), the one closest to its centre: ids 1 and 4.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curation_spark import pipeline
from curation_spark.config import load_config
from curation_spark.io.tables import read_table

POINTS = [(1, [0.0, 0.0]), (2, [0.0, 1.0]), (3, [1.0, 0.0]), (4, [10.0, 10.0]), (5, [10.0, 11.0]), (6, [11.0, 10.0])]


@pytest.fixture(scope="module")
def six_points(spark, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("six") / "points")
    spark.createDataFrame(POINTS, "id long, embedding array<float>").coalesce(2).write.parquet(path)
    return path


# in_process_max_mb=0 sends both levels through the Spark barrier engine; the default
# clusters these tiny levels in the driver. Both must give the hand-computed numbers.
@pytest.mark.parametrize("in_process_max_mb,degenerate_share", [pytest.param(0, 0.5, marks=pytest.mark.slow),
                                                                  (256, 0.4)])
def test_six_points_exact_hierarchy_and_sample(spark, six_points, tmp_path, caplog, in_process_max_mb,
                                               degenerate_share):
    out = str(tmp_path / "run")
    config = load_config([], [
        f"input.path={six_points}", "input.format=parquet", f"output.path={out}",
        "clustering.n_levels=2", "clustering.n_clusters=[2,1]", "clustering.n_iters=[10,10]",
        "clustering.n_resampling_steps=[0,0]", f"clustering.in_process_max_mb={in_process_max_mb}",
        f"clustering.degenerate_share={degenerate_share}", "sampling.target_size=2", "sampling.strategy=c",
    ])
    with caplog.at_level("WARNING", logger="curation_spark.curation.hierarchy"):
        summary = pipeline.run(config, spark)
    meta = json.loads(Path(out, "run.json").read_text())
    level1, level2 = meta["levels"]["1"], meta["levels"]["2"]
    assert level1["objective"] == pytest.approx(8 / 3, rel=1e-6)
    assert level2["objective"] == pytest.approx(100.0, rel=1e-6)
    # half the points in the largest level-1 cluster: degenerate only below a 0.5 threshold
    assert level1["sizes"]["largest_share"] == 0.5
    assert level1["degenerate"] is (degenerate_share < 0.5) and level2["degenerate"] is False  # K = 1 never
    assert ("level 1 is degenerate" in caplog.text) is (degenerate_share < 0.5)

    cents = read_table(spark, f"{out}/level_1/centroids", "delta").orderBy("size", "cluster_id").collect()
    got = sorted((tuple(np.round(r["centroid"], 5)), r["size"], r["flat_size"]) for r in cents)
    assert got == [((0.33333, 0.33333), 3, 3), ((10.33333, 10.33333), 3, 3)]
    top = read_table(spark, f"{out}/level_2/centroids", "delta").collect()
    assert len(top) == 1 and (top[0]["size"], top[0]["flat_size"]) == (2, 6)
    np.testing.assert_allclose(top[0]["centroid"], [16 / 3, 16 / 3], rtol=1e-6)
    assert {r["parent_id"] for r in cents} == {top[0]["cluster_id"]}

    assign = {r["point_id"]: r for r in read_table(spark, f"{out}/level_1/assignments", "delta").collect()}
    assert assign[1]["cluster_id"] == assign[2]["cluster_id"] == assign[3]["cluster_id"] != assign[4]["cluster_id"]
    assert assign[1]["distance"] == pytest.approx(np.sqrt(2) / 3, rel=1e-6)
    assert assign[2]["distance"] == pytest.approx(np.sqrt(5) / 3, rel=1e-6)

    curated = sorted(r["id"] for r in read_table(spark, summary.curated_path, "delta").collect())
    assert curated == [1, 4]


# Six unit vectors: A at 0 and +-20 degrees (ids 1-3), B at 90 and 90 +- 20 degrees (ids
# 4-6). ``distance: auto`` finds them unit-norm and clusters by cosine: the centres are the
# re-normalised means, exactly (1, 0) and (0, 1), and the off-axis points are 1 - cos 20
# degrees from theirs. Scaled by 3 the same points are not unit-norm: auto is l2.
ANGLES = [(1, 0.0), (2, 20.0), (3, -20.0), (4, 90.0), (5, 110.0), (6, 70.0)]


@pytest.mark.parametrize("scale,expected", [(1.0, "cosine"), (3.0, "l2")])
def test_distance_auto_follows_the_norms(spark, tmp_path, scale, expected):
    rows = [(i, [scale * float(np.cos(np.radians(a))), scale * float(np.sin(np.radians(a)))]) for i, a in ANGLES]
    data = str(tmp_path / "points")
    spark.createDataFrame(rows, "id long, embedding array<float>").write.parquet(data)
    out = str(tmp_path / "run")
    config = load_config([], [f"input.path={data}", f"output.path={out}", "clustering.n_levels=1",
                              "clustering.n_clusters=[2]", "clustering.n_iters=[10]",
                              "clustering.n_resampling_steps=[0]"])
    assert config.clustering.distance == "auto"  # the default
    summary = pipeline.cluster(config, spark)
    meta = json.loads(Path(out, "run.json").read_text())
    assert summary.distance == meta["input"]["distance"] == expected
    assert meta["config"]["clustering"]["distance"] == "auto"  # the fingerprint keeps what the user asked
    assign = {r["point_id"]: r for r in read_table(spark, f"{out}/level_1/assignments", "delta").collect()}
    off_axis = assign[2]["distance"]
    if expected == "cosine":
        cents = sorted(tuple(np.round(r["centroid"], 5)) for r in read_table(spark, f"{out}/level_1/centroids").collect())
        assert cents == [(0.0, 1.0), (1.0, 0.0)]
        assert off_axis == pytest.approx(1 - np.cos(np.radians(20)), rel=1e-5)
    else:  # l2: centre (3 (1 + 2 cos 20) / 3, 0); the point at 20 degrees is its Euclidean distance away
        centre = np.array([(1 + 2 * np.cos(np.radians(20))), 0.0])
        point = 3 * np.array([np.cos(np.radians(20)), np.sin(np.radians(20))])
        assert off_axis == pytest.approx(float(np.linalg.norm(point - centre)), rel=1e-5)
    # a resume of the same config over the same input resolves the same way: nothing to do
    assert pipeline.cluster(config, spark).levels[0].seconds == summary.levels[0].seconds
    # an explicit distance is used as given: l2 on the same unit vectors, nothing resolved
    explicit = load_config([], [f"input.path={data}", f"output.path={tmp_path / 'explicit'}", "clustering.n_levels=1",
                                "clustering.n_clusters=[2]", "clustering.n_iters=[10]",
                                "clustering.n_resampling_steps=[0]", "clustering.distance=l2"])
    if expected == "cosine":
        kept = pipeline.cluster(explicit, spark)
        meta = json.loads(Path(tmp_path, "explicit", "run.json").read_text())
        assert kept.distance == "l2" and meta["input"]["distance"] is None
