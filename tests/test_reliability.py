"""Faults: a failing task is retried by Spark and the result is identical to a clean run."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from curation_spark import pipeline, synth
from curation_spark.config import load_config
from curation_spark.io.tables import read_table

#: End-to-end Spark runs: outside the fast lane (`-m "not slow and not cluster"`), in CI.
pytestmark = pytest.mark.slow

SETTINGS = ["clustering.n_levels=1", "clustering.n_clusters=[20]", "clustering.n_iters=8", "clustering.seed=11",
            "clustering.n_resampling_steps=0",
            "clustering.in_process_max_mb=0"]  # tiny: force the Spark engine whose task retry is tested


FAIL_ONCE_SCRIPT = """
import os, sys
from curation_spark import cli
from curation_spark.engine import kmeans

def fail_first_attempt(partition):
    if partition != 0:
        return
    try:
        os.close(os.open({marker!r}, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    raise RuntimeError("injected failure (first attempt of partition 0)")

kmeans.set_block_loaded_hook(fail_first_attempt)
sys.exit(cli.main({args!r}))
"""


def _centroids(spark, run):
    return sorted((r["cluster_id"], tuple(r["centroid"]), r["size"])
                  for r in read_table(spark, f"{run}/level_1/centroids").collect())


def test_task_failure_is_retried_with_identical_result(spark, tmp_dir):
    data = f"{tmp_dir}/mix"
    pipeline.write_synthetic(spark, synth.make_gaussian_mixture(4000, 8, 10, seed=2), data, "delta")
    clean = f"{tmp_dir}/clean"
    pipeline.cluster(load_config([], [f"input.path={data}", f"output.path={clean}", *SETTINGS]), spark)

    faulty = f"{tmp_dir}/faulty"
    cli_args = ["cluster", "--set", f"input.path={data}", "--set", f"output.path={faulty}",
                "--set", "spark.master=local[2,4]",  # 4 task attempts allowed
                "--set", "spark.conf.spark.ui.enabled=false"]
    for s in SETTINGS:
        cli_args += ["--set", s]
    # The CLI in a fresh process (a session allowing task retries), with the engine's
    # block-loaded hook failing the first task attempt that loads partition 0.
    script = FAIL_ONCE_SCRIPT.format(marker=os.path.join(tmp_dir, "failed-once"), args=cli_args)
    env = {**os.environ, "CURATION_SPARK_PROGRESS": "off"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_dir, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "injected failure" in proc.stderr  # the first attempt really failed
    assert _centroids(spark, faulty) == _centroids(spark, clean)


def _tree_snapshot(root: str) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time (ns)."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            st = os.stat(path)
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return out


def test_nothing_is_ever_written_to_the_input(spark, tmp_dir):
    """A full run (cluster + sample carrying an input column) over a Delta and a Parquet
    input leaves every input file as it was: no new, changed or removed file."""
    table = synth.make_gaussian_mixture(3000, 8, 6, seed=4)
    for fmt in ("delta", "parquet"):
        data = f"{tmp_dir}/input_{fmt}"
        pipeline.write_synthetic(spark, table, data, fmt)
        before = _tree_snapshot(data)
        config = load_config([], [f"input.path={data}", f"output.path={tmp_dir}/run_{fmt}", *SETTINGS,
                                  "sampling.target_size=500", "sampling.keep_columns=[label]"])
        summary = pipeline.run(config, spark)
        assert summary.curated_rows == 500
        pipeline.sample(config, spark, table_name="again")  # a second sample over the same hierarchy
        assert _tree_snapshot(data) == before, fmt
