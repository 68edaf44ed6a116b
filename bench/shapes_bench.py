"""Shape benchmark: the k-means engine's driver path against exact ``faiss.Kmeans`` over a
grid of shapes (N/K, K, D) on a long-tailed *overlapping* and a *separated* Gaussian mixture.

For every shape, contenders run interleaved (round 1: all of them, round 2: all of them,
...) and the best round counts:

* the engine's in-process k-means (``method.inprocess.fit_in_memory``: what a level runs
  in the driver under ``clustering.in_process_max_mb``), with ``assignment`` ``auto``,
  ``exact`` and ``index``;
* ``faiss.Kmeans`` (exact, single process) with 1 and 2 threads; the reference is the best
  of the two.

Per-iteration seconds are the mean of iterations 2..6 of a 6-iteration fit as each side
times them inside its loop (the engine's history, faiss's ``iteration_stats``), so init,
the first iteration's set-up (the index's coarse quantizer) and the final assignment are
out; a difference of whole fits (6 minus 1 iterations) is too noisy at small shapes. Agreement: the share of points
whose final label is the exact nearest centroid of the fit's final centroids (faiss flat
search); objective: mean squared distance, as a ratio to faiss's.

Usage::

    .venv/bin/python bench/shapes_bench.py                      # the default grid
    .venv/bin/python bench/shapes_bench.py --shapes 20:20000:64 --mixtures overlapping --rounds 2

A shape is ``N/K:K:D``; shapes whose exact iteration would exceed ``--max-gflop`` are
skipped (and listed). Writes ``bench/results/shapes_<stamp>.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from curation_spark import synth  # noqa: E402 -- after the path set-up above
from curation_spark.method import inprocess, lloyd  # noqa: E402
from results_file import write_results  # noqa: E402

DEFAULT_SHAPES = ["20:500:64", "200:500:64", "2000:500:64", "20:5000:64", "200:5000:64", "20:20000:64",
                  "20:5000:128", "200:1000:128", "20:500:384", "200:500:384"]
#: noise (per-dimension std of a component) for the two mixtures; component centres are
#: N(0, 1) per dimension, so at noise 1.0 neighbouring components overlap heavily.
MIXTURES = {"separated": 0.1, "overlapping": 1.0}
ASSIGNMENTS = ("auto", "exact", "index")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_data(n: int, dim: int, k: int, noise: float, seed: int) -> np.ndarray:
    """A long-tailed mixture with ``max(10, k // 4)`` components (several clusters per
    component, as in real pools), as float32 rows."""
    table = synth.make_gaussian_mixture(n, dim, max(10, k // 4), seed=seed, alpha=1.0, noise=noise)
    flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(n, dim), dtype=np.float32)


#: ``--index-min-clusters``: the engine's ``clustering.index_min_clusters`` (None: the default).
INDEX_MIN_CLUSTERS: dict[str, int] = {}


def engine_fit(x: np.ndarray, k: int, iters: int, assignment: str, init: str, seed: int) -> tuple[float, Any]:
    params = lloyd.KMeansParams(n_clusters=k, n_iters=iters, distance="l2", init=init, seed=seed, tol=0.0,
                                init_sample_size=min(len(x), max(k * 20, 50_000)), assignment=assignment,
                                **INDEX_MIN_CLUSTERS)
    # Stand-ins for the xxhash64 keys: uniform over the whole int64 range, as the hash is
    # (the init sample's cut is a signed threshold).
    keys = {seed: np.random.default_rng(seed).integers(-2**63, 2**63 - 1, len(x), dtype=np.int64)}
    t0 = time.perf_counter()
    res = inprocess.fit_in_memory(x, params, keys, f"bench k={k}")
    return time.perf_counter() - t0, res


class BarrierPath:
    """The engine's barrier stage (what a level runs on Spark): ``local[2]``, one core per
    task, the shape's rows written once to Parquet in a temporary folder."""

    def __init__(self) -> None:
        self.spark = None
        self.folder = None

    def fit(self, x: np.ndarray, k: int, iters: int, assignment: str, init: str, seed: int) -> tuple[float, Any]:
        import tempfile

        import pyarrow as pa
        import pyarrow.parquet as pq

        from curation_spark.config import SparkSettings
        from curation_spark.engine import kmeans
        from curation_spark.io.session import get_spark
        from curation_spark.io.tables import read_table, to_points

        if self.spark is None:
            self.spark = get_spark(SparkSettings("local[2]", "shapes-bench", {
                "spark.ui.enabled": "false", "spark.driver.memory": "6g", "spark.sql.shuffle.partitions": "2"}))
        key = (x.shape, float(x[:4].sum()))
        if self.folder is None or self.folder[0] != key:
            path = Path(tempfile.mkdtemp(prefix="shapes_bench_")) / "points"
            path.mkdir()
            half = len(x) // 2
            for i, (a, b) in enumerate(((0, half), (half, len(x)))):
                emb = pa.FixedSizeListArray.from_arrays(pa.array(x[a:b].ravel()), x.shape[1])
                table = pa.table({"id": pa.array(np.arange(a, b, dtype=np.int64)),
                                  "embedding": pa.ListArray.from_arrays(
                                      pa.array(np.arange(0, (b - a + 1) * x.shape[1], x.shape[1], dtype=np.int32)),
                                      emb.flatten())})
                pq.write_table(table, path / f"part-{i}.parquet")
            self.folder = (key, str(path))
        points = to_points(read_table(self.spark, self.folder[1], "parquet"), "id", "embedding")
        params = lloyd.KMeansParams(n_clusters=k, n_iters=iters, distance="l2", init=init, seed=seed, tol=0.0,
                                    init_sample_size=min(len(x), max(k * 20, 50_000)), assignment=assignment,
                                    num_partitions=2)
        t0 = time.perf_counter()
        res = kmeans.fit(points, params, stage=f"bench barrier k={k}", n_points=len(x), dim=x.shape[1])
        rows = res.assignments.toPandas()  # the stored assignment, in id order below
        wall = time.perf_counter() - t0
        order = np.argsort(rows.iloc[:, 0].to_numpy())  # (the benchmark's rows only: a bench may collect them)
        res.labels = rows["cluster_id"].to_numpy()[order]
        res.dist = rows["distance"].to_numpy()[order]
        res.unpersist()
        return wall, res


