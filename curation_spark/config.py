"""Run configuration: YAML files plus ``--set dotted.key=value`` overrides, validated
completely before any Spark session exists.

A config has sections ``input``, ``output``, ``clustering``, ``sampling``, ``dedup``,
``update``, ``tracking`` and ``spark``. The ``clustering`` keys keep the names of the reference implementation
(facebookresearch/ssl-data-curation) so its own YAML files load unchanged: a file whose
top level holds ``n_levels`` (and no ``clustering`` section) is read as the
``clustering`` section, and keys that only matter to SLURM/GPUs are ignored with a
warning naming them. Every error is one :class:`ConfigError` line naming the key.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, overload

import yaml

from curation_spark.errors import ConfigError

log = logging.getLogger(__name__)

#: Keys of the reference's config files that have no meaning on Spark.
REFERENCE_IGNORED_KEYS = (
    "checkpoint_period",
    "dtype",
    "high_precision",
    "ngpus_per_node",
    "nnodes",
    "ncpus_per_gpu",
    "slurm_partition",
    "subset_indices_path",
)

#: Clustering keys that do not change the hierarchy (only what is reported about it): a
#: run folder may be resumed with other values.
NOT_IN_FINGERPRINT = ("degenerate_share", "clamp_n_clusters")

PER_LEVEL_KEYS = ("n_clusters", "n_iters", "n_splits", "n_resampling_steps", "sample_size", "sampling_strategy")

STRATEGIES = ("c", "r")
DISTANCES = ("auto", "l2", "cosine")
#: ``distance: auto`` picks cosine when every measured embedding norm is within this of 1.
UNIT_NORM_TOLERANCE = 1e-2


def resolve_distance(requested: str, norm_min: float | None, norm_max: float | None) -> str:
    """The distance a run uses: ``auto`` is cosine (spherical k-means) for unit-norm
    embeddings (CLIP, DINOv2, sentence-transformers: L2 on them degenerates upper levels)
    and l2 otherwise; an explicit ``l2`` / ``cosine`` is kept."""
    if requested != "auto":
        return requested
    unit = (norm_min is not None and norm_max is not None and abs(norm_min - 1.0) <= UNIT_NORM_TOLERANCE
            and abs(norm_max - 1.0) <= UNIT_NORM_TOLERANCE)
    return "cosine" if unit else "l2"


def resolve_sample_size(requested: int | None, n_points: int, n_clusters: int) -> int:
    """A level's resampling ``sample_size``: as given, or (``None``, the default) half the
    level's mean cluster size, rounded, at least 1 -- the reference recipes' rule of thumb
    (the toy rings: 29,700 points in 1,000 clusters -> 15; 1,000 in 300 -> 2). Resampling
    runs only where it is above 1."""
    if requested is not None:
        return requested
    return max(1, int(round(n_points / (2.0 * max(1, n_clusters)))))


INITS = ("auto", "kmeans++", "two_level", "random")
ASSIGNMENTS = ("auto", "exact", "index")
INPUT_FORMATS = ("auto", "delta", "parquet")
OUTPUT_FORMATS = ("delta", "parquet")
ENGINES = ("barrier", "passes")
KEEP_RULES = ("first", "centroid", "random")

# Every section is a frozen dataclass whose field defaults are *the* defaults: DEFAULTS
# (the YAML-shaped view the loader merges files into) is derived from them.


@dataclass(frozen=True)
class InputConfig:
    """Where the embeddings are: a Parquet/Delta folder (``path``) or a catalog ``table``."""

    path: str | None = None
    table: str | None = None
    format: str = "auto"
    id_col: str = "id"
    embedding_col: str = "embedding"

    def require_source(self) -> None:
        """Commands that read embeddings call this: exactly one of path/table is needed."""
        if not self.path and not self.table:
            raise ConfigError("input.path: no input given (set input.path to a folder or input.table to a "
                              "catalog table)")


@dataclass(frozen=True)
class OutputConfig:
    """The run folder and the format of its tables."""

    path: str | None = None
    format: str = "delta"

    def require_path(self) -> str:
        if not self.output_path_set():
            raise ConfigError("output.path: no output folder given (set output.path, e.g. "
                              "--set output.path=runs/my_run)")
        return str(self.path)

    def output_path_set(self) -> bool:
        return bool(self.path)


@dataclass(frozen=True)
class ClusteringConfig:
    """Hierarchical k-means with resampling; per-level keys hold one value per level.

    The defaults give the method, not plain k-means: every level resamples
    (``n_resampling_steps`` 10, ``sample_size`` ``None`` = half the level's mean cluster
    size, :func:`resolve_sample_size`) and the distance follows the data (``auto``)."""

    n_levels: int = 1
    n_clusters: tuple[int, ...] = (100,)
    n_iters: tuple[int, ...] = (20,)
    n_splits: tuple[int, ...] = (1,)
    n_resampling_steps: tuple[int, ...] = (10,)
    #: ``None``: derived per level from its mean cluster size (:func:`resolve_sample_size`).
    sample_size: tuple[int | None, ...] = (None,)
    sampling_strategy: tuple[str, ...] = ("c",)
    init: str = "auto"
    init_sample_size: int | None = None
    assignment: str = "auto"
    index_min_clusters: int = 256
    index_neighbours: int = 64
    index_probes: int = 64
    in_process_max_mb: int = 256
    degenerate_share: float = 0.5
    distance: str = "auto"
    seed: int = 0
    tol: float = 0.0
    engine: str = "barrier"
    num_partitions: int | None = None
    #: A level asked for more clusters than it has points is refused (one line) unless
    #: this is true; then it gets one cluster per point, as the reference does.
    clamp_n_clusters: bool = False


@dataclass(frozen=True)
class SamplingConfig:
    """Hierarchical balanced sampling into the curated table."""

    target_size: int | None = None
    multiplier: int = 1
    strategy: str = "r"
    seed: int = 0
    keep_columns: tuple[str, ...] = ()
    table_name: str = "curated"


@dataclass(frozen=True)
class DedupConfig:
    """Near-duplicate removal before clustering (``curation-spark dedup``; ``run`` and
    ``cluster`` dedup first when ``enabled``, which a ``dedup`` section in the config sets)."""

    enabled: bool = False
    #: Cosine similarity at or above which two points are near-duplicates. 0.95: near-copies
    #: (re-encoded, resized, cropped by a few pixels, re-punctuated) sit above it in CLIP /
    #: DINOv2 / sentence-embedding space, while distinct items of one concept mostly sit
    #: below; SemDeDup's strongest setting (epsilon = 0.05) is the same threshold.
    threshold: float = 0.95
    keep: str = "first"
    n_clusters: int | None = None
    probes: int = 2
    n_iters: int = 10
    block_rows: int = 2048
    seed: int = 0


@dataclass(frozen=True)
class UpdateConfig:
    """``curation-spark update`` (new rows assigned down a finished hierarchy)."""

    #: Share of an update's new rows farther from their level-1 centroid than 99 % of the
    #: fit's rows, above which ``update`` warns that a full re-cluster is due. Without
    #: drift the share is about 0.01; 0.05 means five times as many new rows as expected
    #: sit in the tail, i.e. the new data brings regions the hierarchy does not cover.
    drift_threshold: float = 0.05


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking (``pip install 'curation-spark[mlflow]'``): ``run``, ``cluster``,
    ``sample`` and ``update`` log the resolved config as params, per-level and sampling
    figures as metrics, and ``run.json`` and the report as artifacts."""

    mlflow: bool = False
    #: The experiment to log into (made when missing); None: the active run's, else
    #: MLflow's default experiment.
    experiment: str | None = None
    #: None: MLflow's own (``MLFLOW_TRACKING_URI``, on Databricks the workspace).
    tracking_uri: str | None = None
    #: The name of the MLflow run started when none is active; None: the run folder's name.
    run_name: str | None = None
    #: Also write the HTML report and log it (a few seconds of plotting).
    log_report: bool = True


