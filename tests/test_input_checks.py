"""Input checks counted while level 1's barrier stage loads its blocks (large inputs skip
the validation pass): the same one-line errors as the pass, before any table is written."""
from __future__ import annotations

import os

import numpy as np
import pytest

from curation_spark.io import blocks
from curation_spark import pipeline
from curation_spark.config import load_config
from curation_spark.errors import InputError
from curation_spark.io.tables import validate_embeddings, write_table

#: End-to-end Spark runs: outside the fast lane (`-m "not slow and not cluster"`), in CI.
pytestmark = pytest.mark.slow

GOOD = [(i, [float(i % 5), float(i % 3)]) for i in range(100, 140)]
ON_SPARK = ["clustering.n_levels=1", "clustering.n_clusters=[3]", "clustering.n_iters=2",
            "clustering.n_resampling_steps=0", "clustering.in_process_max_mb=0", "clustering.init=kmeans++"]


@pytest.mark.parametrize("bad", [
    [(1, [1.0, float("nan")]), (2, [float("inf"), 1.0])],
    [(1, [1.0, None])],
    [(101, [2.0, 2.0])],
    [(None, [1.0, 2.0])],
    [(1, None), (2, None)],
    [(1, [1.0, 2.0, 3.0])],
], ids=["nan-inf", "null-value", "duplicate-id", "null-id", "null-embedding", "wrong-dimension"])
def test_checks_while_loading_match_the_validation_pass(spark, tmp_dir, bad):
    df = spark.createDataFrame(GOOD + bad, "id long, embedding array<float>")
    data = os.path.join(tmp_dir, "input")
    write_table(df.repartition(3), data, "delta")
    with pytest.raises(InputError) as expected:
        validate_embeddings(df, "id", "embedding")
    out = os.path.join(tmp_dir, "run")
    cfg = load_config([], [f"input.path={data}", f"output.path={out}", *ON_SPARK])
    with pytest.raises(InputError) as got:
        pipeline.cluster(cfg, spark)
    assert str(got.value) == str(expected.value)
    assert not os.path.exists(os.path.join(out, "level_1"))  # nothing written


def test_good_input_runs_with_checks_while_loading(spark, tmp_dir):
    data = os.path.join(tmp_dir, "input")
    write_table(spark.createDataFrame(GOOD, "id long, embedding array<float>"), data, "delta")
    cfg = load_config([], [f"input.path={data}", f"output.path={tmp_dir}/run", *ON_SPARK])
    summary = pipeline.cluster(cfg, spark)
    assert summary.stats.n_rows == len(GOOD) and summary.levels[0].n_points == len(GOOD)


def test_block_checks_add_up_across_blocks():
    a, b = blocks.BlockChecks(rows=3, null_ids=1, min_dim=2, max_dim=4), blocks.BlockChecks(rows=2, bad_values=2,
                                                                                          min_dim=1, max_dim=2)
    total = blocks.BlockChecks.from_arrays([a.as_array(), b.as_array()])
    assert (total.rows, total.null_ids, total.bad_values, total.min_dim, total.max_dim) == (5, 1, 2, 1, 4)
    assert np.array_equal(blocks.BlockChecks.from_arrays([total.as_array()]).as_array(), total.as_array())
