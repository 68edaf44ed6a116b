"""The repository's promises about itself: CI runs exactly the README's test command."""
from __future__ import annotations

import re

import cluster_utils as cu


def readme_commands() -> list[str]:
    """The commands of the README's "Two commands" block, without their comments."""
    text = (cu.REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", text, re.S)
    assert block, "README: no 'Two commands' bash block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    assert len(commands) == 2 and commands[1] == "bash scripts/test.sh", commands
    ci_lines = [line.strip() for line in (cu.REPO / ".ci" / "run").read_text().splitlines()]
    assert ci_lines[-1] == commands[1]  # the last step: its exit code is CI's
