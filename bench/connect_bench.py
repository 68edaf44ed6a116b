"""Spark Connect against a classic session, on the same machine and Spark settings.

    .venv/bin/python bench/connect_bench.py [--n 1000000] [--rounds 2] [--tag TAG]

Two workloads, each run as the ``curation-spark`` CLI in its own process:

* **toy pipeline**: ``run conf/toy.yaml`` over the paper's 2-D rings (29,700 points;
  levels small enough to be fit in the driver);
* **one k-means level**: ``cluster`` with one level, K = 1,000, 20 iterations, no
  resampling, over a long-tailed mixture of N = 1,000,000 x 128 (Parquet): the barrier
  engine's stage.

Contenders: **classic** (the CLI starts its own ``local[2]`` session, JVM start included)
and **Connect** (the same CLI with ``SPARK_REMOTE`` set, as a client of pyspark's
``SparkConnectServer`` on ``local[2]`` started once before the timings, with the same
settings and Delta on the server). Rounds interleave the two (classic, Connect, Connect,
classic, ...); the best round of each is kept. Reported per contender: the process's wall
time and the run's own seconds from ``run.json`` (the level fits, without process start),
the engine each level used, and the ratio Connect / classic.

Writes ``bench/results/connect_<stamp>[_<tag>].json`` and ``connect_latest.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import cluster_utils as cu  # noqa: E402
from results_file import write_results  # noqa: E402

CLI = Path(sys.executable).parent / "curation-spark"
#: The settings a local session of ours gets (curation_spark.io.session.LOCAL_DEFAULTS), on both sides.
SPARK_SETTINGS = {"spark.driver.memory": "6g", "spark.sql.shuffle.partitions": "16",
                  "spark.sql.execution.arrow.pyspark.enabled": "true", "spark.python.worker.reuse": "true",
                  "spark.databricks.delta.snapshotPartitions": "8"}
KMEANS_LEVEL = ["clustering.n_levels=1", "clustering.n_clusters=[1000]", "clustering.n_iters=[20]",
                "clustering.n_splits=[1]", "clustering.n_resampling_steps=[0]", "clustering.sample_size=[1]",
                "clustering.sampling_strategy=[r]", "clustering.init=kmeans++"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cli(args: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    result = subprocess.run([str(CLI), "--quiet", *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if result.returncode != 0:
        raise SystemExit(f"curation-spark {' '.join(args)} failed:\n{(result.stdout + result.stderr)[-4000:]}")
    return round(seconds, 1)


def sets(pairs: list[str]) -> list[str]:
    return [x for pair in pairs for x in ("--set", pair)]


def run_facts(run: Path) -> dict[str, Any]:
    meta = json.loads((run / "run.json").read_text())
    levels = meta["levels"]
    return {"engines": [levels[k]["engine"] for k in sorted(levels)],
            "level_seconds": round(sum(levels[k]["seconds"] for k in levels), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--tag", default="")
    p.add_argument("--work", default=str(HERE / "data" / "connect"))
    args = p.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    classic_env = cu.spark_env()
    classic_sets = ["spark.master=local[2]", *[f"spark.conf.{k}={v}" for k, v in SPARK_SETTINGS.items()]]
    log("writing the inputs")
    cli(["synth", "rings", "--out", str(work / "rings")], classic_env)
    cli(["synth", "mixture", "--n", str(args.n), "--dim", str(args.dim), "--components", "1000", "--files", "8",
         "--format", "parquet", "--out", str(work / "mixture")], classic_env)
    workloads = {
        "toy pipeline": lambda out: ["run", str(cu.REPO / "conf" / "toy.yaml"), "--overwrite",
                                     *sets([f"input.path={work / 'rings'}", f"output.path={out}"])],
        f"one k-means level (N={args.n:,}, D={args.dim}, K=1000, 20 iterations)": lambda out: [
            "cluster", "--overwrite", *sets([f"input.path={work / 'mixture'}", f"output.path={out}", *KMEANS_LEVEL])],
    }
    results: dict[str, Any] = {"n": args.n, "dim": args.dim, "rounds": args.rounds, "spark": SPARK_SETTINGS,
                               "machine_cores": os.cpu_count(), "workloads": {}}
    with cu.ConnectServer(work / "server", master="local[2]", conf=SPARK_SETTINGS) as server:
        log(f"Spark Connect server on {server.url}")
        connect_env = server.client_env()
        for name, argv in workloads.items():
            rounds: dict[str, list[dict[str, Any]]] = {"classic": [], "connect": []}
            for r in range(args.rounds):
                order = ("classic", "connect") if r % 2 == 0 else ("connect", "classic")
                for side in order:
                    out = work / f"run_{side}"
                    shutil.rmtree(out, ignore_errors=True)
                    env = classic_env if side == "classic" else connect_env
                    extra = sets(classic_sets) if side == "classic" else []
                    seconds = cli([*argv(out), *extra], env)
                    rounds[side].append({"seconds": seconds, **run_facts(out)})
                    log(f"{name} · {side} · round {r + 1}: {seconds} s {rounds[side][-1]}")
            best = {side: min(rs, key=lambda x: x["seconds"]) for side, rs in rounds.items()}
            results["workloads"][name] = {
                "rounds": rounds, "best": best,
                "connect_over_classic": round(best["connect"]["seconds"] / best["classic"]["seconds"], 3),
                "connect_over_classic_level_seconds": round(
                    best["connect"]["level_seconds"] / max(best["classic"]["level_seconds"], 0.1), 3)}
            log(f"{name}: Connect {best['connect']['seconds']} s vs classic {best['classic']['seconds']} s = "
                f"x{results['workloads'][name]['connect_over_classic']}")
    log(f"wrote {write_results('connect', results, args.tag)}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
