"""The repository's promises about itself: CI runs exactly the README's test command."""
from __future__ import annotations

import re

import cluster_utils as cu
from test_readme import readme_blocks


def readme_commands() -> list[str]:
    """The commands of the README's "Two commands" block, without their comments (the block
    parser of tests/test_readme.py, which runs the README's blocks)."""
    blocks = [b for b in readme_blocks() if b.is_shell and b.heading.startswith("Two commands")]
    assert blocks, "README: no 'Two commands' bash block"
    return blocks[0].commands


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    assert len(commands) == 2 and commands[1] == "bash scripts/test.sh", commands
    ci_lines = [line.strip() for line in (cu.REPO / ".ci" / "run").read_text().splitlines()]
    assert ci_lines[-1] == commands[1]  # the last step: its exit code is CI's


#: The modules that may call classic-only APIs, each behind a check of the session's type.
CLASSIC_ONLY_ALLOWED = {"io/spark_api.py", "io/session.py", "io/paths.py", "submit.py"}
CLASSIC_ONLY = re.compile(r"\.sparkContext\b|\._jvm\b|\._jsc\b|\.rdd\b")


def test_classic_only_apis_stay_behind_the_session_check():
    """Spark Connect has no ``sparkContext``, ``_jvm`` or RDDs: the commands' code reaches
    them only through ``io/spark_api.py`` (and the session / file-system layers)."""
    package = cu.REPO / "curation_spark"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        name = str(path.relative_to(package))
        if name in CLASSIC_ONLY_ALLOWED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if CLASSIC_ONLY.search(code) and not code.strip().startswith(("``", '"', "'")):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
