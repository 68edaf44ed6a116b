"""The README is executable: its shell blocks run as a user runs them, on a fresh copy.

**The rule** (issue 24): every ```bash (or ```sh / ```shell) block of README.md runs,
except a block whose previous non-blank line is

    <!-- not run by tests: <reason> -->

(for blocks that need a cluster, Databricks, credentials or data the README does not make).
So a new README block is tested unless someone writes down why not. One more exception,
for a line, not a block: ``bash scripts/test.sh`` (``NOT_RUN_LINES``) -- it is this test
suite; run from inside it, it would recurse (CI runs it: ``.ci/run``).

The ```python blocks (the Python quick start) run too, in ``tests/test_wheel.py``: in README
order as one script, in a virtualenv where only the built wheel is installed.

How a block runs:

* in a fresh copy of the repository: the working tree's git-tracked files (``git ls-files``;
  no runs/, data/, build/ or untracked files), mtimes kept; cwd = the copy, so relative
  paths are relative to it, as in a fresh clone;
* ``<copy>/.venv`` is a symlink to the virtualenv running the tests (``sys.prefix``), so
  ``source .venv/bin/activate``, ``.venv/bin/python`` and scripts/bootstrap.sh find it.
  bootstrap.sh re-installs (``pip install -e <copy>``, which would point the shared editable
  install at the copy) when setup.py is newer than the venv's stamp file: the copy keeps
  setup.py's mtime, the fixture refuses to start if even the original tree would re-install,
  and ``test_the_installed_package_is_still_this_tree`` checks nothing was re-installed;
* each block as written, one ``bash -e`` per block, blocks in README order (the notebook
  scripts read the rings the demo writes): ``bash -e -c 'BASH_XTRACEFD=<pipe>; set -x;
  . <block>'``, i.e. ``-e`` plus a trace on a pipe of its own (a shell variable, not
  exported; stdout and stderr are the commands' own) that names the failing command and
  times each one;
* the environment is a terminal where the README's virtualenv is active (``VIRTUAL_ENV``,
  its ``bin`` first on PATH: the state "Using it" leaves, and what scripts/test.sh's
  bootstrap gives CI), with ``CURATION_SPARK_PROGRESS=off`` and without the test run's
  ``SPARK_REMOTE``, ``PYSPARK_*``, ``SPARK_CONF_DIR`` or ``PYTHONPATH``;
* a time limit per block (``block_time_limit``); on failure or timeout the message holds the
  block, the failing command and the tails of stdout and stderr.

The commands are verbatim, so their data cannot be made smaller: the demo's 29,700 rings
and conf/toy.yaml are what a user runs. Each block's seconds, and each of its commands',
are printed to the terminal as the block ends.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import cluster_utils as cu

#: End-to-end runs of the README's commands: outside the fast lane, in CI.
pytestmark = pytest.mark.slow

README = cu.REPO / "README.md"
SHELL_LANGUAGES = ("bash", "sh", "shell")
NOT_RUN_MARKER = re.compile(r"^<!--\s*not run by tests:(?P<reason>.*?)-->\s*$")
#: Lines of runnable blocks that are not run (matched without their trailing comment).
NOT_RUN_LINES = {
    "bash scripts/test.sh": "the test suite itself: run from a test it would recurse; CI runs it (.ci/run)",
}
#: Seconds a block may take per command it holds, and at most (a hang must not eat CI's 25 minutes).
SECONDS_PER_COMMAND = 180
MAX_BLOCK_SECONDS = 600
#: Environment of the test run that a user's terminal would not have.
NOT_INHERITED = ("SPARK_REMOTE", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYSPARK_SUBMIT_ARGS",
                 "SPARK_CONF_DIR", "PYTHONPATH", "PYTHONHOME", "BASH_ENV", "ENV", "VIRTUAL_ENV", "CDPATH")
#: The demo's table rows, in the README's order.
DEMO_ROWS = ("input", "uniform random sample", "flat k-means, equal per cluster", "curated (curation-spark)")
TAIL = 4000
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


# ----------------------------------------------------------------------------- the README's blocks

@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block of README.md."""

    lineno: int              # line of the opening fence, 1-based
    language: str            # the fence's info string ("" for a plain block)
    heading: str             # the nearest heading above it
    text: str                # the lines between the fences
    not_run: str | None      # the marker's reason (shell blocks), else None

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES

    @property
    def runs(self) -> bool:
        return self.is_shell and self.not_run is None

    @property
    def commands(self) -> list[str]:
        """The block's commands: trailing comments cut, ``\\``-continued lines joined, blank
        and comment-only lines dropped."""
        commands, pending = [], ""
        for line in self.text.splitlines():
            code = strip_comment(line)
            if code.endswith("\\"):
                pending += code[:-1].strip() + " "
                continue
            code = (pending + code).strip()
            pending = ""
            if code:
                commands.append(code)
        return commands

    @property
    def script(self) -> str:
        """The block as it runs: the lines of ``NOT_RUN_LINES`` turned into comments (line
        numbers kept), every other line as written."""
        lines = []
        for line in self.text.splitlines():
            reason = NOT_RUN_LINES.get(strip_comment(line))
            lines.append(f"# not run by tests/test_readme.py ({reason}): {line}" if reason else line)
        return "\n".join(lines) + "\n"

    @property
    def name(self) -> str:
        return f"line {self.lineno} ({self.heading})"


