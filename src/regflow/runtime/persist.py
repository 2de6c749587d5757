"""Persistence: writing a stage's outputs, checkpoints, audits and star tables.

Every write goes to a temporary folder, is checked, gets its metadata and is promoted
atomically (``_SUCCESS`` last); a failure leaves nothing. :class:`Writer` is the narrow
interface the rest of the runtime writes through (the runner, the audits, the star).

Persistence knows nothing of audits: data written with columns that ride along for someone
else (``carried``, e.g. an adjustment's audit columns) is shown to the ``on_written``
subscribers (:class:`Written`) before it is checked, promoted, or rewritten without them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from regflow import __version__
from regflow.plan.model import Plan, PlanNode, Stage
from regflow.runtime.driver.cluster import cluster_parquet
from regflow.runtime.parquet import parquet_bytes, parquet_files, parquet_rows, write_parquet_table
from regflow.runtime.policy import Declined, ExecutionPolicy
from regflow.runtime.report import OutputReport, StageReport, run_identity
from regflow.spec.models import LINEAGE_COLUMN
from regflow.storage import RunRef, commit_attempt, discard, new_attempt
from regflow.storage.fs import Location, spark_uri

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

# checks a written folder before it is promoted: (node, name, folder, rows, schema)
UniqueCheck = Callable[[PlanNode, str, Location, int, "StructType"], None]


@dataclass
class StoredFrames:
    """Which frames of a stage are stored data read back as is (their folder and rows),
    and which were computed on the driver (their lineage ids)."""

    run: RunRef
    input_runs: tuple[RunRef, ...] = ()
    paths: dict[str, Location] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    local_ids: dict[str, Any] = field(default_factory=dict)  # name -> pa.ChunkedArray

    def run_of(self, name: str) -> RunRef | None:
        """The run holding a complete stored ``name``: this one, else an earlier valid one."""
        return next((r for r in (self.run, *self.input_runs) if r.is_complete(name)), None)

    def read_from(self, name: str) -> RunRef | None:
        """The run this stage read ``name`` from as stored data; None if it did not."""
        return self.run_of(name) if name in self.paths else None


@dataclass
class Written:
    """Data just written to a temporary ``folder``, before it is checked and promoted."""

    node: PlanNode
    name: str
    folder: Location
    schema: StructType | None  # as written, with the carried columns (None: not Spark's)
    carried: Mapping[str, Any] = field(default_factory=dict)  # column -> its subscriber's
    table: pa.Table | None = None  # the data, when the driver holds it
    clustering: bool = False  # shown by the clustering (``table``: None if Spark clusters)


class Writer:
    """Writes a stage's data into its run (see the module docs)."""

    def __init__(
        self,
        plan: Plan,
        stage: Stage,
        run: RunRef,
        spark: SparkSession,
        report: StageReport,
        stored: StoredFrames,
        *,
        run_meta: Mapping[str, Any],
        log: Callable[[str], None],
        policy: ExecutionPolicy,
        check_unique: UniqueCheck,
    ):
        self.plan, self.stage, self.run, self.spark = plan, stage, run, spark
        self.report, self.stored, self.log, self.policy = report, stored, log, policy
        self.run_meta = run_meta
        self.identity = run_identity(plan, run, run_meta)
        self.check_unique = check_unique
        self.on_written: list[Callable[[Written], None]] = []

    def note(self, step: str, declined: Declined | None) -> None:
        """Report which engine did ``step``: the driver's, or Spark because it declined."""
        entry = {"step": step, "engine": "driver" if declined is None else "spark"}
        if declined is not None:
            entry["why"] = declined.reason
            if self.policy.mode != "spark":
                self.log(f"  {step}: by Spark ({declined.reason})")
        self.report.engines.append(entry)

    def show(self, written: Written) -> None:
        """Show ``written`` to the ``on_written`` subscribers. Each write is shown once, when
        its data is in its temporary folder; an audit the driver makes is also shown when it
        is made, with its ``table`` (in a thread of its own), before it is promoted."""
        for subscriber in self.on_written:
            subscriber(written)

    def stored_frame(self, name: str, schema: StructType) -> DataFrame:
        """The stored ``name`` as a DataFrame (the schema is known: no job to infer it)."""
        self.stored.paths[name] = self.run.node_dir(name)
        self.stored.rows[name] = int(self.run.metadata(name)["rows"])
        return self.spark.read.schema(schema).parquet(spark_uri(self.run.node_dir(name)))

    def write(self, node: PlanNode, name: str, df: DataFrame, **kw: Any) -> DataFrame:
        """Store ``df`` as ``name`` and return the stored data, for what comes next."""
        from pyspark.sql.types import StructType

        schema = df.schema
        self.store(node, name, df, **kw)
        carried = kw.get("carried") or {}
        kept = StructType([f for f in schema.fields if f.name not in carried])
        return self.stored_frame(name, kept)

    def store(
        self,
        node: PlanNode,
        name: str,
        df: DataFrame,
        *,
        kind: str,
        keys: list[str],
        unique_ids: bool = True,
        summarize: Callable[[Location], dict[str, Any]] | None = None,
        verify: Callable[[Location, int], None] | None = None,
        cluster_by: Sequence[str] = (),
        carried: Mapping[str, Any] | None = None,
        describe: Mapping[str, Any] | None = None,
    ) -> pa.Table | None:
        """Write ``df`` as ``name``: checked, with metadata, promoted atomically.

        ``cluster_by``: store each group's rows in one file, sorted by the group key then
        the lineage id (the layout of lineage checkpoints). Returns the clustered data when
        the driver clustered it (it is still in memory), else None. ``carried``: columns of
        ``df`` that ride along for the ``on_written`` subscribers, who see the data the job
        wrote. A checkpoint (``cluster_by``) is rewritten without them; an output keeps
        them in its files, outside the schema its metadata records. ``describe``: more
        metadata.
        """
        from pyspark.sql.types import StructType

        carried = carried or {}
        written_schema = df.schema
        schema = StructType([f for f in written_schema.fields if f.name not in carried])
        local: list[pa.Table | None] = [None]

        def write(tmp: Location) -> Location:
            df.write.mode("overwrite").parquet(spark_uri(tmp))
            if cluster_by:  # (shown by the clustering, with the data it holds)
                tmp, local[0] = self._cluster(node, name, tmp, cluster_by, written_schema, carried)
            return tmp

        described = summarize
        if describe:

            def described(written: Location) -> dict[str, Any]:
                extra = summarize(written) if summarize is not None else {}
                return {**extra, **describe}

        self.persist(
            node, name, write, schema,
            kind=kind, keys=keys, unique_ids=unique_ids, summarize=described, verify=verify,
            show=not cluster_by, carried=carried, written_schema=written_schema,
        )  # fmt: skip
        return local[0]

    def store_table(
        self, node: PlanNode, name: str, table: pa.Table, schema: StructType, *, keys: list[str]
    ) -> None:
        """Write ``table``, an output computed on the driver, as ``name`` (Spark schema
        ``schema``), like :meth:`store`."""

        def write(tmp: Location) -> Location:
            write_parquet_table(table, tmp)
            return tmp

        self.persist(
            node, name, write, schema,
            kind="output", keys=keys, unique_ids=True, summarize=None, verify=None,
        )  # fmt: skip

    def persist(
        self,
        node: PlanNode,
        name: str,
        write: Callable[[Location], Location],
        schema: StructType,
        *,
        kind: str,
        keys: list[str],
        unique_ids: bool,
        summarize: Callable[[Location], dict[str, Any]] | None,
        verify: Callable[[Location, int], None] | None,
        spent: float = 0.0,
        show: bool = True,
        carried: Mapping[str, Any] | None = None,
        written_schema: StructType | None = None,
    ) -> None:
        """Write (``write`` fills a temporary folder and returns the folder holding the
        data), show it to the subscribers (unless ``show`` is false: shown already), check,
        add metadata and promote atomically; a failure leaves nothing. ``spent``: seconds
        already spent making the data (reported with the write's)."""
        t0 = time.perf_counter() - spent
        tmp = new_attempt(self.run, name)
        try:
            tmp = write(tmp)
            if show:
                self.show(Written(node, name, tmp, written_schema or schema, carried or {}))
            rows = parquet_rows(tmp)
            if verify is not None:
                verify(tmp, rows)
            if unique_ids:
                self.check_unique(node, name, tmp, rows, schema)
            meta = self.metadata(node, name, kind, rows, keys, schema, time.perf_counter() - t0)
            if summarize is not None:
                meta.update(summarize(tmp))
            final = commit_attempt(self.run, name, tmp, meta)
        except BaseException:
            discard(tmp)
            raise
        seconds = time.perf_counter() - t0
        self.report.outputs.append(OutputReport(name, kind, rows, round(seconds, 3), str(final)))
        self.log(f"  wrote {name}: {rows:,} rows in {seconds:.1f}s")

    def _cluster(
        self,
        node: PlanNode,
        name: str,
        written: Location,
        keys: Sequence[str],
        schema: StructType,
        carried: Mapping[str, Any],
    ) -> tuple[Location, pa.Table | None]:
        """Lay the just-written data out as :func:`clustered` does, after showing it to the
        subscribers, and without the ``carried`` columns; returns its folder, and the data
        when it was sorted on the driver.

        Data that fits the driver is sorted there with pyarrow, in place: much cheaper than
        a Spark shuffle and sort of every row before the write. Larger data (or key types
        that cannot be sorted exactly like Spark there) is re-written by Spark.
        """
        shown = [False]  # (cluster_parquet may decline before it calls show)

        def show(table: pa.Table | None) -> None:
            self.show(Written(node, name, written, schema, carried, table, clustering=True))
            shown[0] = True

        files = parquet_files(written)
        table: pa.Table | Declined = (
            self.policy.decline("cluster_max_rows", parquet_rows(written))
            or self.policy.decline("cluster_max_bytes", parquet_bytes(written), "bytes")
            or cluster_parquet(written, keys, drop=list(carried), inspect=show)
            if files
            else Declined("no rows written")
        )
        self.note(f"cluster {name}", table if isinstance(table, Declined) else None)
        if not isinstance(table, Declined):
            return written, table
        if not shown[0]:
            show(None)
        if not files:
            return written, None
        again = new_attempt(self.run, name)
        try:
            stored = self.spark.read.schema(schema).parquet(spark_uri(written))
            clustered(stored.drop(*carried), keys).write.mode("overwrite").parquet(spark_uri(again))
        except BaseException:
            discard(again)
            raise
        discard(written)
        return again, None

    def metadata(
        self,
        node: PlanNode,
        name: str,
        kind: str,
        rows: int,
        keys: list[str],
        schema: StructType,
        seconds: float,
    ) -> dict[str, Any]:
        inputs = {}
        for i in node.inputs:
            if self.plan.is_source(i):
                inputs[i] = self.report.sources.get(i, {}).get("fingerprint", "")
            else:
                inputs[i] = self.plan.node(i).data_hash
        return {
            "pipeline": self.plan.pipeline,
            "cob": self.run.cob,
            **self.identity,
            "node": node.id,
            "name": name,
            "kind": kind,
            "stage": self.stage.id,
            "rows": rows,
            "key_columns": keys,
            "schema": [[f.name, f.dataType.simpleString()] for f in schema.fields],
            "input_hashes": inputs,
            "node_hash": node.data_hash,
            "metadata_hash": self.plan.metadata_hash,
            "code_version": f"regflow {__version__}",
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
        }


def clustered(df: DataFrame, keys: Sequence[str]) -> DataFrame:
    """Each group's rows in one file, sorted by the group key within it.

    A hash repartition, not ``orderBy``: a global sort first samples its input, which would
    evaluate the whole stage upstream twice. Reading one group touches one file.
    """
    if not keys:
        return df
    return df.repartition(*keys).sortWithinPartitions(*keys, LINEAGE_COLUMN)
