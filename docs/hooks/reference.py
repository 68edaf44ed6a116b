"""Generated reference pages of the documentation site (an MkDocs hook, ``hooks:`` in mkdocs.yml).

Two pages are written from the code at build time, never by hand:

* the **configuration reference** (``docs/reference/configuration.md``) from the config
  dataclasses of :mod:`curation_spark.config`: ``SECTIONS`` names the sections and their
  frozen dataclasses, ``DEFAULTS`` holds the defaults in the YAML file's shape, the type is
  the field's annotation, the allowed values and lower bounds come from the validation
  calls in ``build_config``, and the meaning of a key is the ``#:`` comment above its field
  (else a line of :data:`MEANINGS` below);
* the **CLI reference** (``docs/reference/cli.md``) from the argparse parser of
  :func:`curation_spark.cli.build_parser`: every command's usage, description and arguments.

A page asks for one of them with a marker line (``<!-- generated: configuration-reference -->``
or ``<!-- generated: cli-reference -->``), replaced in ``on_page_markdown``. The two
functions :func:`config_reference_markdown` and :func:`cli_reference_markdown` are plain
functions, so ``tests/test_docs.py`` calls them and parses their tables back.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import os
import re
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the checkout's package, also without `pip install -e .`
    sys.path.insert(0, str(ROOT))

CONFIG_MARKER = "<!-- generated: configuration-reference -->"
CLI_MARKER = "<!-- generated: cli-reference -->"

#: What a key means, where the ``#:`` comment above its field in ``curation_spark/config.py``
#: does not say it (shown before that comment when both exist). ``tests/test_docs.py`` fails
#: on a line here whose key is not a config key any more, and on a config key that has neither.
MEANINGS: dict[str, str] = {
    "input.path": "Parquet or Delta folder (or URI: `s3a://`, `abfss://`, `dbfs:/`, `/Volumes/...`) holding the "
                  "embeddings; the format is detected. Give this or `input.table`. A relative path is relative to "
                  "the folder you run in.",
    "input.table": "Catalog table (`catalog.schema.table`) holding the embeddings, instead of `input.path`.",
    "input.format": "Format of `input.path`: detected (`auto`), or forced.",
    "input.id_col": "Column with a unique, non-null scalar id per row (integer or string).",
    "input.embedding_col": "Column with the embedding: `array<float>`, `array<double>` or an ML `Vector`, one "
                           "dimension for all rows, no NaN/Inf.",
    "output.path": "The run folder: every table and `run.json` of the run (must not overlap the input).",
    "output.format": "Format of the run folder's tables: Delta (atomic commits, history) or Parquet (written to a "
                     "temporary folder and renamed into place).",
    "clustering.n_levels": "Number of levels of the hierarchy (the reference's `n_levels`).",
    "clustering.n_clusters": "K of each level: a list of `n_levels` values (one value: the same K at every level).",
    "clustering.n_iters": "Lloyd iterations of each level's k-means (and of each resampling step's).",
    "clustering.n_splits": "Above 1: after the level's k-means, split every cluster into this many sub-clusters by "
                           "its own small k-means; the non-empty sub-clusters become the level's clusters.",
    "clustering.n_resampling_steps": "Resampling steps per level (only where the level's `sample_size` is above 1). "
                                     "0 turns resampling off, which leaves plain k-means.",
    "clustering.sample_size": "Points taken from each cluster by a resampling step; resampling runs where it is "
                              "above 1. The default is half the level's mean cluster size, rounded, at least 1 "
                              "(29,700 points in 1,000 clusters: 15).",
    "clustering.sampling_strategy": "Which points of each cluster a resampling step takes: `c` the closest to the "
                                    "centroid, `r` seeded-random.",
    "clustering.init": "k-means initialisation: `auto` is k-means++ below 2048 clusters and the two-level init from "
                       "2048 on; `random` picks K sample points.",
    "clustering.init_sample_size": "Rows of the seeded init sample (default: 20 per cluster, at least 10,000, at "
                                   "most 256 MB).",
    "clustering.assignment": "How points find their nearest centroid: `exact` (bounded exact search), `index` "
                             "(centroid index only, for large K), `auto` (from `index_min_clusters` on, the cheaper of "
                             "the index's paths and exact search by a counted cost model, never an index path that "
                             "costs more than exact search).",
    "clustering.index_min_clusters": "Clusters from which `assignment: auto` considers the centroid index (below, "
                                     "exact search only); from there the counted cost model decides per iteration.",
    "clustering.index_neighbours": "Index path: the fewest candidate centroids per point on the *prior* path (the "
                                   "nearest centroids of its previous centroid); widths up to 1,024 are tried on the "
                                   "sample, cheapest on target first.",
    "clustering.index_probes": "Index path: the fewest inverted lists a point scans on the *probe* path; each "
                               "iteration tries it doubled on a 512-point sample and takes the narrowest on target "
                               "(under `auto` only while it costs less than exact search).",
    "clustering.in_process_max_mb": "A level whose float32 points take at most this many MB runs in one process "
                                    "(numpy/faiss in the driver) instead of as Spark jobs; 0 turns this off.",
    "clustering.degenerate_share": "A level whose largest cluster holds more than this share of its points is "
                                   "logged as a warning and flagged in `run.json` and the report.",
    "clustering.distance": "`auto`: cosine (spherical k-means) when every measured embedding norm is within 0.01 "
                           "of 1, else `l2`; `l2` and `cosine` are used as given.",
    "clustering.seed": "Run seed: every random choice of the hierarchy draws from a stream derived from it.",
    "clustering.tol": "Stop a k-means early when the centroids' shift falls to this (0: run all `n_iters`).",
    "clustering.engine": "`barrier`: each k-means is one barrier stage that loads the points once; `passes`: one "
                         "Spark job per iteration (where barrier mode is not available, e.g. dynamic allocation).",
    "clustering.num_partitions": "Tasks of each k-means (default: the cluster's task slots). Pin it for "
                                 "bit-identical results across clusters.",
    "sampling.target_size": "Rows of the curated table (copies included). Required by `run`.",
    "sampling.multiplier": "Most copies of one point in the curated table.",
    "sampling.strategy": "Within a level-1 cluster: `r` random points, `c` the closest to the centroid first.",
    "sampling.seed": "Seed of the sampling's random choices.",
    "sampling.keep_columns": "Input columns carried into the curated table (joined back by id).",
    "sampling.table_name": "Name of the curated table inside the run folder.",
    "dedup.enabled": "Remove near-duplicates before clustering. Unset (`null`): on when the config has a `dedup` "
                     "section.",
    "dedup.keep": "Which point of a near-duplicate group stays: `first` (smallest id), `centroid` (closest to its "
                  "coarse cluster's centre), `random` (seeded).",
    "dedup.n_clusters": "Coarse clusters that bound the pairwise comparisons (default: one per 2,000 points).",
    "dedup.probes": "Coarse clusters each point is compared in: its own and the next nearest ones (at most 8).",
    "dedup.n_iters": "Lloyd iterations of the coarse k-means.",
    "dedup.block_rows": "Rows per side of a block pair: the memory bound of one comparison task.",
    "dedup.seed": "Seed of the coarse k-means and of `keep: random`.",
    "tracking.mlflow": "Log `run`, `cluster`, `sample` and `update` to MLflow (needs "
                       "`pip install 'curation-spark[mlflow]'`).",
    "spark.master": "Master of the session started when none is active.",
    "spark.app_name": "Application name of that session.",
    "spark.conf": "Spark settings of that session (`--set spark.conf.spark.driver.memory=8g`); credential-looking "
                  "values are masked wherever a config is shown.",
}


def _modules() -> tuple[ModuleType, ModuleType]:
    from curation_spark import cli, config

    return config, cli


# --------------------------------------------------------------------------- configuration


def _rst_to_markdown(text: str) -> str:
    """Docstring/comment markup (``literal``, :func:`name`) as Markdown code spans."""
    text = re.sub(r":(?:func|class|meth|mod|data|attr):`~?([^`]+)`", r"`\1`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def field_comments(cls: type) -> dict[str, str]:
    """The ``#:`` comment lines right above each field of a dataclass (and of its dataclass
    bases), joined into one text; a class whose source cannot be read contributes none."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines, _ = inspect.getsourcelines(klass)
        except (OSError, TypeError):
            continue
        tree = ast.parse(textwrap.dedent("".join(lines)))
        for node in tree.body[0].body:  # type: ignore[attr-defined]
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                comment = []
                i = node.lineno - 2  # the line above, 0-based
                while i >= 0 and lines[i].strip().startswith("#:"):
                    comment.insert(0, lines[i].strip()[2:].strip())
                    i -= 1
                if comment:  # (in YAML words: None is null)
                    text = _rst_to_markdown(" ".join(comment))
                    out[node.target.id] = re.sub(r"`None`|\bNone(?=:)", "`null`", text)
    return out


