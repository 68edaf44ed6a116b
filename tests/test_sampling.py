"""Hierarchical balanced sampling on Spark: exact sizes, determinism, strategies, balance
on the toy rings, keep_columns from Parquet and Delta inputs."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from curation_spark import pipeline, synth
from curation_spark.config import load_config
from curation_spark.method.balance import label_entropy
from curation_spark.io.tables import read_table

#: End-to-end Spark runs: outside the fast lane (`-m "not slow and not cluster"`), in CI.
pytestmark = pytest.mark.slow


def _sample(spark, run_path, target, multiplier=1, strategy="r", seed=0, name="s"):
    config = load_config([], [f"sampling.target_size={target}", f"sampling.multiplier={multiplier}",
                              f"sampling.strategy={strategy}", f"sampling.seed={seed}"])
    summary = pipeline.sample(config, spark, run_path=run_path, table_name=name)
    return summary, read_table(spark, summary.curated_path)


def test_curated_rings_are_balanced(spark, toy_run, flat_run):
    rings = synth.make_rings(seed=0)
    labels = rings.column("label").to_numpy()
    random_labels = labels[np.random.default_rng(0).choice(len(labels), 1000, replace=False)]
    ours = np.array([r["label"] for r in read_table(spark, toy_run[1].curated_path).select("label").collect()])
    flat = np.array([r["label"] for r in read_table(spark, flat_run[1].curated_path).select("label").collect()])
    h = {name: label_entropy(v, n_labels=5) for name, v in
         [("curation-spark", ours), ("flat k-means", flat), ("uniform random", random_labels)]}
    for name, v in [("curation-spark", ours), ("flat k-means", flat), ("uniform random", random_labels)]:
        print(f"\n{name:16s} per-ring counts {np.bincount(v, minlength=5).tolist()}  entropy {h[name]:.3f}", end="")
    print()
    assert len(ours) == 1000
    assert h["curation-spark"] >= 0.95
    assert h["curation-spark"] > h["flat k-means"] > h["uniform random"]


@pytest.mark.parametrize("target, multiplier, strategy", [(1000, 1, "r"), (777, 1, "c"), (50_000, 2, "r"),
                                                          (29_700, 1, "c"), (1, 1, "r"), (0, 1, "r")])
def test_exact_output_size(spark, toy_run, target, multiplier, strategy):
    summary, table = _sample(spark, toy_run[1].run_path, target, multiplier, strategy,
                             name=f"size_{target}_{multiplier}_{strategy}")
    assert summary.curated_rows == target
    per_id = table.groupBy("id").count()
    assert per_id.agg({"count": "max"}).first()[0] in (None, *range(1, multiplier + 1))
    if multiplier == 1:
        assert per_id.count() == target  # no repeats without a multiplier
    copies = table.groupBy("id").agg({"copy": "max", "*": "count"}).collect()
    assert all(r["max(copy)"] == r["count(1)"] - 1 for r in copies)


def test_target_above_capacity_returns_everything(spark, toy_run, caplog):
    summary, table = _sample(spark, toy_run[1].run_path, 100_000, 2, name="over")
    assert summary.curated_rows == 2 * 29_700
    assert "exceeds the capacity" in caplog.text


def test_same_seed_same_ids_other_seed_differs(spark, toy_run):
    run = toy_run[1].run_path
    a = sorted(r["id"] for r in _sample(spark, run, 500, seed=3, name="seed_a")[1].collect())
    b = sorted(r["id"] for r in _sample(spark, run, 500, seed=3, name="seed_b")[1].collect())
    c = sorted(r["id"] for r in _sample(spark, run, 500, seed=4, name="seed_c")[1].collect())
    assert a == b and a != c


def test_strategy_c_takes_the_closest_points(spark, toy_run):
    from pyspark.sql import functions as F

    run = toy_run[1].run_path
    _, table = _sample(spark, run, 5000, strategy="c", name="closest")
    assign = read_table(spark, f"{run}/level_1/assignments")
    marked = assign.join(table.select(F.col("id").alias("point_id")).distinct().withColumn("chosen", F.lit(True)),
                         "point_id", "left").fillna(False, ["chosen"])
    per_cluster = marked.groupBy("cluster_id").agg(
        F.max(F.when(F.col("chosen"), F.col("distance"))).alias("max_chosen"),
        F.min(F.when(~F.col("chosen"), F.col("distance"))).alias("min_unchosen"))
    partial = per_cluster.where("max_chosen is not null and min_unchosen is not null")
    assert partial.count() > 0
    assert partial.where("max_chosen > min_unchosen").count() == 0


def test_keep_columns_from_parquet_and_delta_inputs(spark, tmp_dir):
    rings = synth.make_rings(seed=1, sizes=(400, 40, 100, 60, 200))
    for fmt in ("parquet", "delta"):
        path = f"{tmp_dir}/in_{fmt}"
        pipeline.write_synthetic(spark, rings, path, fmt)
        config = load_config([], [f"input.path={path}", f"output.path={tmp_dir}/run_{fmt}", f"output.format={fmt}",
                                  "clustering.n_levels=2", "clustering.n_clusters=[30,6]", "clustering.n_iters=8",
                                  "clustering.n_resampling_steps=[2,1]", "clustering.sample_size=[5,2]",
                                  "sampling.target_size=250", "sampling.keep_columns=[label, embedding]"])
        summary = pipeline.run(config, spark)
        curated = read_table(spark, summary.curated_path)
        assert curated.columns == ["id", "copy", "cluster_id", "label", "embedding"]
        assert curated.count() == 250
        truth = {i: l for i, l in zip(rings.column("id").to_pylist(), rings.column("label").to_pylist())}
        assert all(truth[r["id"]] == r["label"] for r in curated.select("id", "label").collect())


# ----------------------------------------------------------------------------- in the driver vs Spark


@pytest.fixture(scope="module")
def small_runs(spark, tmp_path_factory):
    """Two small 3-level hierarchies of the rings: integer ids, and the same points with
    string ids (ties in the window orders are broken by id, compared as strings)."""
    from pyspark.sql import functions as F

    from curation_spark.io.runfolder import open_existing

    base = tmp_path_factory.mktemp("sampling_paths")
    rings = synth.make_rings(seed=2, sizes=(500, 40, 100, 60, 300))
    runs = {}
    for kind in ("long", "string"):
        path = f"{base}/in_{kind}"
        pipeline.write_synthetic(spark, rings, path, "delta")
        if kind == "string":
            df = read_table(spark, path).withColumn("id", F.format_string("p%05d", F.col("id")))
            path = f"{base}/in_string_ids"
            df.write.format("delta").save(path)
        config = load_config([], [f"input.path={path}", f"output.path={base}/run_{kind}", "clustering.n_levels=3",
                                  "clustering.n_clusters=[40,9,3]", "clustering.n_iters=8",
                                  "clustering.n_resampling_steps=[2,1,1]", "clustering.sample_size=[5,2,2]"])
        pipeline.cluster(config, spark)
        runs[kind] = open_existing(spark, f"{base}/run_{kind}")
    return runs


@pytest.mark.parametrize("kind, target, multiplier, strategy, seed", [
    ("long", 250, 1, "r", 0), ("long", 999, 2, "c", 1), ("long", 1, 1, "r", 3),
    ("long", 5000, 2, "r", 0),  # above the capacity (2 x 1000): every point twice
    ("string", 250, 1, "c", 0), ("string", 777, 2, "r", 5), ("string", 0, 1, "c", 0)])
def test_in_process_sampling_equals_the_spark_path(spark, small_runs, kind, target, multiplier, strategy, seed):
    from curation_spark.curation import sampling

    run = small_runs[kind]
    params = sampling.SamplingParams(target, multiplier, strategy, seed)
    assert sampling.in_process_decision(run, params)
    assert not sampling.in_process_decision(run, sampling.SamplingParams(target, multiplier, strategy, seed,
                                                                         in_process_max_points=0))
    grouped_params = dataclasses.replace(params, driver_targets_max_clusters=0)
    assert sampling.driver_targets_decision(run, params)
    assert not sampling.driver_targets_decision(run, grouped_params)
    on_spark, summary_spark = sampling.curate_on_spark(run, 3, grouped_params)  # applyInPandas per level
    driver_targets, summary_targets = sampling.curate_on_spark(run, 3, params)  # targets from the driver
    in_driver, summary_driver = sampling.curate_in_process(run, 3, params)
    assert in_driver.schema == on_spark.schema == driver_targets.schema
    assert summary_driver == summary_spark == summary_targets
    rows_spark = sorted(tuple(r) for r in on_spark.collect())
    rows_driver = sorted(tuple(r) for r in in_driver.collect())
    assert len(rows_spark) == min(target, 2 * 1000 if multiplier == 2 else 1000)
    assert rows_driver == rows_spark
    assert sorted(tuple(r) for r in driver_targets.collect()) == rows_spark
    # curate() takes the driver path here and the Spark path when told to
    assert sorted(tuple(r) for r in sampling.curate(run, 3, params)[0].collect()) == rows_spark


def test_both_paths_refuse_a_hierarchy_without_parents(spark, small_runs, tmp_dir):
    from pyspark.sql import functions as F

    from curation_spark.curation import sampling
    from curation_spark.errors import ConfigError
    from curation_spark.io.runfolder import RunFolder
    from curation_spark.io.tables import write_table

    run = small_runs["long"]
    broken = RunFolder(spark, f"{tmp_dir}/broken", run.format)
    broken.metadata = run.metadata
    for level in (1, 2):
        for table in ("centroids", "assignments"):
            df = read_table(spark, f"{run.path}/level_{level}/{table}")
            if level == 1 and table == "centroids":
                df = df.withColumn("parent_id", F.lit(None).cast("int"))
            write_table(df, f"{broken.path}/level_{level}/{table}", run.format)
    params = sampling.SamplingParams(100)
    grouped = sampling.SamplingParams(100, driver_targets_max_clusters=0)
    for curate, p in ((sampling.curate_in_process, params), (sampling.curate_on_spark, params),
                      (sampling.curate_on_spark, grouped)):
        with pytest.raises(ConfigError, match="without parent_id"):
            curate(broken, 2, p)
