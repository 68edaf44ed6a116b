"""``curation-spark update`` against a full re-run, at N = 1,000,000, D = 128.

    .venv/bin/python bench/update_bench.py [--n 1000000] [--dim 128] [--rounds 2] [--tag TAG]
    .venv/bin/python bench/update_bench.py --n 16000 --shares 0.25 --deletes 100 --no-change-feed \
        --target-size 5000 --tag 20k_antijoin

A long-tailed Gaussian mixture (``synth``, labels kept for scoring only) is written once as
a pool of N x (1 + the largest share) rows; the input is its first N rows as a Delta table,
with the change data feed on (``--no-change-feed``: off, so ``update`` takes the anti-join). One full ``run`` of the repository's toy recipe (``conf/toy.yaml``) makes the base
run, snapshotted. Then, per
scenario (1 % and 10 % new rows, each with 0.1 % of the old rows deleted, or ``--deletes``):

* ``update``: the snapshot is restored (same paths: a run is tied to its input's path), the
  new rows appended and the deletions committed to the input, ``update`` timed;
  ``--rounds`` times, interleaved with the full runs, best round kept;
* a fresh full ``run`` of the same recipe over the changed input (its own folder), timed;
* both curated sets scored on the mixture's labels (normalised label entropy, the report's
  balance figure) and checked for stale ids: every table of the updated run against the
  input (no deleted id anywhere, every input row assigned, sizes adding up);
* fresh full runs with the other ``--fresh-seeds`` (``clustering.seed``): the spread of a
  fresh run's balance on one input, which the update's balance is compared against (the
  difference to the seed-0 fresh run and to the mean over seeds).

``--cli``: the timed updates and fresh runs are ``curation-spark update`` / ``run``
processes (each starts its own Spark session, as a scheduled job does) instead of calls in
this process's warm session; the base run, the input changes and the scoring stay here.

Writes ``bench/results/update_<stamp>[_<tag>].json`` and ``update_latest.json``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from curation_spark import pipeline  # noqa: E402
from curation_spark.config import load_config  # noqa: E402
from curation_spark.method.balance import label_entropy  # noqa: E402
from results_file import write_results  # noqa: E402

#: The repository's toy recipe (conf/toy.yaml: 2 levels [1000, 300], 50 iterations, 10
#: resampling steps per level, sample sizes [15, 2], k-means++), curated set of 100,000.
RECIPE_FILE = HERE.parent / "conf" / "toy.yaml"
TARGET_SIZE = 100_000
COMPONENTS = 1000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def config(input_path: Path, run_path: Path, seed: int = 0, target_size: int = TARGET_SIZE):
    return load_config([RECIPE_FILE], [f"sampling.target_size={target_size}", f"input.path={input_path}",
                                       f"output.path={run_path}", f"clustering.seed={seed}"])


def timed(command: str, cfg, spark, cli: bool) -> tuple[float, Any]:
    """Seconds of one ``run`` / ``update``: a call in this session, or (``cli``) the CLI as a
    process of its own with the same settings. Returns the seconds and the update's summary
    (from run.json for the CLI)."""
    t = time.perf_counter()
    if not cli:
        result = getattr(pipeline, command)(cfg, spark)
        return round(time.perf_counter() - t, 1), getattr(result, "summary", None)
    sets = [x for key, value in (("input.path", cfg.input.path), ("output.path", cfg.output.path),
                                 ("clustering.seed", cfg.clustering.seed),
                                 ("sampling.target_size", cfg.sampling.target_size))
            for x in ("--set", f"{key}={value}")]
    done = subprocess.run([sys.executable, "-m", "curation_spark", command, str(RECIPE_FILE), *sets, "--quiet"],
                          capture_output=True, text=True)
    seconds = round(time.perf_counter() - t, 1)
    if done.returncode:
        raise RuntimeError(f"curation-spark {command} failed:\n{done.stderr[-3000:]}")
    if command != "update":
        return seconds, None
    from curation_spark.io.run_metadata import RunMetadata

    path = str(cfg.output.path).removeprefix("file:")
    return seconds, RunMetadata.from_json(Path(path, "run.json").read_text(), "run.json").updates[-1]


def balance(spark, run_path: Path, input_path: Path, n_labels: int) -> float:
    curated = spark.read.format("delta").load(str(run_path / "curated"))
    labels = spark.read.format("delta").load(str(input_path)).select("id", "label")
    rows = curated.select("id").join(labels, "id").select("label").toArrow().column("label").to_numpy()
    return round(float(label_entropy(rows, n_labels)), 4)


def stale_ids(spark, run_path: Path, input_path: Path) -> dict[str, int]:
    """Ids in the run's tables that the input no longer holds (and input rows not assigned)."""
    from pyspark.sql import functions as F

    ids = spark.read.format("delta").load(str(input_path)).select(F.col("id"))
    assign = spark.read.format("delta").load(str(run_path / "level_1" / "assignments"))
    curated = spark.read.format("delta").load(str(run_path / "curated"))
    sizes = spark.read.format("delta").load(str(run_path / "level_1" / "centroids")).agg(F.sum("size")).first()[0]
    n_input = ids.count()
    return {
        "assignments_not_in_input": assign.select(F.col("point_id").alias("id")).join(ids, "id", "left_anti").count(),
        "curated_not_in_input": curated.select("id").join(ids, "id", "left_anti").count(),
        "input_not_assigned": ids.join(assign.select(F.col("point_id").alias("id")), "id", "left_anti").count(),
        "level1_size_minus_input_rows": int(sizes) - n_input,
    }


