#!/usr/bin/env python
"""k-means engine benchmark: curation-spark vs faiss, Spark MLlib and the GEMM bound.

A benchmark, not a test: it measures and prints, it asserts nothing. On one generated
table (long-tailed Gaussian mixture, written once as Parquet under ``bench/data/`` and
reused) it measures, in one process and in this order:

1. the float32 GEMM at the Lloyd shape (``block x D`` times ``D x K``) on 1 thread and on
   all cores, and the implied lower bound on seconds per Lloyd iteration (2*N*K*D flops);
2. faiss ``IndexFlatL2.search(k=1)`` throughput at the same shape (1 thread, all cores);
   (1 and 2 are measured at the start and again at the end of the run; best rate kept)
3. single-process ``faiss.Kmeans`` on the same data loaded into numpy (1 and all threads),
   then ``curation_spark.method.kernels.assign`` + ``partial_sums`` alone on one task's block;
4. ``curation_spark.engine.kmeans.fit`` with ``engine="barrier"`` (all iterations) and
   ``engine="passes"`` (``--passes-iters``, default 3: its steady per-iteration cost is the
   figure) on the Parquet table read by Spark (``local[*]``, after an untimed warm-up
   job), with RSS of the driver, the JVM and the Python workers sampled every 0.2 s and
   the Spark stages of each fit read from the driver's status store;
5. Spark MLlib ``KMeans`` on a subset (default 100k rows), after an untimed warm-up fit on
   5k rows; seconds per iteration from the difference of two ``maxIter`` runs (default 1
   and 5, fastest of 2 repeats each), extrapolated linearly to N;
6. ratios against the targets (as fast as the best faiss, >= 10x MLlib, within 2x of the
   GEMM bound on all cores).

A short GEMM probe, the load average and the CPU used by processes outside this run are
recorded before every phase, because the machine may be shared: a phase that ran while
the machine was busy shows up there (``--wait-idle-budget`` lets the run wait for quiet).

Results go to ``bench/results/kmeans_<timestamp>.json`` and ``kmeans_latest.json``.

Examples::

    python bench/kmeans_bench.py --n 50000 --k 100            # smoke run (~2-3 min)
    python bench/kmeans_bench.py                              # N=1M, D=128, K=1000, 10 its
    python bench/kmeans_bench.py --skip-mllib --skip-passes
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA_DIR = HERE / "data"
DEFAULT_RESULTS_DIR = HERE / "results"

TARGET_VS_FAISS = 1.0   # curation-spark s/iter <= best faiss.Kmeans s/iter
TARGET_VS_MLLIB = 10.0  # curation-spark >= 10x faster per iteration than MLlib
TARGET_VS_GEMM = 2.0    # curation-spark s/iter <= 2x the all-core GEMM bound


def now() -> float:
    return time.perf_counter()


def log(msg: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {msg}", flush=True)


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "env": {k: v for k, v in sorted(os.environ.items())
                if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "GOTO", "BLIS_")) or k in ("JAVA_HOME", "SPARK_HOME")},
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            text = fh.read()
        models = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
        flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
        info["cpu_model"] = models[0] if models else None
        info["cpu_simd"] = sorted(f for f in flags if f.startswith(("avx", "fma", "sse4")))
    except OSError:
        info["cpu_model"] = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            total_kb = int(fh.readline().split()[1])
        info["mem_total_gib"] = round(total_kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    for mod in ("faiss", "pyspark", "pyarrow", "psutil", "threadpoolctl"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "?")
        except ImportError:
            info[mod] = None
    try:
        import faiss

        info["faiss_compile_options"] = faiss.get_compile_options().strip()
    except Exception:
        pass
    try:
        info["numpy_simd"] = _numpy_simd()
    except Exception:
        pass
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        info["java"] = (out.stderr or out.stdout).splitlines()[0]
    except Exception:
        info["java"] = None
    return info


def _numpy_simd() -> dict[str, Any]:
    from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__  # type: ignore

    return {"baseline": list(__cpu_baseline__),
            "found": [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]}


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------- data


def table_dir(data_dir: Path, n: int, dim: int, comps: int, seed: int, files: int) -> Path:
    return data_dir / f"gmm_n{n}_d{dim}_c{comps}_s{seed}_f{files}"


def ensure_table(path: Path, n: int, dim: int, comps: int, seed: int, files: int, alpha: float) -> dict[str, Any]:
    """Write the mixture as ``files`` Parquet files with pyarrow (once; reused after)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation_spark.synth import iter_gaussian_mixture_batches

    meta_path = path / "_meta.json"
    wanted = {"n": n, "dim": dim, "n_components": comps, "seed": seed, "files": files, "alpha": alpha}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if all(meta.get(k) == v for k, v in wanted.items()) and all((path / f).exists() for f in meta["file_names"]):
            meta["reused"] = True
            return meta
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows_per_file = math.ceil(n / files)
    t0 = now()
    names = []
    for i, batch in enumerate(iter_gaussian_mixture_batches(n, dim, comps, seed=seed, alpha=alpha,
                                                            batch_size=rows_per_file)):
        name = f"part-{i:05d}.parquet"
        pq.write_table(pa.Table.from_batches([batch]), tmp / name)
        names.append(name)
    write_s = now() - t0
    meta = {**wanted, "file_names": names, "rows_per_file": rows_per_file, "write_s": round(write_s, 3),
            "bytes": sum((tmp / f).stat().st_size for f in names),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "generator": "curation_spark.synth.iter_gaussian_mixture_batches", "columns": ["id", "embedding", "label"]}
    (tmp / "_meta.json").write_text(json.dumps(meta, indent=1))
    tmp.rename(path)
    meta["reused"] = False
    return meta


