"""Progress a user sees: a log handler where nobody configured logging (a script or a
notebook would otherwise print only warnings), and the driver path's iterations."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging, sys
{setup}
from curation_spark.io.progress import ensure_log_handler
ensure_log_handler()
ensure_log_handler()  # twice: still one handler
logging.getLogger("curation_spark.curation.hierarchy").info("level 1: progress line")
logging.getLogger("curation_spark").debug("not shown at INFO")
print(len(logging.getLogger("curation_spark").handlers))
"""


def _run(setup: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(setup=setup)], capture_output=True, text=True,
                          timeout=60)


def test_a_script_without_logging_config_sees_the_progress_lines():
    out = _run("")
    assert out.returncode == 0, out.stderr
    assert "INFO curation_spark.curation.hierarchy: level 1: progress line" in out.stderr
    assert "not shown" not in out.stderr and out.stdout.strip() == "1"


def test_a_configured_logging_is_left_alone():
    out = _run("logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format='%(message)s')")
    assert out.returncode == 0, out.stderr
    assert "progress line" not in out.stderr + out.stdout and out.stdout.strip() == "0"
