"""Near-duplicate removal at N = 1,000,000, D = 128 against injected ground truth.

    .venv/bin/python bench/dedup_bench.py [--n 1000000] [--dim 128] [--tag TAG]

Generates a pool of unit-norm points (a Gaussian mixture whose members are far apart:
cos ~ 0.6 inside a component) and injects near-duplicates of known truth: originals with
1-3 copies each (30 % exact copies, 70 % noisy copies at similarity uniform in 0.955-1.0,
x' = s x + sqrt(1 - s^2) u with u a unit vector orthogonal to x, so cos(x, x') = s
exactly), plus large groups of 1000, 1500 and 2000 copies. Runs ``pipeline.dedup`` end to
end on a local[2] session and checks:

* **duplicates left**: kept points that still have a kept point at similarity >= the
  threshold: exact over the injected groups (every pair inside each group in float64), and
  by brute force on a 50,000-point random subset for everything else;
* **wrongly removed**: removed points with no other point within threshold - 0.02 (exact:
  every removed point's similarity to its kept twin, recomputed in float64);
* seconds end to end and per phase, pairs compared, peak worker RSS (psutil).

Writes ``bench/results/dedup_<stamp>[_<tag>].json`` and ``dedup_latest.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from kmeans_bench import MemorySampler  # noqa: E402

from curation_spark import pipeline  # noqa: E402
from curation_spark.config import load_config  # noqa: E402
from curation_spark.method.dedup import unit_rows  # noqa: E402
from results_file import write_results  # noqa: E402

THRESHOLD = 0.95
BIG_GROUPS = (1000, 1500, 2000)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def noisy_copy(rng: np.random.Generator, x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Rows at cosine similarity exactly ``s`` from the unit rows ``x``."""
    u = rng.normal(size=x.shape)
    u -= np.sum(u * x, axis=1, keepdims=True) * x
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return s[:, None] * x + np.sqrt(1 - s[:, None] ** 2) * u


