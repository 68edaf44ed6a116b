"""The pyspark.ml stages (:mod:`curation_spark.ml`): fit, transform, centroids, summary,
balanced sample, save/load and a Pipeline, each against the run folder the fit wrote.

One fit is shared by the module: a Pipeline of a ``Normalizer`` over an ML Vector column and
:class:`HierarchicalKMeans` without ``runPath`` (a temporary run folder, Delta tables) on
2,000 points of the long-tailed Gaussian mixture in 8 dimensions, 2 levels [12, 3], 5
iterations. The ``runPath`` case resumes a copy of that run folder (same settings, same rows).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

pytestmark = pytest.mark.slow

N, DIM = 2000, 8
SETTINGS = dict(nLevels=2, nClusters=[12, 3], nIters=5, nResamplingSteps=[2, 1], seed=0)


@pytest.fixture(scope="module")
def raw(spark):
    """``id``, ``raw`` (an ML Vector), ``label``."""
    from pyspark.ml.functions import array_to_vector

    from curation_spark import synth

    table = synth.make_gaussian_mixture(N, DIM, 6, seed=0)
    return spark.createDataFrame(table).select("id", array_to_vector("embedding").alias("raw"), "label").cache()


@pytest.fixture(scope="module")
def fitted(raw):
    """(the fitted PipelineModel, its HierarchicalKMeansModel, the normalised frame)."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import Normalizer

    from curation_spark.ml import HierarchicalKMeans

    pipeline = Pipeline(stages=[Normalizer(inputCol="raw", outputCol="features"), HierarchicalKMeans(**SETTINGS)])
    model = pipeline.fit(raw)
    return model, model.stages[-1], model.stages[0].transform(raw)


def by_id(rows, key="id"):
    return {r[key]: r for r in rows}


# ----------------------------------------------------------------------------- params


def test_param_defaults_are_the_library_defaults():
    from curation_spark.config import ClusteringConfig, InputConfig, OutputConfig
    from curation_spark.ml import HierarchicalKMeans

    hkm, cfg = HierarchicalKMeans(), ClusteringConfig()
    assert hkm.getNLevels() == cfg.n_levels
    assert hkm.getNClusters() == list(cfg.n_clusters)
    assert hkm.getNIters() == list(cfg.n_iters)
    assert hkm.getNSplits() == list(cfg.n_splits)
    assert hkm.getNResamplingSteps() == list(cfg.n_resampling_steps)
    assert hkm.getSampleSize() == list(cfg.sample_size)
    assert hkm.getSamplingStrategy() == list(cfg.sampling_strategy)
    assert hkm.getDistanceMeasure() == "auto" == cfg.distance
    assert (hkm.getInit(), hkm.getSeed()) == (cfg.init, cfg.seed)
    assert (hkm.getIdCol(), hkm.getRunPath(), hkm.getOutputFormat()) == (InputConfig().id_col, None,
                                                                         OutputConfig().format)
    assert (hkm.getFeaturesCol(), hkm.getPredictionCol(), hkm.getClusterPathCol()) == ("features", "prediction",
                                                                                       "cluster_path")
    # ... and the config they stand for is the default one, but for the columns
    config = hkm.toConfig()
    assert config.clustering == cfg
    assert (config.input.id_col, config.input.embedding_col, config.output.path) == ("id", "features", None)


def test_params_map_onto_the_config():
    from curation_spark.ml import HierarchicalKMeans

    hkm = HierarchicalKMeans(nLevels=2, nClusters=[12, 3], nIters=5, sampleSize=[7, None], samplingStrategy="r",
                             distanceMeasure="euclidean", init="kmeans++", seed=4, idCol="key")
    c = hkm.toConfig()
    assert (c.clustering.n_clusters, c.clustering.n_iters, c.clustering.n_resampling_steps) == ((12, 3), (5, 5),
                                                                                                 (10, 10))
    assert (c.clustering.sample_size, c.clustering.sampling_strategy) == ((7, None), ("r", "r"))
    assert (c.clustering.distance, c.clustering.init, c.clustering.seed, c.input.id_col) == ("l2", "kmeans++", 4,
                                                                                             "key")
    assert HierarchicalKMeans(distanceMeasure="cosine").toConfig().clustering.distance == "cosine"
    hkm.setParams(nIters=None)  # None: back to the default
    assert not hkm.isSet(hkm.nIters) and hkm.toConfig().clustering.n_iters == (20, 20)


