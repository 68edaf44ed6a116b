"""The Python API (``import curation_spark as cs``): a DataFrame in hand curated into a run
folder, the ``Run`` handle's tables and methods, resume and refusal of a DataFrame input."""
from __future__ import annotations

import numpy as np
import pytest

import curation_spark as cs
from curation_spark import synth

pytestmark = pytest.mark.slow

SETTINGS = {"sampling": {"target_size": 300},
            "clustering": {"n_levels": 2, "n_clusters": [12, 3], "n_iters": 5, "n_resampling_steps": 2}}


@pytest.fixture(scope="module")
def frame(spark):
    return spark.createDataFrame(synth.make_gaussian_mixture(2000, 8, 6, seed=0))


@pytest.fixture(scope="module")
def handle(spark, frame, tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    config = cs.Config.from_dict({**SETTINGS, "output": {"path": str(out)}})  # no input section: df is the input
    return config, cs.run(config, frame, spark=spark)


def test_a_dataframe_is_curated_into_a_run_folder(spark, frame, handle):
    config, run = handle
    assert isinstance(run, cs.Run) and run.path.startswith("file:/") and run.distance == "l2"
    assert [lv.n_clusters for lv in run.levels] == [12, 3]
    assert [lv.sample_size for lv in run.levels] == [83, 2]  # 2000/12/2, 12/3/2: the default rule
    assert run.curated().count() == 300 and run.tables == {"curated": 300}
    cents = run.centroids(1).orderBy("cluster_id").toPandas()
    assert cents["cluster_id"].tolist() == list(range(12)) and int(cents["flat_size"].sum()) == 2000
    assert run.assignments(2).count() == 12 and run.dedup_pairs() is None
    with pytest.raises(cs.ConfigError, match=r"^level 3: this run has levels 1..2"):
        run.centroids(3)


def test_assign_places_rows_as_the_fit_did(spark, frame, handle):
    _, run = handle
    placed = run.assign(frame).toPandas().sort_values("id")
    fit = run.assignments(1).toPandas().sort_values("point_id")
    assert placed["id"].tolist() == fit["point_id"].tolist()
    assert [p[0] for p in placed["cluster_path"]] == fit["cluster_id"].tolist()
    parents = dict(run.centroids(1).select("cluster_id", "parent_id").toPandas().values.tolist())
    assert all(p[1] == parents[p[0]] for p in placed["cluster_path"])
    assert np.allclose(placed["distance"].to_numpy(), fit["distance"].to_numpy(), rtol=1e-5, atol=1e-6)


def test_sample_reopen_and_resume(spark, frame, handle):
    config, run = handle
    assert run.sample(100, strategy="c", table="c100").count() == 100
    again = cs.open_run(run.path, spark=spark)
    assert again.tables == {"curated": 300, "c100": 100} and again.config == run.config
    resumed = cs.run(config, frame, spark=spark)  # same rows: resumed, nothing refused
    assert resumed.curated().count() == 300
    other = spark.createDataFrame(synth.make_gaussian_mixture(2001, 8, 6, seed=0))
    with pytest.raises(cs.ConfigError, match=r"the input changed .*content_hash .*n_rows 2000 -> 2001"):
        cs.run(config, other, spark=spark)
    with pytest.raises(cs.ConfigError, match=r"^input.path: `update` reads the input's new and deleted rows"):
        run.update()
    with pytest.raises(cs.ConfigError, match=r"^sampling.keep_columns: the run in .* was made from a DataFrame"):
        run.sample(50, keep_columns=["label"])
    assert "label" in run.sample(50, keep_columns=["label"], df=frame, table="lab").columns


def test_the_dataframe_run_equals_the_same_rows_from_a_table(spark, frame, handle, tmp_path):
    """Same rows, config and seed through a Delta path: the same tables."""
    config, run = handle
    frame.write.format("delta").save(str(tmp_path / "input"))
    table_run = cs.run(config.replace(**{"input.path": str(tmp_path / "input"),
                                         "output.path": str(tmp_path / "run")}), spark=spark)
    for name in ("level_1/assignments", "level_2/centroids"):
        level, kind = name.split("/")
        lv = int(level[-1])
        left = getattr(run, kind)(lv).orderBy(kind == "assignments" and "point_id" or "cluster_id").toPandas()
        right = getattr(table_run, kind)(lv).orderBy(kind == "assignments" and "point_id" or "cluster_id").toPandas()
        assert left.astype(str).equals(right.astype(str)), name
    assert sorted(run.curated().select("id").toPandas()["id"]) == sorted(table_run.curated().select("id")
                                                                        .toPandas()["id"])
