"""The documentation site (mkdocs.yml, docs/): it builds with --strict, and its two generated
pages say what the code says. No Spark.

The generated tables are parsed back and compared with the code they come from (the config
dataclasses and ``DEFAULTS``, the argparse parser), so a key, a default, a command or an
option that the code has and the page lacks (or the other way round) fails here.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from curation_spark import cli, config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load_hook():
    spec = importlib.util.spec_from_file_location("docs_reference_hook", DOCS / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _load_hook()


def _cells(line: str) -> list[str]:
    """The cells of one Markdown table row (``\\|`` is a pipe inside a cell)."""
    parts = re.split(r"(?<!\\)\|", line.strip())
    return [p.strip().replace("\\|", "|") for p in parts[1:-1]]


def _sections(markdown: str) -> dict[str, list[str]]:
    """``## heading`` -> the lines below it, up to the next one."""
    out: dict[str, list[str]] = {}
    current = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def _table_rows(lines: list[str]) -> list[list[str]]:
    """Body rows of the Markdown tables in ``lines`` (header and rule rows left out)."""
    rows, previous = [], ""
    for line in lines:
        if line.startswith("|"):
            cells = _cells(line)
            is_rule = all(set(c) <= set("-: ") for c in cells)
            if not is_rule and previous.startswith("|"):
                rows.append(cells)
        previous = line
    return rows


def _unquote(cell: str) -> str:
    assert cell.startswith("`") and cell.endswith("`"), cell
    return cell[1:-1]


# --------------------------------------------------------------------------- the site


def test_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site / "index.html").is_file()
    config_page = (site / "reference" / "configuration.html").read_text(encoding="utf-8")
    cli_page = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    assert reference.CONFIG_MARKER not in config_page and reference.CLI_MARKER not in cli_page
    assert "clustering.n_clusters" in config_page and "--target-size" in cli_page
    api_page = (site / "reference" / "python-api.html").read_text(encoding="utf-8")
    assert "open_run" in api_page and "Run" in api_page


# --------------------------------------------------------------------------- configuration reference


def _config_rows() -> dict[str, dict[str, list[str]]]:
    """section heading -> key -> [type, default, meaning], parsed from the generated page."""
    out: dict[str, dict[str, list[str]]] = {}
    for heading, lines in _sections(reference.config_reference_markdown()).items():
        rows = {}
        for cells in _table_rows(lines):
            assert len(cells) == 4, cells
            rows[_unquote(cells[0])] = cells[1:]
        out[heading] = rows
    return out


def test_configuration_reference_names_every_key_of_every_section():
    parsed = _config_rows()
    assert list(parsed) == list(config.SECTIONS), "one heading per config section, in SECTIONS' order"
    for section, cls in config.SECTIONS.items():
        want = [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
        assert list(parsed[section]) == want, f"{section}: the page's keys differ from the dataclass fields"
        assert [k.split(".", 1)[1] for k in want] == list(config.DEFAULTS[section])


def test_configuration_reference_defaults_are_the_real_defaults():
    parsed = _config_rows()
    for section, rows in parsed.items():
        for key, (kind, default, meaning) in rows.items():
            name = key.split(".", 1)[1]
            shown = yaml.safe_load(_unquote(default))
            assert shown == config.DEFAULTS[section][name], f"{key}: the page shows {default}"
            assert kind, f"{key}: no type"
            assert meaning.strip(), (f"{key}: no meaning; add a `#:` comment above the field in "
                                     "curation_spark/config.py (or a line in docs/hooks/reference.py MEANINGS)")


def test_configuration_reference_types_follow_the_annotations():
    parsed = _config_rows()
    words = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "mapping"}
    for section, cls in config.SECTIONS.items():
        for f in dataclasses.fields(cls):
            default = getattr(cls(), f.name)
            kind = parsed[section][f"{section}.{f.name}"][0]
            if isinstance(default, tuple):
                assert "list" in kind, (f.name, kind)
            elif type(default) in words:
                assert words[type(default)] in kind, (f.name, kind)
            if config.DEFAULTS[section][f.name] is None:
                assert "null" in kind, (f.name, kind)


def test_meanings_written_in_the_docs_name_existing_keys():
    keys = {f"{s}.{f.name}" for s, cls in config.SECTIONS.items() for f in dataclasses.fields(cls)}
    stale = sorted(set(reference.MEANINGS) - keys)
    assert not stale, f"docs/hooks/reference.py MEANINGS names keys the config no longer has: {stale}"


def test_allowed_values_are_the_validators():
    parsed = _config_rows()
    assert "`kmeans++`" in parsed["clustering"]["clustering.init"][2]
    for value in config.DISTANCES:
        assert f"`{value}`" in parsed["clustering"]["clustering.distance"][2]


# --------------------------------------------------------------------------- CLI reference


def _parser_commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _argument_column(lines: list[str]) -> list[str]:
    return [_unquote(cells[0]) for cells in _table_rows(lines)]


def test_cli_reference_names_every_command_and_option():
    sections = _sections(reference.cli_reference_markdown())
    commands = _parser_commands()
    assert set(sections) == {"Synopsis", *commands}, "one section per subcommand (and the synopsis)"
    parser = cli.build_parser()
    global_options = {o for a in parser._actions if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction))
                      for o in a.option_strings}
    synopsis = " ".join(_argument_column(sections["Synopsis"]))
    for option in global_options:
        assert option in synopsis, f"global option {option} missing from the synopsis"
    for name, sub in commands.items():
        listed = _argument_column(sections[name])
        text = "\n".join(sections[name])
        assert f"curation-spark {name}" in text, f"{name}: no usage line"
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.option_strings:
                label = action.metavar or action.dest
                assert any(cell.split()[0] == label for cell in listed), f"{name}: positional {label} missing"
                continue
            for option in action.option_strings:
                if option in global_options:
                    continue
                assert any(option in re.split(r"[ ,]+", cell) for cell in listed), f"{name}: {option} missing"
        if sub.description:
            assert " ".join(sub.description.split())[:60] in " ".join(text.split()), f"{name}: description missing"


# --------------------------------------------------------------------------- the pages


def test_module_docstrings_cite_pages_that_exist():
    for module in ("curation/hierarchy.py", "curation/sampling.py", "method/inprocess.py"):
        first = (ROOT / "curation_spark" / module).read_text(encoding="utf-8").splitlines()[0]
        cited = re.findall(r"docs/[\w/-]+\.md", first)
        assert cited and "DESIGN.md" not in first, first
        for page in cited:
            assert (ROOT / page).is_file(), f"{module} cites {page}, which does not exist"


def test_no_dates_outside_the_performance_page_and_no_design_file():
    for page in DOCS.rglob("*.md"):
        text = page.read_text(encoding="utf-8")
        assert "DESIGN.md" not in text, page
        assert not re.search(r"\bissue \d+", text, re.IGNORECASE), f"{page}: internal issue number"
        if page.name != "performance.md":
            assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), f"{page}: dates belong on performance.md"


def test_the_getting_started_python_is_the_readmes_tested_one():
    """The Python quick start of docs/getting-started.md is the README's, which
    tests/test_wheel.py runs from an installed wheel; an edit to one alone fails here."""
    fence = re.compile(r"```python\n(.*?)```", re.S)
    readme = fence.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    page = fence.findall((DOCS / "getting-started.md").read_text(encoding="utf-8"))
    assert readme and page == readme