def _validation_rules(config: ModuleType) -> dict[str, str]:
    """``section.key`` -> allowed values, read from the validation calls in ``build_config``
    (``_choice(key, value, CHOICES)``, ``_int(key, ..., minimum=n)``, ``_share(key, ...)``,
    ``_bool(key, ...)``), so the reference shows what the loader enforces."""
    rules: dict[str, str] = {}
    functions = [getattr(config, name) for name in ("build_config", "_tracking") if hasattr(config, name)]
    for function in functions:
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(function)))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args):
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            key, name = first.value, node.func.id
            if name == "_choice" and len(node.args) > 2 and isinstance(node.args[2], ast.Name):
                choices = getattr(config, node.args[2].id, None)
                if choices:
                    rules[key] = "one of " + ", ".join(f"`{c}`" for c in choices)
            elif name == "_int":
                minimum = next((kw.value.value for kw in node.keywords
                                if kw.arg == "minimum" and isinstance(kw.value, ast.Constant)), None)
                if minimum is not None:
                    rules[key] = f"at least {minimum}"
            elif name == "_share":
                rules[key] = "a share in (0, 1]"
    # per-level keys are checked in a loop (the key is a variable there): name their rule here
    if "STRATEGIES" in vars(config):
        rules.setdefault("clustering.sampling_strategy", "one of " + ", ".join(f"`{c}`" for c in config.STRATEGIES))
    return rules


