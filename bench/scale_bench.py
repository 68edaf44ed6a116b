#!/usr/bin/env python
"""Scale benchmark: the whole pipeline on 10 million points of D = 128, driver capped at 4 GiB.

A benchmark, not a test: it runs, measures and prints; it asserts nothing. Two phases,
each a separate ``python -m curation_spark`` process (local mode, as a user runs it):

1. ``synth mixture --partitioned``: a long-tailed Gaussian mixture (power-law component
   weights) written as a Delta table partitioned by ``shard`` (skipped when the table
   already exists with the same parameters, see ``--regenerate``);
2. ``run --config conf/scale_10m.yaml``: hierarchical k-means with resampling at every
   level, then hierarchical balanced sampling; ``spark.driver.memory`` is set to
   ``--driver-memory`` (default 4g), which in local mode is the one JVM's heap
   (driver and executors share it).

While a phase runs its process tree is sampled every 0.5 s (psutil) and the peak RSS is
kept per role: the driver's Python process, the JVM (driver + executors in local mode),
and the executors' Python workers (all together, and the largest single one). Wall time
per level and for the sampling comes from the run's ``run.json``; the size on disk and the
row count of every table written comes from the Delta log (current version) and from the
folder (all versions).

Results: ``bench/results/scale_<timestamp>.json`` and ``scale_latest.json``.

    python bench/scale_bench.py                          # 10M x 128 (about an hour here)
    python bench/scale_bench.py --n 200000 --tag smoke   # a quick check of the script
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
GIB = 1024 ** 3


class TreeMemory:
    """Peak RSS of a process tree, by role, sampled on a background thread."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak: dict[str, int] = {"driver_python": 0, "jvm": 0, "python_workers": 0,
                                     "largest_python_worker": 0, "total": 0}
        self.jvm_cmdline: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            now = {"driver_python": 0, "jvm": 0, "python_workers": 0, "largest_python_worker": 0}
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    name = proc.name()
                    if proc.pid == self.root.pid:
                        now["driver_python"] += rss
                    elif name == "java":
                        now["jvm"] += rss
                        cmdline = proc.cmdline()
                        if "org.apache.spark.launcher.Main" not in cmdline:  # not the launcher's JVM
                            self.jvm_cmdline = cmdline
                    elif name.startswith("python"):
                        now["python_workers"] += rss
                        now["largest_python_worker"] = max(now["largest_python_worker"], rss)
                except psutil.Error:
                    continue
            now["total"] = now["driver_python"] + now["jvm"] + now["python_workers"]
            for key, value in now.items():
                self.peak[key] = max(self.peak[key], value)
            self.samples += 1
            self._stop.wait(self.interval)

    def heap_limit(self) -> str | None:
        flags = [a for a in self.jvm_cmdline if a.startswith("-Xmx")]
        return flags[-1][4:] if flags else None


