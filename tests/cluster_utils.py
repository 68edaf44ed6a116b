"""Helpers for tests that run real Spark processes: a local standalone cluster, spark-submit,
the package wheel and small input tables written without Spark.

Everything binds to 127.0.0.1. Daemons are started with pyspark's own ``bin/spark-class``
(SPARK_HOME = the pyspark package folder) in their own process groups, so stopping a
group also ends the executors and Python workers they started.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from contextlib import closing
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
DELTA_PACKAGE = "io.delta:delta-spark_2.13:4.0.1"
DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
SUBMIT_TIMEOUT = 600.0
#: Driver logging: warnings, plus the scheduler lines that show where barrier tasks ran.
DRIVER_LOGGERS = {"org.apache.spark.scheduler.TaskSchedulerImpl": "info",
                  "org.apache.spark.scheduler.TaskSetManager": "info"}
#: Files a wheel is built from (the package is pure Python).
WHEEL_SOURCES = ("setup.py", "README.md", "curation_spark", "conf")


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spark_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for spark-class / spark-submit: loopback only, this interpreter for Python."""
    env = dict(os.environ)
    env.update({
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_NO_DAEMONIZE": "1",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "CURATION_SPARK_PROGRESS": "off",
    })
    if "JAVA_HOME" not in env:
        java = shutil.which("java")
        if java:
            env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parent.parent)
    # Never let a proxy setting route the loopback checks elsewhere.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    for key in ("PYSPARK_SUBMIT_ARGS", "SPARK_CONF_DIR", "PYTHONPATH"):
        env.pop(key, None)
    if extra:
        env.update(extra)
    return env


def write_log4j(conf_dir: str | Path, info_loggers: dict[str, str] | None = None) -> Path:
    """A ``log4j2.properties`` in ``conf_dir`` (use it as SPARK_CONF_DIR): root at WARN on
    stderr, with the given loggers at the given levels."""
    conf_dir = Path(conf_dir)
    conf_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "rootLogger.level = warn", "rootLogger.appenderRef.stdout.ref = console",
        "appender.console.type = Console", "appender.console.name = console", "appender.console.target = SYSTEM_ERR",
        "appender.console.layout.type = PatternLayout",
        "appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex",
    ]
    for i, (name, level) in enumerate((info_loggers or {}).items()):
        lines += [f"logger.l{i}.name = {name}", f"logger.l{i}.level = {level}"]
    path = conf_dir / "log4j2.properties"
    path.write_text("\n".join(lines) + "\n")
    return path