@dataclass(frozen=True)
class SparkSettings:
    """The session we start when none is active (an active one is never touched)."""

    master: str = "local[*]"
    app_name: str = "curation-spark"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """A whole, validated run configuration; ``Config()`` is the default one.

    Examples
    --------
    >>> config = cs.Config.from_dict({"clustering": {"n_levels": 2, "n_clusters": [1000, 100]}})
    >>> config.clustering.n_clusters, config.clustering.n_iters, config.input.embedding_col
    ((1000, 100), (20, 20), 'embedding')
    >>> config.replace(**{"clustering.n_iters": 10, "sampling.target_size": 5000}).clustering.n_iters
    (10, 10)
    >>> cs.Config.from_dict(config.to_dict()) == config
    True
    >>> cs.Config.from_dict({"clustering": {"n_iter": 5}})
    Traceback (most recent call last):
    ...
    curation_spark.errors.ConfigError: clustering.n_iter: ...
    """

    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    spark: SparkSettings = field(default_factory=SparkSettings)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """A config from a mapping of sections (the YAML file's shape), validated like a
        file: unknown keys and bad values raise one :class:`ConfigError` naming the key."""
        return build_config(normalise_reference_format(dict(data), source="config"))

    @classmethod
    def from_yaml(cls, *paths: str | Path, overrides: Sequence[str] = ()) -> Config:
        """A config from YAML files (later ones win) and ``section.key=value`` overrides."""
        return load_config(paths, overrides)

    def replace(self, **changes: Any) -> Config:
        """A copy with dotted keys changed and validated again, e.g.
        ``config.replace(**{"clustering.n_iters": 20, "sampling.target_size": 1000})``."""
        data = self.to_dict()
        for key, value in changes.items():
            section, _, name = key.partition(".")
            if section not in DEFAULTS or not name:
                raise ConfigError(f"{key}: expected section.key with a section of {', '.join(DEFAULTS)}")
            data[section][name] = value
        return build_config(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable view (lists instead of tuples); ``from_dict`` takes it back."""
        return json.loads(json.dumps(asdict(self)))

    def fingerprint_fields(self) -> dict[str, Any]:
        """Everything that determines the hierarchy (what :meth:`clustering_fingerprint` hashes)."""
        clustering = {k: v for k, v in asdict(self.clustering).items() if k not in NOT_IN_FINGERPRINT}
        relevant = {"input": asdict(self.input), "clustering": clustering}
        if self.dedup.enabled:  # the hierarchy is built on the kept points only
            relevant["dedup"] = {k: v for k, v in asdict(self.dedup).items() if k != "enabled"}
        return json.loads(json.dumps(relevant))

    def clustering_fingerprint(self) -> str:
        """Hash of everything that determines the hierarchy; a run folder is tied to it."""
        return hashlib.sha256(json.dumps(self.fingerprint_fields(), sort_keys=True).encode()).hexdigest()[:16]


def fingerprint_differences(old: Config, new: Config, same_path=None) -> list[str]:
    """The keys that determine the hierarchy and differ between two configs, as
    ``section.key: old -> new`` (``same_path(a, b)``: whether two path spellings name one
    folder, so ``runs/x`` and ``file:/.../runs/x`` are no difference)."""
    a, b = old.fingerprint_fields(), new.fingerprint_fields()
    out = []
    for section in sorted(set(a) | set(b)):
        left, right = a.get(section, {}), b.get(section, {})
        for key in sorted(set(left) | set(right)):
            x, y = left.get(key), right.get(key)
            if x == y:
                continue
            if key == "path" and same_path is not None and x and y and same_path(x, y):
                continue
            out.append(f"{section}.{key}: {x!r} -> {y!r}" if section in a and section in b
                       else f"{section}: {'removed' if section in a else 'added'}")
    return out


#: Spark settings whose values are credentials (``fs.s3a.secret.key``, ``...account.key...``,
#: ``...password``, ``...token``): masked wherever a config is shown or logged.
SECRET_SETTING = re.compile(r"secret|passw|token|credential|(^|[._-])(access|account|api|private|sas)[._-]?key",
                            re.IGNORECASE)


def redact_spark_conf(conf: Mapping[str, Any]) -> dict[str, Any]:
    """``conf`` with the values of credential-looking keys replaced by ``***``."""
    return {k: ("***" if SECRET_SETTING.search(str(k)) else v) for k, v in conf.items()}


def _yaml_defaults(cls: type) -> dict[str, Any]:
    """A section's defaults in the YAML shape: per-level keys as one value for every level
    (``n_clusters`` as the one-level list), tuples as lists."""
    out: dict[str, Any] = {}
    for f in fields(cls):
        value = getattr(cls(), f.name)
        if f.name in PER_LEVEL_KEYS and cls is ClusteringConfig:
            value = list(value) if f.name == "n_clusters" else value[0]
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = copy.deepcopy(value)
    return out


SECTIONS: dict[str, type] = {"input": InputConfig, "output": OutputConfig, "clustering": ClusteringConfig,
                             "sampling": SamplingConfig, "dedup": DedupConfig, "update": UpdateConfig,
                             "tracking": TrackingConfig, "spark": SparkSettings}
#: The defaults in the YAML file's shape, derived from the dataclasses above.
DEFAULTS: dict[str, dict[str, Any]] = {name: _yaml_defaults(cls) for name, cls in SECTIONS.items()}
DEFAULTS["dedup"]["enabled"] = None  # (unset: a dedup section in the config switches it on)


# --------------------------------------------------------------------------- loading


def load_yaml_file(path: str | Path) -> dict[str, Any]:
    """Read one YAML file into a mapping, normalising the reference's flat format. A file
    that does not exist but is a plain name (``toy``, ``toy.yaml``) is a packaged recipe
    (:mod:`curation_spark.recipes`)."""
    from curation_spark import recipes

    p: Any = Path(path)
    if not p.is_file():
        recipe = recipes.find(str(path))
        if recipe is None:
            if recipes.is_name(str(path)):
                names = ", ".join(recipes.available()) or "none here"
                raise ConfigError(f"config: {path} is neither a file nor a packaged recipe ({names})")
            raise ConfigError(f"config: file not found: {p}")
        p = recipe
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {p} is not valid YAML: {exc}".replace("\n", " ")) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: {p} must hold a mapping of sections, not {type(data).__name__}")
    return normalise_reference_format(data, source=str(p))


def normalise_reference_format(data: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Turn a reference-style flat file (top-level ``n_levels`` …) into our sections.

    Keys that only matter to the reference's SLURM/GPU launcher are dropped with one
    warning that names them. Works on our sectioned format too (ignored keys inside
    ``clustering`` are dropped the same way).
    """
    data = copy.deepcopy(data)
    if "n_levels" in data and "clustering" not in data:
        clustering = {k: data.pop(k) for k in list(data) if k not in DEFAULTS}
        data["clustering"] = clustering
    section = data.get("clustering")
    if isinstance(section, dict):
        ignored = [k for k in REFERENCE_IGNORED_KEYS if k in section]
        for key in ignored:
            value = section.pop(key)
            if key == "subset_indices_path" and value is not None:
                raise ConfigError(
                    "clustering.subset_indices_path: not supported; filter the input table instead "
                    "(e.g. a view or input.table over the subset)"
                )
        if ignored:
            log.warning("%s: ignoring GPU/SLURM-only keys of the reference config: %s", source, ", ".join(ignored))
    return data


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (mappings merge, rest replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict) and key != "conf":
            out[key] = deep_merge(out[key], value)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            merged = dict(out[key])
            merged.update(value)
            out[key] = merged
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``dotted.key=value``; the value is YAML (so ``[100,20]`` is a list)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected dotted.key=value, e.g. --set clustering.n_iters=20")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply repeated ``--set`` overrides in order; unknown sections/keys are refused."""
    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        section = parts[0]
        if section not in DEFAULTS:
            raise ConfigError(f"--set {'.'.join(parts)}: unknown section {section!r} (known: {', '.join(DEFAULTS)})")
        if len(parts) == 1:
            raise ConfigError(f"--set {section}: give a key inside the section, e.g. {section}.<key>=value")
        node = out.setdefault(section, {})
        if section == "spark" and parts[1] == "conf" and len(parts) > 2:
            node.setdefault("conf", {})[".".join(parts[2:])] = value
            continue
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {'.'.join(parts)}: {part} is not a section")
        node[parts[-1]] = value
    return out


def load_config(paths: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> Config:
    """Load YAML files (later ones win), apply ``--set`` overrides, validate, return a Config.

    Raises
    ------
    ConfigError
        One line naming the first offending key.
    """
    data: dict[str, Any] = {}
    origin: dict[str, str] = {}  # "section.key" -> the file or --set that gave it last
    for p in paths:
        layer = load_yaml_file(p)
        origin.update({key: str(p) for key in _dotted_keys(layer)})
        data = deep_merge(data, layer)
    data = apply_overrides(data, overrides)
    origin.update({".".join(parse_override(text)[0][:2]): "--set" for text in overrides})
    data = normalise_reference_format(data, source="--set")
    try:
        return build_config(data)
    except ConfigError as exc:
        key = str(exc).split(":", 1)[0].split("[", 1)[0]
        source = origin.get(key) or origin.get(key.split(".", 1)[0])
        if source is None or source == "--set":
            raise
        raise ConfigError(f"{exc} (in {source})") from None


def _dotted_keys(data: Mapping[str, Any]) -> list[str]:
    """``section`` and ``section.key`` for every key a loaded file sets."""
    keys = []
    for section, body in data.items():
        keys.append(str(section))
        if isinstance(body, Mapping):
            keys.extend(f"{section}.{key}" for key in body)
    return keys


def sampling_only_config(target_size: int, multiplier: int = 1, strategy: str = "r", seed: int = 0,
                         keep_columns: Sequence[str] = ()) -> Config:
    """The config of a ``sample`` over an existing run: typed arguments straight into the
    same validation as a YAML ``sampling`` section (no ``key=value`` strings)."""
    return build_config({"sampling": {"target_size": target_size, "multiplier": multiplier, "strategy": strategy,
                                      "seed": seed, "keep_columns": list(keep_columns)}})


# --------------------------------------------------------------------------- validation


def _check_known(section: str, given: Mapping[str, Any]) -> None:
    known = DEFAULTS[section]
    for key in given:
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown key (known keys: {', '.join(known)})")


def _share(key: str, value: Any) -> float:
    """A fraction in (0, 1]."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"{key}: expected a share in (0, 1], got {value!r}")
    return float(value)


@overload
def _int(key: str, value: Any, minimum: int | None = None, allow_none: Literal[False] = False) -> int: ...
@overload
def _int(key: str, value: Any, minimum: int | None = None, allow_none: bool = False) -> int | None: ...
def _int(key: str, value: Any, minimum: int | None = None, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {value}")
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _choice(key: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{key}: unknown value {value!r} (choose one of: {', '.join(choices)})")
    return value


def _per_level(key: str, value: Any, n_levels: int) -> list[Any]:
    """A per-level key: a list of exactly n_levels values, or one scalar for all levels."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_levels:
            raise ConfigError(f"{key}: has {len(value)} values but clustering.n_levels is {n_levels}")
        return list(value)
    return [value] * n_levels


def build_config(data: Mapping[str, Any]) -> Config:
    """Validate a merged mapping against the schema and defaults and freeze it."""
    for section in data:
        if section not in DEFAULTS:
            raise ConfigError(f"{section}: unknown section (known: {', '.join(DEFAULTS)})")
        if data[section] is not None and not isinstance(data[section], Mapping):
            raise ConfigError(f"{section}: must be a mapping of keys, got {data[section]!r}")
    merged: dict[str, dict[str, Any]] = {}
    for section, defaults in DEFAULTS.items():
        given = data.get(section) or {}
        _check_known(section, given)
        merged[section] = {**copy.deepcopy(defaults), **given}

    inp = merged["input"]
    for key in ("path", "table"):
        if inp[key] is not None and (not isinstance(inp[key], str) or not inp[key].strip()):
            raise ConfigError(f"input.{key}: expected a non-empty string, got {inp[key]!r}")
    if inp["path"] and inp["table"]:
        raise ConfigError("input.path: give either input.path or input.table, not both")
    for key in ("id_col", "embedding_col"):
        if not isinstance(inp[key], str) or not inp[key]:
            raise ConfigError(f"input.{key}: expected a column name, got {inp[key]!r}")
    input_cfg = InputConfig(
        path=inp["path"],
        table=inp["table"],
        format=_choice("input.format", inp["format"], INPUT_FORMATS),
        id_col=inp["id_col"],
        embedding_col=inp["embedding_col"],
    )

    out = merged["output"]
    if out["path"] is not None and (not isinstance(out["path"], str) or not out["path"].strip()):
        raise ConfigError(f"output.path: expected a folder path, got {out['path']!r}")
    output_cfg = OutputConfig(path=out["path"], format=_choice("output.format", out["format"], OUTPUT_FORMATS))

    cl = merged["clustering"]
    n_levels = _int("clustering.n_levels", cl["n_levels"], minimum=1)
    assert n_levels is not None
    levels: dict[str, list[Any]] = {}
    for key in PER_LEVEL_KEYS:
        values = _per_level(f"clustering.{key}", cl[key], n_levels)
        checked: list[Any] = []
        for i, v in enumerate(values):
            name = f"clustering.{key}[{i}]" if isinstance(cl[key], (list, tuple)) else f"clustering.{key}"
            if key == "sampling_strategy":
                checked.append(_choice(name, v, STRATEGIES))
            elif key == "sample_size" and (v is None or v == "auto"):
                checked.append(None)  # half the level's mean cluster size (resolve_sample_size)
            else:
                minimum = 0 if key == "n_resampling_steps" else 1
                checked.append(_int(name, v, minimum=minimum))
        levels[key] = checked
    clamp = cl["clamp_n_clusters"]
    for i in range(1, n_levels):
        most = levels["n_clusters"][i - 1] * levels["n_splits"][i - 1]
        if levels["n_clusters"][i] > most and clamp is not True:
            raise ConfigError(f"clustering.n_clusters[{i}]: level {i + 1} asks for {levels['n_clusters'][i]} clusters "
                              f"but level {i} makes at most {most} to cluster; lower it, or set "
                              "clustering.clamp_n_clusters=true to use one cluster per point")
    tol = cl["tol"]
    if isinstance(tol, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            tol = float(tol)
        except ValueError:
            pass
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0:
        raise ConfigError(f"clustering.tol: expected a number >= 0, got {tol!r}")
    clustering_cfg = ClusteringConfig(
        n_levels=n_levels,
        n_clusters=tuple(levels["n_clusters"]),
        n_iters=tuple(levels["n_iters"]),
        n_splits=tuple(levels["n_splits"]),
        n_resampling_steps=tuple(levels["n_resampling_steps"]),
        sample_size=tuple(levels["sample_size"]),
        sampling_strategy=tuple(levels["sampling_strategy"]),
        init=_choice("clustering.init", cl["init"], INITS),
        init_sample_size=_int("clustering.init_sample_size", cl["init_sample_size"], minimum=1, allow_none=True),
        assignment=_choice("clustering.assignment", cl["assignment"], ASSIGNMENTS),
        index_min_clusters=_int("clustering.index_min_clusters", cl["index_min_clusters"], minimum=1),
        index_neighbours=_int("clustering.index_neighbours", cl["index_neighbours"], minimum=2),
        index_probes=_int("clustering.index_probes", cl["index_probes"], minimum=1),
        in_process_max_mb=_int("clustering.in_process_max_mb", cl["in_process_max_mb"], minimum=0),
        degenerate_share=_share("clustering.degenerate_share", cl["degenerate_share"]),
        distance=_choice("clustering.distance", cl["distance"], DISTANCES),
        seed=_int("clustering.seed", cl["seed"], minimum=0),
        tol=float(tol),
        engine=_choice("clustering.engine", cl["engine"], ENGINES),
        num_partitions=_int("clustering.num_partitions", cl["num_partitions"], minimum=1, allow_none=True),
        clamp_n_clusters=_bool("clustering.clamp_n_clusters", cl["clamp_n_clusters"]),
    )

    sa = merged["sampling"]
    keep = sa["keep_columns"] or []
    if isinstance(keep, str):
        keep = [keep]
    if not isinstance(keep, (list, tuple)) or not all(isinstance(c, str) and c for c in keep):
        raise ConfigError(f"sampling.keep_columns: expected a list of column names, got {sa['keep_columns']!r}")
    reserved = {"id", "copy", "cluster_id"}
    clash = [c for c in keep if c in reserved and c != input_cfg.id_col]
    if clash:
        raise ConfigError(f"sampling.keep_columns: {clash[0]!r} clashes with an output column of the curated table")
    table_name = sa["table_name"]
    if not isinstance(table_name, str) or not table_name or "/" in table_name or table_name.startswith("level_"):
        raise ConfigError(f"sampling.table_name: expected a plain name (no '/', not level_*), got {table_name!r}")
    sampling_cfg = SamplingConfig(
        target_size=_int("sampling.target_size", sa["target_size"], minimum=0, allow_none=True),
        multiplier=_int("sampling.multiplier", sa["multiplier"], minimum=1),
        strategy=_choice("sampling.strategy", sa["strategy"], STRATEGIES),
        seed=_int("sampling.seed", sa["seed"], minimum=0),
        keep_columns=tuple(keep),
        table_name=table_name,
    )

    sp = merged["spark"]
    if not isinstance(sp["conf"], Mapping):
        raise ConfigError(f"spark.conf: expected a mapping of Spark settings, got {sp['conf']!r}")
    if not isinstance(sp["master"], str) or not sp["master"]:
        raise ConfigError(f"spark.master: expected a master URL such as local[*], got {sp['master']!r}")
    spark_cfg = SparkSettings(
        master=sp["master"],
        app_name=str(sp["app_name"]),
        conf={str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in sp["conf"].items()},
    )
    dd = merged["dedup"]
    given = data.get("dedup") or {}
    enabled = dd["enabled"] if dd["enabled"] is not None else bool(given)  # a dedup section switches it on
    if not isinstance(enabled, bool):
        raise ConfigError(f"dedup.enabled: expected true or false, got {dd['enabled']!r}")
    dedup_cfg = DedupConfig(
        enabled=enabled,
        threshold=_share("dedup.threshold", dd["threshold"]),
        keep=_choice("dedup.keep", dd["keep"], KEEP_RULES),
        n_clusters=_int("dedup.n_clusters", dd["n_clusters"], minimum=1, allow_none=True),
        probes=_int("dedup.probes", dd["probes"], minimum=1),
        n_iters=_int("dedup.n_iters", dd["n_iters"], minimum=1),
        block_rows=_int("dedup.block_rows", dd["block_rows"], minimum=16),
        seed=_int("dedup.seed", dd["seed"], minimum=0),
    )
    if dedup_cfg.probes > 8:
        raise ConfigError(f"dedup.probes: at most 8 clusters per point, got {dedup_cfg.probes}")
    update_cfg = UpdateConfig(drift_threshold=_share("update.drift_threshold", merged["update"]["drift_threshold"]))
    return Config(input_cfg, output_cfg, clustering_cfg, sampling_cfg, spark_cfg, dedup_cfg, update_cfg,
                  _tracking(merged["tracking"]))


def _tracking(tr: Mapping[str, Any]) -> TrackingConfig:
    for key in ("experiment", "tracking_uri", "run_name"):
        if tr[key] is not None and (not isinstance(tr[key], str) or not tr[key].strip()):
            raise ConfigError(f"tracking.{key}: expected a non-empty string, got {tr[key]!r}")
    return TrackingConfig(mlflow=_bool("tracking.mlflow", tr["mlflow"]), experiment=tr["experiment"],
                          tracking_uri=tr["tracking_uri"], run_name=tr["run_name"],
                          log_report=_bool("tracking.log_report", tr["log_report"]))