BARRIER = BarrierPath()


def faiss_fit(x: np.ndarray, k: int, iters: int, threads: int, seed: int) -> tuple[float, np.ndarray, list[float]]:
    """Wall seconds, centroids and each iteration's seconds (from faiss's cumulative times)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, max_points_per_centroid=10**9,
                      min_points_per_centroid=1, verbose=False)
    t0 = time.perf_counter()
    km.train(x)
    wall = time.perf_counter() - t0
    cumulative = [float(s["time"]) for s in km.iteration_stats]
    return wall, km.centroids, list(np.diff([0.0, *cumulative]))


def exact_labels(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact nearest centroid of every row and the mean squared distance."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    d, labels = index.search(x, 1)
    return labels[:, 0], float(d[:, 0].mean())


def per_iteration(seconds: list[float]) -> float:
    """Mean of iterations 2.. (the first carries set-up on both sides)."""
    later = seconds[1:] or seconds
    return float(np.mean(later))


CONTENDERS = tuple(f"engine_{a}" for a in ASSIGNMENTS) + ("barrier_auto", "faiss_1t", "faiss_2t")


def run_shape(x: np.ndarray, k: int, iters: int, rounds: int, init: str, seed: int,
              contenders: tuple[str, ...] = CONTENDERS, faiss_rows: int = 0) -> dict[str, Any]:
    best: dict[str, float] = {}
    quality: dict[str, dict[str, Any]] = {}
    for rnd in range(rounds):
        for name in contenders:
            if name.startswith(("engine_", "barrier_")):
                assignment = name.split("_", 1)[1]
                wall, res = (engine_fit(x, k, iters, assignment, init, seed) if name.startswith("engine_")
                             else BARRIER.fit(x, k, iters, assignment, init, seed))
                s = per_iteration([h["seconds"] for h in res.history])
                if name not in quality:
                    exact, _ = exact_labels(x, res.centroids)
                    history = res.history
                    quality[name] = {
                        "agreement_final": float((res.labels == exact).mean()),
                        "objective": float(np.mean(res.dist.astype(np.float64) ** 2)),
                        "agreement_during": [h.get("agreement") for h in history],
                        "prior_blocks": [h.get("prior_blocks") for h in history],
                        "exact_blocks": [h.get("exact_blocks") for h in history],
                        "n_probes": [h.get("n_probes") for h in history],
                        "assign_s": [round(h["assign_s"], 3) for h in history]}
            else:
                threads = int(name.removeprefix("faiss_").removesuffix("t"))
                if faiss_rows and faiss_rows < len(x):
                    # Projected: faiss on a row subsample, per-iteration seconds scaled by N / rows
                    # (its iteration is an exact search, linear in N, plus a centroid update).
                    sub = x[np.random.default_rng(seed).choice(len(x), faiss_rows, replace=False)]
                    wall, cents, seconds = faiss_fit(sub, k, iters, threads, seed)
                    seconds = [v * len(x) / faiss_rows for v in seconds]
                else:
                    wall, cents, seconds = faiss_fit(x, k, iters, threads, seed)
                s = per_iteration(seconds)
                if name not in quality:
                    _, obj = exact_labels(x, cents)
                    quality[name] = {"agreement_final": 1.0, "objective": obj}
            best[name] = min(best.get(name, float("inf")), s)
            log(f"  round {rnd + 1} {name}: {s:.3f} s/iter ({wall:.1f} s for the {iters}-iteration fit)")
    faiss_best = min(v for n, v in best.items() if n.startswith("faiss_"))
    faiss_obj = min(q["objective"] for n, q in quality.items() if n.startswith("faiss_"))
    out: dict[str, Any] = {"s_per_iter": {k_: round(v, 4) for k_, v in best.items()}, "faiss_best_s": round(faiss_best, 4)}
    for name in [f"engine_{a}" for a in ASSIGNMENTS] + ["barrier_auto"]:
        if name not in quality:
            continue
        a = name.removeprefix("engine_")
        q = quality[name]
        out[a] = {"ratio_to_faiss": round(best[name] / max(faiss_best, 1e-9), 3),
                  "agreement_final": round(q["agreement_final"], 5),
                  "objective_ratio": round(q["objective"] / max(faiss_obj, 1e-12), 4),
                  "agreement_during": q["agreement_during"], "prior_blocks": q["prior_blocks"],
                  "exact_blocks": q["exact_blocks"],
                  "n_probes": q["n_probes"], "assign_s": q["assign_s"]}
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), help="comma-separated N/K:K:D")
    p.add_argument("--mixtures", default=",".join(MIXTURES), help="separated, overlapping")
    p.add_argument("--iters", type=int, default=6)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--init", default="auto", help="the engine's init (auto, kmeans++, two_level, random)")
    p.add_argument("--max-gflop", type=float, default=400.0,
                   help="skip shapes whose exact iteration (2 N K D flop) is larger")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="a subset of " + ",".join(CONTENDERS))
    p.add_argument("--faiss-rows", type=int, default=0,
                   help="time faiss on this many random rows and scale to N (for shapes too big to run whole)")
    p.add_argument("--index-min-clusters", type=int, default=None,
                   help="the engine's clustering.index_min_clusters (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.index_min_clusters is not None:
        INDEX_MIN_CLUSTERS["index_min_clusters"] = args.index_min_clusters
    rows, skipped = [], []
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    for spec in [s for s in args.shapes.split(",") if s]:
        ratio, k, dim = (int(v) for v in spec.split(":"))
        n = ratio * k
        gflop = 2.0 * n * k * dim / 1e9
        if gflop > args.max_gflop:
            skipped.append({"shape": spec, "gflop_per_exact_iteration": round(gflop, 1)})
            log(f"skip {spec}: {gflop:.0f} GFLOP per exact iteration > --max-gflop {args.max_gflop:.0f}")
            continue
        for mixture in [m for m in args.mixtures.split(",") if m]:
            log(f"shape N/K={ratio} K={k} D={dim} N={n} · {mixture}")
            x = make_data(n, dim, k, MIXTURES[mixture], args.seed)
            res = run_shape(x, k, args.iters, args.rounds, args.init, args.seed,
                            tuple(c for c in args.contenders.split(",") if c), args.faiss_rows)
            rows.append({"shape": spec, "n_over_k": ratio, "k": k, "dim": dim, "n": n, "mixture": mixture, **res})
            log("  -> " + ", ".join(f"{a}: {res[a]['ratio_to_faiss']:.2f}x faiss, agreement {res[a]['agreement_final']:.4f}"
                                     for a in (*ASSIGNMENTS, "barrier_auto") if a in res) + f" (faiss {res['faiss_best_s']:.3f} s/iter)")
            del x
    print("\nN/K      K     D  mixture      faiss s/it   auto        exact       index       barrier     "
          "(ratio to faiss; final agreement)")
    for r in rows:
        cells = "  ".join(f"{r[a]['ratio_to_faiss']:5.2f}x {r[a]['agreement_final']:.3f}" if a in r else " " * 12
                          for a in (*ASSIGNMENTS, "barrier_auto"))
        print(f"{r['n_over_k']:5d} {r['k']:6d} {r['dim']:4d}  {r['mixture']:<12} {r['faiss_best_s']:9.3f}   {cells}")
    out = {"started": started, "args": vars(args), "cpu_count": os.cpu_count(),
           "loadavg_end": os.getloadavg(), "rows": rows, "skipped": skipped}
    path = write_results("shapes", out, args.tag)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