@pytest.mark.parametrize("params, message", [
    (dict(nLevels=2, nClusters=[12, 3], nIters=[5, 0]), "nIters[1]: must be >= 1, got 0"),
    (dict(nLevels=2), "nClusters: has 1 values but nLevels is 2"),
    (dict(distanceMeasure="l2"), "distanceMeasure: unknown value 'l2' (choose one of: auto, euclidean, cosine)"),
    (dict(samplingStrategy="x"), "samplingStrategy: unknown value 'x' (choose one of: c, r)"),
])
def test_bad_params_are_one_line_naming_the_param(params, message):
    from curation_spark.errors import ConfigError
    from curation_spark.ml import HierarchicalKMeans

    with pytest.raises(ConfigError) as info:
        HierarchicalKMeans(**params).toConfig()
    assert str(info.value) == message


def test_bad_features_column_is_one_line_naming_it(raw):
    from curation_spark.errors import InputError
    from curation_spark.ml import HierarchicalKMeans

    with pytest.raises(InputError) as info:
        HierarchicalKMeans(featuresCol="vectors", **SETTINGS).fit(raw)
    assert str(info.value) == "column 'vectors' (featuresCol) not found; the table has columns: id, raw, label"
    with pytest.raises(InputError) as info:
        HierarchicalKMeans(featuresCol="label", **SETTINGS).fit(raw)
    assert str(info.value) == ("column 'label': has type int, expected array<float>, array<double> or an ML Vector")


def test_temporary_run_folder_is_refused_on_a_cluster():
    from curation_spark.errors import ConfigError
    from curation_spark.ml import temporary_run_folder

    class Context:
        master = "spark://10.0.0.1:7077"

    class Session:
        sparkContext = Context()

    with pytest.raises(ConfigError, match=r"^runPath: not set, and a temporary folder on this machine is not "
                                          r"readable by the executors of this session \(master spark://10.0.0.1"):
        temporary_run_folder(Session())


# ----------------------------------------------------------------------------- the model


def level_one(model):
    return {r["point_id"]: r["cluster_id"] for r in model.run.assignments(1).collect()}


def parents(model):
    return {r["cluster_id"]: r["parent_id"] for r in model.run.centroids(1).collect()}


def test_pipeline_fit_and_transform_place_every_row_as_the_run_did(fitted, raw):
    from curation_spark.ml import HierarchicalKMeansModel

    pipeline_model, model, _ = fitted
    assert isinstance(model, HierarchicalKMeansModel)
    path = model.getRunPath()
    assert "curation-spark-hkm-" in path and path.endswith("/run")  # no runPath: a temporary run folder
    out = pipeline_model.transform(raw)
    assert out.columns == ["id", "raw", "label", "features", "prediction", "cluster_path"]
    assert dict(out.dtypes)["prediction"] == "bigint" and dict(out.dtypes)["cluster_path"] == "array<bigint>"
    rows = by_id(out.collect())
    assert len(rows) == N
    level1, parent = level_one(model), parents(model)
    assert {i: r["prediction"] for i, r in rows.items()} == level1  # the fit's own rows: the run's clusters
    assert all(r["cluster_path"] == [r["prediction"], parent[r["prediction"]]] for r in rows.values())
    assert sorted(set(level1.values())) == list(range(12)) and sorted(set(parent.values())) == [0, 1, 2]


def test_transform_of_arrays_under_other_names(fitted):
    """array<double> instead of a Vector, other column names (a copy with other params)."""
    from pyspark.ml.functions import vector_to_array

    _, model, normalised = fitted
    arrays = normalised.select(normalised["id"].alias("key"), vector_to_array("features").alias("v"), "label")
    copy = model.copy({model.idCol: "key", model.featuresCol: "v", model.predictionCol: "p"})
    out = copy.transform(arrays)
    assert out.columns == ["key", "v", "label", "p", "cluster_path"]
    assert {r["key"]: r["p"] for r in out.collect()} == level_one(model)
    assert model.getPredictionCol() == "prediction"  # (the copy's params are its own)


def test_transform_refuses_an_existing_output_column(fitted):
    from curation_spark.errors import ConfigError

    _, model, normalised = fitted
    with pytest.raises(ConfigError, match=r"^predictionCol: output column 'label' is already a column"):
        model.copy({model.predictionCol: "label"}).transform(normalised)


