"""``curation-spark update``: new rows assigned down a finished hierarchy, deleted rows
dropped, sizes and curated tables refreshed, atomic and resumable.

One small base run per input kind (a Delta input with the change data feed on, a Parquet
input) is made once and snapshotted; every scenario restores the snapshot to the same
folder (the run is tied to its input's path) and changes it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import cluster_utils as cu
from curation_spark import pipeline, synth
from curation_spark.config import load_config
from curation_spark.curation import update as update_mod
from curation_spark.errors import ConfigError, InputError

pytestmark = pytest.mark.slow

N, DIM, COMPONENTS = 3000, 8, 12
TARGET = 600
SETTINGS = ["clustering.n_levels=2", "clustering.n_clusters=[24,4]", "clustering.n_iters=5",
            "clustering.n_resampling_steps=[1,0]", "clustering.sample_size=[4,1]", "clustering.seed=0",
            f"sampling.target_size={TARGET}", "sampling.keep_columns=[label]", "spark.master=local[2]"]


def mixture_rows(lo: int, hi: int, dim: int = DIM) -> pa.Table:
    """Rows ``lo..hi-1`` of the test mixture (a prefix-stable pool: new rows come from the
    same distribution as the base run's)."""
    batches = list(synth.iter_gaussian_mixture_batches(hi, dim, COMPONENTS, seed=3, start=lo))
    return pa.Table.from_batches(batches)


def config_for(input_path: Path, run_path: Path, extra: tuple[str, ...] = ()):
    return load_config([], [*SETTINGS, f"input.path={input_path}", f"output.path={run_path}", *extra])


class Base:
    """A finished run over its input in ``work``, snapshotted once; :meth:`restore` puts
    the snapshot back (same paths, so the run's fingerprint still matches its input)."""

    def __init__(self, root: Path) -> None:
        self.work, self.snapshot = root / "work", root / "snapshot"

    def save(self) -> None:
        shutil.copytree(self.work, self.snapshot)

    def restore(self) -> Path:
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.copytree(self.snapshot, self.work)
        return self.work


@pytest.fixture(scope="module")
def delta_base(spark, tmp_path_factory):
    """A Delta input (change data feed on) of N rows and its finished run (Delta tables)."""
    base = Base(tmp_path_factory.mktemp("update_delta"))
    spark.createDataFrame(mixture_rows(0, N)).repartition(2).write.format("delta") \
        .option("delta.enableChangeDataFeed", "true").save(str(base.work / "input"))
    pipeline.run(config_for(base.work / "input", base.work / "run"), spark)
    base.save()
    return base


@pytest.fixture(scope="module")
def parquet_base(spark, tmp_path_factory):
    """A Parquet input of N rows and its finished run with Parquet tables."""
    base = Base(tmp_path_factory.mktemp("update_parquet"))
    spark.createDataFrame(mixture_rows(0, N)).repartition(2).write.parquet(str(base.work / "input"))
    pipeline.run(config_for(base.work / "input", base.work / "run", ("output.format=parquet",)), spark)
    base.save()
    return base


def spark_append_and_delete(spark, input_path: Path, fmt: str = "delta") -> None:
    """Append rows N..N+299, then delete the ids ending in 07 (30 old rows, 3 new ones)."""
    new = spark.createDataFrame(mixture_rows(N, N + 300))
    if fmt == "delta":
        new.write.format("delta").mode("append").save(str(input_path))
        spark.sql(f"DELETE FROM delta.`{input_path}` WHERE id % 100 = 7")
        return
    kept = spark.read.parquet(str(input_path)).unionByName(new).where("id % 100 != 7")
    tmp = input_path.parent / "input_new"
    kept.write.parquet(str(tmp))
    shutil.rmtree(input_path)
    tmp.rename(input_path)


#: The tables after the uninterrupted update of :func:`spark_append_and_delete`'s changes
#: (filled by the first test that makes it).
CLEAN_UPDATE: dict[str, pa.Table] = {}
#: The appended rows that survive the delete.
NEW_IDS = {i for i in range(N, N + 300) if i % 100 != 7}


def table(spark, path: Path, fmt: str = "delta") -> pa.Table:
    return spark.read.format(fmt).load(str(path)).toArrow()


def check_updated(spark, work: Path, fmt: str = "delta", input_fmt: str = "delta") -> dict:
    """Everything an update promises, checked against the input and numpy."""
    run = work / "run"
    inp = table(spark, work / "input", input_fmt)
    ids = set(inp.column("id").to_pylist())
    assign = table(spark, run / "level_1" / "assignments", fmt)
    got = dict(zip(assign.column("point_id").to_pylist(), zip(assign.column("cluster_id").to_pylist(),
                                                              assign.column("distance").to_pylist())))
    assert set(got) == ids and assign.num_rows == len(ids)  # every input row assigned, no stale id
    levels = {lv: table(spark, run / f"level_{lv}" / "centroids", fmt).sort_by("cluster_id") for lv in (1, 2)}
    counts = np.bincount(assign.column("cluster_id").to_numpy(), minlength=levels[1].num_rows)
    assert levels[1].column("size").to_pylist() == counts.tolist()
    for lv in (1, 2):
        assert sum(levels[lv].column("flat_size").to_pylist()) == len(ids)
    children = levels[1].to_pandas().groupby("parent_id")["flat_size"].sum()
    assert levels[2].column("flat_size").to_pylist() == [int(children.get(c, 0))
                                                         for c in levels[2].column("cluster_id").to_pylist()]
    curated = table(spark, run / "curated", fmt)
    assert curated.num_rows == TARGET and set(curated.column("id").to_pylist()) <= ids
    assert "label" in curated.column_names
    meta = json.loads((run / "run.json").read_text())
    assert meta["pending_update"] is None and meta["input"]["n_rows"] == len(ids)
    assert meta["levels"]["1"]["n_points"] == len(ids) and meta["samples"]["curated"]["rows"] == TARGET
    assert not (run / "_update").exists()
    return {"assign": got, "centroids": np.stack(levels[1].column("centroid").to_numpy(zero_copy_only=False)),
            "input": inp, "meta": meta}


def check_new_rows_on_nearest(state: dict, new_ids: set) -> None:
    emb = {i: np.asarray(e, np.float32) for i, e in zip(state["input"].column("id").to_pylist(),
                                                        state["input"].column("embedding").to_pylist())}
    x = np.stack([emb[i] for i in sorted(new_ids)])
    d = np.linalg.norm(x[:, None, :] - state["centroids"][None, :, :], axis=2)
    want = d.argmin(1)
    got = np.array([state["assign"][i][0] for i in sorted(new_ids)])
    close = np.sort(d, 1)
    ties = close[:, 1] - close[:, 0] < 1e-4
    assert np.all((got == want) | ties), "a new row is not on its nearest level-1 centroid"
    dist = np.array([state["assign"][i][1] for i in sorted(new_ids)])
    assert np.allclose(dist, d[np.arange(len(x)), got], rtol=1e-4, atol=1e-4)


def test_update_over_the_change_data_feed(spark, delta_base):
    work = delta_base.restore()
    before = table(spark, work / "run" / "level_1" / "assignments")
    old = dict(zip(before.column("point_id").to_pylist(), zip(before.column("cluster_id").to_pylist(),
                                                              before.column("distance").to_pylist())))
    cents_before = table(spark, work / "run" / "level_1" / "centroids").sort_by("cluster_id")
    spark_append_and_delete(spark, work / "input")
    cfg = config_for(work / "input", work / "run")
    result = pipeline.update(cfg, spark)
    s = result.summary
    assert s is not None and s.method == "change-data-feed" and s.in_driver  # (a small run)
    assert (s.rows_added, s.rows_deleted, s.rows_changed, s.n_points) == (297, 30, 0, N + 267)
    assert s.rows_read == 333 and (s.from_version, s.to_version) == (0, 2)  # only the changes were read
    state = check_updated(spark, work)
    check_new_rows_on_nearest(state, NEW_IDS)
    survivors = {i: v for i, v in old.items() if i % 100 != 7}
    assert {i: state["assign"][i] for i in survivors} == survivors  # old rows keep cluster and distance
    cents = table(spark, work / "run" / "level_1" / "centroids").sort_by("cluster_id")
    assert cents.column("centroid").to_pylist() == cents_before.column("centroid").to_pylist()
    meta = state["meta"]
    assert meta["updates"][0]["rows_added"] == 297 and meta["input"]["delta_version"] == 2
    assert meta["drift_baseline"]["rows"] == N and 0 <= meta["updates"][0]["drift"]["share_beyond_p99"] < 0.05
    CLEAN_UPDATE.update(cu.run_tables(work / "run"))  # what the interrupted update must end with
    # The refreshed curated table is what `sample` draws from the updated run.
    again = pipeline.sample(cfg, spark, table_name="again")
    a = table(spark, Path(again.curated_path)).select(["id", "copy", "cluster_id"]).sort_by("id")
    b = table(spark, work / "run" / "curated").select(["id", "copy", "cluster_id"]).sort_by("id")
    assert a.equals(b)
    # Nothing new: a no-op that says so and writes nothing.
    text = (work / "run" / "run.json").read_text()
    noop = pipeline.update(cfg, spark)
    assert noop.summary is None and "nothing to do" in noop.message
    assert json.loads((work / "run" / "run.json").read_text())["updates"] == json.loads(text)["updates"]
    # Deletions only: nothing to assign, the sizes and the curated table still follow.
    spark.sql(f"DELETE FROM delta.`{work / 'input'}` WHERE id % 100 = 11")
    gone = pipeline.update(cfg, spark).summary
    assert gone is not None and (gone.rows_added, gone.rows_deleted, gone.n_points) == (0, 33, N + 234)
    assert gone.drift is not None and gone.drift.new_rows == 0 and not gone.drift.recluster_due
    check_updated(spark, work)


def test_update_written_by_delta_rs(spark, delta_base):
    """Another Delta writer (delta-rs) appends and deletes; the update finds both."""
    import deltalake

    work = delta_base.restore()
    path = str(work / "input")
    new = mixture_rows(N, N + 200)
    deltalake.write_deltalake(path, new.cast(table(spark, work / "input").schema), mode="append")
    deltalake.DeltaTable(path).delete("id % 50 = 3")  # 60 old rows, 4 new ones
    s = pipeline.update(config_for(work / "input", work / "run"), spark).summary
    assert s is not None and (s.rows_added, s.rows_deleted, s.n_points) == (196, 60, N + 136)
    state = check_updated(spark, work)
    check_new_rows_on_nearest(state, {i for i in range(N, N + 200) if i % 50 != 3})
    # The weekly full run over the updated folder (`run --fresh`) fits the hierarchy again ...
    cfg = config_for(work / "input", work / "run")
    refit = pipeline.run(cfg, spark, fresh=True)
    meta = json.loads((work / "run" / "run.json").read_text())
    assert meta["updates"] == [] and meta["levels"]["1"]["n_points"] == N + 136 == refit.levels[0].n_points
    # ... and when that run is of the input as it is now, --fresh resumes it.
    log_dir = work / "run" / "level_1" / "assignments" / "_delta_log"
    commits = sorted(log_dir.glob("*.json"))
    pipeline.run(cfg, spark, fresh=True)
    assert sorted(log_dir.glob("*.json")) == commits


@pytest.mark.parametrize("in_driver", [True, False], ids=["driver", "spark"])
def test_update_parquet_by_anti_join(spark, parquet_base, monkeypatch, in_driver):
    """Ids compared in the driver (a small run) or by Spark's anti-join (a large one)."""
    work = parquet_base.restore()
    spark_append_and_delete(spark, work / "input", fmt="parquet")
    if not in_driver:
        monkeypatch.setattr(update_mod, "updates_in_driver", lambda *args: False)
    s = pipeline.update(config_for(work / "input", work / "run", ("output.format=parquet",)), spark).summary
    assert s is not None and s.method == "anti-join" and s.from_version is None and s.in_driver == in_driver
    assert (s.rows_added, s.rows_deleted, s.rows_read) == (297, 30, N + 267)
    state = check_updated(spark, work, fmt="parquet", input_fmt="parquet")
    check_new_rows_on_nearest(state, NEW_IDS)


def test_interrupted_update_leaves_the_run_and_is_finished(spark, delta_base, monkeypatch):
    """Failing while staging: the run is exactly as before. Failing inside the commit:
    `sample` refuses until `update` runs again, which finishes it; both end with the same
    tables as an update that never failed."""
    want = clean_update(spark, delta_base)

    work = delta_base.restore()
    spark_append_and_delete(spark, work / "input")
    cfg = config_for(work / "input", work / "run")
    before_json = (work / "run" / "run.json").read_text()
    before = cu.run_tables(work / "run")

    def fail(*args, **kwargs):
        raise RuntimeError("killed while staging")

    with monkeypatch.context() as m:
        m.setattr(update_mod, "stage_sample", fail)
        with pytest.raises(RuntimeError, match="killed while staging"):
            pipeline.update(cfg, spark)
    assert (work / "run" / "run.json").read_text() == before_json
    after = {k: v for k, v in cu.run_tables(work / "run").items() if not k.startswith("_update")}  # (staging)
    assert sorted(after) == sorted(before) and all(after[k].equals(before[k]) for k in before)

    real = update_mod.commit_assignments

    def commit_then_fail(run, **kwargs):
        real(run, **kwargs)
        raise RuntimeError("killed while committing")

    with monkeypatch.context() as m:
        m.setattr(update_mod, "commit_assignments", commit_then_fail)
        with pytest.raises(RuntimeError, match="killed while committing"):
            pipeline.update(cfg, spark)
    assert json.loads((work / "run" / "run.json").read_text())["pending_update"]["status"] == "staged"
    with pytest.raises(ConfigError, match="interrupted while committing"):
        pipeline.sample(cfg, spark, table_name="other")
    finished = pipeline.update(cfg, spark)
    assert finished.summary is None and "nothing to do" in finished.message  # the pending one was finished first
    check_updated(spark, work)
    got = cu.run_tables(work / "run")
    assert sorted(got) == sorted(want) and all(got[k].equals(want[k]) for k in want)


def clean_update(spark, delta_base) -> dict[str, pa.Table]:
    """The tables after the uninterrupted update (made here when the test runs alone)."""
    if not CLEAN_UPDATE:
        clean = delta_base.restore()
        spark_append_and_delete(spark, clean / "input")
        pipeline.update(config_for(clean / "input", clean / "run"), spark)
        CLEAN_UPDATE.update(cu.run_tables(clean / "run"))
    return CLEAN_UPDATE


def append_delete_and_rewrite(spark, input_path: Path) -> set[int]:
    """:func:`spark_append_and_delete`, then old rows rewritten in place (same id, new
    embedding: ids ending in 13, 30 rows); returns the rewritten ids."""
    spark_append_and_delete(spark, input_path)
    spark.sql(f"UPDATE delta.`{input_path}` SET embedding = transform(embedding, v -> v * -1.5) "
              f"WHERE id < {N} AND id % 100 = 13")
    return {i for i in range(N) if i % 100 == 13}


def test_update_through_spark_tasks_matches_the_driver(spark, delta_base, monkeypatch):
    """A large run's update (changes found, new rows assigned and summarised by Spark jobs,
    level 1's assignments merged) ends with the same tables as the small run's driver path,
    rows rewritten in place included, and refuses bad rows the same way."""
    ends = {}
    for in_driver in (True, False):
        work = delta_base.restore()
        rewritten = append_delete_and_rewrite(spark, work / "input")
        with monkeypatch.context() as m:
            if not in_driver:
                m.setattr(update_mod, "updates_in_driver", lambda *args: False)
            s = pipeline.update(config_for(work / "input", work / "run"), spark).summary
        assert s is not None and s.in_driver == in_driver and s.method == "change-data-feed"
        assert (s.rows_added, s.rows_deleted, s.rows_changed) == (297, 30, 30)
        check_new_rows_on_nearest(check_updated(spark, work), NEW_IDS | rewritten)
        ends[in_driver] = cu.run_tables(work / "run")
    assert sorted(ends[True]) == sorted(ends[False])
    assert all(ends[True][k].equals(ends[False][k]) for k in ends[True])
    cfg = config_for(work / "input", work / "run")
    monkeypatch.setattr(update_mod, "updates_in_driver", lambda *args: False)
    rows = mixture_rows(N + 300, N + 302).to_pylist()
    rows[0]["embedding"] = [float("inf")] * DIM
    spark.createDataFrame(pa.Table.from_pylist(rows, schema=mixture_rows(0, 1).schema)).write.format("delta") \
        .mode("append").save(str(work / "input"))
    with pytest.raises(InputError, match="1 row\\(s\\) hold NaN, Inf or null values"):
        pipeline.update(cfg, spark)


def test_update_refuses_changed_inputs(spark, delta_base):
    work = delta_base.restore()
    cfg = config_for(work / "input", work / "run")
    with pytest.raises(ConfigError, match=r"different clustering config \(clustering.n_iters: \[5, 5\] -> \[6, 6\]\)"):
        pipeline.update(config_for(work / "input", work / "run", ("clustering.n_iters=6",)), spark)
    spark.createDataFrame(mixture_rows(5, 6)).write.format("delta").mode("append").save(str(work / "input"))
    with pytest.raises(InputError, match="'id' values are repeated"):  # id 5 again
        pipeline.update(cfg, spark)
    spark.sql(f"DELETE FROM delta.`{work / 'input'}` WHERE id = 5")
    rows = mixture_rows(N, N + 3)
    bad = rows.to_pylist()
    bad[0]["embedding"] = [float("nan")] * DIM  # checked in the assignment pass, judged before any commit
    spark.createDataFrame(pa.Table.from_pylist(bad, schema=rows.schema)).write.format("delta").mode("append").save(str(work / "input"))
    with pytest.raises(InputError, match="1 row\\(s\\) hold NaN, Inf or null values"):
        pipeline.update(cfg, spark)
    bad[1]["embedding"] = [1.0] * (DIM + 1)
    spark.createDataFrame(pa.Table.from_pylist(bad[1:2], schema=rows.schema)).write.format("delta").mode("overwrite") \
        .option("replaceWhere", f"id = {N + 1}").save(str(work / "input"))
    with pytest.raises(InputError, match="inconsistent dimension: 1 row"):
        pipeline.update(cfg, spark)
    other = mixture_rows(0, 10, dim=4)
    spark.createDataFrame(other).write.format("delta").mode("overwrite").option("overwriteSchema", "true") \
        .save(str(work / "input"))
    with pytest.raises(InputError, match="dimension 4 now but 8"):
        pipeline.update(cfg, spark)
    strings = spark.createDataFrame(mixture_rows(0, 10)).selectExpr("cast(id as string) as id", "embedding", "label")
    strings.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(str(work / "input"))
    with pytest.raises(InputError, match="is string now but was bigint"):
        pipeline.update(cfg, spark)
    assert json.loads((work / "run" / "run.json").read_text())["updates"] == []


def test_drift_flags_new_rows_beyond_the_fits_tail(spark):
    from curation_spark.curation import drift
    from curation_spark.io.run_metadata import DriftBaseline

    fit = spark.createDataFrame([(i, 0, float(i)) for i in range(1, 101)], "point_id long, cluster_id int, distance float")
    for base in (drift.baseline_of_assignments(fit), drift.baseline_of_distances(np.arange(1, 101, dtype=np.float32))):
        assert (base.rows, base.mean_distance) == (100, 50.5) and base.p99_distance == 99.0
    baseline = DriftBaseline(rows=1000, mean_distance=1.0, p99_distance=2.0)
    moved = drift.judge(100, 89 * 1.0 + 11 * 3.0, 11, baseline, threshold=0.05)  # 11 rows at 3.0
    assert moved.new_rows == 100 and moved.share_beyond_p99 == pytest.approx(0.11) and moved.recluster_due
    assert moved.mean_ratio == pytest.approx(1.22)
    calm = drift.judge(89, 89.0, 0, baseline, threshold=0.05)
    assert calm.share_beyond_p99 == 0 and not calm.recluster_due