def load_numpy(path: Path, dim: int) -> np.ndarray:
    """The embedding column as one C-contiguous float32 (n, dim) array, in id order."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["id", "embedding"])
    table = table.sort_by("id")
    parts = []
    for chunk in table.column("embedding").chunks:
        parts.append(chunk.flatten().to_numpy(zero_copy_only=False))
    x = np.concatenate(parts).astype(np.float32, copy=False).reshape(-1, dim)
    return np.ascontiguousarray(x)


# --------------------------------------------------------------------------- GEMM / faiss probes


def gemm_rates(dim: int, k: int, block: int, min_time: float, rounds: int, seed: int = 0,
               cpu_out: list[float] | None = None) -> list[float]:
    """GFLOP/s of ``(block x dim) @ (dim x k)`` float32 matmuls, one figure per round.

    ``cpu_out`` receives GFLOP per CPU-second of this process (all its threads) per round:
    less sensitive than wall time to other processes taking the cores."""
    rng = np.random.default_rng(seed)
    n_blocks = 8
    x = rng.standard_normal((block * n_blocks, dim), dtype=np.float32)
    c = rng.standard_normal((k, dim), dtype=np.float32)
    out = np.empty((block, k), dtype=np.float32)
    for i in range(2):
        np.matmul(x[i * block:(i + 1) * block], c.T, out=out)
    rates = []
    for _ in range(rounds):
        count = 0
        t0 = now()
        c0 = time.process_time()
        while True:
            for i in range(n_blocks):
                np.matmul(x[i * block:(i + 1) * block], c.T, out=out)
                count += 1
            dt = now() - t0
            if dt >= min_time:
                break
        cpu = time.process_time() - c0
        rates.append(2.0 * block * dim * k * count / dt / 1e9)
        if cpu_out is not None:
            cpu_out.append(2.0 * block * dim * k * count / max(cpu, 1e-9) / 1e9)
    return rates


def gemm_rates_threads(threads: int | None, dim: int, k: int, block: int, min_time: float, rounds: int,
                       cpu_out: list[float]) -> tuple[list[float], str]:
    """GEMM rates with BLAS limited to ``threads`` (None: as configured), and how."""
    if threads is None:
        return gemm_rates(dim, k, block, min_time, rounds, cpu_out=cpu_out), "in-process, BLAS threads as configured"
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=threads, user_api="blas"):
            return (gemm_rates(dim, k, block, min_time, rounds, cpu_out=cpu_out),
                    f"in-process, threadpoolctl limit={threads}")
    except ImportError:
        pass
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--gemm-probe", "--dim", str(dim), "--k", str(k),
           "--gemm-block", str(block), "--gemm-min-time", str(min_time), "--gemm-rounds", str(rounds)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    cpu_out.extend(got["cpu_rates"])
    return got["rates"], f"subprocess with OPENBLAS_NUM_THREADS=OMP_NUM_THREADS={threads}"


def faiss_search_rates(threads: int, dim: int, k: int, n_queries: int, rounds: int, x: np.ndarray | None) -> list[float]:
    """GFLOP/s (2*nq*K*D / t) of IndexFlatL2.search(k=1) with ``threads`` OpenMP threads."""
    import faiss

    rng = np.random.default_rng(1)
    if x is not None and len(x) >= n_queries + k:
        q = np.ascontiguousarray(x[:n_queries])
        c = np.ascontiguousarray(x[-k:])
    else:
        q = rng.standard_normal((n_queries, dim), dtype=np.float32)
        c = rng.standard_normal((k, dim), dtype=np.float32)
    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatL2(dim)
    index.add(c)
    index.search(q[:4096], 1)  # warm-up
    rates = []
    for _ in range(rounds):
        t0 = now()
        index.search(q, 1)
        rates.append(2.0 * n_queries * k * dim / (now() - t0) / 1e9)
    return rates


def foreign_cpu(window: float = 0.5) -> float | None:
    """Cores kept busy by processes outside this benchmark's process tree over ``window`` s."""
    try:
        import psutil
    except ImportError:
        return None
    me = psutil.Process()
    procs = [me] + me.children(recursive=True)

    def own() -> float:
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    o0 = own()
    psutil.cpu_percent(None)
    t0 = now()
    time.sleep(window)
    busy = psutil.cpu_percent(None)
    dt = now() - t0
    o1 = own()
    ncores = psutil.cpu_count() or 1
    return max(0.0, busy / 100.0 * ncores - (o1 - o0) / dt)


class IdleWaiter:
    """Waits (within a total budget) until other tenants leave the CPUs mostly idle."""

    def __init__(self, budget_s: float, threshold_cores: float) -> None:
        self.budget = budget_s
        self.threshold = threshold_cores
        self.waited: dict[str, float] = {}

    def wait(self, phase: str) -> None:
        if self.budget <= 0:
            return
        t0 = now()
        while self.budget > 0:
            busy = foreign_cpu(1.0)
            if busy is None or busy < self.threshold:
                break
            self.budget -= 1.0
        waited = now() - t0
        if waited > 1.5:
            self.waited[phase] = round(waited, 1)
            log(f"waited {waited:.0f} s for other processes to leave the CPUs before {phase}")


def noise_probe(phase: str, args: argparse.Namespace, probes: list[dict[str, Any]]) -> None:
    """Short all-core GEMM, load average and CPU used by other processes: how busy the
    shared machine was before a phase."""
    args.idle.wait(phase)
    busy = foreign_cpu(0.5)
    rate = gemm_rates(args.dim, args.k, args.gemm_block, min_time=0.3, rounds=1)[0]
    entry = {"phase": phase, "at": datetime.now().isoformat(timespec="seconds"), "loadavg": loadavg(),
             "foreign_busy_cores": None if busy is None else round(busy, 2),
             "gemm_allcores_gflops": round(rate, 1)}
    probes.append(entry)
    log(f"probe before {phase}: GEMM {rate:.1f} GFLOP/s (all cores), other processes busy "
        f"{fmt(entry['foreign_busy_cores'], '.2f')} cores, loadavg {entry['loadavg']}")


# --------------------------------------------------------------------------- memory sampler