def _die_with_parent() -> None:
    """preexec_fn (Linux): SIGTERM the daemon if the test process dies without tearing down."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc`` (started with start_new_session), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while children (executors, python workers) of its group live on.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class StandaloneCluster:
    """A Spark standalone master and ``n_workers`` workers on 127.0.0.1.

    Use as a context manager; ``stop()`` always kills every process group it started.
    Logs of each daemon are in ``<workdir>/logs``; worker work dirs (executor stdout and
    stderr, fetched files) in ``<workdir>/worker-<i>``.
    """

    def __init__(self, workdir: str | Path, n_workers: int = 2, cores: int = 1, memory: str = "2g",
                 start_timeout: float = 180.0) -> None:
        self.workdir = Path(workdir)
        self.n_workers = n_workers
        self.cores = cores
        self.memory = memory
        self.start_timeout = start_timeout
        self.port = free_port()
        self.webui_port = free_port()
        self.procs: list[subprocess.Popen] = []
        self._logs: list = []
        self.conf_dir = self.workdir / "conf"
        self.env = spark_env({"SPARK_CONF_DIR": str(self.conf_dir), "SPARK_DAEMON_MEMORY": "512m"})

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def json_url(self) -> str:
        return f"http://127.0.0.1:{self.webui_port}/json/"

    # ------------------------------------------------------------------ lifecycle
    def _spawn(self, name: str, args: Sequence[str]) -> subprocess.Popen:
        log = open(self.workdir / "logs" / f"{name}.log", "wb")
        self._logs.append(log)
        proc = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *args], env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.workdir, start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        self.procs.append(proc)
        return proc

    def start(self) -> "StandaloneCluster":
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        # Daemons: warnings, plus the deploy messages (registration) a failing start needs to show.
        write_log4j(self.conf_dir, {"org.apache.spark.deploy": "info"})
        try:
            self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                   "--port", str(self.port), "--webui-port", str(self.webui_port)])
            self.wait_for(lambda s: s.get("status") == "ALIVE", "the master to come up")
            for i in range(self.n_workers):
                work = self.workdir / f"worker-{i}"
                work.mkdir(exist_ok=True)
                self._spawn(f"worker-{i}", ["org.apache.spark.deploy.worker.Worker", self.master_url,
                                            "--host", "127.0.0.1", "--cores", str(self.cores),
                                            "--memory", self.memory, "--webui-port", str(free_port()),
                                            "--work-dir", str(work)])
            self.wait_for(lambda s: self.alive_workers(s) >= self.n_workers,
                          f"{self.n_workers} workers to register")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):  # workers (and their executors) first, then the master
            _stop_group(proc)
        self.procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> "StandaloneCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """The master's JSON status page (loopback, no proxy)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.json_url, timeout=5) as resp:
            return json.loads(resp.read().decode("utf-8"))

    @staticmethod
    def alive_workers(state: dict) -> int:
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def wait_for(self, predicate, what: str) -> dict:
        deadline = time.monotonic() + self.start_timeout
        last_error = None
        while time.monotonic() < deadline:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a Spark daemon exited (code {dead[0].returncode}) while waiting for {what}:\n"
                                   + self.logs_tail())
            try:
                state = self.state()
                if predicate(state):
                    return state
            except OSError as exc:  # not listening yet
                last_error = exc
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {self.start_timeout:.0f} s waiting for {what} "
                           f"({last_error}):\n" + self.logs_tail())

    def logs_tail(self, n_chars: int = 3000) -> str:
        out = []
        for path in sorted((self.workdir / "logs").glob("*.log")):
            text = path.read_text(errors="replace")
            out.append(f"--- {path.name}\n{text[-n_chars:]}")
        return "\n".join(out)

    def executor_logs(self, n_chars: int = 4000) -> str:
        out = []
        for path in sorted(self.workdir.glob("worker-*/app-*/*/stderr")):
            out.append(f"--- {path.relative_to(self.workdir)}\n{path.read_text(errors='replace')[-n_chars:]}")
        return "\n".join(out)

    # ------------------------------------------------------------------ applications
    def app_conf(self) -> dict[str, str]:
        """Settings for an application on this cluster: Delta, one core per executor, every
        executor registered before the first job (barrier stages need all task slots)."""
        return {
            **DELTA_CONF,
            "spark.executor.cores": "1",
            "spark.executor.memory": "1g",
            "spark.driver.memory": "1g",
            "spark.pyspark.python": sys.executable,
            "spark.pyspark.driver.python": sys.executable,
            "spark.cores.max": str(self.n_workers * self.cores),
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4",
            # Tiny tables: Delta's log replay need not fan out to its default 50 partitions.
            "spark.databricks.delta.snapshotPartitions": "2",
        }

    def submit(self, args: Sequence[str], cwd: str | Path, conf: dict[str, str] | None = None,
               env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
        """spark-submit ``args`` to this master (Delta from --packages); the driver logs the
        scheduler's task placement (DRIVER_LOGGERS) on stderr."""
        conf_dir = self.workdir / "driver-conf"
        if not conf_dir.exists():
            write_log4j(conf_dir, DRIVER_LOGGERS)
        return spark_submit(args, master=self.master_url, packages=[DELTA_PACKAGE],
                            conf={**self.app_conf(), **(conf or {})}, cwd=cwd, timeout=SUBMIT_TIMEOUT,
                            env={"SPARK_CONF_DIR": str(conf_dir), **(env or {})}, **kwargs)

    def submit_failed(self, result: subprocess.CompletedProcess) -> str:
        """Everything needed to debug a failed submission, as an assertion message."""
        return (f"exit {result.returncode}\n--- driver stdout (Python)\n{result.stdout[-4000:]}\n"
                f"--- driver stderr\n{result.stderr[-6000:]}\n"
                f"--- executors\n{self.executor_logs()}\n--- daemons\n{self.logs_tail(1500)}")


# ---------------------------------------------------------------------- spark-submit


class ConnectServer:
    """pyspark's own Spark Connect server (``SparkConnectServer`` through ``spark-submit``) on
    127.0.0.1 with Delta configured on the server, as Databricks serverless offers one:
    clients reach it with ``SPARK_REMOTE=<url>``. Use as a context manager; ``stop()`` kills
    its process group (driver, Python workers). Its log is ``<workdir>/connect-server.log``.
    """

    def __init__(self, workdir: str | Path, master: str = "local[2]", conf: dict[str, str] | None = None,
                 start_timeout: float = 180.0) -> None:
        self.workdir = Path(workdir)
        self.master = master
        self.port = free_port()
        self.start_timeout = start_timeout
        self.conf = {**DELTA_CONF, "spark.connect.grpc.binding.address": "127.0.0.1",
                     "spark.connect.grpc.binding.port": str(self.port), "spark.ui.enabled": "false",
                     "spark.driver.memory": "2g", "spark.sql.shuffle.partitions": "4",
                     "spark.databricks.delta.snapshotPartitions": "2", **(conf or {})}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "connect-server.log"
        self._log = None

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"

    def client_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a client process of this server (``SPARK_REMOTE`` set)."""
        return spark_env({"SPARK_REMOTE": self.url, **(extra or {})})

    def start(self) -> "ConnectServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf_dir = self.workdir / "conf"
        write_log4j(conf_dir)
        args = [str(spark_home() / "bin" / "spark-submit"), "--class",
                "org.apache.spark.sql.connect.service.SparkConnectServer", "--name", "Spark Connect server",
                "--master", self.master, "--packages", DELTA_PACKAGE]
        for key, value in self.conf.items():
            args += ["--conf", f"{key}={value}"]
        args.append("spark-internal")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, env=spark_env({"SPARK_CONF_DIR": str(conf_dir)}), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
                                     start_new_session=True,
                                     preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        deadline = time.monotonic() + self.start_timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the Spark Connect server exited ({self.proc.returncode}):\n{self.log_tail()}")
                with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
                    sock.settimeout(1.0)
                    if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                        return self
                time.sleep(0.5)
            raise RuntimeError(f"the Spark Connect server did not listen on {self.port} within "
                               f"{self.start_timeout:.0f} s:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "ConnectServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spark_submit(args: Sequence[str], *, master: str, conf: dict[str, str] | None = None,
                 packages: Sequence[str] = (), py_files: Sequence[str] = (), archives: Sequence[str] = (),
                 cwd: str | Path | None = None,
                 timeout: float = 600.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run pyspark's ``bin/spark-submit`` in its own process group; killed on timeout."""
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", master]
    if packages:
        cmd += ["--packages", ",".join(packages)]
    if py_files:
        cmd += ["--py-files", ",".join(str(p) for p in py_files)]
    if archives:
        cmd += ["--archives", ",".join(str(a) for a in archives)]
    for key, value in (conf or {}).items():
        cmd += ["--conf", f"{key}={value}"]
    cmd += [str(a) for a in args]
    proc = subprocess.Popen(cmd, env=spark_env(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc, grace=5)
        out, err = proc.communicate()
        raise TimeoutError(f"spark-submit did not finish in {timeout:.0f} s: {' '.join(cmd)}\n{err[-5000:]}")
    finally:
        _stop_group(proc, grace=5)  # leftovers (python workers) of a finished driver
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# ---------------------------------------------------------------------- wheel and data


def build_wheel(out_dir: str | Path) -> Path:
    """Build the package wheel from a copy of the sources (no build/ litter in the repo)."""
    out_dir = Path(out_dir)
    src = out_dir / "src"
    src.mkdir(parents=True, exist_ok=True)
    for name in WHEEL_SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    dist = out_dir / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", str(dist),
           str(src)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    wheels = sorted(dist.glob("curation_spark-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {dist}, found {wheels}")
    return wheels[0]


def wheel_entry_points(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        return zf.read(name).decode("utf-8")


def write_rings(path: str | Path, sizes: Sequence[int], fmt: str = "delta", seed: int = 0):
    """A small rings table written without Spark (deltalake / pyarrow); returns the Arrow table."""
    import pyarrow.parquet as pq

    from curation_spark.synth import make_rings

    table = make_rings(seed=seed, sizes=tuple(sizes))
    path = Path(path)
    if fmt == "delta":
        import deltalake

        deltalake.write_deltalake(str(path), table, mode="overwrite")
    else:
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path / "part-00000.parquet")
    return table


def read_delta(path: str | Path):
    """An independent reader (delta-rs) for tables the Spark jobs wrote."""
    import deltalake

    return deltalake.DeltaTable(str(path)).to_pyarrow_table()


def run_tables(run: str | Path) -> dict[str, "pa.Table"]:
    """Every Delta table of a run folder (levels and curated tables), read with delta-rs and
    sorted by its scalar columns, so two runs compare with ``==`` row for row."""
    run = Path(run)
    out = {}
    for log_dir in sorted(run.rglob("_delta_log")):
        table = read_delta(log_dir.parent)
        keys = [f.name for f in table.schema if not str(f.type).startswith(("list", "large_list"))]
        out[str(log_dir.parent.relative_to(run))] = table.sort_by([(k, "ascending") for k in keys])
    return out


def assert_same_run(got: str | Path, want: str | Path) -> list[str]:
    """The two run folders hold the same tables with identical rows (bit-equal floats)."""
    a, b = run_tables(got), run_tables(want)
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    for name in a:
        assert a[name].num_rows == b[name].num_rows, name
        for column in b[name].column_names:
            assert a[name].column(column).to_pylist() == b[name].column(column).to_pylist(), f"{name}.{column} differs"
    return sorted(a)