def change_input(spark, pool: Path, input_path: Path, n: int, n_new: int, deletes: int | None) -> None:
    """Append pool rows n..n+n_new-1 (one commit) and delete old rows (another): the ids
    ending in 007 (0.1 %), or ``deletes`` ids spread evenly over 0..n-1."""
    from pyspark.sql import functions as F

    new = spark.read.parquet(str(pool)).where((F.col("id") >= n) & (F.col("id") < n + n_new))
    new.write.format("delta").mode("append").save(str(input_path))
    gone = "id % 1000 = 7" if deletes is None else f"id % {max(1, n // max(1, deletes))} = 7"
    spark.sql(f"DELETE FROM delta.`{input_path.resolve()}` WHERE id < {n} AND {gone}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--shares", default="0.01,0.1")
    p.add_argument("--deletes", type=int, default=None, help="old rows deleted per scenario (default 0.1 %%)")
    p.add_argument("--no-change-feed", action="store_true", help="input without the change data feed (anti-join)")
    p.add_argument("--target-size", type=int, default=TARGET_SIZE, help="the curated table's target size")
    p.add_argument("--fresh-seeds", default="0,1,2", help="clustering seeds of the fresh full runs (first: timed)")
    p.add_argument("--cli", action="store_true", help="time the CLI as processes of their own")
    p.add_argument("--tag", default="")
    p.add_argument("--work", default=str(HERE / "data" / "update"))
    args = p.parse_args()
    from pyspark.sql import functions as F

    from curation_spark.io.session import get_spark

    spark = get_spark()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    n, shares = args.n, [float(s) for s in args.shares.split(",")]
    pool, live, snapshot = work / "pool", work / "live", work / "snapshot"
    log(f"writing a pool of {int(n * (1 + max(shares)))} x {args.dim} rows")
    pipeline.write_mixture(spark, str(pool), int(n * (1 + max(shares))), args.dim, COMPONENTS, seed=0, alpha=1.0,
                           n_files=8, fmt="parquet")
    (spark.read.parquet(str(pool)).where(F.col("id") < n).write.format("delta")
     .option("delta.enableChangeDataFeed", str(not args.no_change_feed).lower()).save(str(live / "input")))
    log("base full run")
    t = time.perf_counter()
    pipeline.run(config(live / "input", live / "run", target_size=args.target_size), spark)
    base_seconds = round(time.perf_counter() - t, 1)
    log(f"base full run: {base_seconds} s")
    shutil.copytree(live, snapshot)
    results: dict[str, Any] = {"n": n, "dim": args.dim, "components": COMPONENTS,
                               "change_feed": not args.no_change_feed, "target_size": args.target_size,
                               "timed": "CLI processes" if args.cli else "calls in one warm session",
                               "recipe": config(live / "input", live / "run", target_size=args.target_size).to_dict()["clustering"],
                               "base_full_run_seconds": base_seconds,
                               # (what the update keeps: its fit's balance over the N rows)
                               "balance_base_run": balance(spark, live / "run", live / "input", COMPONENTS),
                               "scenarios": {}}
    for share in shares:
        n_new = int(n * share)
        rounds, phases_rounds, full, detail = [], [], None, {}
        for r in range(args.rounds):
            shutil.rmtree(live)
            shutil.copytree(snapshot, live)
            change_input(spark, pool, live / "input", n, n_new, args.deletes)
            seconds, s = timed("update", config(live / "input", live / "run", target_size=args.target_size),
                               spark, args.cli)
            rounds.append(seconds)
            phases_rounds.append(s.phases)
            log(f"{share:.0%} new rows, round {r + 1}: update {rounds[-1]} s, phases {s.phases}")
            if r == 0:
                detail = {"rows_added": s.rows_added, "rows_deleted": s.rows_deleted, "rows_read": s.rows_read,
                          "method": s.method, "in_driver": s.in_driver, "phases": s.phases, "drift": {
                              "share_beyond_p99": round(s.drift.share_beyond_p99, 4),
                              "mean_ratio": round(s.drift.mean_ratio, 4), "recluster_due": s.drift.recluster_due},
                          "balance_after_update": balance(spark, live / "run", live / "input", COMPONENTS),
                          "stale": stale_ids(spark, live / "run", live / "input")}
                log(f"after update: balance {detail['balance_after_update']}, stale {detail['stale']}")
                # The fresh full runs over the same changed input, between the update rounds.
                seeds, balances, seconds = [int(x) for x in args.fresh_seeds.split(",")], [], []
                for seed in seeds:
                    fresh = work / f"fresh_{share}_{seed}"
                    seconds.append(timed("run", config(live / "input", fresh, seed, args.target_size), spark,
                                         args.cli)[0])
                    balances.append(balance(spark, fresh, live / "input", COMPONENTS))
                    shutil.rmtree(fresh)
                    log(f"fresh full run, seed {seed}: {seconds[-1]} s, balance {balances[-1]}")
                full = min(t for seed, t in zip(seeds, seconds, strict=True) if seed == seeds[0])
                detail["balance_fresh_full_run"] = balances[0]
                detail["fresh_runs"] = {"seeds": seeds, "balance": balances, "seconds": seconds,
                                        "balance_mean": round(sum(balances) / len(balances), 4),
                                        "balance_range": round(max(balances) - min(balances), 4)}
                detail["full_run_rows_read"] = spark.read.format("delta").load(str(live / "input")).count()
        best = min(rounds)
        detail.update({"update_seconds_rounds": rounds, "update_phases_rounds": phases_rounds,
                       "update_seconds": best, "full_run_seconds": full,
                       "update_over_full": round(best / full, 3),
                       "balance_difference": round(detail["balance_after_update"] - detail["balance_fresh_full_run"],
                                                   4),
                       "balance_difference_to_seed_mean": round(
                           detail["balance_after_update"] - detail["fresh_runs"]["balance_mean"], 4)})
        results["scenarios"][f"{share:.0%}"] = detail
        log(f"{share:.0%}: update {best} s vs full run {full} s = {detail['update_over_full']:.1%}; balance "
            f"{detail['balance_after_update']} vs {detail['balance_fresh_full_run']} (fresh runs over seeds: "
            f"{detail['fresh_runs']['balance']})")
    log(f"wrote {write_results('update', results, args.tag)}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
