"""The demo's flat baseline, computed in the driver, selects the rows the pipeline's flat
run writes (so the README table's "flat k-means" row is the pipeline's)."""
from __future__ import annotations

import numpy as np
import pytest

from curation_spark import demo, synth
from curation_spark.config import load_config
from curation_spark.io.tables import read_table

#: End-to-end Spark runs: outside the fast lane (`-m "not slow and not cluster"`), in CI.
pytestmark = pytest.mark.slow


def test_flat_selection_equals_the_pipelines_flat_run(spark, rings_path, flat_run):
    flat_config, flat_summary = flat_run
    # The demo's flat settings are the ones of the shared flat_run fixture.
    mine = load_config([], [f"input.path={rings_path}", "output.path=unused", *demo.FLAT_CLUSTERING,
                            "sampling.target_size=1000", "sampling.keep_columns=[label]"])
    assert mine.clustering == flat_config.clustering and mine.sampling == flat_config.sampling
    ids = demo.flat_selection(spark, mine, flat_summary.stats)
    curated = read_table(spark, flat_summary.curated_path).select("id", "label").toArrow()
    assert sorted(ids.to_pylist()) == sorted(curated.column("id").to_pylist())
    rings = synth.make_rings(seed=0)
    labels = demo.labels_of(rings, ids)
    assert np.bincount(labels, minlength=5).tolist() == np.bincount(curated.column("label").to_numpy(),
                                                                    minlength=5).tolist()
