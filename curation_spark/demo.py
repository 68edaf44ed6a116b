"""The README demo: the paper's toy rings, curated end to end on a local session.

Writes the rings table, runs the 2-level pipeline (conf/toy.yaml settings), and compares
the per-ring counts of the input, a uniform random sample of the same size, a flat
one-level k-means with equal per-cluster sampling, and the curated set, with each one's
normalised label entropy (1.0 = perfectly balanced over the five rings).
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from curation_spark import paths, pipeline, synth
from curation_spark.config import load_config
from curation_spark.session import get_spark
from curation_spark.tables import read_table

log = logging.getLogger(__name__)

TOY_CLUSTERING = [
    "clustering.n_levels=2", "clustering.n_clusters=[1000,300]", "clustering.n_iters=50",
    "clustering.n_resampling_steps=[10,10]", "clustering.sample_size=[15,2]", "clustering.sampling_strategy=r",
    "clustering.seed=0",
]
FLAT_CLUSTERING = [
    "clustering.n_levels=1", "clustering.n_clusters=[1000]", "clustering.n_iters=50",
    "clustering.n_resampling_steps=0", "clustering.sample_size=1", "clustering.seed=0",
]


def ring_counts(labels: np.ndarray) -> list[int]:
    return np.bincount(labels, minlength=len(synth.RING_SIZES)).astype(int).tolist()


def curated_labels(spark, table_path: str, fmt: str) -> np.ndarray:
    rows = read_table(spark, table_path, fmt).select("label").toPandas()
    return rows["label"].to_numpy()


def run_demo(out: str, fmt: str = "delta", target_size: int = 1000) -> dict[str, Any]:
    """Run the toy pipeline in ``out``; prints a comparison table and returns its numbers."""
    started = time.perf_counter()
    base = [f"output.format={fmt}", f"sampling.target_size={target_size}", "sampling.keep_columns=[label]"]
    config = load_config([], [f"input.path={paths.join(out, 'rings')}", f"output.path={paths.join(out, 'run')}",
                              *TOY_CLUSTERING, *base])
    flat_config = load_config([], [f"input.path={paths.join(out, 'rings')}", f"output.path={paths.join(out, 'flat')}",
                                   *FLAT_CLUSTERING, *base])
    spark = get_spark(config.spark)
    rings = synth.make_rings(seed=0)
    if not paths.exists(spark, paths.join(out, "rings")):
        pipeline.write_synthetic(spark, rings, paths.join(out, "rings"), fmt)
    labels = rings.column("label").to_numpy()
    summary = pipeline.run(config, spark)
    flat = pipeline.run(flat_config, spark)
    rng = np.random.default_rng(0)
    random_labels = labels[rng.choice(len(labels), size=target_size, replace=False)]
    rows = {
        "input": ring_counts(labels),
        "uniform random sample": ring_counts(random_labels),
        "flat k-means, equal per cluster": ring_counts(curated_labels(spark, flat.curated_path, fmt)),
        "curated (curation-spark)": ring_counts(curated_labels(spark, summary.curated_path, fmt)),
    }
    entropy = {name: synth.label_entropy(np.repeat(np.arange(5), counts), n_labels=5) for name, counts in rows.items()}
    print()
    print(f"{'':34s}" + "".join(f"ring {i} ".rjust(9) for i in range(5)) + "   entropy")
    for name, counts in rows.items():
        print(f"{name:34s}" + "".join(f"{c:9d}" for c in counts) + f"   {entropy[name]:.3f}")
    print("(entropy = H / log 5 of the per-ring counts; 1.0 = balanced over the five rings)")
    report_path = None
    try:
        from curation_spark.report import write_report

        report_path = write_report(summary.run_path)
        print(f"report: {report_path}")
    except ImportError:
        log.warning("report module not available; skipping the HTML report")
    print(f"demo finished in {time.perf_counter() - started:.0f} s; run folder {summary.run_path}")
    return {"counts": rows, "entropy": entropy, "report": report_path, "run": summary.run_path}
