"""Helpers for the notebooks in ``notebooks/``: the same cells run on Databricks (widgets,
``display``) and as plain Python scripts (environment variables, printed tables)."""
from __future__ import annotations

import os
from typing import Any, Sequence


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