class MemorySampler:
    """Samples RSS of this process, its JVM child and the JVM's Python workers/daemon.

    Reports per group the peak of the summed RSS (RSS of forked workers counts pages they
    share copy-on-write with the daemon more than once, so the worker sum is an upper
    bound), the largest single process and the most processes seen at once.
    """

    GROUPS = ("driver_python", "jvm", "python_workers", "other")

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self.psutil = psutil
        self.interval = interval
        self.root = psutil.Process()
        self._kind: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self.peak_sum = dict.fromkeys(self.GROUPS, 0)
        self.peak_single = dict.fromkeys(self.GROUPS, 0)
        self.max_procs = dict.fromkeys(self.GROUPS, 0)
        self.peak_total = 0
        self.samples = 0
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self.timeline: list[list[float]] = []
        self._t0 = now()

    def _classify(self, p) -> str:
        kind = self._kind.get(p.pid)
        if kind is None:
            try:
                name = p.name()
                cmd = " ".join(p.cmdline())
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                return "other"
            if p.pid == self.root.pid:
                kind = "driver_python"
            elif "java" in name or "/java " in cmd or cmd.startswith("java"):
                kind = "jvm"
            elif "python" in name or "pyspark" in cmd:
                kind = "python_workers"
            else:
                kind = "other"
            self._kind[p.pid] = kind
        return kind

    def sample(self) -> None:
        sums = dict.fromkeys(self.GROUPS, 0)
        counts = dict.fromkeys(self.GROUPS, 0)
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except self.psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                rss = p.memory_info().rss
                t = p.cpu_times()
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                continue
            cpu = t.user + t.system
            # a process first seen now started after the previous sample: count it from 0
            self._cpu_first.setdefault(p.pid, cpu if self.samples == 0 else 0.0)
            self._cpu_last[p.pid] = cpu
            kind = self._classify(p)
            sums[kind] += rss
            counts[kind] += 1
            self.peak_single[kind] = max(self.peak_single[kind], rss)
        for g in self.GROUPS:
            self.peak_sum[g] = max(self.peak_sum[g], sums[g])
            self.max_procs[g] = max(self.max_procs[g], counts[g])
        total = sum(sums.values())
        self.peak_total = max(self.peak_total, total)
        if self.samples == 0:
            self.baseline = {g: sums[g] for g in self.GROUPS}
        if self.samples % 5 == 0:  # 1 s resolution in the JSON
            self.timeline.append([round(now() - self._t0, 1)] + [round(sums[g] / 2**20) for g in self.GROUPS[:3]])
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "MemorySampler":
        self._t0 = now()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()

    def cpu_seconds(self) -> dict[str, float]:
        out = dict.fromkeys(self.GROUPS[:3], 0.0)
        for pid, last in self._cpu_last.items():
            kind = self._kind.get(pid, "other")
            if kind in out:
                out[kind] += last - self._cpu_first.get(pid, 0.0)
        return {k: round(v, 2) for k, v in out.items()}

    def report(self) -> dict[str, Any]:
        mib = lambda b: round(b / 2**20, 1)  # noqa: E731
        return {
            "interval_s": self.interval,
            "samples": self.samples,
            "peak_rss_mib": {g: mib(self.peak_sum[g]) for g in self.GROUPS[:3]},
            "rss_at_start_mib": {g: mib(getattr(self, "baseline", {}).get(g, 0)) for g in self.GROUPS[:3]},
            "peak_single_process_rss_mib": {g: mib(self.peak_single[g]) for g in self.GROUPS[:3]},
            "max_processes": {g: self.max_procs[g] for g in self.GROUPS[:3]},
            "peak_total_rss_mib": mib(self.peak_total),
            "cpu_s": self.cpu_seconds(),
            "cpu_s_note": "user+system CPU seconds per group over the sampled window (processes that exited "
                          "between samples lose their last interval)",
            "timeline_columns": ["t_s", "driver_python_mib", "jvm_mib", "python_workers_mib"],
            "timeline": self.timeline,
        }


class NullSampler:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def report(self):
        return {"error": "psutil not installed: no memory figures"}


def make_sampler(interval: float):
    try:
        return MemorySampler(interval)
    except ImportError:
        return NullSampler()


# --------------------------------------------------------------------------- faiss.Kmeans


def run_faiss_kmeans(x: np.ndarray, k: int, iters: int, seed: int, threads: int) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(threads)
    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, max_points_per_centroid=10**9, verbose=False)
    t0 = now()
    c0 = time.process_time()
    km.train(x)
    train_s = now() - t0
    cpu_s = time.process_time() - c0
    out: dict[str, Any] = {"threads": threads, "train_s": round(train_s, 3), "s_per_iter": round(train_s / iters, 4),
                           "cpu_s": round(cpu_s, 3), "cpu_s_per_iter": round(cpu_s / iters, 4)}
    stats = getattr(km, "iteration_stats", None)
    if stats:
        out["obj"] = [float(s["obj"]) for s in stats]
        out["obj_final"] = float(stats[-1]["obj"])
        # faiss reports cumulative times in seconds
        out["time_cumulative_s"] = [round(float(s["time"]), 3) for s in stats]
        out["time_search_cumulative_s"] = [round(float(s["time_search"]), 3) for s in stats]
        out["search_share"] = round(float(stats[-1]["time_search"]) / max(float(stats[-1]["time"]), 1e-9), 3)
    return out


def release_memory() -> None:
    """Give freed numpy/Arrow memory back to the OS, so the driver RSS sampled during the
    Spark fits is the driver's, not this benchmark's leftovers."""
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except Exception:
        pass
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:
        pass


# --------------------------------------------------------------------------- kernels alone


def run_kernels(x: np.ndarray, k: int, seed: int, n_tasks: int, repeats: int = 3) -> dict[str, Any]:
    """curation_spark.method.kernels.assign + partial_sums on one task's block (N / slots rows),
    one thread, no Spark: what a barrier iteration costs per task when nothing else runs."""
    from curation_spark.method import kernels

    rows = int(math.ceil(len(x) / n_tasks))
    block = np.ascontiguousarray(x[:rows])
    rng = np.random.default_rng([seed, 7])
    c = np.ascontiguousarray(x[np.sort(rng.choice(len(x), size=k, replace=False))])
    kernels.set_threads(1)
    kernels.assign(block[:4096], c)  # warm-up
    a_s, s_s, a_cpu, s_cpu = [], [], [], []
    for _ in range(repeats):
        t0, c0 = now(), time.process_time()
        labels, _ = kernels.assign(block, c)
        t1, c1 = now(), time.process_time()
        kernels.partial_sums(block, labels, k)
        t2, c2 = now(), time.process_time()
        a_s.append(t1 - t0)
        s_s.append(t2 - t1)
        a_cpu.append(c1 - c0)
        s_cpu.append(c2 - c1)
    a, sm = min(a_s), min(s_s)
    return {"block_rows": rows, "tasks": n_tasks, "threads_per_task": 1, "repeats": repeats,
            "assign_s_best": round(a, 4), "sums_s_best": round(sm, 4),
            "assign_s_all": [round(v, 4) for v in a_s], "sums_s_all": [round(v, 4) for v in s_s],
            "assign_cpu_s_best": round(min(a_cpu), 4), "sums_cpu_s_best": round(min(s_cpu), 4),
            "assign_gflops": round(2.0 * rows * k * x.shape[1] / a / 1e9, 2),
            "s_per_iter_if_tasks_parallel": round(a + sm, 4),
            "sums_share": round(sm / (a + sm), 3)}


# --------------------------------------------------------------------------- curation-spark


class Timed:
    """Wraps functions of curation_spark.engine.kmeans (in this process only) to time the phases
    of ``fit`` that its history does not cover: count/dim, init and the engine run."""

    NAMES = ("embedding_dim", "initial_centroids", "_fit_barrier", "_fit_passes")

    def __init__(self) -> None:
        import curation_spark.engine.kmeans as km

        self.km = km
        self.spans: dict[str, list[tuple[float, float]]] = {}
        self._orig: dict[str, Callable] = {}

    def __enter__(self) -> "Timed":
        for name in self.NAMES:
            orig = getattr(self.km, name)
            self._orig[name] = orig

            def wrapper(*a, __orig=orig, __name=name, **kw):
                t0 = now()
                try:
                    return __orig(*a, **kw)
                finally:
                    self.spans.setdefault(__name, []).append((t0, now()))

            setattr(self.km, name, wrapper)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, orig in self._orig.items():
            setattr(self.km, name, orig)

    def span(self, name: str) -> tuple[float, float] | None:
        s = self.spans.get(name)
        return s[0] if s else None