_TYPE_WORDS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "None": "null"}


def yaml_type(annotation: str, per_level: bool = False) -> str:
    """A field's annotation in the words of a YAML file (``tuple[int, ...]`` -> list of integers)."""
    annotation = annotation.replace(" ", "")
    if annotation.startswith("tuple[") and annotation.endswith(",...]"):
        element = yaml_type(annotation[len("tuple["):-len(",...]")])
        return f"{element}, or a list of one per level" if per_level else f"list of {element}"
    if annotation.startswith("dict["):
        return "mapping"
    return " or ".join(_TYPE_WORDS.get(part, part) for part in annotation.split("|"))


def yaml_value(value: Any) -> str:
    """A default as it is written in a YAML file (flow style: ``[100]``, ``null``, ``{}``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    return text.replace("|", "\\|")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def config_reference_markdown() -> str:
    """Markdown tables of every config key, section by section, from ``config.SECTIONS`` and
    ``config.DEFAULTS``: key, type, default, meaning."""
    config, _ = _modules()
    rules = _validation_rules(config)
    per_level = set(getattr(config, "PER_LEVEL_KEYS", ()))
    parts = []
    for section, cls in config.SECTIONS.items():
        doc = _rst_to_markdown(inspect.cleandoc(cls.__doc__ or ""))
        doc = doc.split("\n\n")  # the class docstring's paragraphs; drop an Examples block
        doc = [p for p in doc if not p.lstrip().startswith(("Examples", ">>>"))]
        parts.append(f"## {section}\n")
        if doc:
            parts.append("\n\n".join(" ".join(p.split()) for p in doc) + "\n")
        if section == "clustering" and per_level:
            parts.append("Per-level keys (" + ", ".join(f"`{k}`" for k in sorted(per_level)) +
                         ") take a list of `n_levels` values or one value for every level.\n")
        unfingerprinted = getattr(config, "NOT_IN_FINGERPRINT", ())
        if section == "clustering" and unfingerprinted:
            parts.append("The keys here determine the hierarchy, so a run folder made with other values is "
                         "refused, except " + ", ".join(f"`{k}`" for k in unfingerprinted) +
                         ", which only change what is reported: a run may be resumed with other values.\n")
        comments = field_comments(cls)
        parts.append("| key | type | default | meaning |")
        parts.append("| --- | --- | --- | --- |")
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            meaning = " ".join(text for text in (MEANINGS.get(key), comments.get(f.name)) if text)
            if key in rules:
                meaning = f"{meaning} Allowed: {rules[key]}." if meaning else f"Allowed: {rules[key]}."
            kind = yaml_type(str(f.type), per_level=section == "clustering" and f.name in per_level)
            if config.DEFAULTS[section][f.name] is None and "null" not in kind:
                kind += " or null"
            parts.append(f"| `{key}` | {_cell(kind)} | `{yaml_value(config.DEFAULTS[section][f.name])}` | "
                         f"{_cell(meaning)} |")
        parts.append("")
    return "\n".join(parts)


# --------------------------------------------------------------------------- CLI


def _subcommands(parser: argparse.ArgumentParser) -> tuple[dict[str, argparse.ArgumentParser], dict[str, str]]:
    """The parser's subcommands (name -> parser) and their one-line help."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return dict(action.choices), helps
    return {}, {}


