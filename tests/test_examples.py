"""The examples in the public docstrings run, as written, and print what they show.

Each module's examples run in order in one namespace (``cs``, ``spark`` and ``df``, a
2000 x 8 Gaussian mixture with ``id`` and ``embedding`` columns, as a notebook would
have them) and in a fresh working folder, so relative run folders such as ``runs/nb``
are the examples' own.
"""
from __future__ import annotations

import doctest
import importlib
import os

import pytest

pytestmark = pytest.mark.slow

MODULES = ["curation_spark", "curation_spark.config", "curation_spark.api", "curation_spark.ml"]


@pytest.fixture(scope="module")
def frame(spark):
    from curation_spark import synth

    return spark.createDataFrame(synth.make_gaussian_mixture(2000, 8, 6, seed=0)).cache()


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name, spark, frame, tmp_path):
    import curation_spark as cs

    module = importlib.import_module(module_name)
    tests = sorted((t for t in doctest.DocTestFinder().find(module) if t.examples),
                   key=lambda t: (t.lineno or 0, t.name))
    assert tests, f"{module_name}: no examples found"
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    globs = {"cs": cs, "spark": spark, "df": frame}
    report: list[str] = []
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for test in tests:
            test.globs = globs  # one notebook: later examples see the earlier ones' names
            runner.run(test, out=report.append, clear_globs=False)
    finally:
        os.chdir(cwd)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    assert result.attempted >= len(tests)