def test_cluster_centers_are_the_centroid_tables(fitted):
    _, model, _ = fitted
    for level, k in ((1, 12), (2, 3)):
        table = sorted(model.run.centroids(level).select("cluster_id", "centroid").collect())
        expected = np.array([r["centroid"] for r in table], dtype=np.float32)
        centers = model.clusterCenters(level)
        assert len(centers) == k and all(c.dtype == np.float32 and c.shape == (DIM,) for c in centers)
        np.testing.assert_array_equal(np.array(centers), expected)
    np.testing.assert_array_equal(np.array(model.clusterCenters()), np.array(model.clusterCenters(1)))


def test_summary_sizes_and_objective(fitted):
    _, model, _ = fitted
    summary = model.summary
    assert [(lv.level, lv.k, lv.requestedK, lv.numPoints) for lv in summary.levels] == [(1, 12, 12, N),
                                                                                        (2, 3, 3, 12)]
    level1, parent = level_one(model), parents(model)
    sizes = Counter(level1.values())
    assert summary.clusterSizes == [sizes[c] for c in range(12)] and summary.k == 12
    rows_below = Counter()
    for c, n in sizes.items():
        rows_below[parent[c]] += n
    assert summary.levels[1].clusterSizes == tuple(Counter(parent.values())[p] for p in range(3))
    assert summary.levels[1].flatSizes == tuple(rows_below[p] for p in range(3))
    # unit-norm features: distance auto is cosine, the objective the sum of 1 - cos
    assert summary.distance == "cosine"
    distances = np.array([r["distance"] for r in model.run.assignments(1).collect()], dtype=np.float64)
    assert summary.trainingCost == pytest.approx(float(distances.sum()), rel=1e-5)
    assert summary.levels[0].sampleSize == 83  # half the mean cluster size, 2000 / 12 / 2
    assert summary.runPath == model.getRunPath()


def test_balanced_sample_is_water_filled(fitted):
    from curation_spark.method.waterfill import water_fill_cut

    _, model, _ = fitted
    flat = np.array(model.summary.levels[1].flatSizes)
    parent = parents(model)

    def check_top_level(rows, target, multiplier):
        """Each level-2 cluster gets min(cut, cap), the remainder one each to clusters above the cut."""
        per_top = Counter(parent[r["cluster_id"]] for r in rows)
        caps = multiplier * flat
        cut = water_fill_cut(caps, target)
        assert sum(per_top.values()) == target
        for p, cap in enumerate(caps):
            assert per_top[p] == cap if cap <= cut else per_top[p] in (cut, cut + 1)

    rows = model.balancedSample(600).collect()
    assert len(rows) == 600 and len({r["id"] for r in rows}) == 600 and {r["copy"] for r in rows} == {0}
    check_top_level(rows, 600, 1)
    twice = model.balancedSample(3000, multiplier=2, strategy="c", seed=1).collect()
    copies = Counter((r["id"], r["copy"]) for r in twice)
    assert len(twice) == 3000 and set(copies.values()) == {1} and {c for _, c in copies} == {0, 1}
    check_top_level(twice, 3000, 2)
    assert sorted(model.run.tables) == ["curated_3000_c_m2_s1", "curated_600_r_m1_s0"]


def test_saved_pipeline_holds_a_copy_of_the_temporary_run(fitted, raw, tmp_path):
    from pyspark.ml import PipelineModel

    pipeline_model, model, _ = fitted
    path = tmp_path / "pipeline"
    pipeline_model.write().overwrite().save(str(path))
    loaded = PipelineModel.load(str(path))
    stage = loaded.stages[-1]
    assert stage.uid == model.uid and stage.getRunPath() == f"file:{path}/stages/1_{model.uid}/run"
    assert sorted(loaded.transform(raw).collect()) == sorted(pipeline_model.transform(raw).collect())
    np.testing.assert_array_equal(np.array(stage.clusterCenters(2)), np.array(model.clusterCenters(2)))
    assert stage.summary == dataclasses.replace(model.summary, runPath=stage.getRunPath())


