"""Typed run metadata: what ``run.json`` holds, as dataclasses with one validated way in.

Every reader (``sample``, ``report``, resume, the notebooks) gets these objects from
:meth:`RunMetadata.from_json`, never the raw dict: the config goes through the same
validation as a fresh one (:func:`curation_spark.config.build_config`), every statistic is
checked for its type, and a missing or mistyped value is one error naming the file and the
dotted key. Keys this version does not know (a newer writer) are kept and written back, so
a resume never drops them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from curation_spark.config import Config, build_config
from curation_spark.errors import ConfigError, CurationError


@dataclass
class InputIdentity:
    """What a run records about its input, to refuse resuming over a changed one."""

    n_rows: int | None = None
    dim: int | None = None
    delta_version: int | None = None
    #: The distance ``clustering.distance: auto`` resolved to for this input (None for an
    #: explicit ``l2`` / ``cosine``); part of the identity: a resume must not switch it.
    distance: str | None = None
    #: A DataFrame handed in (no input.path / input.table): an order-free hash of its ids
    #: and embeddings (``bit_xor`` of ``xxhash64(id, embedding)``), what tells a resume
    #: that the rows are the same.
    content_hash: int | None = None


@dataclass
class LevelStats:
    """One level's statistics (``run.json`` ``levels.<l>``): the k-means, each resampling
    step and split, and the final clusters the level's tables hold."""

    level: int
    n_points: int
    n_clusters_requested: int
    n_clusters: int
    engine: str
    objective_kmeans: float
    sizes_kmeans: dict[str, Any]
    sizes_kmeans_histogram: dict[str, Any]
    kmeans_history: list[dict[str, Any]] = field(default_factory=list)
    resampling: list[dict[str, Any]] = field(default_factory=list)
    split: dict[str, Any] | None = None
    objective: float = math.nan
    sizes: dict[str, Any] = field(default_factory=dict)
    sizes_histogram: dict[str, Any] = field(default_factory=dict)
    degenerate: bool = False
    #: The resampling sample size the level used (``clustering.sample_size`` resolved).
    sample_size: int | None = None
    seconds: float = 0.0
    status: str = "running"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The run.json form (what the report's figure functions take)."""
        return _plain(self)

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def n_splits(self) -> int:
        """Clusters each k-means cluster was split into (1: no split)."""
        return int(self.split["n_splits"]) if self.split else 1


@dataclass
class SampleSummary:
    """One curated table (``run.json`` ``samples.<name>``)."""

    target_size: int
    multiplier: int
    strategy: str
    seed: int
    expected_rows: int
    rows: int
    path: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DedupSummary:
    """The near-duplicate removal of a run (``run.json`` ``dedup``; see
    :mod:`curation_spark.curation.dedup`)."""

    points_in: int
    removed: int
    groups: int
    threshold: float
    keep: str
    n_clusters: int
    probes: int
    pairs_compared: int
    pairs_found: int
    rounds: int
    seconds: float
    path: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return self.points_in - self.removed


@dataclass
class DriftBaseline:
    """How far the fit's own rows sit from their level-1 centroid (``run.json``
    ``drift_baseline``): measured when the fit writes level 1 (at the first update for runs
    made before it was recorded); every update's new rows are compared with it."""

    rows: int
    mean_distance: float
    p99_distance: float


@dataclass
class DriftCheck:
    """How well the hierarchy still fits one update's new rows."""

    new_rows: int
    new_mean_distance: float
    old_mean_distance: float
    old_p99_distance: float
    #: New rows farther from their centroid than ``old_p99_distance`` (about 0.01 when the
    #: new rows come from the same distribution as the fit's).
    share_beyond_p99: float
    threshold: float
    recluster_due: bool

    @property
    def mean_ratio(self) -> float:
        return self.new_mean_distance / self.old_mean_distance if self.old_mean_distance > 0 else math.nan


@dataclass
class UpdateSummary:
    """One ``curation-spark update`` (``run.json`` ``updates[]``; ``pending_update`` while
    its tables are being committed, see :mod:`curation_spark.curation.update`)."""

    from_version: int | None
    to_version: int | None
    #: ``change-data-feed`` (Delta input with the feed on over the versions) or ``anti-join``.
    method: str
    rows_read: int
    rows_added: int
    rows_deleted: int
    #: Rows rewritten in place (same id, new values; seen in a change data feed only).
    rows_changed: int
    #: Level-1 points after the update (= the input's rows).
    n_points: int
    samples: list[str]
    staged: str
    started: str
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    drift: DriftCheck | None = None
    status: str = "staged"
    #: The new rows were assigned in the driver and level 1's assignments are rewritten
    #: whole at the commit (a small run: :func:`curation_spark.curation.update.updates_in_driver`).
    in_driver: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunMetadata:
    """The whole of ``run.json``."""

    fingerprint: str
    config: Config
    output_format: str
    input: InputIdentity = field(default_factory=InputIdentity)
    levels: dict[int, LevelStats] = field(default_factory=dict)
    samples: dict[str, SampleSummary] = field(default_factory=dict)
    #: Set once the run's dedup step completed (a run with a ``dedup`` section).
    dedup: DedupSummary | None = None
    #: Completed ``update`` commands, oldest first.
    updates: list[UpdateSummary] = field(default_factory=list)
    #: An update whose tables are staged but not all committed (finished by the next ``update``).
    pending_update: UpdateSummary | None = None
    drift_baseline: DriftBaseline | None = None
    updated: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def distance(self) -> str:
        """The distance the hierarchy was built with (``auto`` resolved for this input)."""
        return self.input.distance or self.config.clustering.distance

    # ------------------------------------------------------------------ out
    def to_dict(self) -> dict[str, Any]:
        out = {
            "fingerprint": self.fingerprint,
            "config": self.config.to_dict(),
            "output_format": self.output_format,
            "input": dataclasses.asdict(self.input),
            "levels": {str(level): _plain(stats) for level, stats in sorted(self.levels.items())},
            "samples": {name: _plain(s) for name, s in self.samples.items()},
            "dedup": _plain(self.dedup) if self.dedup is not None else None,
            "updates": [_plain(u) for u in self.updates],
            "pending_update": _plain(self.pending_update) if self.pending_update is not None else None,
            "drift_baseline": _plain(self.drift_baseline) if self.drift_baseline is not None else None,
            "updated": self.updated,
        }
        return {**self.extra, **out}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=float)

    # ------------------------------------------------------------------ in
    @classmethod
    def from_json(cls, text: str, source: str) -> RunMetadata:
        """Parse and validate ``run.json`` (``source`` names it in errors)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CurationError(f"{source}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> RunMetadata:
        if not isinstance(data, Mapping):
            raise CurationError(f"{source}: expected a JSON object, got {type(data).__name__}")
        for key in ("fingerprint", "config", "output_format"):
            if key not in data:
                raise CurationError(f"{source}: missing {key!r}")
        try:
            config = build_config(data["config"])
        except ConfigError as exc:
            raise CurationError(f"{source}: its config is not valid: {exc}") from None
        levels_raw = _mapping(data.get("levels") or {}, f"{source}: levels")
        samples_raw = _mapping(data.get("samples") or {}, f"{source}: samples")
        levels = {}
        for key, value in levels_raw.items():
            if not str(key).isdigit():
                raise CurationError(f"{source}: levels.{key}: expected a level number")
            levels[int(key)] = _typed(LevelStats, value, f"{source}: levels.{key}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            fingerprint=_check(data["fingerprint"], str, f"{source}: fingerprint"),
            config=config,
            output_format=_check(data["output_format"], str, f"{source}: output_format"),
            input=_typed(InputIdentity, data.get("input") or {}, f"{source}: input"),
            levels=levels,
            samples={str(name): _typed(SampleSummary, value, f"{source}: samples.{name}")
                     for name, value in samples_raw.items()},
            dedup=_check(data.get("dedup"), DedupSummary | None, f"{source}: dedup"),
            updates=[_typed(UpdateSummary, value, f"{source}: updates.{i}")
                     for i, value in enumerate(_sequence(data.get("updates") or [], f"{source}: updates"))],
            pending_update=_check(data.get("pending_update"), UpdateSummary | None, f"{source}: pending_update"),
            drift_baseline=_check(data.get("drift_baseline"), DriftBaseline | None, f"{source}: drift_baseline"),
            updated=_check(data.get("updated"), str | None, f"{source}: updated"),
            extra={k: v for k, v in data.items() if k not in known},
        )


# --------------------------------------------------------------------------- helpers


def _plain(obj: Any) -> dict[str, Any]:
    """A stats dataclass as JSON-ready dict (nested ones too), its unknown keys merged back in."""
    out = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != "extra"}
    out = {k: _plain(v) if dataclasses.is_dataclass(v) else v for k, v in out.items()}
    return {**getattr(obj, "extra", {}), **out}


def _sequence(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise CurationError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CurationError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _typed(cls: type, data: Any, where: str) -> Any:
    """``cls(**data)`` with every field's type checked; unknown keys go to ``extra`` (where
    the class has one)."""
    data = _mapping(data, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name == "extra":
            continue
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise CurationError(f"{where}.{name}: missing")
            continue
        values[name] = _check(data[name], hints[name], f"{where}.{name}")
    unknown = {k: v for k, v in data.items() if k not in fields}
    if "extra" in fields:
        values["extra"] = unknown
    return cls(**values)


def _check(value: Any, hint: Any, where: str) -> Any:
    """``value`` if it fits the type ``hint`` (ints are accepted for floats), else an error."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    for option in options:
        if option is type(None):
            if value is None:
                return None
            continue
        origin = typing.get_origin(option) or option
        if dataclasses.is_dataclass(origin) and isinstance(value, Mapping):
            return _typed(origin, value, where)  # type: ignore[arg-type]  # a hint's origin: a class
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (str, bool, dict, list) and isinstance(value, origin):
            return value
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise CurationError(f"{where}: expected {names}, got {value!r}")