def stage_timeline(spark, t0_epoch: float, t1_epoch: float) -> list[dict[str, Any]]:
    """Spark stages that started inside [t0, t1] (wall clock), from the driver's status
    store (available with the UI off): where a fit spends the time outside its iterations."""
    try:
        sc = spark.sparkContext
        jvm = sc._jvm
        store = sc._jsc.sc().statusStore()
        seq = store.stageList(None, False, False, sc._gateway.new_array(jvm.double, 0), None)
        stages = jvm.scala.jdk.javaapi.CollectionConverters.asJava(seq)
    except Exception as exc:  # private API: absent or changed in another Spark version
        return [{"error": f"status store unavailable: {type(exc).__name__}"}]
    opt = lambda o: o.get() if o.isDefined() else None  # noqa: E731
    rows = []
    for i in range(stages.size()):
        st = stages.get(i)
        sub, comp = opt(st.submissionTime()), opt(st.completionTime())
        if sub is None:
            continue
        start = sub.getTime() / 1000.0
        if not (t0_epoch - 0.05 <= start <= t1_epoch):
            continue
        end = comp.getTime() / 1000.0 if comp is not None else None
        rows.append({"stage": int(st.stageId()), "attempt": int(st.attemptId()), "status": st.status().toString(),
                     "name": st.name(), "description": opt(st.description()), "tasks": int(st.numTasks()),
                     "start_s": round(start - t0_epoch, 3),
                     "duration_s": round(end - start, 3) if end is not None else None,
                     "executor_run_s": round(st.executorRunTime() / 1000.0, 3)})
    rows.sort(key=lambda r: (r["start_s"], r["stage"]))
    return rows


def summarise_history(history: list[dict[str, Any]], skip_first: bool) -> dict[str, Any]:
    secs = [h["seconds"] for h in history]
    steady = history[1:] if skip_first and len(history) > 1 else history
    med = lambda key, rows: round(statistics.median(r[key] for r in rows), 4) if rows else None  # noqa: E731
    mean = lambda key, rows: round(statistics.fmean(r[key] for r in rows), 4) if rows else None  # noqa: E731
    return {
        "iterations": len(history),
        "iterations_sum_s": round(sum(secs), 3),
        "s_per_iter_mean": round(statistics.fmean(secs), 4),
        "s_per_iter_median": round(statistics.median(secs), 4),
        "steady_iterations": "2.." + str(len(history)) if skip_first and len(history) > 1 else "all",
        "steady_s_per_iter_median": med("seconds", steady),
        "steady_s_per_iter_mean": mean("seconds", steady),
        "assign_s_median": med("assign_s", steady),
        "sums_s_median": med("sums_s", steady),
        "exchange_s_median": med("exchange_s", steady),
        "load_s_median": med("load_s", steady),
        "first_iteration": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in history[0].items()},
        "per_iteration": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()} for h in history],
        "objective_final_iteration": history[-1]["objective"],
    }


def run_curation(spark, path: Path, args: argparse.Namespace, engine: str, iters: int, n: int) -> dict[str, Any]:
    from pyspark.sql import functions as F  # noqa: F401

    from curation_spark.engine import kmeans
    from curation_spark.method.lloyd import KMeansParams
    from curation_spark.io.tables import to_points

    points = to_points(spark.read.parquet(str(path)), "id", "embedding")
    params = KMeansParams(n_clusters=args.k, n_iters=iters, engine=engine, init="random", seed=args.seed)
    sampler = make_sampler(args.sample_interval)
    with Timed() as timed, sampler:
        e0 = time.time()
        t0 = now()
        result = kmeans.fit(points, params, stage=f"bench-{engine}")
        t1 = now()
        e1 = time.time()
    total = t1 - t0
    runner = timed.span("_fit_barrier" if result.engine == "barrier" else "_fit_passes")
    init = timed.span("initial_centroids")
    dim_span = timed.span("embedding_dim")
    hist = summarise_history(result.history, skip_first=True)
    iter_sum = hist["iterations_sum_s"]
    load_first = float(result.history[0]["load_s"])
    out: dict[str, Any] = {
        "engine_requested": engine,
        "engine": result.engine,
        "n_partitions": result.n_partitions,
        "n_iters": iters,
        "total_s": round(total, 3),
        "fit_reported_seconds": round(result.seconds, 3),
        "count_and_dim_s": round((init[0] if init else t0) - t0, 3),
        "embedding_dim_s": round(dim_span[1] - dim_span[0], 3) if dim_span else None,
        "init_s": round(init[1] - init[0], 3) if init else None,
        "engine_run_s": round(runner[1] - runner[0], 3) if runner else None,
        "iterations": hist,
        "s_per_iter": hist["s_per_iter_mean"],
        "load_s_iteration_1": round(load_first, 3),
        "objective": result.objective,
        "empty_clusters_last_iteration": result.history[-1].get("empty_clusters"),
        "sizes_sum": int(result.sizes.sum()),
    }
    init_s = out["init_s"] or 0.0
    out["overhead_s"] = round(total - init_s - iter_sum, 3)
    out["overhead_note"] = ("total - init - sum(iteration seconds): count + dim, Parquet scan, hash-layout "
                            "shuffle, JVM->Python transfer + block build (load_s), job scheduling, final "
                            "assignment and materialisation of the persisted output")
    if runner:
        out["engine_run_minus_iterations_s"] = round(runner[1] - runner[0] - iter_sum, 3)
    if engine == "barrier":
        out["overhead_minus_load_s"] = round(out["overhead_s"] - load_first, 3)
    # The assignments are persisted by fit: counting them must not recompute the engine.
    t2 = now()
    n_assigned = result.assignments.count()
    out["assignments_count_s"] = round(now() - t2, 3)
    out["assignments_rows"] = int(n_assigned)
    out["assignments_rows_ok"] = int(n_assigned) == n
    result.unpersist()
    out["stages"] = stage_timeline(spark, e0, e1)
    out["memory"] = sampler.report()
    return out


def spark_warmup(spark, path: Path) -> int:
    import pyarrow as pa
    from pyspark.sql import functions as F

    def touch(batches):
        import faiss  # noqa: F401

        n = 0
        for b in batches:
            n += b.num_rows
        yield pa.RecordBatch.from_arrays([pa.array([n], pa.int64())], names=["n"])

    frame = spark.read.parquet(str(path)).where(F.col("id") < 20000).select("id", "embedding")
    rows = frame.mapInArrow(touch, "n long").collect()
    return int(sum(r["n"] for r in rows))


# --------------------------------------------------------------------------- MLlib