def strip_comment(line: str) -> str:
    """``line`` without a shell comment (a ``#`` at the start of a word) and outer blanks."""
    return re.sub(r"(^|\s)#.*$", "", line).strip()


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README, in order, with its heading and not-run marker."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    heading, previous, opened = "", "", None  # opened: (lineno, language, marker line, heading, body)
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if opened is not None:
            if stripped.startswith("```"):
                lineno, language, before, head, body = opened
                marker = NOT_RUN_MARKER.match(before)
                not_run = marker.group("reason").strip() if marker and language in SHELL_LANGUAGES else None
                blocks.append(Block(lineno, language, head, "\n".join(body), not_run))
                opened, previous = None, stripped
            else:
                opened[4].append(line)
            continue
        if stripped.startswith("```"):
            opened = (number, stripped[3:].strip().lower(), previous, heading, [])
        elif stripped.startswith("#"):
            heading = stripped.lstrip("#").strip()
        if stripped:
            previous = stripped
    assert opened is None, f"README: the block opened at line {opened[0]} is never closed"
    return blocks


def runnable_blocks() -> list[Block]:
    return [b for b in readme_blocks() if b.runs]


def parse_ring_table(text: str) -> dict[str, tuple]:
    """Rows ``<name>  <5 counts>  <entropy>`` of a per-ring table, by name."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^(?P<name>\S.*?)\s+" + r"(\d+)\s+" * 5 + r"(\d+\.\d+)\s*$", line.rstrip())
        if match:
            counts = tuple(int(match.group(i)) for i in range(2, 7))
            rows[match.group("name")] = (*counts, float(match.group(7)))
    return rows


def readme_demo_table() -> dict[str, tuple]:
    tables = [parse_ring_table(b.text) for b in readme_blocks() if not b.is_shell]
    tables = [t for t in tables if set(DEMO_ROWS) <= set(t)]
    assert len(tables) == 1, f"README: expected one per-ring table with rows {DEMO_ROWS}, found {len(tables)}"
    return tables[0]


def block_time_limit(block: Block) -> float:
    commands = [c for c in block.commands if c not in NOT_RUN_LINES]
    return min(MAX_BLOCK_SECONDS, SECONDS_PER_COMMAND * max(1, len(commands)))


# ----------------------------------------------------------------------------- running them

@dataclasses.dataclass
class Result:
    block: Block
    returncode: int | None   # None: killed at the time limit
    seconds: float
    stdout: str
    stderr: str
    trace: list[tuple[float, str]]  # (seconds since the start, a line of the xtrace)

    def commands(self) -> list[tuple[float, str]]:
        """(seconds, command) of the block's own commands, as traced: the block is sourced,
        so they are the trace's ``++`` lines (``+`` is the ``.`` itself, ``+++`` and deeper
        what the block sources in turn, e.g. ``.venv/bin/activate``)."""
        own, assignments = [], []
        for start, line in self.trace:
            if not line.startswith("++ "):
                continue
            if ASSIGNMENT.match(line[3:]):  # xtrace shows `A=1 B=2 cmd` as three lines
                assignments.append((start, line[3:]))
                continue
            own.append((assignments[0][0] if assignments else start,
                        " ".join([a for _, a in assignments] + [line[3:]])))
            assignments = []
        own += assignments
        starts = [start for start, _ in own] + [self.seconds]
        return [(later - start, command) for (start, command), later in zip(own, starts[1:])]

    def times(self) -> str:
        """The block's seconds and each of its commands'."""
        state = "timed out" if self.returncode is None else f"exit {self.returncode}"
        lines = [f"README {self.block.name}: {self.seconds:.1f} s, {state}"]
        lines += [f"  {s:7.1f} s  {command[:110]}" for s, command in self.commands()]
        return "\n".join(lines)

    def failure(self, what: str) -> str:
        script = "\n".join(f"  {self.block.lineno + i:4d} | {line}"
                           for i, line in enumerate(self.block.script.splitlines(), 1))
        own = self.commands()
        last = own[-1][1] if own else "(no command traced)"
        return (f"README block at {self.block.name}: {what} after {self.seconds:.1f} s\n"
                f"{script}\nlast command: {last}\n"
                f"--- stdout (tail) ---\n{self.stdout[-TAIL:]}\n--- stderr (tail) ---\n{self.stderr[-TAIL:]}")


def installed_package_dir(python: Path) -> Path:
    """Where ``python`` imports curation_spark from, asked from a folder with no package in it."""
    with_cwd = Path(os.environ.get("TMPDIR", "/tmp"))
    out = subprocess.run([str(python), "-c", "import curation_spark, os; print(os.path.dirname(curation_spark.__file__))"],
                         cwd=with_cwd, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")})
    assert out.returncode == 0, out.stderr[-TAIL:]
    return Path(out.stdout.strip()).resolve()


def copy_tracked_files(dest: Path) -> int:
    """The working tree's git-tracked files into ``dest`` with their mtimes (``copy2``)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=cu.REPO, capture_output=True, check=True).stdout
    count = 0
    for name in filter(None, listed.decode("utf-8").split("\0")):
        source = cu.REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet committed
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
        count += 1
    return count


