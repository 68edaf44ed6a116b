"""Summarise a large-K benchmark run (bench/large_k_bench.py) and project the reference's
web-scale levels onto a 1,000-core Spark cluster from the measured per-core throughput.

Usage: ``.venv/bin/python bench/large_k_report.py [bench/results/large_k_latest.json]``
Prints a Markdown table and the projection; writes ``<input>_summary.json`` beside it.

The projection is arithmetic on measured rates, with its assumptions in the output:
exact assignment runs at the measured per-core GEMM rate of the exact runs; the index
path's per-point cost is the measured seconds per point of the prior path (the path of
the steady iterations) scaled linearly in D; the neighbour graph and coarse lists are
split over the tasks; the exchange volume is the reduce-scatter + all-gather formula of
:mod:`curation_spark.method.reduce`, at an assumed 80 MB/s of network per core (10 Gbit/s
shared by 16 cores).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NET_BYTES_PER_CORE_S = 80e6
CORES = 1000
TARGET_AGREEMENT = 0.99


def best(runs: list[dict[str, Any]], key: str) -> float:
    return min(r[key] for r in runs)


def steady_assign_per_point(run: dict[str, Any], n_task: int, path: str) -> float | None:
    """Best seconds per point of the iterations that took ``path`` (prior: prior_blocks == all)."""
    times = []
    for i, a in enumerate(run["assign_s"]):
        prior = run["prior_blocks"][i] or 0
        if (path == "prior") == (prior == 2):
            times.append(a)
    return min(times) / n_task if times else None


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else HERE / "results" / "large_k_latest.json"
    data = json.loads(path.read_text())
    n, dim, n_tasks = data["args"]["n"], data["args"]["dim"], 2
    n_task = n // n_tasks
    rows, summary = [], {"source": path.name, "n": n, "dim": dim, "per_k": {}}
    exact_rate = None  # flops per second per core in exact assignment
    prior_per_point = None
    for k_str, entry in data["per_k"].items():
        k = int(k_str)
        eng = entry["engine"]
        s: dict[str, Any] = {}
        for mode in ("exact", "index"):
            if mode in eng:
                runs = eng[mode]
                r = min(runs, key=lambda r: r["s_per_iter_steady_best"])
                s[mode] = {"s_per_iter_best": r["s_per_iter_steady_best"], "s_per_iter": r["s_per_iter"],
                           "objective_5": r["objective_final"], "init_s": r["init_s"],
                           "init_share": r["init_share_of_wall"], "agreement": r["agreement"],
                           "paths": ["prior" if (p or 0) == n_tasks else "probe" for p in r["prior_blocks"]],
                           "peak_rss_mib": r["memory"].get("peak_rss_mib"),
                           "bytes_sent_per_task_per_iter": r["bytes_sent_per_task_per_iter"]}
                if mode == "exact":
                    a = min(min(r["assign_s"][1:] or r["assign_s"]) for r in runs)
                    rate = 2.0 * n_task * k * dim / a
                    exact_rate = max(exact_rate or 0.0, rate)
                    s[mode]["assign_gflops_per_core"] = round(rate / 1e9, 1)
                else:
                    pp = steady_assign_per_point(r, n_task, "prior")
                    if pp is not None and k == max(int(v) for v in data["per_k"]):
                        prior_per_point = pp
                    s[mode]["prior_s_per_point"] = pp
        ex = entry.get("exact_search_sample")
        if "exact" not in s and ex:
            s["exact_extrapolated"] = {"s_per_iter": ex["scaled_to_n_s"], "how": ex}
        faiss_runs = entry["faiss"]
        fb = min(faiss_runs, key=lambda f: f["s_per_iter"])
        s["faiss_best"] = {"threads": fb["threads"], "s_per_iter": fb["s_per_iter"], "objective": fb.get("obj_final"),
                           "iterations": len(fb.get("obj", []))}
        exact_s = s.get("exact", {}).get("s_per_iter_best") or s.get("exact_extrapolated", {}).get("s_per_iter")
        if "index" in s and exact_s:
            s["index_speedup_vs_exact"] = round(exact_s / s["index"]["s_per_iter_best"], 1)
        summary["per_k"][k_str] = s
        rows.append((k, s, exact_s))

    print(f"N = {n:,}, D = {dim}, local[2] (2 barrier tasks, 1 core each); seconds per Lloyd iteration (best steady)\n")
    print("| K | exact | index | index agreement per iteration | paths | faiss.Kmeans best | objective after 5 (exact / index) | init s (share) |")
    print("|---|---:|---:|---|---|---:|---|---|")
    for k, s, exact_s in rows:
        ix = s.get("index", {})
        ex = s.get("exact", {})
        exact_txt = f"{ex['s_per_iter_best']:.2f}" if ex else (f"~{exact_s:.0f} (extrapolated)" if exact_s else "-")
        agr = ", ".join(f"{a:.4f}" for a in ix.get("agreement", []) if a is not None)
        fb = s["faiss_best"]
        print(f"| {k:,} | {exact_txt} | {ix.get('s_per_iter_best', float('nan')):.2f} | {agr} | "
              f"{'/'.join(ix.get('paths', []))} | {fb['s_per_iter']:.2f} ({fb['threads']} thr) | "
              f"{ex.get('objective_5', float('nan')):.6g} / {ix.get('objective_5', float('nan')):.6g} | "
              f"{ix.get('init_s', ex.get('init_s'))} ({ix.get('init_share', ex.get('init_share'))}) |")

    # ----------------------------------------------------------------- projection
    proj: dict[str, Any] = {"assumptions": {
        "cores": CORES, "exact_flops_per_core": exact_rate, "prior_s_per_point_at_d": [prior_per_point, dim],
        "d_scaling": "index per-point cost scaled linearly in D", "net_bytes_per_core_s": NET_BYTES_PER_CORE_S,
        "n_probes": 64, "n_neighbours": 64}}
    if exact_rate and prior_per_point:
        for name, n_pts, k, d in (("reference level 1 (743M x 1024 -> 100k)", 743e6, 1e5, 1024),
                                  ("reference level 2 (10M x 1024 -> 500k)", 10e6, 5e5, 1024)):
            per_core = n_pts / CORES
            exact_s = 2 * per_core * k * d / exact_rate
            m = math.sqrt(64 * k)
            graph_s = 2 * (k / CORES) * (m + 64 * k / m) * d / exact_rate
            coarse_s = 2 * (k / CORES) * m * d / exact_rate  # split over the tasks (SharedWork)
            check_s = 2 * 512 * k * d / exact_rate  # the per-iteration exact check of 512 rows
            points_s = per_core * prior_per_point * d / dim
            # reduce-scatter: sent ~ received ~ touched clusters x (8D + 12); all-gather: K/T rows
            # out to every peer and the other K rows in, ~ K x D x 4 each way.
            reduce_scatter = min(per_core, k) * (8 * d + 12)
            all_gather = k * d * 4
            sent = received = reduce_scatter + all_gather
            net_s = (sent + received) / NET_BYTES_PER_CORE_S
            index_s = points_s + graph_s + coarse_s + check_s + net_s
            proj[name] = {"exact_s_per_iter": round(exact_s), "index_s_per_iter": round(index_s, 1),
                          "index_parts_s": {"points": round(points_s, 1), "graph": round(graph_s, 1),
                                            "coarse_lists": round(coarse_s, 1), "sample_check": round(check_s, 1),
                                            "network": round(net_s, 1)},
                          "exact_50_iters_h": round(50 * exact_s / 3600, 1),
                          "index_50_iters_h": round(50 * index_s / 3600, 2)}
            print(f"\n{name} on {CORES} cores: exact {exact_s:,.0f} s/iteration ({50 * exact_s / 3600:,.0f} h for 50), "
                  f"index {index_s:,.1f} s/iteration ({50 * index_s / 3600:.2f} h for 50; points {points_s:.1f}, "
                  f"graph {graph_s:.1f}, coarse lists {coarse_s:.1f}, sample check {check_s:.1f}, network {net_s:.1f})")
    summary["projection"] = proj
    out = path.with_name(path.stem + "_summary.json")
    out.write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
