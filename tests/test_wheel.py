"""The package as a wheel: what the Databricks bundle and ``--py-files`` ship.

The wheel is built from a copy of the sources (``pip wheel --no-deps``), its contents are
checked (every module, the ``curation-spark`` console script), and its entry point is run
under ``spark-submit --py-files <wheel>`` from a scratch folder with no PYTHONPATH, so the
package is imported from the wheel and not from the editable install of the source tree.
And the wheel ``pip install``-ed into a fresh virtualenv runs the README's Python quick start
(a notebook's steps: ``cs.Config.from_dict``, ``cs.run(config, df)``, the ``Run`` handle,
``cs.open_run``, ``HierarchicalKMeans`` in a ``Pipeline``, save and load); its tables equal
the ones the wheel's ``curation-spark run`` writes for the same rows and config.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

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
    recipes = sorted(p.name for p in (cu.REPO / "conf").glob("*.yaml"))
    assert recipes and [n for n in recipes if f"curation_spark/conf/{n}" not in names] == []  # the recipes ship
    assert "curation_spark/py.typed" in names
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


# ----------------------------------------------------------------------------- the wheel, installed

#: Checks appended to the README's Python quick start when it runs from the installed wheel:
#: where the package came from, the tables it wrote, and the data for the CLI's twin run.
WHEEL_CHECKS = '''
import json, os
assert run.path.endswith("/runs/py") and cs.open_run("runs/py").tables == run.tables
df.write.mode("overwrite").parquet("data/same")        # the same rows, for the CLI's run
from curation_spark.cli import main as cli_main        # the console script's function, on this session
assert cli_main(["run", "--set", "input.path=data/same", "--set", "output.path=runs/cli",
                 "--set", "sampling.target_size=1000", "--set", "clustering.n_levels=2",
                 "--set", "clustering.n_clusters=[100,10]"]) == 0
print("WHEEL " + json.dumps({
    "package": os.path.dirname(cs.__file__), "levels": [lv.n_clusters for lv in run.levels],
    "curated": run.curated().count(), "tables": run.tables, "more": more.count(),
    "placed": placed.count(), "placed_columns": placed.columns,
    "transformed": model.transform(vectors).columns}))
'''


@pytest.fixture(scope="module")
def wheel_venv(wheel, tmp_path_factory):
    """A fresh virtualenv where ``pip install <wheel>`` installed curation-spark from the wheel
    (not editable). Its dependencies are this test environment's, offered through a folder of
    links that leaves out curation-spark itself, so pip finds them installed and CI downloads
    nothing; the package can then only come from the wheel."""
    import sysconfig

    base = tmp_path_factory.mktemp("wheel_venv")
    deps = base / "deps"
    deps.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if not entry.name.lower().startswith(("curation_spark", "__editable__", "curation-spark")):
            (deps / entry.name).symlink_to(entry)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    venv_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    (venv_site / "test-dependencies.pth").write_text(f"{deps}\n")
    result = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(wheel)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return venv


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SPARK_REMOTE", "PYSPARK_SUBMIT_ARGS")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               PYSPARK_PYTHON=str(venv / "bin" / "python"), PYSPARK_DRIVER_PYTHON=str(venv / "bin" / "python"),
               CURATION_SPARK_PROGRESS="off")
    return env


def test_the_readme_python_quick_start_runs_from_the_installed_wheel(wheel_venv, tmp_path):
    """The README's Python blocks, in order as one notebook, with only the wheel installed;
    the wheel's CLI (``cli.main``, on the notebook's session: no second JVM) runs the same
    rows and config and writes the same tables; its console script lists the packaged
    recipes and validates with one by name, outside the repository."""
    from test_readme import readme_blocks

    blocks = [b for b in readme_blocks() if b.language == "python"]
    assert len(blocks) >= 2, "README: expected the Python quick start and the Estimator block"
    script = tmp_path / "quick_start.py"
    script.write_text("\n".join(b.text for b in blocks) + "\n" + WHEEL_CHECKS)
    work = tmp_path / "work"
    work.mkdir()
    env = _clean_env(wheel_venv)
    result = subprocess.run([str(wheel_venv / "bin" / "python"), str(script)], cwd=work, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    facts = json.loads(next(line[6:] for line in result.stdout.splitlines() if line.startswith("WHEEL ")))
    assert Path(facts["package"]).is_relative_to(wheel_venv), facts["package"]  # the wheel's, not the tree's
    assert facts["levels"] == [100, 10] and facts["curated"] == 1000 and facts["more"] == 3000
    assert facts["tables"] == {"curated": 1000, "curated_3000_c_m2_s0": 3000}
    assert facts["placed"] == 100 and facts["placed_columns"] == ["id", "cluster_path", "distance"]
    assert facts["transformed"] == ["id", "raw", "features", "prediction", "cluster_path"]

    listed = subprocess.run([str(wheel_venv / "bin" / "curation-spark"), "configs"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and listed.stdout.startswith("kmeans ") and "\ntoy " in listed.stdout
    checked = subprocess.run([str(wheel_venv / "bin" / "curation-spark"), "validate", "toy",
                              "--set", "input.path=data/same"], cwd=work, env=env, capture_output=True, text=True,
                             timeout=300)  # a packaged recipe, by name, outside the repository
    assert checked.returncode == 0 and "ok: 10000 rows, dimension 16" in checked.stdout, checked.stderr[-3000:]
    from deltalake import DeltaTable

    def table(run, name, columns):
        frame = DeltaTable(str(work / "runs" / run / name)).to_pandas(columns=columns)
        return frame.sort_values(columns).reset_index(drop=True)

    for name, columns in (("level_1/assignments", ["point_id", "cluster_id"]),
                          ("level_2/assignments", ["point_id", "cluster_id"]),
                          ("level_2/centroids", ["cluster_id", "flat_size", "parent_id"]),
                          ("curated", ["id", "copy", "cluster_id"])):
        python_side, cli_side = table("py", name, columns), table("cli", name, columns)
        assert python_side.equals(cli_side), f"{name}: the Python API's and the CLI's tables differ"