class Readme:
    """The fresh copy, the environment its blocks run in, and their results."""

    def __init__(self, base: Path):
        self.venv = Path(sys.prefix)
        self.stamp = self.venv / ".curation-spark-installed"
        self.base = base
        self.copy = base / "curation-spark"
        self.results: dict[int, Result] = {}

    def prepare(self) -> None:
        if sys.prefix == sys.base_prefix:
            pytest.fail("tests/test_readme.py runs the README's commands with the virtualenv that runs the "
                        "tests (linked as <copy>/.venv); run pytest from a virtualenv (scripts/test.sh does)")
        setup_py = cu.REPO / "setup.py"
        if not self.stamp.is_file() or setup_py.stat().st_mtime_ns > self.stamp.stat().st_mtime_ns:
            pytest.fail(f"{self.stamp} is missing or older than setup.py: scripts/bootstrap.sh would re-install "
                        f"the package from the README's copy into this venv; run `source scripts/bootstrap.sh` first")
        self.package = installed_package_dir(self.venv / "bin" / "python")
        assert self.package == (cu.REPO / "curation_spark").resolve(), (
            f"this venv imports curation_spark from {self.package}, not from this tree {cu.REPO}")
        self.stamp_mtime = self.stamp.stat().st_mtime_ns
        self.copy.mkdir(parents=True)
        assert copy_tracked_files(self.copy) > 0
        assert (self.copy / "setup.py").stat().st_mtime_ns == setup_py.stat().st_mtime_ns
        (self.copy / ".venv").symlink_to(self.venv, target_is_directory=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        venv_bin = str(self.venv / "bin")
        path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != Path(venv_bin).resolve()]
        env["PATH"] = os.pathsep.join([str(self.copy / ".venv" / "bin"), *path])
        env["VIRTUAL_ENV"] = str(self.copy / ".venv")
        env["CURATION_SPARK_PROGRESS"] = "off"
        return env

    def run(self, block: Block) -> Result:
        tag = f"block_{block.lineno}"
        script = self.base / f"{tag}.sh"  # outside the copy: the copy holds only what the commands write
        script.write_text(block.script, encoding="utf-8")
        stdout_path, stderr_path = self.base / f"{tag}.out", self.base / f"{tag}.err"
        trace: list[tuple[float, str]] = []
        read_end, write_end = os.pipe()
        env = self.env()
        start = time.monotonic()

        def read_trace():
            with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as pipe:
                for line in pipe:
                    trace.append((time.monotonic() - start, line.rstrip("\n")))

        reader = threading.Thread(target=read_trace, daemon=True)
        reader.start()
        with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
            # -e, and xtrace to the pipe through a shell variable (not exported: the
            # commands' own shells and programs neither see it nor inherit the pipe).
            argv = ["bash", "-e", "-c", f'BASH_XTRACEFD={write_end}; set -x; . "$0"', str(script)]
            proc = subprocess.Popen(argv, cwd=self.copy, env=env, stdout=out,
                                    stderr=err, stdin=subprocess.DEVNULL, pass_fds=(write_end,),
                                    start_new_session=True)
            os.close(write_end)
            try:
                returncode = proc.wait(timeout=block_time_limit(block))
            except subprocess.TimeoutExpired:
                returncode = None
                stop_group(proc)
        seconds = time.monotonic() - start
        reader.join(timeout=10)  # a process left running with the pipe open must not hang the test
        result = Result(block, returncode, seconds, stdout_path.read_text(errors="replace"),
                        stderr_path.read_text(errors="replace"), list(trace))
        self.results[block.lineno] = result
        return result


