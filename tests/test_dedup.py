"""Near-duplicate removal on Spark (``pipeline.dedup``, ``run`` with a ``dedup`` section),
against the brute-force keep rule of :mod:`curation_spark.method.dedup`.

The pool: 400 random unit vectors in 32-D (pairwise cos well below 0.9) and near-copies
of 120 of them at similarity 1.0, 0.99 or 0.98 (copies of one original are at ~0.97 from
each other): every pair is at least 0.01 from the threshold 0.95, so float32 rounding
cannot move a pair across it and the Spark result must equal brute force exactly.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curation_spark import pipeline
from curation_spark.config import load_config
from curation_spark.errors import ConfigError, InputError
from curation_spark.io.tables import read_table
from curation_spark.method import dedup

#: End-to-end Spark runs: outside the fast lane (`-m "not slow and not cluster"`), in CI.
pytestmark = pytest.mark.slow

DIM = 32
THRESHOLD = 0.95


def make_pool(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = dedup.unit_rows(rng.normal(size=(400, DIM))).astype(np.float64)
    originals = rng.choice(400, 120, replace=False)
    copies = []
    for k, o in enumerate(originals):
        for s in (1.0, 0.99, 0.98)[: 1 + k % 3]:
            u = rng.normal(size=DIM)
            u -= u.dot(base[o]) * base[o]
            u /= np.linalg.norm(u)
            copies.append(s * base[o] + np.sqrt(1 - s * s) * u)
    x = np.concatenate([base, np.array(copies)])
    return x[rng.permutation(len(x))].astype(np.float32)


POOL = make_pool()


def _sims_clear_of_threshold(x: np.ndarray) -> bool:
    s = dedup.unit_rows(x) @ dedup.unit_rows(x).T
    np.fill_diagonal(s, 0)
    return not np.any(np.abs(s - THRESHOLD) < 0.01)


@pytest.fixture(scope="module")
def pool_path(spark, tmp_path_factory):
    assert _sims_clear_of_threshold(POOL)
    path = str(tmp_path_factory.mktemp("dedup") / "pool")
    rows = [(i, [float(v) for v in row]) for i, row in enumerate(POOL)]
    spark.createDataFrame(rows, "id long, embedding array<float>").repartition(3).write.parquet(path)
    return path


def _config(pool_path, out, *extra):
    return load_config([], [f"input.path={pool_path}", f"output.path={out}", f"dedup.threshold={THRESHOLD}",
                            "clustering.n_resampling_steps=0", *extra])


def _removed(spark, out):
    table = read_table(spark, f"{out}/dedup/duplicates").toArrow()
    return dict(zip(table.column("id").to_pylist(), zip(table.column("kept_id").to_pylist(),
                                                         table.column("similarity").to_pylist())))


@pytest.fixture(scope="module")
def probed_run(spark, pool_path, tmp_path_factory):
    """Four coarse clusters, the nearest two probed, keep ``first``: shared by the tests
    that only read its result."""
    out = str(tmp_path_factory.mktemp("probed") / "run")
    return out, pipeline.dedup(_config(pool_path, out, "dedup.keep=first", "dedup.n_clusters=4", "dedup.probes=2"),
                               spark)


def _assert_brute_force(spark, out, summary, priority):
    kept_ref, twin_ref, _ = dedup.dedup_in_memory(POOL, THRESHOLD, priority=priority)
    removed = _removed(spark, out)
    assert sorted(removed) == sorted(np.nonzero(~kept_ref)[0].tolist())
    assert {i: t for i, (t, _) in removed.items()} == {int(i): int(twin_ref[i]) for i in np.nonzero(~kept_ref)[0]}
    assert summary.removed == len(removed) and summary.points_in == len(POOL)
    assert summary.groups == len({t for t, _ in removed.values()})
    meta = json.loads(Path(out, "run.json").read_text())
    assert meta["dedup"]["removed"] == len(removed) and meta["dedup"]["threshold"] == THRESHOLD
    xs = dedup.unit_rows(POOL)
    for i, (t, s) in removed.items():
        assert s == pytest.approx(float(xs[i] @ xs[t]), abs=1e-5) and s >= THRESHOLD


def test_probed_clusters_equal_brute_force(spark, probed_run):
    """Four clusters, the nearest two probed: the pairs a boundary splits are found too
    here; the keep rule in the driver at once."""
    out, summary = probed_run
    _assert_brute_force(spark, out, summary, np.zeros(len(POOL)))  # first: by id
    assert summary.rounds == 0


def test_blocks_and_spark_rounds_equal_brute_force(spark, pool_path, tmp_path, monkeypatch):
    """One coarse cluster in 128-row blocks: every pair compared through block pairs; the
    keep rule in Spark rounds until at most 300 open pairs are left, those in the driver;
    keep ``random``: the seeded hash order."""
    from pyspark.sql import functions as F

    from curation_spark.curation import dedup as dedup_stage
    from curation_spark.method import seeds

    monkeypatch.setattr(dedup_stage, "DRIVER_FINISH_EDGES", 300)
    out = str(tmp_path / "run")
    summary = pipeline.dedup(_config(pool_path, out, "dedup.n_clusters=1", "dedup.block_rows=128", "dedup.keep=random",
                                     "dedup.seed=4"), spark)
    assert summary.rounds > 0
    seed = seeds.derive_seed(4, seeds.DEDUP_KEEP)
    hashed = spark.read.parquet(pool_path).select("id", F.xxhash64("id", F.lit(seed)).alias("h")).toArrow()
    priority = np.zeros(len(POOL))
    priority[hashed.column("id").to_numpy()] = hashed.column("h").to_numpy().astype(np.float64)
    _assert_brute_force(spark, out, summary, priority)


def test_keep_centroid_holds_both_guarantees(spark, pool_path, tmp_path):
    out = str(tmp_path / "run")
    pipeline.dedup(_config(pool_path, out, "dedup.keep=centroid", "dedup.n_clusters=3"), spark)
    removed = _removed(spark, out)
    kept = np.ones(len(POOL), dtype=bool)
    kept[list(removed)] = False
    assert dedup.violations(POOL, kept, THRESHOLD) == 0
    assert all(kept[t] for t, _ in removed.values())
    # the pool's groups are cliques: one point kept per group whatever the order
    assert len(removed) == int((~dedup.dedup_in_memory(POOL, THRESHOLD)[0]).sum())


def test_run_builds_the_hierarchy_on_kept_points(spark, pool_path, tmp_path):
    out = str(tmp_path / "run")
    config = _config(pool_path, out, "dedup.n_clusters=2", "clustering.n_clusters=[8]", "clustering.n_iters=5",
                     "sampling.target_size=200")
    summary = pipeline.run(config, spark)
    removed = set(_removed(spark, out))
    assert summary.levels[0].n_points == len(POOL) - len(removed)
    curated = {r["id"] for r in read_table(spark, summary.curated_path).select("id").collect()}
    assigned = {r["point_id"] for r in read_table(spark, f"{out}/level_1/assignments").select("point_id").collect()}
    assert len(curated) == 200 and not curated & removed and not assigned & removed
    # resume: the dedup step is not run again
    again = pipeline.run(config, spark)
    assert again.levels[0].seconds == summary.levels[0].seconds
    assert again.dedup is not None and again.dedup.removed == len(removed)
    # the report's dedup section: how many were removed, a histogram of their similarities
    from curation_spark.io.runfolder import open_existing
    from curation_spark.report import points, run_data, sections

    ctx = run_data.open_run_data(spark, open_existing(spark, out), None, None, str(tmp_path / "report"))
    drawn = sections._section_dedup(ctx)
    assert drawn.fig is not None and f"{len(removed):,} of {len(POOL):,}" in drawn.caption
    edges, counts = points.dedup_similarities(ctx)
    assert counts.sum() == len(removed) and edges[0] == THRESHOLD and edges[-1] >= 1.0


def test_string_ids(spark, tmp_path):
    rows = [(f"doc-{i:04d}", [float(v) for v in row]) for i, row in enumerate(POOL[:200])]
    path = str(tmp_path / "strings")
    spark.createDataFrame(rows, "id string, embedding array<float>").write.parquet(path)
    out = str(tmp_path / "run")
    pipeline.dedup(_config(path, out, "dedup.n_clusters=1"), spark)
    kept_ref, _, _ = dedup.dedup_in_memory(POOL[:200], THRESHOLD)
    assert sorted(_removed(spark, out)) == sorted(f"doc-{i:04d}" for i in np.nonzero(~kept_ref)[0])


def test_zero_vectors_are_refused(spark, tmp_path):
    rows = [(i, [1.0, float(i)]) for i in range(20)] + [(20, [0.0, 0.0]), (21, [0.0, 0.0])]
    path = str(tmp_path / "zeros")
    spark.createDataFrame(rows, "id long, embedding array<float>").write.parquet(path)
    with pytest.raises(InputError, match=r"column 'embedding': 2 row\(s\) have an all-zero embedding"):
        pipeline.dedup(load_config([], [f"input.path={path}", f"output.path={tmp_path / 'run'}"]), spark)
    assert not (tmp_path / "run" / "dedup").exists()


def test_other_dedup_config_is_refused_without_overwrite(spark, pool_path, probed_run):
    out, _ = probed_run
    with pytest.raises(ConfigError, match=r"different clustering config \(dedup.threshold: 0.95 -> 0.9\)"):
        pipeline.dedup(_config(pool_path, out, "dedup.keep=first", "dedup.n_clusters=4", "dedup.probes=2",
                               "dedup.threshold=0.9"), spark)
    # the same config resumes: the finished dedup is kept, nothing is recomputed
    again = pipeline.dedup(_config(pool_path, out, "dedup.keep=first", "dedup.n_clusters=4", "dedup.probes=2"), spark)
    assert again == probed_run[1]