def _argument_name(action: argparse.Action) -> str:
    if not action.option_strings:
        name = action.metavar or action.dest
        return f"{name} ..." if action.nargs in ("*", "+") else name
    takes_value = action.nargs != 0
    value = ""
    if takes_value:
        if action.choices:
            value = " {" + ",".join(map(str, action.choices)) + "}"
        else:
            value = " " + (action.metavar or action.dest.upper())
    return ", ".join(f"{o}{value}" for o in action.option_strings)


def _argument_default(action: argparse.Action) -> str:
    if action.required and action.nargs != "*":
        return "required"
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS, [], ""):
        return ""
    return f"`{action.default}`"


def _argument_help(action: argparse.Action) -> str:
    text = action.help or ""
    if not action.option_strings and action.choices:
        text = f"one of {', '.join(f'`{c}`' for c in action.choices)}. {text}"
    if not action.option_strings and action.nargs == "*":
        text = f"zero or more: {text}"
    return _cell(text)


def _arguments_table(parser: argparse.ArgumentParser, skip: set[str] = frozenset()) -> list[str]:
    rows = ["| argument | default | description |", "| --- | --- | --- |"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if set(action.option_strings) & skip:
            continue
        name = _argument_name(action).replace("|", "\\|")
        rows.append(f"| `{name}` | {_argument_default(action)} | {_argument_help(action)} |")
    return rows if len(rows) > 2 else []


def _usage(parser: argparse.ArgumentParser) -> str:
    return parser.format_usage().rstrip()


def cli_reference_markdown() -> str:
    """Markdown of the ``curation-spark`` command line, from ``cli.build_parser()``: the global
    options, then per command its usage, description and arguments."""
    _, cli = _modules()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width: fixed, for a stable page
    try:
        parser = cli.build_parser()
        commands, helps = _subcommands(parser)
        global_flags = {o for a in parser._actions if not isinstance(a, argparse._SubParsersAction)
                        for o in a.option_strings if o not in ("-h", "--help")}
        parts = ["## Synopsis\n", "```text", f"{_usage(parser)}", "```\n"]
        if parser.description:
            parts += ["```text", parser.description.rstrip(), "```\n"]
        parts += ["Global options, accepted before or after the command:\n", *_arguments_table(parser), ""]
        parts.append("Commands: " + ", ".join(f"[`{name}`](#{name})" for name in commands) + ".\n")
        for name, sub in commands.items():
            parts.append(f"## {name}\n")
            if helps.get(name):
                parts.append(f"{_cell(helps[name])[0].upper()}{_cell(helps[name])[1:]}.\n")
            parts += ["```text", _usage(sub), "```\n"]
            if sub.description:
                parts.append(_cell(sub.description) + "\n")
            table = _arguments_table(sub, skip=global_flags)
            if table:
                parts += table + [""]
            parts.append("Also takes the global options `--debug` and `--quiet`.\n")
        return "\n".join(parts)
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns


# --------------------------------------------------------------------------- MkDocs events

GENERATORS: dict[str, Callable[[], str]] = {CONFIG_MARKER: config_reference_markdown, CLI_MARKER: cli_reference_markdown}


def on_config(config, **_):
    """``mkdocs serve`` reloads this hook on each rebuild: reload the two modules too, so an
    edit of config.py or cli.py shows without a restart."""
    for name in ("curation_spark.config", "curation_spark.cli"):
        if name in sys.modules:
            importlib.reload(sys.modules[name])
    return config


def on_page_markdown(markdown: str, page, config, files, **_) -> str:
    for marker, generate in GENERATORS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown
