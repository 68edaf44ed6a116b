"""What the spark-submit scripts in ``jobs/`` share: flags -> CLI arguments, the config
checked before Spark starts, and the session spark-submit configured."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

#: Spark's log level in the jobs unless ``spark.log.level`` is set.
QUIET_LOG_LEVEL = "WARN"


def config_job_args(command: str, argv: Sequence[str], prog: str, description: str,
                    overwrite: bool = True) -> list[str]:
    """``--config FILE`` (repeatable), ``--set KEY=VALUE`` (repeatable), ``--overwrite``
    (where the command has it), ``--debug`` -> the equivalent ``curation-spark COMMAND``
    arguments."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML config (repeatable)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    if overwrite:
        p.add_argument("--overwrite", action="store_true", help="replace a run folder made with a different config")
    p.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    a = p.parse_args(list(argv))
    sets = [x for kv in a.overrides for x in ("--set", kv)]
    return ["--debug"] * a.debug + [command, *a.config, *sets] + ["--overwrite"] * getattr(a, "overwrite", False)


def config_job(command: str, prog: str, doc: str, overwrite: bool = True
               ) -> tuple[Callable[[Sequence[str]], list[str]], Callable[[Sequence[str] | None], int]]:
    """``cli_args`` and ``main`` of a job that takes a config (``jobs/cluster.py``,
    ``curate.py``, ``dedup.py``, ``update.py``): the job file is its docstring and these
    two names; ``overwrite``: whether the command takes ``--overwrite``."""

    def cli_args(argv: Sequence[str]) -> list[str]:
        return config_job_args(command, argv, prog, doc.splitlines()[0], overwrite)

    def main(argv: Sequence[str] | None = None) -> int:
        return launch(cli_args(sys.argv[1:] if argv is None else argv))

    return cli_args, main


def launch(cli_args: list[str], check_config: bool = True) -> int:
    """Validate the config (one-line error, exit 2), take spark-submit's session, run the CLI."""
    import curation_spark
    from curation_spark.cli import build_parser
    from curation_spark.cli import main as cli_main
    from curation_spark.config import load_config
    from curation_spark.errors import CurationError

    if check_config:
        parsed = build_parser().parse_args(cli_args)
        try:
            load_config(parsed.config, parsed.overrides)
        except CurationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    from pyspark.sql import SparkSession

    # Without .master(): spark-submit's settings stand; get_spark() then returns this session.
    from curation_spark.io.spark_api import is_connect, master

    spark = SparkSession.builder.getOrCreate()  # (a Spark Connect session when SPARK_REMOTE is set)
    if not is_connect(spark) and not spark.conf.get("spark.log.level", None):
        # Spark's INFO log (query plans, task lines) drowns the job's own summary lines:
        # WARN unless the submitter chose a level (--conf spark.log.level=INFO).
        spark.sparkContext.setLogLevel(QUIET_LOG_LEVEL)
    where = f"Spark Connect {os.environ.get('SPARK_REMOTE', '')}".strip() if is_connect(spark) else \
        f"master {master(spark)}"
    print(f"curation_spark {curation_spark.__version__} from {curation_spark.__file__}; {where}", file=sys.stderr)
    return cli_main(cli_args)