def test_fit_with_run_path_resumes_and_save_refers_to_it(fitted, tmp_path):
    """A run folder of the user's: a fit of the same settings and rows resumes it (here a copy
    of the fixture's), a save refers to it (no copy), the loaded model reads it there."""
    from curation_spark.errors import ConfigError
    from curation_spark.io.paths import local_path
    from curation_spark.ml import HierarchicalKMeans, HierarchicalKMeansModel

    _, fixture_model, normalised = fitted
    shutil.copytree(local_path(fixture_model.getRunPath()), tmp_path / "run")
    estimator = HierarchicalKMeans(runPath=str(tmp_path / "run"), **SETTINGS)
    model = estimator.fit(normalised)
    assert model.getRunPath() == f"file:{tmp_path}/run"
    np.testing.assert_array_equal(np.array(model.clusterCenters()), np.array(fixture_model.clusterCenters()))
    path = str(tmp_path / "model")
    model.write().overwrite().save(path)
    with pytest.raises(ConfigError, match=r"already exists; use write\(\)\.overwrite\(\)\.save\(path\)"):
        model.save(path)
    assert not (tmp_path / "model" / "run").exists()
    loaded = HierarchicalKMeansModel.load(path)
    assert loaded.uid == model.uid and loaded.getRunPath() == model.getRunPath()
    assert {p.name: v for p, v in loaded.extractParamMap().items()} == {p.name: v for p, v in
                                                                        model.extractParamMap().items()}
    assert {r["id"]: r["prediction"] for r in loaded.transform(normalised).collect()} == level_one(fixture_model)
    # another config into the same folder is refused, naming the Params
    with pytest.raises(ConfigError, match=r"^runPath: .* holds a run with a different clustering config \(nIters: "
                                          r"\[5, 5\] -> \[6, 6\]\); choose another runPath or delete that folder$"):
        estimator.copy({estimator.nIters: [6]}).fit(normalised)
    # the estimator's params round-trip too
    estimator.write().overwrite().save(str(tmp_path / "estimator"))
    again = HierarchicalKMeans.load(str(tmp_path / "estimator"))
    assert {p.name: v for p, v in again.extractParamMap().items()} == {p.name: v for p, v in
                                                                       estimator.extractParamMap().items()}
    shutil.rmtree(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"the model's run folder .* cannot be opened"):
        HierarchicalKMeansModel.load(path)


# ----------------------------------------------------------------------------- Spark Connect

CONNECT_CLIENT = """
import json, sys
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import Normalizer
from pyspark.ml.functions import array_to_vector
from curation_spark import synth
from curation_spark.io.session import get_spark
from curation_spark.io.spark_api import is_connect
from curation_spark.ml import HierarchicalKMeans, HierarchicalKMeansModel

base, settings = sys.argv[1], json.loads(sys.argv[2])
spark = get_spark()
assert is_connect(spark), type(spark)
raw = spark.createDataFrame(synth.make_gaussian_mixture(2000, 8, 6, seed=0)).select(
    "id", array_to_vector("embedding").alias("raw"), "label")
stages = [Normalizer(inputCol="raw", outputCol="features"), HierarchicalKMeans(runPath=base + "/run", **settings)]
fitted = Pipeline(stages=stages).fit(raw)
fitted.write().overwrite().save(base + "/pipeline")
model = fitted.stages[-1]
model.write().overwrite().save(base + "/model")
loaded = HierarchicalKMeansModel.load(base + "/model")
normalised = fitted.stages[0].transform(raw)
print(json.dumps({
    "transform": sorted([r["id"], r["prediction"], r["cluster_path"]] for r in loaded.transform(normalised).collect()),
    "pipeline": sorted([r["id"], r["prediction"]] for r in PipelineModel.load(base + "/pipeline").transform(raw)
                       .select("id", "prediction").collect()),
    "centers": [c.tolist() for c in loaded.clusterCenters()],
    "sample": model.balancedSample(300).count(),
    "summary": [[lv.k, list(lv.clusterSizes)] for lv in loaded.summary.levels],
}))
"""


@pytest.mark.cluster
def test_pipeline_over_spark_connect_equals_the_classic_fit(fitted, raw, tmp_path, connect_server):
    """A client of pyspark's own Connect server (on this machine, local[2]) fits, saves, loads
    and transforms the module's Pipeline: the same clusters and centroids as the classic fit."""

    pipeline_model, model, _ = fitted
    script = tmp_path / "client.py"
    script.write_text(CONNECT_CLIENT)
    server = connect_server  # (the suite's one server, shared with tests/test_connect.py)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "connect"), json.dumps(SETTINGS)],
                            env=server.client_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:] + server.log_tail()
    got = json.loads(result.stdout.strip().splitlines()[-1])
    classic = pipeline_model.transform(raw).collect()
    assert got["transform"] == sorted([r["id"], r["prediction"], r["cluster_path"]] for r in classic)
    assert got["pipeline"] == sorted([r["id"], r["prediction"]] for r in classic)
    np.testing.assert_array_equal(np.array(got["centers"], dtype=np.float32), np.array(model.clusterCenters()))
    assert got["sample"] == 300
    assert got["summary"] == [[lv.k, list(lv.clusterSizes)] for lv in model.summary.levels]