def stop_group(proc: subprocess.Popen) -> None:
    """End the process group this test started for a block (bash and what it started)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def readme(tmp_path_factory):
    state = Readme(tmp_path_factory.mktemp("readme"))
    state.prepare()
    return state


# ----------------------------------------------------------------------------- the tests

def test_the_readme_says_which_blocks_run():
    """The rule is applied as written: every marker stands right before a shell block and
    gives a reason, every excluded line exists, and the demo is among the blocks run."""
    text = README.read_text(encoding="utf-8")
    blocks = readme_blocks(text)
    markers = [line for line in text.splitlines() if "not run by tests" in line and line.lstrip().startswith("<!--")]
    excluded = [b for b in blocks if b.is_shell and b.not_run is not None]
    assert len(markers) == len(excluded), (
        "README: a `<!-- not run by tests: ... -->` line must be the last non-blank line before a ```bash block:\n"
        + "\n".join(markers))
    assert all(b.not_run for b in excluded), [b.name for b in excluded if not b.not_run]
    running = [b for b in blocks if b.runs]
    lines = {strip_comment(line) for b in running for line in b.text.splitlines()}
    assert set(NOT_RUN_LINES) <= lines, f"NOT_RUN_LINES not found in any block run: {set(NOT_RUN_LINES) - lines}"
    assert any("bash scripts/demo.sh" in b.commands for b in running), "the README's demo command is not run"
    assert any(b.language == "python" for b in blocks), "README: no Python quick start (tests/test_wheel.py runs it)"


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: re.sub(r"\W+", "_", f"line{b.lineno}_{b.heading}")[:60].strip("_"))
def test_readme_block_runs(readme, block, capsys):
    result = readme.run(block)
    with capsys.disabled():  # the seconds go to the terminal (CI's log), pass or fail
        print(f"\n{result.times()}")
    if result.returncode is None:
        pytest.fail(result.failure(f"killed at the time limit of {block_time_limit(block):.0f} s"), pytrace=False)
    if result.returncode != 0:
        pytest.fail(result.failure(f"exit code {result.returncode}"), pytrace=False)


def test_the_demo_prints_the_readmes_table(readme):
    """The per-ring counts and entropies the demo printed are the README's, number for number."""
    demo = [r for r in readme.results.values() if "bash scripts/demo.sh" in r.block.commands]
    assert demo, "the README block with `bash scripts/demo.sh` did not run in this session"
    printed = parse_ring_table(demo[0].stdout)
    expected = readme_demo_table()
    assert [name for name in printed if name in DEMO_ROWS] == list(DEMO_ROWS), demo[0].failure("table rows")
    assert {name: printed[name] for name in DEMO_ROWS} == {name: expected[name] for name in DEMO_ROWS}


def test_the_installed_package_is_still_this_tree(readme):
    """Nothing in the README's commands re-installed the package from the copy."""
    assert readme.results, "no README block ran"
    assert installed_package_dir(readme.venv / "bin" / "python") == readme.package
    assert readme.stamp.stat().st_mtime_ns == readme.stamp_mtime, "scripts/bootstrap.sh re-installed the package"
