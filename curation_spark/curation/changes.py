"""What changed in the input since a run: the rows to assign and the ids to drop.

Two ways to find them, chosen per update:

* **Delta change data feed** (the input is a Delta table with
  ``delta.enableChangeDataFeed`` on over every version since the one ``run.json``
  recorded): only the changed rows are read. Per id the last change wins (commit version,
  then ``insert`` / ``update_postimage`` over ``delete`` over ``update_preimage``); an id
  whose last change leaves a row is (re)assigned with that row's embedding, an assigned
  id that changed at all is dropped first. Rows rewritten in place are caught this way.
* **Anti-join on ids** (Parquet, Delta without the feed, a feed that was vacuumed): the
  input's ids against the level-1 assignments' ids. Reads every input id once and the
  embeddings of the new rows; a row rewritten in place under the same id is not seen.
  For a small run (``in_driver``: the input's embeddings fit where the fit would have
  clustered them in the driver) the input and the assigned ids come to the driver in one
  read each and are compared there: on small tables Spark's per-job costs, not the rows,
  are what an update pays for.

Both end with the same bookkeeping check: assigned - dropped + added must equal the input's
row count, which catches repeated ids (and a change feed that does not add up, in which
case the anti-join is used instead).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from curation_spark.errors import InputError
from curation_spark.io.tables import EMBEDDING, POINT_ID, arrow_frame, embedding_array_column, to_points

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from curation_spark.config import InputConfig

log = logging.getLogger(__name__)

CHANGE_FEED = "change-data-feed"
ANTI_JOIN = "anti-join"
SAME_VERSION = "same Delta version"
#: Change types that leave a row behind, and their priority within one commit.
_PRIORITY = {"insert": 2, "update_postimage": 2, "delete": 1, "update_preimage": 0}


@dataclass
class InputChanges:
    """The rows to assign (``added``: the input's own columns, the id and embedding ones at
    least) and the assigned ids to drop (``dropped``: ``point_id, cluster_id``), persisted;
    call :meth:`release` when done."""

    added: DataFrame
    dropped: DataFrame
    n_added: int
    n_dropped: int
    #: Dropped ids that come back with new values (same id, rewritten row).
    n_changed: int
    method: str
    rows_read: int
    n_input_rows: int
    #: The persisted frames ``added`` and ``dropped`` are read from (default: themselves).
    cached: list[DataFrame] | None = None
    #: Found in the driver: the new rows as ``point_id, embedding`` and the dropped
    #: ``point_id, cluster_id``, as Arrow tables (``added``/``dropped`` are made from them).
    added_points: pa.Table | None = None
    dropped_rows: pa.Table | None = None

    @property
    def empty(self) -> bool:
        return self.n_added == 0 and self.n_dropped == 0

    def release(self) -> None:
        for frame in self.cached if self.cached is not None else [self.added, self.dropped]:
            frame.unpersist()


def find_changes(spark: SparkSession, cfg: InputConfig, raw: DataFrame, assigned: DataFrame,
                 n_assigned: int, from_version: int | None, to_version: int | None,
                 in_driver: Callable[[int], bool] = lambda n_input: False) -> InputChanges:
    """The input's changes since the run's level-1 assignments (``assigned``: ``point_id,
    cluster_id`` frame of ``n_assigned`` rows), through the change data feed when it covers
    ``from_version`` -> ``to_version``, else by an anti-join on ids (in the driver when
    ``in_driver(input rows)``)."""
    n_input = raw.count()  # Delta: from the log's statistics; Parquet: the footers
    if from_version is not None and from_version == to_version and n_input == n_assigned:
        # The Delta version the run recorded: no commit since, nothing to read.
        return InputChanges(raw.limit(0), assigned.limit(0), 0, 0, 0, SAME_VERSION, 0, n_input)
    if from_version is not None and to_version is not None:
        changes = _from_feed(spark, cfg, assigned, n_input, from_version, to_version, in_driver(n_input))
        if changes is not None:
            if _adds_up(changes, n_assigned, n_input):
                return changes
            changes.release()
            log.warning("update: the change data feed of versions %d..%d does not add up to the input's %d rows "
                        "(%d assigned - %d dropped + %d added): comparing ids instead", from_version + 1,
                        to_version, n_input, n_assigned, changes.n_dropped, changes.n_added)
    changes = (_by_ids_in_driver(spark, raw, cfg, assigned, n_input) if in_driver(n_input)
               else _by_anti_join(raw, cfg, assigned, n_input))
    if not _adds_up(changes, n_assigned, n_input):
        changes.release()
        raise InputError(f"input.id_col: the input has {n_input} rows but {n_assigned} assigned - "
                         f"{changes.n_dropped} gone + {changes.n_added} new = "
                         f"{n_assigned - changes.n_dropped + changes.n_added} distinct ids: "
                         f"some {cfg.id_col!r} values are repeated")
    return changes


def _adds_up(changes: InputChanges, n_assigned: int, n_input: int) -> bool:
    return n_assigned - changes.n_dropped + changes.n_added == n_input


def _from_feed(spark: SparkSession, cfg: InputConfig, assigned: DataFrame, n_input: int, from_version: int,
               to_version: int, in_driver: bool = False) -> InputChanges | None:
    """The changes from the input's change data feed after ``from_version`` up to
    ``to_version``, or None (the reason logged) when the table has no feed for all of them:
    a range without a recorded feed fails at the first pass over it, before anything is
    written."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    if to_version <= from_version:
        return None
    reader = (spark.read.format("delta").option("readChangeFeed", "true")
              .option("startingVersion", from_version + 1).option("endingVersion", to_version))
    try:
        return _changes_in_feed(reader.table(cfg.table) if cfg.table else reader.load(cfg.path), cfg, assigned,
                                n_input, in_driver)
    except (PySparkException, Py4JError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.info("update: no change data feed for input versions %d..%d (%s); comparing ids instead",
                 from_version + 1, to_version, first[:200])
        return None


def _changes_in_feed(feed: DataFrame, cfg: InputConfig, assigned: DataFrame, n_input: int,
                     in_driver: bool = False) -> InputChanges:
    """Two passes: the feed once (each id's last change, with the rows it had in the feed),
    then the assigned ids it touched (dropped, and how many of them come back); for a small
    run (``in_driver``) both results come to the driver and are compared there."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    priority = F.create_map(*[x for kind, p in _PRIORITY.items() for x in (F.lit(kind), F.lit(p))])
    per_id = Window.partitionBy(cfg.id_col)
    last = per_id.orderBy(F.col("_commit_version").desc(), F.col("_priority").desc())
    columns = [c for c in feed.columns if c not in ("_change_type", "_commit_version", "_commit_timestamp")]
    final = (feed.withColumn("_priority", priority[F.col("_change_type")])
             .withColumn("_rows", F.count(F.lit(1)).over(per_id))
             .withColumn("_rank", F.row_number().over(last)).where(F.col("_rank") == 1))
    if in_driver:
        return _feed_in_driver(assigned.sparkSession, final, cfg, assigned, n_input)
    final = final.select(*columns, "_priority", "_rows").persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = final.agg(F.sum("_rows").alias("read"),
                           F.sum(F.when(F.col("_priority") == 2, 1).otherwise(0)).alias("added")).first()
    except Exception:
        final.unpersist()
        raise
    rows_read, n_added = int(counts["read"] or 0), int(counts["added"] or 0)  # type: ignore[index]  # an aggregate: one row
    added = final.where(F.col("_priority") == 2).select(*columns)
    touched = final.select(F.col(cfg.id_col).alias(POINT_ID), (F.col("_priority") == 2).alias("_again"))
    dropped = assigned.join(touched, POINT_ID).persist(StorageLevel.MEMORY_AND_DISK)
    counts = dropped.agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("_again").cast("long")).alias("again")).first()
    n_dropped, n_changed = int(counts["n"]), int(counts["again"] or 0)  # type: ignore[index]  # an aggregate: one row
    return InputChanges(added, dropped.drop("_again"), n_added, n_dropped, n_changed, CHANGE_FEED, rows_read,
                        n_input, cached=[final, dropped])


def _by_anti_join(raw: DataFrame, cfg: InputConfig, assigned: DataFrame, n_input: int) -> InputChanges:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    ids = raw.select(F.col(cfg.id_col).alias(POINT_ID))
    dropped = assigned.join(ids, POINT_ID, "left_anti").persist(StorageLevel.MEMORY_AND_DISK)
    new_ids = ids.join(assigned.select(POINT_ID), POINT_ID, "left_anti").withColumnRenamed(POINT_ID, cfg.id_col)
    added = raw.join(new_ids, cfg.id_col, "left_semi").persist(StorageLevel.MEMORY_AND_DISK)
    n_added, n_dropped = added.count(), dropped.count()
    return InputChanges(added, dropped, n_added, n_dropped, 0, ANTI_JOIN, n_input, n_input)


def _feed_in_driver(spark: SparkSession, final: DataFrame, cfg: InputConfig, assigned: DataFrame,
                    n_input: int) -> InputChanges:
    """The end of :func:`_changes_in_feed` in the driver: each id's last change (its new row
    when it leaves one) in one read, the assigned ids in another, compared as Arrow."""
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    last = final.select(F.col(cfg.id_col).alias(POINT_ID), embedding_array_column(final, cfg.embedding_col)
                        .alias(EMBEDDING), "_priority", "_rows").toArrow()
    run = assigned.select(POINT_ID, "cluster_id").toArrow()
    leaves_row = pc.equal(last.column("_priority"), 2)
    new = last.filter(leaves_row)
    gone = run.filter(pc.is_in(run.column(POINT_ID), value_set=last.column(POINT_ID)))
    again = int(pc.sum(pc.is_in(gone.column(POINT_ID), value_set=new.column(POINT_ID))).as_py() or 0)
    rows_read = int(pc.sum(last.column("_rows")).as_py() or 0)
    return _found_in_driver(spark, cfg, new, gone, again, CHANGE_FEED, rows_read, n_input)


def _by_ids_in_driver(spark: SparkSession, raw: DataFrame, cfg: InputConfig, assigned: DataFrame,
                      n_input: int) -> InputChanges:
    """:func:`_by_anti_join` in the driver for a small input: the input's ids and
    embeddings in one read, the assigned ids and clusters in another, compared as Arrow."""
    import pyarrow.compute as pc

    points = to_points(raw, cfg.id_col, cfg.embedding_col).toArrow()
    run = assigned.select(POINT_ID, "cluster_id").toArrow()
    new = points.filter(pc.invert(pc.is_in(points.column(POINT_ID), value_set=run.column(POINT_ID))))
    gone = run.filter(pc.invert(pc.is_in(run.column(POINT_ID), value_set=points.column(POINT_ID))))
    return _found_in_driver(spark, cfg, new, gone, 0, ANTI_JOIN, n_input, n_input)


def _found_in_driver(spark: SparkSession, cfg: InputConfig, new: pa.Table, gone: pa.Table, n_changed: int,
                     method: str, rows_read: int, n_input: int) -> InputChanges:
    """The changes found in the driver: the new rows (``point_id, embedding``) and the
    dropped ``point_id, cluster_id`` as Arrow, and as lazy local frames (only what a caller
    without the Arrow tables would read)."""
    new = new.select([POINT_ID, EMBEDDING])
    return InputChanges(arrow_frame(spark, new.rename_columns([cfg.id_col, cfg.embedding_col])),
                        arrow_frame(spark, gone), new.num_rows, gone.num_rows, n_changed, method, rows_read, n_input,
                        added_points=new, dropped_rows=gone)