def run_phase(name: str, args: list[str], log_path: Path) -> dict[str, Any]:
    """Run ``python -m curation_spark ARGS`` with its tree's memory sampled; log to a file."""
    cmd = [sys.executable, "-m", "curation_spark", *args]
    print(f"[{name}] {' '.join(cmd)}\n[{name}] log: {log_path}", flush=True)
    env = {**os.environ, "CURATION_SPARK_PROGRESS": "off"}
    started = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        with TreeMemory(proc.pid) as memory:
            code = proc.wait()
    wall = time.perf_counter() - started
    result = {"command": cmd, "exit_code": code, "wall_s": round(wall, 1), "memory_samples": memory.samples,
              "jvm_heap_limit": memory.heap_limit(),
              "peak_rss_gib": {k: round(v / GIB, 2) for k, v in memory.peak.items()}}
    print(f"[{name}] exit {code}, {wall:.0f} s, peak RSS (GiB) {result['peak_rss_gib']}, "
          f"JVM -Xmx{result['jvm_heap_limit']}", flush=True)
    if code != 0:
        print(open(log_path).read()[-4000:], file=sys.stderr)
    return result


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def table_sizes(root: Path) -> dict[str, dict[str, Any]]:
    """Every Delta table under ``root``: rows, bytes and files of the current version, bytes
    of the folder (all versions kept by Delta)."""
    import deltalake
    import pyarrow as pa

    out = {}
    for log_dir in sorted(root.rglob("_delta_log")):
        table = log_dir.parent
        dt = deltalake.DeltaTable(str(table))
        actions = pa.table(dt.get_add_actions(flatten=True)).to_pydict()
        sizes, records = actions["size_bytes"], actions.get("num_records") or []
        out[str(table.relative_to(root))] = {
            "rows": int(sum(r for r in records if r is not None)),
            "files": len(sizes),
            "bytes_current_version": int(sum(sizes)),
            "bytes_on_disk_all_versions": folder_bytes(table),
            "delta_version": dt.version(),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--components", type=int, default=1000, help="mixture components (power-law weights)")
    p.add_argument("--alpha", type=float, default=1.0, help="power-law exponent of the component weights")
    p.add_argument("--files", type=int, default=40, help="shards (= partitions and files) of the input table")
    p.add_argument("--driver-memory", default="4g")
    p.add_argument("--config", default=str(REPO / "conf" / "scale_10m.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config overrides for the run (repeatable)")
    p.add_argument("--work", default=str(HERE / "data"), help="folder for the input table and the run")
    p.add_argument("--regenerate", action="store_true", help="write the input table even if it exists")
    p.add_argument("--tag", default="", help="suffix of the results file name")
    a = p.parse_args(argv)

    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"mixture_n{a.n}_d{a.dim}_k{a.components}_a{a.alpha}_f{a.files}"
    run = work / f"scale_run_n{a.n}_d{a.dim}"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    logs = RESULTS / f"scale_{stamp}_logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started_utc": stamp, "n": a.n, "dim": a.dim, "components": a.components, "alpha": a.alpha,
        "files": a.files, "driver_memory": a.driver_memory, "config": a.config, "overrides": a.overrides,
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
    }

    if a.regenerate or not (data / "_delta_log").exists():
        results["generate"] = run_phase("generate", [
            "synth", "mixture", "--out", str(data), "--n", str(a.n), "--dim", str(a.dim),
            "--components", str(a.components), "--alpha", str(a.alpha), "--files", str(a.files),
            "--partitioned", "--format", "delta"], logs / "generate.log")
        if results["generate"]["exit_code"] != 0:
            return _finish(results, stamp, a.tag)
    else:
        results["generate"] = {"skipped": f"{data} exists (use --regenerate)"}
    results["input_table"] = table_sizes(data).get(".", {})

    if run.exists():  # a full run is measured, not a resume of an earlier one
        shutil.rmtree(run)
    sets = [f"input.path={data}", f"output.path={run}", f"spark.conf.spark.driver.memory={a.driver_memory}",
            *a.overrides]
    results["run"] = run_phase("run", ["run", a.config, *[x for s in sets for x in ("--set", s)],
                                       "--overwrite"], logs / "run.log")
    meta_path = run / "run.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        results["levels"] = {
            lv: {"seconds": round(info.get("seconds", 0.0), 1), "n_points": info.get("n_points"),
                 "n_clusters": info.get("n_clusters"), "engine": info.get("engine"),
                 "resampling_steps_s": [round(s["seconds"], 1) for s in info.get("resampling", [])]}
            for lv, info in sorted(meta.get("levels", {}).items())}
        results["samples"] = meta.get("samples", {})
        results["tables"] = table_sizes(run)
    return _finish(results, stamp, a.tag)


def _finish(results: dict[str, Any], stamp: str, tag: str) -> int:
    results["load_avg_at_end"] = os.getloadavg()
    name = f"scale_{stamp}{'_' + tag if tag else ''}.json"
    text = json.dumps(results, indent=2, default=str)
    (RESULTS / name).write_text(text)
    if not tag:
        (RESULTS / "scale_latest.json").write_text(text)
    print(text)
    print(f"results: {RESULTS / name}")
    return 0 if results.get("run", {}).get("exit_code") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
