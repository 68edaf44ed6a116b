"""The package as a wheel: what the Databricks bundle and ``--py-files`` ship.

The wheel is built from a copy of the sources (``pip wheel --no-deps``), its contents are
checked (every module, the ``curation-spark`` console script), and its entry point is run
under ``spark-submit --py-files <wheel>`` from a scratch folder with no PYTHONPATH, so the
package is imported from the wheel and not from the editable install of the source tree.
"""
from __future__ import annotations

import zipfile

import pytest

import cluster_utils as cu

#: End-to-end Spark runs: outside the fast lane (`-m "not slow and not cluster"`), in CI.
pytestmark = pytest.mark.slow

LAUNCHER = '''\
"""Run the wheel's `curation-spark` console-script entry point (as a python_wheel_task does)."""
import importlib.metadata
import sys

wheels = [p for p in sys.path if p.endswith(".whl")]
dist = next(iter(importlib.metadata.distributions(path=wheels)))
entry = next(e for e in dist.entry_points if e.group == "console_scripts" and e.name == "curation-spark")
main = entry.load()

import curation_spark  # noqa: E402

print(f"entry point {entry.value} from {curation_spark.__file__}", flush=True)
sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return cu.build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_contents(wheel):
    assert wheel.name.startswith("curation_spark-") and wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    package = cu.REPO / "curation_spark"
    modules = sorted(p.relative_to(cu.REPO).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    assert any("/" in m.removeprefix("curation_spark/") for m in modules), "expected the layer sub-packages"
    missing = [m for m in modules if m not in names]
    assert not missing, f"modules missing from the wheel: {missing}"
    assert not any(n.startswith(("tests/", "jobs/", "notebooks/", "bench/")) for n in names)
    entry_points = cu.wheel_entry_points(wheel)
    assert "[console_scripts]" in entry_points
    assert "curation-spark = curation_spark.cli:main" in entry_points


def test_wheel_entry_point_under_spark_submit(wheel, tmp_path):
    table = cu.write_rings(tmp_path / "rings", (300, 20, 50, 30, 100), fmt="parquet")
    launcher = tmp_path / "launch_curation_spark.py"
    launcher.write_text(LAUNCHER)
    result = cu.spark_submit(
        [launcher, "validate", "--set", f"input.path={tmp_path / 'rings'}"],
        master="local[2]", py_files=[wheel], cwd=tmp_path, timeout=300,
        conf={"spark.ui.enabled": "false", "spark.driver.memory": "1g", "spark.pyspark.python": cu.sys.executable},
        env={"PYTHONPATH": ""})
    out = result.stdout  # spark-submit merges the Python driver's stderr into its stdout
    assert result.returncode == 0, f"{out[-4000:]}\n{result.stderr[-4000:]}"
    origin = next(line for line in out.splitlines() if line.startswith("entry point "))
    assert origin.startswith("entry point curation_spark.cli:main from ")
    assert f"{wheel}/curation_spark/__init__.py" in origin, origin  # imported from the wheel
    assert f"ok: {table.num_rows} rows, dimension 2" in out


def _substitute(value: str, variables: dict[str, str]) -> str:
    """Resolve the bundle's ${var.*} / ${workspace.file_path} and the job's {{...}} references."""
    import re

    value = re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m.group(1)]), value)
    value = value.replace("${workspace.file_path}", str(cu.REPO))
    return re.sub(r"\{\{job\.start_time\.iso_date\}\}", "2026-01-05", value)


def test_bundle_runs_the_wheel_entry_point(wheel):
    """databricks.yml builds this wheel and calls its console script with arguments the CLI accepts."""
    import fnmatch

    import yaml

    from curation_spark.cli import build_parser
    from curation_spark.config import load_config

    bundle = yaml.safe_load((cu.REPO / "databricks.yml").read_text())
    variables = {name: spec.get("default") for name, spec in bundle["variables"].items()}
    (artifact,) = bundle["artifacts"].values()
    assert artifact["type"] == "whl" and "pip wheel --no-deps -w dist" in artifact["build"]

    configs = {}
    for name, command in (("curation_job", "run"), ("update_job", "update")):
        job = bundle["resources"]["jobs"][name]
        assert job["schedule"]["pause_status"] == "PAUSED"
        assert len(job["schedule"]["quartz_cron_expression"].split()) in (6, 7) and job["schedule"]["timezone_id"]
        (task,) = job["tasks"]
        cluster = next(c for c in job["job_clusters"] if c["job_cluster_key"] == task["job_cluster_key"])
        assert _substitute(cluster["new_cluster"]["spark_version"], variables).startswith("17.")
        assert "autoscale" not in cluster["new_cluster"]  # barrier stages need a fixed set of executors

        wheel_task = task["python_wheel_task"]
        assert wheel_task["package_name"].replace("_", "-") == wheel.name.split("-")[0].replace("_", "-")
        assert f"{wheel_task['entry_point']} = curation_spark.cli:main" in cu.wheel_entry_points(wheel)
        globs = [lib["whl"] for lib in task["libraries"] if "whl" in lib]
        assert globs and all(fnmatch.fnmatch(f"./dist/{wheel.name}", g) for g in globs)

        argv = [_substitute(str(p), variables) for p in wheel_task["parameters"]]
        args = build_parser().parse_args(argv)
        assert args.command == command
        config = load_config(args.config, args.overrides)  # the config file exists and every key is valid
        assert config.input.table == variables["input_table"] and config.input.path is None
        assert config.output.path == f"{variables['output_root']}/{variables['run_name']}"
        assert config.sampling.target_size == int(variables["target_size"])
        assert config.clustering.n_levels >= 2
        configs[name] = config
        assert getattr(args, "fresh", False) == (name == "curation_job")  # the weekly run re-clusters from scratch
    # The daily update works on the weekly run's folder: the same config, or it would be refused.
    assert configs["update_job"].clustering_fingerprint() == configs["curation_job"].clustering_fingerprint()
