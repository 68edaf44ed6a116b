#!/usr/bin/env python
"""k-means initialisation benchmark: two-level init vs k-means++ vs faiss's random init.

A benchmark, not a test: it measures and prints, it asserts nothing. Data: the
long-tailed Gaussian mixture of :mod:`curation_spark.synth` (as in bench/kmeans_bench.py),
generated in memory. All Lloyd iterations are faiss's (``faiss.Kmeans``, with
``init_centroids`` for our inits), so only the init differs between arms; the objective
after ``i`` iterations is faiss's ``obj[i]`` (the sum of squared distances of the
assignment made with the centroids after ``i`` updates), hence ``niter = max(iters) + 1``.

(b) small K, run first: K in ``--ks`` on ``--n-small`` points. Per K and seed: greedy
    k-means++ (``kernels.kmeans_plus_plus`` on the default init sample, as
    ``lloyd.init_from_sample`` does), two-level init (``allocation="gain"`` and
    ``"size"``) on the same sample, and faiss's random init; init seconds and the
    objective after 0, 1, 3, 5 iterations.
(a) large K: ``--k-large`` on ``--n-large`` points: two-level init seconds (both
    allocations) on the default init sample, then objective after 1, 3, 5 iterations from
    it (gain allocation) vs from faiss's random init. k-means++ is not run here (> 13 min).

faiss and BLAS run on ``--threads`` threads (default 1: on the shared 2-core machine one
thread was 2x faster in wall time and 3x cheaper in CPU time than two). Results go to
``bench/results/init_<timestamp>.json``.

    python bench/init_bench.py                       # (b) then (a), N=400k, K=20k
    python bench/init_bench.py --skip-large          # (b) only (~1 min)
    python bench/init_bench.py --ks 40,200,1000,2048 --large-init-only
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--components", type=int, default=1000, help="mixture components")
    ap.add_argument("--alpha", type=float, default=1.0, help="power-law exponent of the mixture weights")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--n-small", type=int, default=100_000)
    ap.add_argument("--ks", type=lambda s: [int(v) for v in s.split(",")], default=[40, 200, 1000])
    ap.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1],
                    help="init seeds of part (b)")
    ap.add_argument("--n-large", type=int, default=400_000)
    ap.add_argument("--k-large", type=int, default=20_000)
    ap.add_argument("--iters", type=lambda s: [int(v) for v in s.split(",")], default=[1, 3, 5])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--large-init-only", action="store_true",
                    help="(a): time the two-level init only, no Lloyd iterations")
    ap.add_argument("--results-dir", type=Path, default=HERE / "results")
    return ap.parse_args(argv)


ARGS = parse_args()
# Before numpy/faiss load their BLAS: one setting for every library.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, str(HERE.parent))
from curation_spark.method import kernels, seeding
from curation_spark.method import lloyd
from curation_spark import synth  # noqa: E402


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def mixture(n: int) -> np.ndarray:
    table = synth.make_gaussian_mixture(n, ARGS.dim, ARGS.components, seed=ARGS.data_seed, alpha=ARGS.alpha)
    values = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values.reshape(n, ARGS.dim), dtype=np.float32)


def init_sample(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The default init sample size of the engine; a seeded subset kept in row (id) order."""
    size = max(lloyd.default_init_sample_size(k, len(x), x.shape[1]), k)
    if size >= len(x):
        return x
    rows = np.sort(np.random.default_rng([seed, 0xB5]).choice(len(x), size=size, replace=False))
    return x[rows]


def faiss_lloyd(x: np.ndarray, k: int, seed: int, init: np.ndarray | None) -> dict:
    """faiss Lloyd from ``init`` (None: faiss's random init); objective after 0..max iters."""
    import faiss

    niter = max(ARGS.iters) + 1
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, max_points_per_centroid=10 ** 9,
                      min_points_per_centroid=1, verbose=False)
    t0 = time.perf_counter()
    km.train(x, init_centroids=init)
    obj = [float(v) for v in km.obj]
    return {"lloyd_seconds": round(time.perf_counter() - t0, 2),
            "objective": {str(i): obj[i] for i in [0, *ARGS.iters] if i < len(obj)},
            "empty_splits": int(sum(s["nsplit"] for s in km.iteration_stats))}


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, round(time.perf_counter() - t0, 3)


