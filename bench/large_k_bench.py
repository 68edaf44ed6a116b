"""Large-K benchmark (issue 11): the k-means engine at K = 1,000 / 10,000 / 100,000.

One generated long-tailed Gaussian mixture (default N = 2,000,000, D = 128) in Parquet,
``local[2]`` (one core per barrier task), and for each K, in one run:

* our engine with ``assignment: index`` and with ``assignment: exact`` (same init):
  seconds per Lloyd iteration (from the engine's own history), agreement with the exact
  nearest centroid (the engine's per-iteration sample check), objective after the
  iterations, init seconds, peak driver / worker RSS (psutil), bytes sent per task per
  iteration by the reduce-scatter + all-gather (from the payload sizes);
* single-process ``faiss.Kmeans`` (exact, all points, 1 and 2 threads) with the same K
  and iterations.

Exact assignment at K = 100,000 costs minutes per iteration here; by default it is timed
as faiss's exact search of a 20,000-point subsample, scaled to N (exact search is linear
in N: say so when quoting it), and faiss.Kmeans runs 1 iteration there. ``--exact-full``
runs the engine's exact iteration instead.

Usage: ``.venv/bin/python bench/large_k_bench.py [--n 2000000] [--ks 1000,10000,100000]``
Writes ``bench/results/large_k_<stamp>.json`` and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from curation_spark.engine import kmeans  # noqa: E402
from curation_spark.method import lloyd  # noqa: E402
from kmeans_bench import (ensure_table, load_numpy, machine_info, make_sampler, release_memory,  # noqa: E402
                          run_faiss_kmeans, table_dir)


def now() -> float:
    return time.perf_counter()


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def exchange_bytes_per_task(k: int, dim: int, n_tasks: int, touched: int) -> int:
    """Bytes one task sends per iteration: its touched clusters' sparse sums to their owners
    (reduce-scatter, 8D + 12 bytes per cluster, 16-byte header per owner) and its K/T
    float32 centroid rows to every peer (all-gather)."""
    owned = -(-k // n_tasks)
    return touched * (8 * dim + 12) + 16 * n_tasks + owned * dim * 4 * (n_tasks - 1)


def run_engine(spark, path: str, k: int, iters: int, assignment: str, seed: int, dim: int, n: int,
               n_tasks: int) -> dict[str, Any]:
    from curation_spark.method.lloyd import KMeansParams
    from curation_spark.io.tables import read_table, to_points

    points = to_points(read_table(spark, path, "parquet"), "id", "embedding")
    params = KMeansParams(n_clusters=k, n_iters=iters, seed=seed, assignment=assignment, init="auto")
    release_memory()
    with make_sampler(0.2) as mem:
        t1 = now()  # the init runs inside the fit's barrier stage (its seconds are in the history)
        res = kmeans.fit(points, params, stage=f"K={k} {assignment}", n_points=n, dim=dim)
        n_rows = res.assignments.count()
        fit_s = now() - t1
    init_s = res.init_seconds
    res.unpersist()
    hist = res.history
    steady = [h["seconds"] for h in hist[1:]] or [h["seconds"] for h in hist]
    touched = min(k, n // n_tasks)
    out = {
        "k": k, "assignment": assignment, "iterations": len(hist), "init_s": round(init_s, 2),
        "fit_s": round(fit_s, 2), "s_per_iter": [round(h["seconds"], 3) for h in hist],
        "s_per_iter_steady_best": round(min(steady), 3), "s_per_iter_steady_mean": round(float(np.mean(steady)), 3),
        "assign_s": [round(h["assign_s"], 3) for h in hist], "sums_s": [round(h["sums_s"], 3) for h in hist],
        "exchange_s": [round(h["exchange_s"], 3) for h in hist],
        "objective_per_iter": [h["objective"] for h in hist], "objective_final": res.objective,
        "agreement": [h.get("agreement") for h in hist], "prior_blocks": [h.get("prior_blocks") for h in hist],
        "n_probes": [h.get("n_probes") for h in hist], "rows_out": n_rows,
        "init_share_of_wall": round(init_s / fit_s, 4),
        "bytes_sent_per_task_per_iter": exchange_bytes_per_task(k, dim, n_tasks, touched),
        "memory": {key: val for key, val in mem.report().items() if key != "timeline"},
    }
    log(f"K={k} {assignment}: fit {fit_s:.1f} s incl. init {init_s:.1f} s, {len(hist)} it, steady {out['s_per_iter_steady_best']:.2f} s/it, "
        f"objective {res.objective:.6g}, agreement {out['agreement']}")
    return out


def init_as_jobs(spark, path: str, k: int, seed: int, dim: int, n: int) -> dict[str, Any]:
    """Seconds of the same init run as Spark jobs before the stage (what the passes
    engine does, and what the barrier engine did before it computed the init in-stage)."""
    from curation_spark.method.lloyd import KMeansParams
    from curation_spark.io.tables import read_table, to_points

    points = to_points(read_table(spark, path, "parquet"), "id", "embedding")
    params = KMeansParams(n_clusters=k, n_iters=1, seed=seed, init="auto")
    t0 = now()
    init = kmeans.initial_centroids(points, params, n, dim)
    out = {"method": lloyd.init_method(params), "seconds": round(now() - t0, 2), "k": len(init)}
    log(f"K={k}: init as Spark jobs {out['seconds']:.1f} s")
    return out


def exact_sample_rate(x: np.ndarray, centroids_seed: int, k: int, threads: int, rows: int = 20_000) -> dict[str, Any]:
    """Seconds of exact faiss search for ``rows`` points against K centroids, scaled to N."""
    import faiss

    faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(centroids_seed)
    c = x[rng.choice(len(x), k, replace=False)]
    q = x[rng.choice(len(x), rows, replace=False)]
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(c)
    t0 = now()
    index.search(q, 1)
    s = now() - t0
    return {"rows": rows, "threads": threads, "seconds": round(s, 3), "scaled_to_n_s": round(s * len(x) / rows, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--components", type=int, default=1000)
    ap.add_argument("--ks", default="1000,10000,100000")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2, help="rounds at K=1000 (engine vs faiss, interleaved)")
    ap.add_argument("--exact-full", action="store_true", help="run the engine's exact iterations at every K")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=str(HERE / "data"))
    ap.add_argument("--no-faiss", action="store_true",
                    help="engine arms only (no faiss.Kmeans, no exact-search sample): the init share and the "
                         "engine's own iterations, in minutes instead of the better part of an hour")
    ap.add_argument("--init-jobs", action="store_true",
                    help="also time the two-level init as Spark jobs before the stage (the passes engine's "
                         "init), for a side-by-side with the in-stage init")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    args = ap.parse_args(argv)
    ks = [int(v) for v in args.ks.split(",")]

    from curation_spark.config import SparkSettings
    from curation_spark.io.session import get_spark

    path = table_dir(Path(args.data_dir), args.n, args.dim, args.components, args.seed, 8)
    meta = ensure_table(path, args.n, args.dim, args.components, args.seed, 8, 1.0)
    log(f"data: {path} ({'reused' if meta.get('reused') else 'written'})")
    spark = get_spark(SparkSettings("local[2]", "large-k-bench", {
        "spark.ui.enabled": "false", "spark.driver.memory": "6g", "spark.sql.shuffle.partitions": "2"}))
    n_tasks = 2
    results: dict[str, Any] = {"machine": machine_info(), "args": vars(args), "data": meta, "per_k": {}}
    x = load_numpy(path, args.dim)
    for k in ks:
        big = k >= 100_000
        entry: dict[str, Any] = {"engine": {}, "faiss": []}
        rounds = args.rounds if k <= 1000 else 1
        for r in range(rounds):
            modes = ["exact"] if k < 4096 else ["index"] + (["exact"] if (args.exact_full or not big) else [])
            if k <= 1000:
                modes = ["exact", "index"]
            if args.init_jobs and r == 0 and k >= lloyd.TWO_LEVEL_MIN_CLUSTERS:
                entry["init_as_spark_jobs"] = init_as_jobs(spark, str(path), k, args.seed, args.dim, args.n)
                release_memory()
            for mode in modes:
                entry["engine"].setdefault(mode, []).append(
                    run_engine(spark, str(path), k, args.iters, mode, args.seed, args.dim, args.n, n_tasks))
            for threads in () if args.no_faiss else ((2,) if big else (1, 2)):
                iters = 1 if big else args.iters
                log(f"K={k}: faiss.Kmeans {threads} thread(s), {iters} iteration(s)")
                f = run_faiss_kmeans(x, k, iters, args.seed, threads)
                f["round"] = r
                entry["faiss"].append(f)
                log(f"  faiss {f['s_per_iter']:.2f} s/it, objective {f.get('obj_final')}")
                release_memory()
        if not args.no_faiss:
            entry["exact_search_sample"] = exact_sample_rate(x, args.seed, k, 2)
        results["per_k"][str(k)] = entry
        out_path = HERE / "results" / f"large_k_{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}_partial.json"
        out_path.write_text(json.dumps(results, indent=1, default=str))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    for partial in (HERE / "results").glob("large_k_*_partial.json"):
        partial.unlink()
    out = HERE / "results" / f"large_k_{stamp}{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    if not args.tag:
        (HERE / "results" / "large_k_latest.json").write_text(json.dumps(results, indent=1, default=str))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
