"""The README demo: the paper's toy rings, curated end to end on a local session.

Writes the rings table, runs the 2-level pipeline (conf/toy.yaml settings), and compares
the per-ring counts of the input, a uniform random sample of the same size, a flat
one-level k-means with equal per-cluster sampling, and the curated set, with each one's
normalised label entropy (1.0 = perfectly balanced over the five rings). The flat baseline
runs in the driver with the pipeline's own functions and writes no tables
(:func:`flat_selection`).

The session the demo starts (when none is active) is tuned for its tiny tables
(:data:`DEMO_SPARK_CONF`): no UI, two shuffle partitions and Delta log replay on two
partitions instead of 16 and 50 small tasks per shuffle and per snapshot, and a JVM set up
for a short run. The method is unchanged: the same seeds, the same tables; only the
number of (near-empty) tasks and the JVM's compiler and collector differ.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np

from curation_spark import pipeline, synth
from curation_spark.config import load_config, resolve_distance
from curation_spark.curation import hierarchy, sampling
from curation_spark.io import paths
from curation_spark.io.session import get_spark
from curation_spark.io.spark_api import describe_work
from curation_spark.io.tables import read_input, read_table, to_points
from curation_spark.method import inprocess, lloyd
from curation_spark.method.balance import label_entropy

log = logging.getLogger(__name__)

TOY_CLUSTERING = [
    "clustering.n_levels=2", "clustering.n_clusters=[1000,300]", "clustering.n_iters=50",
    "clustering.n_resampling_steps=[10,10]", "clustering.sample_size=[15,2]", "clustering.sampling_strategy=r",
    "clustering.seed=0",
]
FLAT_CLUSTERING = [
    "clustering.n_levels=1", "clustering.n_clusters=[1000]", "clustering.n_iters=50",
    "clustering.n_resampling_steps=0", "clustering.seed=0",
]

#: Settings of the local session the demo starts (29,700 rows; every table is a few kB).
#: The JVM options trade peak JIT speed for start-up: a run of a minute is mostly
#: first-time planning and class loading, where C1-only compilation and the serial
#: collector leave the two cores to the work (measured on the 2-core machine: Spark start,
#: rings write and validation 45 s -> 22 s).
DEMO_SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}


def flat_selection(spark, config, stats):
    """The flat baseline's curated ids (copies repeated): one k-means level and
    water-filling over its clusters, computed in the driver.

    These are the steps ``pipeline.run(config)`` takes for a one-level run whose level fits
    in memory and whose level 1 is small enough to sample in the driver: the same
    collection (``hierarchy.collect_level``, with Spark's ``xxhash64`` keys), the same
    k-means (``inprocess.cluster_level_in_memory`` with ``hierarchy.level_plan``'s
    parameters and seeds) and the same sampling (``sampling.top_targets``,
    ``sampling.leaf_rows``); only the tables are not written (tests/test_demo.py checks
    that the rows equal those of the pipeline's curated table). ``stats``: the input's
    :class:`~curation_spark.io.tables.EmbeddingStats` (rows, dimension, norms for
    ``distance: auto``) from a run over the same input.
    """
    n_points, dim = stats.n_rows, stats.dim
    sc = config.sampling
    cfg = replace(config.clustering, distance=resolve_distance(config.clustering.distance, stats.norm_min,
                                                               stats.norm_max))
    if cfg.n_levels != 1 or cfg.n_splits[0] > 1:
        raise ValueError("flat_selection: a one-level run without splits")
    params = sampling.SamplingParams(sc.target_size, sc.multiplier, sc.strategy, sc.seed)
    sampling.check_params(params)
    stage = "flat k-means"
    k = lloyd.clamp_clusters(cfg.n_clusters[0], n_points, stage)
    plan = hierarchy.level_plan(cfg, 1, k, n_points=n_points)
    seeds = sorted(set(plan.hash_seeds(n_points, dim)) | ({sc.seed} if sc.strategy == "r" else set()))
    points = to_points(read_input(spark, config.input), config.input.id_col, config.input.embedding_col)
    describe_work(spark, f"{stage} · collect {n_points} points (in-process)")
    ids, x, keys = hierarchy.collect_level(points, dim, seeds)
    describe_work(spark, None)
    if len(x) != n_points:
        raise RuntimeError(f"{stage}: expected {n_points} points, collected {len(x)}")
    level = inprocess.cluster_level_in_memory(x, keys, plan, stage)
    targets = sampling.top_targets(level.sizes, 1, params)
    key = level.dist if sc.strategy == "c" else keys[sc.seed]
    rows, _, _ = sampling.leaf_rows(level.labels, key, ids, np.arange(len(level.sizes)), level.sizes, targets,
                                    sc.multiplier)
    return ids.take(rows)


def labels_of(rings, ids) -> np.ndarray:
    """The rings' labels of the given ids."""
    all_ids = rings.column("id").to_numpy()
    order = np.argsort(all_ids, kind="stable")
    pos = order[np.searchsorted(all_ids, np.asarray(ids), sorter=order)]
    return rings.column("label").to_numpy()[pos]


def ring_counts(labels: np.ndarray) -> list[int]:
    return np.bincount(labels, minlength=len(synth.RING_SIZES)).astype(int).tolist()


def curated_labels(spark, table_path: str, fmt: str) -> np.ndarray:
    rows = read_table(spark, table_path, fmt).select("label").toArrow()
    return rows.column("label").to_numpy()


class _Phases:
    """Wall time of the demo's steps, logged as they end."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()

    def done(self, what: str) -> None:
        now = time.perf_counter()
        log.info("demo: %s in %.1f s (%.1f s so far)", what, now - self.last, now - self.started)
        self.last = now

    @property
    def total(self) -> float:
        return time.perf_counter() - self.started


def run_demo(out: str, fmt: str = "delta", target_size: int = 1000) -> dict[str, Any]:
    """Run the toy pipeline in ``out``; prints a comparison table and returns its numbers."""
    phases = _Phases()
    base = [f"output.format={fmt}", f"sampling.target_size={target_size}", "sampling.keep_columns=[label]"]
    spark_settings = load_config([], base).spark
    spark = get_spark(replace(spark_settings, conf={**DEMO_SPARK_CONF, **spark_settings.conf}))
    phases.done("Spark session")
    out = paths.qualify(spark, out, "--out")
    config = load_config([], [f"input.path={paths.join(out, 'rings')}", f"output.path={paths.join(out, 'run')}",
                              *TOY_CLUSTERING, *base])
    flat_config = load_config([], [f"input.path={paths.join(out, 'rings')}", *FLAT_CLUSTERING, *base])
    rings = synth.make_rings(seed=0)
    if not paths.exists(spark, paths.join(out, "rings")):
        pipeline.write_synthetic(spark, rings, paths.join(out, "rings"), fmt)
    labels = rings.column("label").to_numpy()
    phases.done("rings table")
    summary = pipeline.run(config, spark)
    phases.done("2-level hierarchy and curated set")
    flat_labels = labels_of(rings, flat_selection(spark, flat_config, summary.stats))
    phases.done("flat k-means comparison (in-process)")
    rng = np.random.default_rng(0)
    random_labels = labels[rng.choice(len(labels), size=target_size, replace=False)]
    rows = {
        "input": ring_counts(labels),
        "uniform random sample": ring_counts(random_labels),
        "flat k-means, equal per cluster": ring_counts(flat_labels),
        "curated (curation-spark)": ring_counts(curated_labels(spark, summary.curated_path, fmt)),  # type: ignore[arg-type]  # run() set it
    }
    entropy = {name: label_entropy(np.repeat(np.arange(5), counts), n_labels=5) for name, counts in rows.items()}
    phases.done("per-ring counts")
    print()
    print(f"{'':34s}" + "".join(f"ring {i} ".rjust(9) for i in range(5)) + "   entropy")
    for name, counts in rows.items():
        print(f"{name:34s}" + "".join(f"{c:9d}" for c in counts) + f"   {entropy[name]:.3f}")
    print("(entropy = H / log 5 of the per-ring counts; 1.0 = balanced over the five rings)")
    report_path = None
    try:
        from curation_spark.report import write_report

        report_path = write_report(summary.run_path, spark=spark)
        print(f"report: {paths.display(report_path)}")
    except ImportError:
        log.warning("report module not available; skipping the HTML report")
    phases.done("HTML report")
    print(f"demo finished in {phases.total:.0f} s; run folder {paths.display(summary.run_path)}")
    return {"counts": rows, "entropy": entropy, "report": report_path, "run": summary.run_path}
