"""Calibrates the assignment cost model of ``method/centroid_index.py`` (``COST_*``).

The engine chooses between exact search and the index's probe / prior paths from counted
work (rows x candidates x D, groups), not from timings, so the same data and config give
the same clusters on every run. The per-unit seconds come from here, one thread:

* ``flat``: faiss exact flat search (what the exact path costs per row x centroid x dim);
* ``grouped``: ``candidate_search.search_groups`` (one GEMM per group of rows sharing their
  candidates, then the scores' ranking), fitted as
  ``rows x cand x (D x mac + score) + groups x group`` by least squares over a grid.

Usage: ``.venv/bin/python bench/assign_cost_bench.py``; prints the fitted constants and
writes ``bench/results/assign_cost_<stamp>.json``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from curation_spark.method import candidate_search as ci  # noqa: E402 -- after the path set-up above
from results_file import write_results  # noqa: E402


def best_of(fn, rounds: int = 3) -> float:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main() -> int:
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    flat = []
    for dim in (64, 128, 384):
        for k in (1000, 5000, 20000):
            n = max(2000, int(2e9 // (k * dim)))
            x = rng.normal(size=(n, dim)).astype(np.float32)
            c = rng.normal(size=(k, dim)).astype(np.float32)
            s = best_of(lambda x=x, c=c: ci.nearest(x, c))
            flat.append({"dim": dim, "k": k, "n": n, "seconds": s, "per_mac": s / (n * k * dim)})
            print(f"flat  D={dim:4d} K={k:6d} n={n:7d}: {s:.3f} s, {s / (n * k * dim) * 1e12:.2f} ps per MAC", flush=True)
    grouped = []
    for dim in (64, 128, 384):
        for rows_per_group in (5, 20, 100, 1000):
            for cand in (64, 512, 4096):
                n_groups = max(4, int(1e9 // (rows_per_group * cand * dim)))
                n = n_groups * rows_per_group
                k = max(cand * 2, 8192)
                x = rng.normal(size=(n, dim)).astype(np.float32)
                c = rng.normal(size=(k, dim)).astype(np.float32)
                c_sq = ci.squared_norms(c)
                start = np.repeat(np.arange(n_groups), rows_per_group)
                cands = [np.sort(rng.choice(k, cand, replace=False)) for _ in range(n_groups)]
                s = best_of(lambda x=x, c=c, c_sq=c_sq, start=start, cands=cands:
                            ci.search_groups(x, c, c_sq, start, cands.__getitem__, "l2"))
                grouped.append({"dim": dim, "rows_per_group": rows_per_group, "cand": cand, "groups": n_groups,
                                "n": n, "seconds": s})
                print(f"group D={dim:4d} rows/group={rows_per_group:5d} cand={cand:5d} groups={n_groups:6d}: {s:.3f} s",
                      flush=True)
    # least squares: seconds = pairs*D*mac + pairs*score + groups*group
    a = np.array([[g["n"] * g["cand"] * g["dim"], g["n"] * g["cand"], g["groups"]] for g in grouped], dtype=np.float64)
    b = np.array([g["seconds"] for g in grouped])
    weights = 1.0 / b  # relative error
    coef, *_ = np.linalg.lstsq(a * weights[:, None], b * weights, rcond=None)
    flat_per_mac = float(np.median([f["per_mac"] for f in flat]))
    pred = a @ coef
    print(f"\nflat search: {flat_per_mac * 1e12:.2f} ps per MAC (median)")
    print(f"grouped: {coef[0] * 1e12:.2f} ps per MAC, {coef[1] * 1e9:.3f} ns per score, {coef[2] * 1e6:.1f} us per group;"
          f" fit error median {np.median(np.abs(pred / b - 1)):.2f}, max {np.max(np.abs(pred / b - 1)):.2f}")
    path = write_results("assign_cost", {"flat": flat, "grouped": grouped, "flat_per_mac": flat_per_mac,
                                         "grouped_coef": coef.tolist()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