def make_pool(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows (float64) and their injected group (-1: not injected); group members are
    an original and its copies."""
    rng = np.random.default_rng(seed)
    n_orig = n // 20
    copies = rng.integers(1, 4, n_orig)
    n_small = int(copies.sum())
    n_big = sum(BIG_GROUPS)
    n_base = n - n_small - n_big - len(BIG_GROUPS)
    centres = rng.normal(size=(200, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    base = centres[rng.integers(0, 200, n_base)] + rng.normal(size=(n_base, dim)) * (0.8 / np.sqrt(dim))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    group = np.full(n_base, -1, dtype=np.int64)
    orig = rng.choice(n_base, n_orig, replace=False)
    group[orig] = np.arange(n_orig)
    src = np.repeat(orig, copies)
    exact = rng.random(len(src)) < 0.3
    s = np.where(exact, 1.0, rng.uniform(0.955, 1.0, len(src)))
    small = noisy_copy(rng, base[src], s)
    parts, groups = [base, small], [group, group[src]]
    g = n_orig
    for size in BIG_GROUPS:
        o = rng.normal(size=(1, dim))
        o /= np.linalg.norm(o)
        sb = np.where(rng.random(size) < 0.5, 1.0, rng.uniform(0.97, 1.0, size))
        parts += [o, noisy_copy(rng, np.repeat(o, size, axis=0), sb)]
        groups += [np.array([g]), np.full(size, g)]
        g += 1
    x = np.concatenate(parts)
    grp = np.concatenate(groups)
    perm = rng.permutation(len(x))
    return x[perm], grp[perm]


def write_pool(spark, x: np.ndarray, path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(path, exist_ok=True)
    chunk = 100_000
    for part, lo in enumerate(range(0, len(x), chunk)):
        rows = x[lo:lo + chunk].astype(np.float32)
        emb = pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), rows.shape[1])
        table = pa.table({"id": pa.array(np.arange(lo, lo + len(rows)), pa.int64()),
                          "embedding": emb.cast(pa.list_(pa.float32()))})
        pq.write_table(table, f"{path}/part-{part:05d}.parquet")


def injected_checks(x: np.ndarray, grp: np.ndarray, kept: np.ndarray) -> dict[str, Any]:
    """Exact over every injected group: duplicate points, those left with a kept twin."""
    order = np.argsort(grp, kind="stable")
    g_sorted = grp[order]
    starts = np.searchsorted(g_sorted, np.arange(grp.max() + 2))
    dup_points = left = kept_pairs = 0
    for g in range(grp.max() + 1):
        members = order[starts[g]:starts[g + 1]]
        if len(members) < 2:
            continue
        sims = x[members] @ x[members].T
        np.fill_diagonal(sims, -1)
        has_twin = (sims >= THRESHOLD).any(axis=1)
        dup_points += int(has_twin.sum())
        k = kept[members]
        ks = sims[np.ix_(k, k)]
        left_here = (ks >= THRESHOLD).any(axis=1)
        left += int(left_here.sum())
        kept_pairs += int((ks >= THRESHOLD).sum() // 2)
    return {"duplicate_points": dup_points, "kept_with_a_kept_twin": left, "kept_pairs_within_threshold": kept_pairs,
            "share_left": round(left / max(1, dup_points), 6)}


def wrongly_removed(twin_sims: np.ndarray) -> dict[str, Any]:
    """Removed points with no other point within threshold - 0.02. Exact without a search:
    every removed point's similarity to its kept twin is recomputed in float64, and a point
    whose twin is within threshold - 0.02 has such a point; only those below would need a
    search over all N, and the check reports how many there are."""
    bad = int((twin_sims < THRESHOLD - 0.02).sum())
    return {"removed": int(len(twin_sims)), "no_twin_within_threshold_minus_0.02": bad,
            "twin_similarity_below_threshold": int((twin_sims < THRESHOLD).sum()),
            "min_twin_similarity": round(float(twin_sims.min()), 6) if len(twin_sims) else None}


def subset_check(x: np.ndarray, kept: np.ndarray, rng: np.random.Generator, size: int = 50_000) -> dict[str, Any]:
    """Brute force on a random subset: kept pairs still within the threshold."""
    sub = rng.choice(len(x), min(size, len(x)), replace=False)
    xs = x[sub].astype(np.float32)
    left_pairs = all_pairs = 0
    for lo in range(0, len(xs), 4096):
        sims = xs[lo:lo + 4096] @ xs.T
        rows = np.arange(lo, min(lo + 4096, len(xs)))
        sims[np.arange(len(rows)), rows] = -1
        hits = np.argwhere(sims >= THRESHOLD)
        hits = hits[hits[:, 0] + lo < hits[:, 1]]
        all_pairs += len(hits)
        both = kept[sub[hits[:, 0] + lo]] & kept[sub[hits[:, 1]]]
        left_pairs += int(both.sum())
    return {"subset": len(sub), "pairs_within_threshold": all_pairs, "kept_pairs_within_threshold": left_pairs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probes", type=int, default=2)
    ap.add_argument("--tag", default="")
    ap.add_argument("--work", default=str(HERE / "data" / "dedup"))
    args = ap.parse_args(argv)

    from curation_spark.io.session import get_spark

    t0 = time.perf_counter()
    x, grp = make_pool(args.n, args.dim, args.seed)
    log(f"pool: {len(x)} x {args.dim}, {int((grp >= 0).sum())} points in {grp.max() + 1} injected groups "
        f"({time.perf_counter() - t0:.1f} s)")
    spark = get_spark()
    data = f"{args.work}/pool_{args.n}_{args.dim}_{args.seed}"
    if not Path(data).exists():
        write_pool(spark, x, data)
    out = f"{args.work}/run_{args.tag or 'default'}"
    config = load_config([], [f"input.path={data}", f"output.path={out}", f"dedup.threshold={THRESHOLD}",
                              f"dedup.probes={args.probes}", "dedup.keep=first"])
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        summary = pipeline.dedup(config, spark, overwrite=True)
        seconds = time.perf_counter() - t0
    log(f"dedup: {seconds:.1f} s end to end, removed {summary.removed} of {summary.points_in}")
    dups = spark.read.format("delta").load(f"{out}/dedup/duplicates").select("id", "kept_id", "similarity").toArrow()
    removed_idx = dups.column("id").to_numpy()
    kept = np.ones(len(x), dtype=bool)
    kept[removed_idx] = False
    xs = unit_rows(x).astype(np.float64)
    twin = dups.column("kept_id").to_numpy()
    twin_sims = np.einsum("ij,ij->i", xs[removed_idx], xs[twin]) if len(twin) else np.zeros(0)
    result = {
        "n": len(x), "dim": args.dim, "threshold": THRESHOLD, "probes": args.probes, "seconds_end_to_end": round(seconds, 1),
        "summary": dataclasses.asdict(summary),
        "injected": injected_checks(xs, grp, kept),
        "wrongly_removed": wrongly_removed(twin_sims),
        "twins_kept": bool(kept[twin].all()) if len(twin) else True,
        "twin_similarity_min": round(float(twin_sims.min()), 6) if len(twin) else None,
        "subset_brute_force": subset_check(xs, kept, np.random.default_rng(args.seed + 1)),
        "points_per_core_second": round(len(x) / (seconds * 2), 1),
        "memory": mem.report(),
        "machine": {"cores": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    result["memory"].pop("timeline", None)
    written = write_results("dedup", result, args.tag)
    print(json.dumps({k: v for k, v in result.items() if k != "memory"}, indent=2, default=str))
    print("peak RSS MiB:", result["memory"]["peak_rss_mib"])
    log(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
