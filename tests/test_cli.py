"""The command line: --help, one-line errors with exit code 2 before any work, synth/validate."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from curation_spark import pipeline, synth
from curation_spark.cli import main
from curation_spark.io.tables import read_table


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("synth", "validate", "cluster", "sample", "run", "report", "demo"):
        assert command in out


@pytest.mark.parametrize("argv,debug,quiet", [
    (["--debug", "run", "c.yaml"], True, False), (["run", "c.yaml", "--debug"], True, False),
    (["cluster", "c.yaml", "--verbose"], True, False), (["validate", "c.yaml", "--quiet"], False, True),
    (["run", "c.yaml"], False, False)])
def test_global_flags_before_or_after_the_command(argv, debug, quiet):
    from curation_spark.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.debug, args.quiet) == (debug, quiet)


@pytest.mark.parametrize("argv, message", [
    (["validate", "--set", "input.path=/definitely/not/here"], "input.path: /definitely/not/here does not exist"),
    (["cluster", "--set", "input.path={tmp}", "--set", "output.path={tmp}/run"], "overlaps the input"),
    (["sample", "--run", "{tmp}", "--target-size", "5"], "is not a curation-spark run folder"),
    (["report", "--run", "{tmp}"], "is not a curation-spark run folder")])
def test_path_errors_come_before_spark_starts(tmp_path, argv, message):
    """A fresh CLI process (no session yet, local master): the one-line error comes from the
    preflight, before any JVM or Ivy output."""
    argv = [a.format(tmp=tmp_path) for a in argv]
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_GATEWAY_PORT", "SPARK_REMOTE")}
    out = subprocess.run([sys.executable, "-m", "curation_spark", *argv], capture_output=True, text=True, env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    assert message in out.stderr
    assert out.stderr.strip().count("\n") == 0, out.stderr  # one line: no Spark banner, no Ivy resolution


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "curation_spark", "cluster", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--overwrite" in out.stdout


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("argv, message", [
    (["cluster", "--set", "clustering.n_levels=2", "--set", "clustering.n_clusters=[5]"],
     "clustering.n_clusters: has 1 values but clustering.n_levels is 2"),
    (["cluster", "--set", "clustering.sampling_strategy=q"], "clustering.sampling_strategy: unknown value 'q'"),
    (["cluster", "--set", "output.format=csv"], "output.format: unknown value 'csv'"),
    (["run", "--set", "input.path=/x", "--set", "output.path=/y"], "sampling.target_size: required"),
    (["validate", "--set", "input.path=/definitely/not/here"], "input.path: /definitely/not/here does not exist"),
    (["cluster", "--set", "input.path=/definitely/not/here", "--set", "output.path=/tmp/x"],
     "input.path: /definitely/not/here does not exist"),
    (["validate"], "input.path: no input given"),
    (["sample", "--run", "/definitely/not/a/run", "--target-size", "5"], "is not a curation-spark run folder"),
])
def test_bad_input_is_one_line_exit_2(spark, capsys, argv, message):
    code, err = _error(capsys, argv)
    assert code == 2
    assert message in err
    assert err.count("\n") == 0 and "Traceback" not in err


@pytest.mark.slow
def test_bad_table_and_overlapping_output(spark, capsys, tmp_dir):
    path = os.path.join(tmp_dir, "emb")
    df = spark.createDataFrame([(1, [1.0, 2.0]), (2, [1.0])], "id long, embedding array<float>")
    df.write.format("delta").save(path)
    code, err = _error(capsys, ["validate", "--set", f"input.path={path}"])
    assert code == 2 and "inconsistent dimension: 1 row(s)" in err
    code, err = _error(capsys, ["cluster", "--set", f"input.path={path}", "--set", f"output.path={path}/run"])
    assert code == 2 and "overlaps the input" in err
    assert "run" not in os.listdir(path)  # nothing written


@pytest.mark.slow
def test_generated_mixture_table_equals_the_in_memory_pool(spark, tmp_dir):
    out = os.path.join(tmp_dir, "mix_sharded")
    pipeline.write_mixture(spark, out, 1_003, 6, 7, seed=3, alpha=1.5, n_files=3, partition_by_shard=True)
    table = read_table(spark, out)
    assert sorted(table.columns) == ["embedding", "id", "label", "shard"]
    got = table.orderBy("id").toArrow()
    want = synth.make_gaussian_mixture(1_003, 6, 7, seed=3, alpha=1.5)
    assert got.column("id").to_pylist() == want.column("id").to_pylist()
    assert got.column("label").to_pylist() == want.column("label").to_pylist()
    assert got.column("embedding").to_pylist() == want.column("embedding").to_pylist()
    shards = got.column("shard").to_numpy()
    assert sorted(set(shards.tolist())) == [0, 1, 2] and (np.diff(shards) >= 0).all()  # contiguous id ranges


def test_synth_mixture_bad_arguments_are_one_line(capsys, tmp_dir):
    out = os.path.join(tmp_dir, "never")
    assert main(["synth", "mixture", "--out", out, "--n", "0"]) == 2
    err = capsys.readouterr().err
    assert "synth mixture: n" in err and "Traceback" not in err
    assert not os.path.exists(out)


def test_synth_and_validate(spark, capsys, tmp_dir):
    out = os.path.join(tmp_dir, "mix")
    assert main(["synth", "mixture", "--out", out, "--n", "500", "--dim", "8", "--components", "5"]) == 0
    assert "wrote 500 rows" in capsys.readouterr().out
    assert main(["validate", "--set", f"input.path={out}"]) == 0
    assert "ok: 500 rows, dimension 8" in capsys.readouterr().out
    rings = os.path.join(tmp_dir, "rings")
    pipeline.write_synthetic(spark, synth.make_rings(sizes=(10, 10, 10, 10, 10)), rings, "parquet")
    assert main(["validate", "--set", f"input.path={rings}", "--set", "input.id_col=label"]) == 2
    assert "repeat an id" in capsys.readouterr().err
