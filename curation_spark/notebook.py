"""Helpers for the notebooks in ``notebooks/``: the same cells run on Databricks (widgets,
``display``) and as plain Python scripts (environment variables, printed tables)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any


def _notebook_global(name: str) -> Any:
    """``dbutils``/``display`` as the Databricks notebook defines them, else None."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None and name in shell.user_ns:
            return shell.user_ns[name]
    except ImportError:
        pass
    import __main__

    return getattr(__main__, name, None)


def on_databricks() -> bool:
    return _notebook_global("dbutils") is not None or bool(os.environ.get("DATABRICKS_RUNTIME_VERSION"))


def param(name: str, env: str, default: str, choices: Sequence[str] | None = None) -> str:
    """A widget on Databricks (created with its default), else the environment variable or the default."""
    dbutils = _notebook_global("dbutils")
    if dbutils is None:
        return os.environ.get(env, default)
    if choices:
        dbutils.widgets.dropdown(name, default, list(choices))
    else:
        dbutils.widgets.text(name, default)
    return dbutils.widgets.get(name)


def show(df: Any, n: int = 20) -> None:
    """``display`` in a notebook UI, a printed table elsewhere (pandas or Spark frames)."""
    display = _notebook_global("display")
    if display is not None:
        display(df)
        return
    print(df.to_string() if hasattr(df, "to_string") else df.limit(n).toPandas().to_string())


#: The recipe the notebooks default to (01_cluster and 04_update must agree: a run folder is
#: tied to its config).
DEFAULT_OVERRIDES = ("clustering.n_levels=2; clustering.n_clusters=[1000,100]; clustering.n_iters=20; "
                     "clustering.n_resampling_steps=[5,5]; clustering.sample_size=[10,3]")


def default_run_path() -> str:
    """The run folder the notebooks write and read unless the ``run`` widget says otherwise."""
    return "/Volumes/main/default/curation/runs/notebook" if on_databricks() else "runs/notebook"


def run_config_params() -> dict[str, Any]:
    """The widgets a notebook that clusters or updates a run takes (environment variables
    outside Databricks): ``input_path`` / ``input_table``, ``run``, ``config`` and
    ``overrides`` (``key=value`` separated by ``;``), plus the config they make (validated
    before any Spark job)."""
    from curation_spark.config import load_config

    input_path = param("input_path", "CURATION_INPUT", "").strip()
    input_table = param("input_table", "CURATION_INPUT_TABLE", "").strip()
    run_path = param("run", "CURATION_RUN", default_run_path()).strip()
    config_file = param("config", "CURATION_CONFIG", "").strip()
    overrides = [s.strip() for s in param("overrides", "CURATION_OVERRIDES", DEFAULT_OVERRIDES).split(";")
                 if s.strip()]
    source = [f"input.path={input_path}"] if input_path else [f"input.table={input_table}"] if input_table else []
    config = load_config([config_file] if config_file else [], [*source, f"output.path={run_path}", *overrides])
    return {"input_path": input_path, "input_table": input_table, "run_path": run_path,
            "config_file": config_file, "overrides": overrides, "config": config}