def run_mllib(spark, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    n_sub = min(args.mllib_n, args.n)
    df = (spark.read.parquet(str(path)).where(F.col("id") < n_sub)
          .select(array_to_vector(F.col("embedding")).alias("features")))
    runs: list[dict[str, Any]] = []
    all_runs: list[dict[str, Any]] = []
    # Untimed warm-up fit: the first MLlib fit in a JVM pays class loading and JIT.
    t0 = now()
    tiny = (spark.read.parquet(str(path)).where(F.col("id") < min(5000, n_sub))
            .select(array_to_vector(F.col("embedding")).alias("features")))
    KMeans(k=min(args.k, 50), maxIter=1, tol=0.0, initMode="random", seed=args.seed,
           featuresCol="features").fit(tiny)
    warmup_s = now() - t0
    log(f"MLlib warm-up fit (5k rows, maxIter=1): {warmup_s:.1f} s")
    for rep_i in range(args.mllib_repeats):
        for max_iter in args.mllib_iters:
            km = KMeans(k=args.k, maxIter=max_iter, tol=0.0, initMode="random", seed=args.seed,
                        featuresCol="features")
            e0 = time.time()
            t0 = now()
            model = km.fit(df)
            dt = now() - t0
            summary = model.summary
            stages = [st for st in stage_timeline(spark, e0, time.time())
                      if "error" in st or (st["duration_s"] or 0) >= 0.5]
            all_runs.append({"maxIter": max_iter, "repeat": rep_i, "numIter": int(summary.numIter),
                             "seconds": round(dt, 3), "training_cost": float(summary.trainingCost),
                             "stages_over_0_5s": stages})
            log(f"MLlib n={n_sub} maxIter={max_iter}: {dt:.1f} s (numIter={summary.numIter})")
    # fastest repeat per maxIter (noise only adds time)
    for max_iter in args.mllib_iters:
        best_run = min((r for r in all_runs if r["maxIter"] == max_iter), key=lambda r: r["seconds"])
        runs.append(best_run)
    out: dict[str, Any] = {"n_subset": n_sub, "subset": f"id < {n_sub} (rows are i.i.d. draws of the mixture)",
                           "warmup_fit_5k_rows_maxIter1_s": round(warmup_s, 3), "runs": runs, "all_runs": all_runs,
                           "runs_note": "runs = fastest repeat per maxIter", "k": args.k, "initMode": "random", "tol": 0.0,
                           "input": "not cached by the benchmark (MLlib persists its instances itself)"}
    per_iter = -1.0
    if len(runs) >= 2 and runs[-1]["numIter"] > runs[0]["numIter"]:
        a, b = runs[0], runs[-1]
        per_iter = (b["seconds"] - a["seconds"]) / (b["numIter"] - a["numIter"])
        out["s_per_iter_method"] = (f"difference: (t(maxIter={b['maxIter']}) - t(maxIter={a['maxIter']})) / "
                                    f"(numIter {b['numIter']} - {a['numIter']})")
        out["fixed_overhead_s"] = round(a["seconds"] - a["numIter"] * per_iter, 3)
        if per_iter <= 0:
            out["difference_not_positive"] = round(per_iter, 4)
    if per_iter <= 0:
        r = runs[-1]
        per_iter = r["seconds"] / r["numIter"]
        out["s_per_iter_method"] = (f"total / numIter of the maxIter={r['maxIter']} run (includes init and scan"
                                    + ("; the difference quotient was not positive: noise" if len(runs) >= 2 else "")
                                    + ")")
    out["s_per_iter_total_over_iters"] = [round(r["seconds"] / r["numIter"], 3) for r in runs]
    out["s_per_iter_subset"] = round(per_iter, 4)
    out["s_per_iter_at_n"] = round(per_iter * args.n / n_sub, 3)
    out["extrapolated"] = n_sub != args.n
    out["extrapolation"] = f"linear in N: x {args.n / n_sub:g} (from {n_sub} to {args.n} rows)"
    return out


# --------------------------------------------------------------------------- report


def ratio_line(name: str, value: float | None, target: float, higher_is_better: bool, unit: str) -> dict[str, Any]:
    if value is None:
        return {"target": name, "value": None, "met": None}
    met = value >= target if higher_is_better else value <= target
    if higher_is_better:
        how = f"{value / target:.2f}x the target" if met else f"short by {target / value:.2f}x"
    else:
        how = f"{target / value:.2f}x margin" if met else f"over by {value / target:.2f}x"
    return {"target": name, "value": round(value, 3), "threshold": target, "unit": unit, "met": met, "by": how}


def fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def print_summary(res: dict[str, Any]) -> None:
    p = res["params"]
    g = res.get("gemm", {})
    print()
    print(f"=== k-means benchmark: N={p['n']:,} D={p['dim']} K={p['k']} iters={p['iters']} "
          f"({res['machine']['nproc']} cores, {res['machine'].get('cpu_model')}, "
          f"OPENBLAS_CORETYPE={res['machine'].get('OPENBLAS_CORETYPE')}) ===")
    rows = []
    if g:
        rows.append(("GEMM bound, 1 core", g["s_per_iter_1core"], f"{g['single_thread']['gflops_best']:.1f} GFLOP/s"))
        rows.append(("GEMM bound, all cores", g["s_per_iter_allcores"], f"{g['all_cores']['gflops_best']:.1f} GFLOP/s"))
    fs = res.get("faiss_search", {})
    for t, v in fs.items():
        rows.append((f"faiss search k=1, {t} thr", v["s_per_iter"], f"{v['gflops_best']:.1f} GFLOP/s"))
    for t, v in res.get("faiss_kmeans", {}).items():
        if t.startswith("threads_"):
            rows.append((f"faiss.Kmeans {v['threads']} thr", v["s_per_iter"],
                         f"train {v['train_s']:.1f} s, CPU {v['cpu_s_per_iter']:.3f} s/iter, "
                         f"obj {v.get('obj_final', float('nan')):.4g}"))
    kr = res.get("kernels")
    if kr:
        rows.append((f"kernels alone ({kr['block_rows']:,} rows, 1 thr)", kr["s_per_iter_if_tasks_parallel"],
                     f"assign {kr['assign_s_best']:.3f} ({kr['assign_gflops']:.0f} GFLOP/s) + "
                     f"partial_sums {kr['sums_s_best']:.3f} per task"))
    cs = res.get("curation_spark", {})
    for eng in ("barrier", "passes"):
        r = cs.get(eng)
        if r:
            it = r["iterations"]
            rows.append((f"curation-spark {eng}", r["s_per_iter"],
                         f"total {r['total_s']:.1f} s, init {fmt(r['init_s'], '.1f')} s, "
                         f"overhead {r['overhead_s']:.1f} s, {it['iterations']} its"))
            rows.append((f"  {eng} steady (median it {it['steady_iterations']})", it["steady_s_per_iter_median"],
                         f"assign {fmt(it['assign_s_median'])} sums {fmt(it['sums_s_median'])} "
                         f"exchange {fmt(it['exchange_s_median'])} load {fmt(it['load_s_median'])}"))
            if eng == "barrier":
                rows.append(("  barrier load_s (it 1)", r["load_s_iteration_1"], "JVM->Python + block build, once"))
            else:
                rows.append(("  passes iteration 1", it["first_iteration"]["seconds"],
                             f"incl. scan+shuffle+cache; load {it['first_iteration']['load_s']:.2f}"))
    ml = res.get("mllib")
    if ml:
        rows.append((f"MLlib @{ml['n_subset']:,}", ml["s_per_iter_subset"], ml["s_per_iter_method"]))
        rows.append((f"MLlib @{p['n']:,} (extrapolated)", ml["s_per_iter_at_n"], ml["extrapolation"]))
    print(f"{'what':44s} {'s/iter':>9s}  notes")
    for name, v, note in rows:
        print(f"{name:44s} {fmt(v, '9.3f')}  {note}")
    ec = cs.get("engine_comparison")
    if ec:
        print(f"\nengine choice: {ec['summary']}")
    for eng in ("barrier", "passes"):
        mem = cs.get(eng, {}).get("memory", {})
        if mem.get("peak_rss_mib"):
            print(f"{eng} fit: peak RSS MiB {mem['peak_rss_mib']}, CPU seconds {mem.get('cpu_s')}")
    for eng in ("barrier", "passes"):
        stages = cs.get(eng, {}).get("stages")
        if stages and "error" not in stages[0]:
            print(f"\nSpark stages during the {eng} fit (start, duration, tasks, call site / description):")
            for st in stages:
                if st["status"] == "SKIPPED":
                    continue
                print(f"  +{st['start_s']:7.1f} s {fmt(st['duration_s'], '7.1f')} s {st['tasks']:4d}  "
                      f"{st['name'][:48]:48s} {(st['description'] or '')[:60]}")
    print("\ntargets:")
    for t in res.get("targets", []):
        state = "n/a" if t["met"] is None else ("MET" if t["met"] else "MISSED")
        print(f"  {t['target']:58s} {fmt(t['value'], '8.3f')} {state:7s} {t.get('by', '')}")
    print()


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="points")
    ap.add_argument("--dim", type=int, default=128, help="dimension")
    ap.add_argument("--k", type=int, default=1000, help="clusters")
    ap.add_argument("--iters", type=int, default=10, help="Lloyd iterations")
    ap.add_argument("--components", type=int, default=1000, help="mixture components of the data")
    ap.add_argument("--alpha", type=float, default=1.0, help="power-law exponent of the mixture weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--files", type=int, default=16, help="Parquet files of the generated table")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    ap.add_argument("--label", default="", help="free text stored in the JSON (e.g. smoke)")
    ap.add_argument("--gemm-block", type=int, default=4096, help="rows per GEMM block")
    ap.add_argument("--gemm-min-time", type=float, default=1.0, help="seconds per GEMM round")
    ap.add_argument("--gemm-rounds", type=int, default=3)
    ap.add_argument("--search-queries", type=int, default=65536, help="queries of the faiss search probe")
    ap.add_argument("--passes-iters", type=int, default=3,
                    help="iterations of the passes engine (its steady per-iteration cost is the figure; "
                         "0 = --iters)")
    ap.add_argument("--mllib-n", type=int, default=100_000, help="MLlib subset size")
    ap.add_argument("--mllib-iters", type=lambda s: [int(v) for v in s.split(",")], default=[1, 5],
                    help="maxIter values; with two, s/iter = difference quotient")
    ap.add_argument("--mllib-repeats", type=int, default=2, help="fits per maxIter value (fastest kept)")
    ap.add_argument("--driver-memory", default="8g")
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--with-delta", action="store_true", help="start Spark with Delta (resolves jars via Ivy)")
    ap.add_argument("--wait-idle-budget", type=float, default=0.0,
                    help="total seconds the run may wait, before phases, for other processes to leave the CPUs")
    ap.add_argument("--idle-threshold", type=float, default=0.3, help="busy cores of other processes counted as idle")
    ap.add_argument("--sample-interval", type=float, default=0.2, help="RSS sampling period, seconds")
    for what in ("gemm", "faiss-search", "faiss-kmeans", "kernels", "barrier", "passes", "mllib", "spark"):
        ap.add_argument(f"--skip-{what}", action="store_true")
    ap.add_argument("--faiss-threads", type=lambda s: [int(v) for v in s.split(",")], default=None,
                    help="thread counts for faiss.Kmeans (default: 1,nproc)")
    ap.add_argument("--gemm-probe", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.gemm_probe:  # child mode: print GEMM rates as JSON and exit
        cpu: list[float] = []
        rates = gemm_rates(args.dim, args.k, args.gemm_block, args.gemm_min_time, args.gemm_rounds, cpu_out=cpu)
        print(json.dumps({"rates": rates, "cpu_rates": cpu}))
        return 0
    os.environ.setdefault("CURATION_SPARK_PROGRESS", "off")
    args.idle = IdleWaiter(args.wait_idle_budget, args.idle_threshold)
    started_wall = datetime.now()
    t_start = now()
    ncores = os.cpu_count() or 1
    faiss_threads = args.faiss_threads or sorted({1, ncores})
    res: dict[str, Any] = {
        "label": args.label,
        "started": started_wall.isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "params": {"n": args.n, "dim": args.dim, "k": args.k, "iters": args.iters, "components": args.components,
                   "alpha": args.alpha, "seed": args.seed, "files": args.files, "gemm_block": args.gemm_block,
                   "passes_iters": args.passes_iters or args.iters, "mllib_n": args.mllib_n,
                   "mllib_iters": args.mllib_iters, "master": args.master, "driver_memory": args.driver_memory,
                   "faiss_threads": faiss_threads},
        "machine": machine_info(),
        "noise_probes": [],
    }
    probes = res["noise_probes"]
    flops_per_iter = 2.0 * args.n * args.k * args.dim
    res["flops_per_iter"] = flops_per_iter

    # ---- data
    path = table_dir(args.data_dir, args.n, args.dim, args.components, args.seed, args.files)
    log(f"table {path}")
    meta = ensure_table(path, args.n, args.dim, args.components, args.seed, args.files, args.alpha)
    res["data"] = {"path": str(path), **{k: v for k, v in meta.items() if k != "file_names"}}
    log(("reused" if meta["reused"] else f"wrote in {meta['write_s']:.1f} s") + f": {meta['bytes'] / 2**20:.0f} MiB")

    x = None
    if not (args.skip_faiss_kmeans and args.skip_faiss_search and args.skip_kernels):
        t0 = now()
        x = load_numpy(path, args.dim)
        res["data"]["load_numpy_s"] = round(now() - t0, 3)
        log(f"loaded {x.shape} float32 into numpy in {res['data']['load_numpy_s']:.2f} s")

    # ---- 1./2. GEMM bound and faiss search: measured at the start and again at the end of
    # the run (alternating 1 thread / all cores); the best rate of all sessions is the bound,
    # since a busy machine can only make a round slower.
    gemm_acc: dict[str, list] = {"r1": [], "r_all": [], "c1": [], "c_all": [], "how1": [""], "how_all": [""]}
    search_acc: dict[int, list[float]] = {}

    def gemm_session(tag: str) -> None:
        noise_probe(f"gemm-{tag}", args, probes)
        for _ in range(2):
            r, gemm_acc["how1"][0] = gemm_rates_threads(1, args.dim, args.k, args.gemm_block, args.gemm_min_time,
                                                         args.gemm_rounds, gemm_acc["c1"])
            gemm_acc["r1"] += r
            r, gemm_acc["how_all"][0] = gemm_rates_threads(None, args.dim, args.k, args.gemm_block,
                                                            args.gemm_min_time, args.gemm_rounds, gemm_acc["c_all"])
            gemm_acc["r_all"] += r
        log(f"GEMM session {tag}: best so far 1 thread {max(gemm_acc['r1']):.1f} GFLOP/s, "
            f"{ncores} threads {max(gemm_acc['r_all']):.1f} GFLOP/s")

    def search_session(tag: str, data: np.ndarray | None) -> None:
        noise_probe(f"faiss-search-{tag}", args, probes)
        for t in sorted({1, ncores}):
            rates = faiss_search_rates(t, args.dim, args.k, min(args.search_queries, max(4096, args.n - args.k)),
                                       3, data)
            search_acc.setdefault(t, []).extend(rates)
            log(f"faiss IndexFlatL2.search k=1, {t} thread(s): {max(rates):.1f} GFLOP/s ({tag})")

    def finish_gemm_and_search() -> None:
        if gemm_acc["r1"]:
            r1, r_all, c1, c_all = gemm_acc["r1"], gemm_acc["r_all"], gemm_acc["c1"], gemm_acc["c_all"]
            probe_rates = [pr["gemm_allcores_gflops"] for pr in probes]
            g1, ga_rounds = max(r1), max(r_all)
            ga = max([ga_rounds] + probe_rates)
            res["gemm"] = {
                "shape": f"({args.gemm_block} x {args.dim}) @ ({args.dim} x {args.k}) float32, numpy.matmul",
                "sessions": "start and end of the run, 2 x (1 thread, all cores) x rounds each",
                "single_thread": {"gflops_best": round(g1, 2), "gflops_median": round(statistics.median(r1), 2),
                                  "rounds": [round(v, 2) for v in r1], "method": gemm_acc["how1"][0],
                                  "gflops_per_cpu_s": [round(v, 2) for v in c1]},
                "all_cores": {"gflops_best": round(ga, 2), "gflops_best_dedicated_rounds": round(ga_rounds, 2),
                              "gflops_best_probes": round(max(probe_rates), 2) if probe_rates else None,
                              "gflops_median": round(statistics.median(r_all), 2),
                              "rounds": [round(v, 2) for v in r_all], "method": gemm_acc["how_all"][0],
                              "threads": ncores, "gflops_per_cpu_s": [round(v, 2) for v in c_all]},
                "s_per_iter_1core_cpu": round(flops_per_iter / (max(c1) * 1e9), 4),
                "s_per_iter_1core": round(flops_per_iter / (g1 * 1e9), 4),
                "s_per_iter_allcores": round(flops_per_iter / (ga * 1e9), 4),
                "note": ("lower bound = 2*N*K*D flops at the best measured GEMM rate (distances only: no argmin, "
                         "no sums); all-core best includes the same-shape probes taken before each phase"),
            }
            log(f"GEMM bound: 1 thread {g1:.1f} GFLOP/s -> {res['gemm']['s_per_iter_1core']:.3f} s/iter; "
                f"{ncores} threads {ga:.1f} GFLOP/s -> {res['gemm']['s_per_iter_allcores']:.3f} s/iter")
        if search_acc:
            res["faiss_search"] = {}
            for t, rates in sorted(search_acc.items()):
                best = max(rates)
                res["faiss_search"][str(t)] = {"threads": t, "gflops_best": round(best, 2),
                                               "gflops_median": round(statistics.median(rates), 2),
                                               "rounds": [round(v, 2) for v in rates],
                                               "s_per_iter": round(flops_per_iter / (best * 1e9), 4)}

    if not args.skip_gemm:
        gemm_session("start")
    if not args.skip_faiss_search:
        search_session("start", x)

    # ---- 3. faiss.Kmeans
    if not args.skip_faiss_kmeans:
        assert x is not None
        res["faiss_kmeans"] = {}
        for t in faiss_threads:
            noise_probe(f"faiss-kmeans-{t}t", args, probes)
            r = run_faiss_kmeans(x, args.k, args.iters, args.seed, t)
            res["faiss_kmeans"][f"threads_{t}"] = r
            log(f"faiss.Kmeans {t} thread(s): train {r['train_s']:.1f} s = {r['s_per_iter']:.3f} s/iter, "
                f"obj {r.get('obj_final', float('nan')):.5g}")
        best = min((v for v in res["faiss_kmeans"].values()), key=lambda v: v["s_per_iter"])
        res["faiss_kmeans"]["best"] = {"threads": best["threads"], "s_per_iter": best["s_per_iter"]}
        try:
            import faiss

            faiss.omp_set_num_threads(ncores)
        except ImportError:
            pass
    if not args.skip_kernels and x is not None:
        noise_probe("kernels", args, probes)
        res["kernels"] = run_kernels(x, args.k, args.seed, ncores)
        kr = res["kernels"]
        log(f"kernels alone, {kr['block_rows']} rows, 1 thread: assign {kr['assign_s_best']:.3f} s "
            f"({kr['assign_gflops']:.0f} GFLOP/s), partial_sums {kr['sums_s_best']:.3f} s")
        try:
            import faiss

            faiss.omp_set_num_threads(ncores)
        except ImportError:
            pass
    del x
    gc.collect()
    release_memory()

    # ---- 4/5. Spark: curation-spark barrier, MLlib, curation-spark passes
    spark = None
    if not args.skip_spark and not (args.skip_barrier and args.skip_passes and args.skip_mllib):
        from curation_spark.config import SparkSettings
        from curation_spark.io.session import get_spark

        conf = {"spark.driver.memory": args.driver_memory, "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false"}
        t0 = now()
        spark = get_spark(SparkSettings(master=args.master, app_name="kmeans-bench", conf=conf),
                          with_delta=args.with_delta)
        res["spark"] = {"start_s": round(now() - t0, 3), "version": spark.version,
                        "master": spark.sparkContext.master,
                        "defaultParallelism": spark.sparkContext.defaultParallelism,
                        "conf": {k: spark.conf.get(k, None) for k in
                                 ("spark.driver.memory", "spark.ui.enabled", "spark.sql.shuffle.partitions",
                                  "spark.sql.adaptive.enabled", "spark.python.worker.reuse", "spark.task.cpus",
                                  "spark.sql.execution.arrow.pyspark.enabled", "spark.sql.extensions")}}
        log(f"Spark {spark.version} {spark.sparkContext.master} up in {res['spark']['start_s']:.1f} s, "
            f"parallelism {spark.sparkContext.defaultParallelism}")
        # Warm-up (not part of any figure): JVM class loading/JIT of the Parquet scan and the
        # Arrow path, and Python workers that have imported numpy+faiss (worker reuse is on),
        # so the first engine measured does not pay the cold start the second one would not.
        t0 = now()
        res["spark"]["warmup_rows"] = spark_warmup(spark, path)
        res["spark"]["warmup_s"] = round(now() - t0, 3)
        log(f"Spark warm-up (scan + mapInArrow importing faiss): {res['spark']['warmup_s']:.1f} s")
        res["curation_spark"] = {}
        if not args.skip_barrier:
            noise_probe("curation-spark-barrier", args, probes)
            r = run_curation(spark, path, args, "barrier", args.iters, args.n)
            res["curation_spark"]["barrier"] = r
            it = r["iterations"]
            log(f"barrier: total {r['total_s']:.1f} s, {r['s_per_iter']:.3f} s/iter (median {it['s_per_iter_median']:.3f}; "
                f"assign {it['assign_s_median']}, sums {it['sums_s_median']}, exchange {it['exchange_s_median']}), "
                f"load {r['load_s_iteration_1']:.2f} s, init {r['init_s']} s, overhead {r['overhead_s']:.1f} s")
        if not args.skip_passes:
            noise_probe("curation-spark-passes", args, probes)
            r = run_curation(spark, path, args, "passes", args.passes_iters or args.iters, args.n)
            res["curation_spark"]["passes"] = r
            it = r["iterations"]
            log(f"passes: total {r['total_s']:.1f} s, iteration 1 {it['first_iteration']['seconds']:.2f} s, "
                f"steady {it['steady_s_per_iter_median']:.3f} s/iter (load {it['load_s_median']}, "
                f"assign {it['assign_s_median']}, sums {it['sums_s_median']})")
        if not args.skip_mllib:
            noise_probe("mllib", args, probes)
            res["mllib"] = run_mllib(spark, path, args)
            log(f"MLlib: {res['mllib']['s_per_iter_subset']:.3f} s/iter at {res['mllib']['n_subset']}, "
                f"extrapolated {res['mllib']['s_per_iter_at_n']:.2f} s/iter at {args.n}")
        b, pz = res["curation_spark"].get("barrier"), res["curation_spark"].get("passes")
        if b and pz:
            bi, pi = b["iterations"]["steady_s_per_iter_median"], pz["iterations"]["steady_s_per_iter_median"]
            # Both totals projected to --iters iterations from the measured pieces.
            passes_proj = pz["total_s"] + (args.iters - pz["n_iters"]) * pi
            res["curation_spark"]["engine_comparison"] = {
                "barrier_steady_s_per_iter": bi,
                "passes_steady_s_per_iter": pi,
                "passes_over_barrier_per_iter": round(pi / bi, 2),
                "passes_extra_s_per_iter": round(pi - bi, 3),
                "passes_load_s_per_iter_median": pz["iterations"]["load_s_median"],
                "barrier_load_s_once": b["load_s_iteration_1"],
                "barrier_total_s": b["total_s"],
                "passes_total_s_projected_to_iters": round(passes_proj, 2),
                "passes_projection": (f"measured total for {pz['n_iters']} iterations + "
                                      f"{args.iters - pz['n_iters']} x steady s/iter" if pz["n_iters"] != args.iters
                                      else "measured"),
                "summary": (f"barrier {bi:.2f} s/iter vs passes {pi:.2f} s/iter steady "
                            f"(passes pays {pz['iterations']['load_s_median']} s JVM->Python per iteration, "
                            f"barrier {b['load_s_iteration_1']:.2f} s once); totals for {args.iters} its: "
                            f"barrier {b['total_s']:.1f} s vs passes {passes_proj:.1f} s"),
            }
    if not args.skip_faiss_search:
        search_session("end", None)
    if not args.skip_gemm:
        gemm_session("end")
    finish_gemm_and_search()

    # ---- 7. ratios and targets
    cs = res.get("curation_spark", {}).get("barrier")
    ratios: dict[str, Any] = {}
    targets = []
    cs_it = cs["s_per_iter"] if cs else None
    fk = res.get("faiss_kmeans", {}).get("best")
    ml = res.get("mllib")
    g = res.get("gemm")
    if cs_it:
        ratios["curation_s_per_iter"] = cs_it
        ratios["curation_s_per_iter_definition"] = "mean of the barrier engine's per-iteration seconds (all iterations)"
        ratios["curation_end_to_end_s_per_iter"] = round(cs["total_s"] / args.iters, 4)
    if cs_it and fk:
        ratios["faiss_best_over_curation"] = round(fk["s_per_iter"] / cs_it, 3)
        ratios["curation_total_over_faiss_best_train"] = round(
            cs["total_s"] / res["faiss_kmeans"][f"threads_{fk['threads']}"]["train_s"], 3)
    if cs_it and ml:
        ratios["mllib_over_curation"] = round(ml["s_per_iter_at_n"] / cs_it, 2)
        ratios["mllib_over_curation_extrapolated"] = ml["extrapolated"]
    if cs_it and g:
        ratios["curation_over_gemm_allcores"] = round(cs_it / g["s_per_iter_allcores"], 3)
        ratios["curation_over_gemm_1core"] = round(cs_it / g["s_per_iter_1core"], 3)
    if cs_it and fk and g:
        ratios["faiss_best_over_gemm_allcores"] = round(fk["s_per_iter"] / g["s_per_iter_allcores"], 3)
    res["ratios"] = ratios
    targets.append(ratio_line("speed vs best faiss.Kmeans (faiss s/iter / ours) >= 1",
                              ratios.get("faiss_best_over_curation"), TARGET_VS_FAISS, True, "x"))
    targets.append(ratio_line("speed vs MLlib (MLlib s/iter @N, extrapolated / ours) >= 10",
                              ratios.get("mllib_over_curation"), TARGET_VS_MLLIB, True, "x"))
    targets.append(ratio_line("ours s/iter / GEMM bound (all cores) <= 2",
                              ratios.get("curation_over_gemm_allcores"), TARGET_VS_GEMM, False, "x"))
    res["targets"] = targets
    res["idle_waits_s"] = args.idle.waited
    res["wall_s"] = round(now() - t_start, 1)

    # ---- write
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = started_wall.strftime("%Y%m%dT%H%M%S")
    out_path = args.results_dir / f"kmeans_{stamp}.json"
    text = json.dumps(res, indent=1, default=str)
    out_path.write_text(text)
    (args.results_dir / "kmeans_latest.json").write_text(text)
    res["written"] = [str(out_path), str(args.results_dir / "kmeans_latest.json")]
    print_summary(res)
    log(f"wrote {out_path} and kmeans_latest.json; wall {res['wall_s']:.0f} s")
    if spark is not None:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