def part_small() -> list[dict]:
    x = mixture(ARGS.n_small)
    rows = []
    for k in ARGS.ks:
        for seed in ARGS.seeds:
            sample = init_sample(x, k, seed)
            arms = {}
            pp, t_pp = timed(kernels.kmeans_plus_plus, sample, k, np.random.default_rng([seed, 0x5EED]))
            arms["kmeans++"] = {"init_seconds": t_pp, **faiss_lloyd(x, k, seed, pp)}
            for alloc in ("gain", "size"):
                c, t = timed(seeding.two_level_init, sample, k, seed, allocation=alloc)
                arms[f"two_level_{alloc}"] = {"init_seconds": t, **faiss_lloyd(x, k, seed, c)}
            arms["faiss_random"] = {"init_seconds": 0.0, **faiss_lloyd(x, k, seed, None)}
            row = {"n": ARGS.n_small, "k": k, "seed": seed, "sample_rows": len(sample), "arms": arms}
            rows.append(row)
            last = max(ARGS.iters)
            ref = arms["kmeans++"]["objective"][str(last)]
            log(f"(b) K={k} seed={seed} sample={len(sample)}: " + "; ".join(
                f"{name} init {a['init_seconds']:.2f}s obj@{last} {a['objective'][str(last)]:.6g} "
                f"({a['objective'][str(last)] / ref - 1:+.2%})" for name, a in arms.items()))
    return rows


def part_large() -> dict:
    k = ARGS.k_large
    x = mixture(ARGS.n_large)
    seed = 0
    sample = init_sample(x, k, seed)
    log(f"(a) N={len(x)} D={x.shape[1]} K={k}: init sample {len(sample)} rows")
    out: dict = {"n": len(x), "k": k, "seed": seed, "sample_rows": len(sample)}
    c_size, t_size = timed(seeding.two_level_init, sample, k, seed, allocation="size")
    out["two_level_size_init_seconds"] = t_size
    log(f"(a) two-level init (size allocation): {t_size:.1f}s")
    cpu0 = cpu_seconds()
    c, t = timed(seeding.two_level_init, sample, k, seed)
    out["two_level_gain_init_seconds"] = t
    out["two_level_gain_init_cpu_seconds"] = round(cpu_seconds() - cpu0, 1)
    log(f"(a) two-level init (gain allocation): {t:.1f}s")
    del c_size
    if ARGS.large_init_only:
        return out
    out["two_level_gain"] = faiss_lloyd(x, k, seed, c)
    log(f"(a) faiss Lloyd from two-level: {out['two_level_gain']}")
    out["faiss_random"] = faiss_lloyd(x, k, seed, None)
    log(f"(a) faiss Lloyd from random: {out['faiss_random']}")
    return out


def main() -> None:
    import faiss

    faiss.omp_set_num_threads(ARGS.threads)
    started = datetime.now(timezone.utc)
    result = {
        "started": started.isoformat(timespec="seconds"),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(ARGS).items()},
        "machine": {"nproc": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(),
                    "loadavg_start": [round(v, 2) for v in os.getloadavg()],
                    "platform": platform.platform(), "numpy": np.__version__, "faiss": faiss.__version__},
        "seeding": {"COARSE_POINTS_PER_CLUSTER": seeding.COARSE_POINTS_PER_CLUSTER,
                    "FINE_MAX_DIRECT": seeding.FINE_MAX_DIRECT, "FINE_OVERSHOOT": seeding.FINE_OVERSHOOT,
                    "coarse_iters": seeding.COARSE_ITERS, "fine_iters": seeding.FINE_ITERS},
    }
    log(f"threads={ARGS.threads} loadavg={result['machine']['loadavg_start']}")
    if not ARGS.skip_small:
        result["small_k"] = part_small()
    if not ARGS.skip_large:
        result["large_k"] = part_large()
    result["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    result["cpu_seconds"] = round(cpu_seconds(), 1)
    result["wall_seconds"] = round((datetime.now(timezone.utc) - started).total_seconds(), 1)
    ARGS.results_dir.mkdir(parents=True, exist_ok=True)
    path = ARGS.results_dir / f"init_{started:%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(result, indent=1))
    log(f"cpu {result['cpu_seconds']}s wall {result['wall_seconds']}s -> {path}")


if __name__ == "__main__":
    main()
