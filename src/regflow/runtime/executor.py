"""Execute one stage of a plan on Spark: read inputs, apply ops, write checkpoints and outputs.

Every op call runs inside an error boundary that names the pipeline, node and cob and keeps
the original exception as the cause. Lineage is verified: row-wise ops must keep the
``_lineage_id`` column, and every persisted output and checkpoint must have unique ids
(when they are not, the node that duplicated them is found and named).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regflow import __version__
from regflow.adjust.models import AdjustmentRule
from regflow.errors import (
    DataError,
    LineageError,
    RegflowError,
    RunError,
    UserCodeError,
)
from regflow.ops import registry
from regflow.ops.adjust import AdjustParams
from regflow.ops.builtin import AggregateParams
from regflow.plan.model import Plan, PlanNode, Stage
from regflow.runtime import builtin_ops, progress, spark_errors
from regflow.runtime.adjust_ops import (
    AUDIT_COLUMNS,
    audit_rows,
    rule_bits,
    tag_changes,
    tag_writes,
)
from regflow.runtime.context import OpContext
from regflow.runtime.lineage import (
    cluster_parquet,
    duplicate_ids,
    foreign_ids,
    require_lineage_column,
    rollup_lineage_id,
    stored_duplicate_ids,
    stored_foreign_ids,
    stored_lineage_ids,
)
from regflow.runtime.local_finish import audit_table, finish_aggregate, matched_rows
from regflow.runtime.sources import (
    duplicate_keys,
    duplicate_keys_error,
    read_source,
    schema_ddl,
)
from regflow.spec.loader import project_dir_of
from regflow.spec.models import LINEAGE_COLUMN
from regflow.storage import RunRef, discard, new_temp_dir, promote, write_json_atomic

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

_NODE_TAG = re.compile(r"\[regflow:node=([a-z0-9_]+)\]\s*([^\n]*)")
# what Spark appends to the message of a raise_error
_SQLSTATE = re.compile(r"\s*SQLSTATE: \w+\s*$")


# Written data up to this many rows is checked for lineage ids on the driver, with pyarrow
# (8 bytes an id); larger outputs are checked by a Spark job.
LOCAL_CHECK_MAX_ROWS = 20_000_000
# Lineage checkpoints up to this many rows and bytes of Parquet are clustered on the driver
# (see StageRunner._cluster); outputs up to this many rows have their audit columns read
# there (see StageRunner._audit_written).
LOCAL_CLUSTER_MAX_ROWS = 4_000_000
LOCAL_CLUSTER_MAX_BYTES = 256 << 20
# Stored inputs up to this many rows are read as one partition (see _one_partition_if_small).
SMALL_INPUT_ROWS = 100_000
_LOCAL_ID_TYPES = frozenset({"long", "integer", "short", "byte", "string"})
# Column types that survive a trip to the driver and back (toArrow, createDataFrame) as is
_DRIVER_COPY_TYPES = frozenset(
    {"long", "integer", "short", "byte", "string", "decimal", "boolean", "date", "double", "float"}
)

# An audit's key columns (one row per rule, row and field)
AUDIT_KEYS = ("rule_id", LINEAGE_COLUMN, "field")

# Built-in ops that keep every column of their main input (so audit columns ride along).
CARRYING_OPS = frozenset({"calc", "filter", "join", "classify", "adjust"})


@dataclass
class PendingAudit:
    node: PlanNode
    params: AdjustParams
    active: list[tuple[AdjustmentRule, str]]
    skipped: list[tuple[AdjustmentRule, str]]
    column: str


@dataclass
class LocalAudit:
    """An audit computed on the driver, written to a temporary folder, to be promoted."""

    pending: PendingAudit
    folder: Path
    summary: dict[str, Any]
    seconds: float


@dataclass
class OutputReport:
    name: str
    kind: str  # output | lineage
    rows: int
    seconds: float
    path: str


@dataclass
class StageReport:
    pipeline: str
    stage: str
    cob: str
    run_id: str
    seconds: float = 0.0
    outputs: list[OutputReport] = field(default_factory=list)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    reused_from: str | None = None  # the run whose outputs the stage took, unchanged
    # partial joins (require_match: false): node -> left, lookup, how, rows, unmatched
    joins: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "pipeline": self.pipeline,
            "stage": self.stage,
            "cob": self.cob,
            "run_id": self.run_id,
            "seconds": round(self.seconds, 3),
            "outputs": [vars(o) for o in self.outputs],
            "sources": self.sources,
            "adjustments": self.adjustments,
        }
        if self.reused_from is not None:
            out["reused_from"] = self.reused_from
        if self.joins:
            out["joins"] = self.joins
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageReport:
        return cls(
            d["pipeline"], d["stage"], d["cob"], d["run_id"], float(d.get("seconds", 0.0)),
            [OutputReport(**o) for o in d.get("outputs", [])],
            dict(d.get("sources") or {}), list(d.get("adjustments") or []), d.get("reused_from"),
            dict(d.get("joins") or {}),
        )  # fmt: skip


def run_identity(plan: Plan, run: RunRef, run_meta: Mapping[str, Any]) -> dict[str, str]:
    """What an output (its metadata, an audit's rows) says of the run that wrote it, beside
    pipeline and cob: the run id, the spec's hash and the adjustment set's hash."""
    return {
        "run_id": run.run_id,
        "spec_hash": plan.data_hash,
        "adjustment_set_hash": run_meta.get("adjustment_set_hash", "none"),
    }


def run_variables(plan: Plan, cob: str, params: dict[str, Any] | None) -> dict[str, Any]:
    spec_path = Path(plan.file).resolve()
    merged = {**plan.params, **{k: v for k, v in (params or {}).items() if v is not None}}
    return {
        **merged,
        "cob": cob,
        "spec_dir": str(spec_path.parent),
        "project_dir": str(project_dir_of(spec_path)),
    }


class StageRunner:
    """Runs one stage. Holds the DataFrames of the stage's nodes while it runs."""

    def __init__(
        self,
        plan: Plan,
        stage: Stage,
        run: RunRef,
        variables: dict[str, Any],
        spark: SparkSession,
        *,
        run_meta: dict[str, Any] | None = None,
        log: Callable[[str], None] = progress.log,
        input_runs: Sequence[RunRef] = (),
    ):
        self.plan, self.stage, self.run, self.variables = plan, stage, run, variables
        self.input_runs = tuple(input_runs)
        self.spark = spark
        self.run_meta = run_meta or {}
        self.log = log
        self.frames: dict[str, DataFrame] = {}
        # frames that are stored data read back as is: name -> its folder, and its rows
        self.stored: dict[str, Path] = {}
        self.stored_rows: dict[str, int] = {}
        self.pending: dict[str, PendingAudit] = {}
        # frames computed on the driver: name -> their lineage ids
        self.local_ids: dict[str, pa.ChunkedArray] = {}
        self.report = StageReport(plan.pipeline, stage.id, run.cob, run.run_id)
        self.observations: list[tuple[dict[str, Any], Any]] = []  # (see OpContext)

    def stored_run(self, name: str) -> RunRef | None:
        """The run holding a complete stored ``name``: this one, else an earlier valid one."""
        return next((r for r in (self.run, *self.input_runs) if r.is_complete(name)), None)

    # ------------------------------------------------------------------ inputs
    def _input(self, name: str) -> DataFrame:
        if name in self.frames:
            return self.frames[name]
        if self.plan.is_source(name):
            with self._boundary(name, user_code=False):
                df, facts = read_source(
                    self.spark, self.plan.source(name), self.variables, pipeline=self.plan.pipeline
                )
            self.report.sources[name] = facts
        else:
            source_run = self.stored_run(name)
            if source_run is None:
                raise RunError(
                    f"upstream output '{name}' is missing in {self.run.run_dir}; run its stage "
                    f"'{self.plan.node(name).stage}' first",
                    pipeline=self.plan.pipeline,
                    node=name,
                    cob=self.run.cob,
                )
            df = self._read_stored(source_run, name)
        self.frames[name] = df
        return df

    def _read_stored(self, run: RunRef, name: str) -> DataFrame:
        """An upstream output, read with the schema its metadata records: Spark then runs
        no job to infer it from the files."""
        path = run.node_dir(name)
        self.stored[name] = path
        try:
            meta = run.metadata(name)
            self.stored_rows[name] = int(meta["rows"])
            return self.spark.read.schema(schema_ddl(meta["schema"])).parquet(str(path))
        except Exception:  # metadata without a usable schema: let Spark infer it
            return self.spark.read.parquet(str(path))

    def _one_partition_if_small(self, node: PlanNode, inputs: list[DataFrame]) -> list[DataFrame]:
        """A node whose inputs are all small stored outputs (at most ``SMALL_INPUT_ROWS``
        rows) gets them as one partition each: Spark then plans its aggregations without a
        shuffle, which on a few rows is all cost (a job each) and no use."""
        rows = [self.stored_rows.get(i) for i in node.inputs]
        if not rows or any(r is None or r > SMALL_INPUT_ROWS for r in rows):
            return inputs
        return [df.coalesce(1) for df in inputs]

    # ------------------------------------------------------------------ errors
    @contextmanager
    def _boundary(self, node: str, *, user_code: bool) -> Iterator[None]:
        try:
            yield
        except RegflowError:
            raise
        except Exception as exc:
            raise self._wrap(exc, node, user_code) from exc

    def _wrap(self, exc: Exception, node: str, user_code: bool) -> RunError:
        text = str(exc)
        m = _NODE_TAG.search(text)
        kw = {"pipeline": self.plan.pipeline, "cob": self.run.cob}
        if m:
            return DataError(_SQLSTATE.sub("", m.group(2)).strip(), node=m.group(1), **kw)
        failure = spark_errors.describe(text)
        if failure is not None and failure.is_data:
            return self._data_failure(failure, node)
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        first = spark_errors.strip_advice(first) if "spark.sql.ansi" in first else first
        if user_code:
            return UserCodeError(f"operator failed: {type(exc).__name__}: {first}", node=node, **kw)
        return RunError(f"{type(exc).__name__}: {first}", node=node, **kw)

    def _data_failure(self, failure: spark_errors.SparkFailure, node: str) -> DataError:
        """A Spark data error (a bad value, an overflow, a corrupt file), located: at the
        node of this stage whose expression is the failing SQL fragment, else ``node``."""
        kw = {"pipeline": self.plan.pipeline, "cob": self.run.cob}
        if failure.file is not None:
            source = next(
                (
                    name
                    for name, facts in self.report.sources.items()
                    if failure.file.startswith(str(facts.get("path", "\0")))
                ),
                node if self.plan.is_source(node) else None,
            )
            what = f"source '{source}': {failure.message}" if source else failure.message
            return DataError(what, node=source or node, **kw)
        blamed = _node_of_expression(self.plan, self.stage.nodes, failure.fragment)
        what = failure.message
        if failure.fragment:
            what = f"expression '{failure.fragment}' failed: {what}"
        if failure.fix:
            what = f"{what.rstrip('. ')}. {failure.fix}"
        return DataError(what, node=blamed or node, **kw)

    # ------------------------------------------------------------------ run
    def execute(self) -> StageReport:
        t0 = time.perf_counter()
        self.log(f"stage {self.plan.task_id(self.stage.id)}: nodes {', '.join(self.stage.nodes)}")
        for node_id in self.stage.nodes:
            self._run_node(self.plan.node(node_id))
        if self.pending:  # a stage ends at a write, so nothing can be left; guard anyway
            raise RunError(
                f"unwritten audits: {', '.join(self.pending)}",
                pipeline=self.plan.pipeline,
                cob=self.run.cob,
            )
        self._report_observations()
        self.report.seconds = time.perf_counter() - t0
        write_json_atomic(self.run.stage_report(self.stage.id), self.report.to_dict())
        return self.report

    def _report_observations(self) -> None:
        """What the ops counted in the stage's jobs (a partial join's unmatched rows)."""
        for what, seen in self.observations:
            counts = observed(seen)
            entry = {**what, **(counts or {"rows": None, "unmatched": None})}
            self.report.joins[what["join"]] = entry
            if counts is None:
                self.log(f"  join {what['join']}: its rows were never computed (not counted)")
            elif counts["unmatched"]:
                fate = "dropped" if what["how"] == "inner" else "kept, lookup columns null"
                self.log(
                    f"  join {what['join']}: {counts['unmatched']:,} of {counts['rows']:,} rows "
                    f"of '{what['left']}' without a match in '{what['lookup']}' ({fate})"
                )

    def _ctx(self, node: PlanNode) -> OpContext:
        return OpContext(
            pipeline=self.plan.pipeline,
            node=node.id,
            cob=self.run.cob,
            run_id=self.run.run_id,
            inputs=node.inputs,
            variables=dict(self.variables),
            spark=self.spark,
            input_rows=tuple(self._rows_at_most(i) for i in node.inputs),
        )

    def _rows_at_most(self, name: str) -> int | None:
        """At most how many rows the frame ``name`` has, known without a Spark job: stored
        data's row count, or a source's from its files (see ``read_source``)."""
        if name in self.stored_rows:
            return self.stored_rows[name]
        if self.plan.is_source(name):
            rows = self.report.sources.get(name, {}).get("rows_at_most")
            return rows if isinstance(rows, int) else None
        return None

    def _run_node(self, node: PlanNode) -> None:
        op = registry.get(node.op)
        inputs = [self._input(i) for i in node.inputs]
        # Audit columns ride along with the rows only through ops known to keep every column
        # of their main input; before any other op they are written out and dropped.
        if node.op in CARRYING_OPS:
            inputs = [inputs[0], *[self._flush_audits(df) for df in inputs[1:]]]
        elif op.lineage != "aggregate":
            inputs = [self._flush_audits(df) for df in inputs]
        if op.lineage == "sink":  # star_schema: stages its tables for the warehouse loader
            from regflow.runtime.star import run_star

            with self._boundary(node.id, user_code=False):
                run_star(self, node, dict(zip(node.inputs, inputs, strict=True)))
            return
        inputs = self._one_partition_if_small(node, inputs)
        params = op.params.model_validate(node.params)
        ctx = self._ctx(node)
        custom = op.func is not None
        verify: Callable[[Path, int], None] | None = None
        stored = False  # the output is already stored (an aggregate finished on the driver)
        with self._boundary(node.id, user_code=custom):
            if isinstance(params, AdjustParams):
                out = self._adjust(node, inputs[0], params)
            elif op.lineage == "aggregate":
                if not isinstance(params, AggregateParams):
                    raise RunError(
                        "custom aggregate ops are not supported; use 'rollup'",
                        pipeline=self.plan.pipeline,
                        node=node.id,
                    )
                out, stored = self._aggregate(node, inputs[0], params)
            else:
                if op.lineage == "rollup":
                    self._write_rollup_checkpoint(node, inputs[0], params)
                if custom:
                    assert op.func is not None
                    out = op.func(*inputs, params, ctx)
                else:
                    out = builtin_ops.BUILTIN_IMPLS[node.op](inputs, params, ctx)
            self.observations += ctx.observations
            require_lineage_column(out, node=node.id, pipeline=self.plan.pipeline, cob=self.run.cob)
            self._check_schema(node, out)
            if custom and op.lineage in ("rowwise", "rollup"):
                verify = self._verify_custom(node, inputs[0], out)
        self.frames[node.id] = out
        if node.persisted and not stored:
            keys = [LINEAGE_COLUMN]
            if isinstance(params, AggregateParams):
                keys = [*params.group_by]
            # The audits the rows carry are read from what the job writes, like a
            # checkpoint's: no second pass upstream per audit.
            carried = self._carried_audits(out)
            with self._boundary(node.id, user_code=False):
                self.frames[node.id] = self._write(
                    node, node.id, out, kind="output", keys=keys, verify=verify, audits=carried
                )

    def _aggregate(
        self, node: PlanNode, df: DataFrame, params: AggregateParams
    ) -> tuple[DataFrame, bool]:
        """Write the lineage checkpoint, then aggregate it.

        The job writing the checkpoint also writes each member row's adjustments (audit
        columns): the audits are read from what it wrote, with no second pass upstream,
        before the checkpoint is clustered without them. When the driver clusters the
        checkpoint, the aggregate and the audits are computed there from the data still in
        memory (:mod:`regflow.runtime.local_finish`); otherwise by Spark jobs reading it.
        """
        carried = self._carried_audits(df)
        contrib = builtin_ops.aggregate_contributions(df, params, extra=[*carried], node=node.id)
        name = f"{node.id}.lineage"
        local = self._store(
            node,
            name,
            contrib,
            kind="lineage",
            keys=[*params.group_by, LINEAGE_COLUMN],
            cluster_by=params.group_by,
            audits=carried,
        )
        ckpt = self._stored_frame(name, contrib.drop(*carried).schema)
        out = builtin_ops.aggregate_finish(ckpt, params, node.id)  # (its plan: no job yet)
        finished = None
        if local is not None and node.persisted:
            types = {f.name: f.dataType.simpleString() for f in out.schema.fields}
            measures = {m: spec.func for m, spec in params.measures.items()}
            finished = finish_aggregate(local, params.group_by, measures, types)
        if finished is None:
            return out, False
        self._store_table(node, node.id, finished, out.schema, keys=[*params.group_by])
        return self._stored_frame(node.id, out.schema), True

    def _stored_frame(self, name: str, schema: StructType) -> DataFrame:
        """The stored ``name`` as a DataFrame (the schema is known: no job to infer it)."""
        self.stored[name] = self.run.node_dir(name)
        self.stored_rows[name] = int(self.run.metadata(name)["rows"])
        return self.spark.read.schema(schema).parquet(str(self.run.node_dir(name)))

    def _adjust(self, node: PlanNode, df: DataFrame, params: AdjustParams) -> DataFrame:
        """Apply the rules effective on this cob; their audit travels with the rows."""
        cob = dt.date.fromisoformat(self.run.cob)
        active: list[tuple[AdjustmentRule, str]] = []
        skipped: list[tuple[AdjustmentRule, str]] = []
        for rule in sorted(params.rules, key=lambda r: r.rule_id):
            ok, why = rule.applies_on(cob)
            (active if ok else skipped).append((rule, why))
        column = f"_audit__{node.id}"
        pending = PendingAudit(node, params, active, skipped, column)
        rules = [r for r, _ in active]
        rows = self._rows_at_most(node.inputs[0])
        schema = df.schema
        plain = all(f.dataType.typeName() in _DRIVER_COPY_TYPES for f in schema.fields)
        if rows is None or rows > SMALL_INPUT_ROWS or not plain:
            self.pending[column] = pending
            return tag_changes(df, rules, column, schema)
        # A few rows (an entity-level splice point): adjusted once, on the driver's copy.
        # The audit is read from it (no Spark job) and the op after it gets the rows as
        # they are (its lineage check runs on the driver too, see _verify_custom).
        copy = self._driver_copy(node.inputs[0], df, schema)
        tagged = tag_changes(copy, rules, column, schema)
        tagged_schema = tagged.schema
        table = collect_arrow(tagged, tagged_schema)
        if not self._store_audit_table(pending, table, tagged_schema):
            self._store_audit(pending, tagged)
        adjusted = table.drop_columns([column])
        self.local_ids[node.id] = adjusted.column(LINEAGE_COLUMN)
        self.stored_rows[node.id] = adjusted.num_rows
        return self.spark.createDataFrame(adjusted, schema=schema)

    def _driver_copy(self, name: str, df: DataFrame, schema: StructType) -> DataFrame:
        """``df`` (the frame ``name``, a few rows, of ``schema``) as rows held by the driver:
        Spark then evaluates projections over it while planning, and collects it with no
        job. Stored data is read with pyarrow; anything else is collected once."""
        path = self.stored.get(name)
        if path is None:
            return self.spark.createDataFrame(df.toArrow(), schema=schema)
        import pyarrow.parquet as pq

        files = [str(f) for f in _parquet_files(path)]
        if not files:
            return df
        table = pq.ParquetDataset(files, partitioning=None).read(columns=schema.names)
        # (createDataFrame pairs columns by position: read in the schema's order)
        return self.spark.createDataFrame(table, schema=schema)

    def _flush_audits(self, df: DataFrame) -> DataFrame:
        """Write the audits still carried by ``df`` (a separate Spark job) and drop them."""
        for column, pending in self._carried_audits(df).items():
            self._store_audit(pending, df)
            df = df.drop(column)
        return df

    def _carried_audits(self, df: DataFrame) -> dict[str, PendingAudit]:
        """The pending audits whose columns ``df`` carries, taken off the pending list: the
        caller writes them. (``df.columns`` is a call into the JVM: asked once, and only
        when an audit is pending.)"""
        if not self.pending:
            return {}
        columns = set(df.columns)
        return {c: self.pending.pop(c) for c in list(self.pending) if c in columns}

    def _audit_constants(self, params: AdjustParams) -> dict[str, tuple[Any, str]]:
        """The run-identity columns of an audit: name -> (value, Spark type)."""
        return {
            "pipeline": (self.plan.pipeline, "string"),
            "cob": (dt.date.fromisoformat(self.run.cob), "date"),
            **{
                k: (v, "string")
                for k, v in run_identity(self.plan, self.run, self.run_meta).items()
            },
            "stage": (params.at, "string"),
            "position": (params.position, "string"),
        }

    def _audit_frame(self, pending: PendingAudit, tagged: DataFrame) -> DataFrame:
        """The audit of ``pending`` as a Spark plan over ``tagged`` (``AUDIT_COLUMNS``
        after the run identity)."""
        from pyspark.sql import functions as F

        audit = audit_rows(tagged, pending.column, [r for r, _ in pending.active])
        ident = [
            F.lit(value).cast(t).alias(name)
            for name, (value, t) in self._audit_constants(pending.params).items()
        ]
        return audit.select(*ident, *AUDIT_COLUMNS)

    def _audit_schema(self, pending: PendingAudit, schema: StructType) -> StructType:
        """The Spark schema of :meth:`_audit_frame` over data of ``schema``, without
        building its plan."""
        from pyspark.sql.types import DateType, StringType, StructField, StructType

        kinds = {"string": StringType(), "date": DateType()}  # (no parser: no JVM call)
        fields = [
            StructField(name, kinds[t], nullable=False)
            for name, (_, t) in self._audit_constants(pending.params).items()
        ]
        lineage = schema[LINEAGE_COLUMN]
        rest = [
            lineage if c == LINEAGE_COLUMN else StructField(c, StringType()) for c in AUDIT_COLUMNS
        ]
        return StructType(fields + rest)

    def _store_audit(self, pending: PendingAudit, tagged: DataFrame) -> None:
        """Write the audit carried by ``tagged`` (a Spark job)."""
        audit = self._audit_frame(pending, tagged)

        def summarize(written: Path) -> dict[str, Any]:
            # The audit is small (changed rows only): count with pyarrow, no Spark job.
            import pyarrow.parquet as pq

            files = sorted(str(f) for f in written.glob("*.parquet"))
            matched: dict[str, int] = {}
            if files:
                table = pq.ParquetDataset(files, partitioning=None).read(
                    columns=["rule_id", LINEAGE_COLUMN]
                )
                matched = matched_rows(table)
            return self._audit_summary(pending, matched)

        # Laid out by rule then lineage id like a checkpoint: sorted on the driver when small
        # (the usual case: changed rows only), no shuffle in the audit's job.
        self._store(
            pending.node,
            f"{pending.node.id}.audit",
            audit,
            kind="audit",
            keys=list(AUDIT_KEYS),
            unique_ids=False,
            summarize=summarize,
            cluster_by=["rule_id"],
        )
        self._report_audit(pending)

    def _store_audit_table(
        self, pending: PendingAudit, table: pa.Table, schema: StructType
    ) -> bool:
        """Write the audit carried by ``table``, data in the driver's memory (a checkpoint
        being clustered, or a few adjusted rows): computed there, no Spark job. ``schema``
        (the data's Spark schema) gives the audit's. False, writing nothing, when the
        audit cannot be made there exactly as Spark makes it."""
        done = self._local_audit(pending, table)
        if done is not None:
            self._promote_audit(done, schema)
        return done is not None

    def _local_audit(self, pending: PendingAudit, table: pa.Table) -> LocalAudit | None:
        """The audit carried by ``table``, computed on the driver and written to a
        temporary folder (nothing else is touched: safe in a thread of its own); None when
        it cannot be made there exactly as Spark makes it."""
        t0 = time.perf_counter()
        writes = tag_writes([r for r, _ in pending.active])
        constants = self._audit_constants(pending.params)
        audit = audit_table(table, pending.column, writes, constants)
        if audit is None:
            return None
        summary = self._audit_summary(pending, matched_rows(audit))
        folder = new_temp_dir(self.run.node_dir(f"{pending.node.id}.audit"))
        try:
            # (the values that repeat: the only columns worth a dictionary)
            _write_parquet_table(audit, folder, dictionary=[*constants, "rule_id", "field"])
        except BaseException:
            discard(folder)
            raise
        return LocalAudit(pending, folder, summary, time.perf_counter() - t0)

    def _local_audits(
        self, pendings: Sequence[PendingAudit], table: pa.Table
    ) -> list[LocalAudit | None]:
        """:meth:`_local_audit` of each of ``pendings``, side by side in threads (pyarrow
        and numpy release the GIL: the audits of a stage's splice points share the cores);
        on a failure, none is left behind."""
        from concurrent.futures import ThreadPoolExecutor

        if len(pendings) < 2:
            return [self._local_audit(p, table) for p in pendings]
        with ThreadPoolExecutor(len(pendings)) as pool:
            futures = [pool.submit(self._local_audit, p, table) for p in pendings]
        failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            _discard_audits([f.result() for f in futures if f.exception() is None])
            raise failed[0]  # type: ignore[misc]
        return [f.result() for f in futures]

    def _promote_audit(self, done: LocalAudit, schema: StructType) -> None:
        """Check, describe and promote an audit :meth:`_local_audit` wrote; report it."""
        pending = done.pending
        self._persist(
            pending.node,
            f"{pending.node.id}.audit",
            lambda _tmp: done.folder,
            self._audit_schema(pending, schema),
            kind="audit",
            keys=list(AUDIT_KEYS),
            unique_ids=False,
            summarize=lambda _written: done.summary,
            verify=None,
            spent=done.seconds,
        )
        self._report_audit(pending)

    @staticmethod
    def _audit_summary(pending: PendingAudit, matched: dict[str, int]) -> dict[str, Any]:
        """The audit metadata's per-rule record: rows matched, or why a rule was skipped."""
        rules = [
            {
                "rule_id": r.rule_id,
                "status": "applied",
                "rows_matched": matched.get(r.rule_id, 0),
                "reason": "",
            }
            for r, _ in pending.active
        ]
        rules += [
            {"rule_id": r.rule_id, "status": "skipped", "rows_matched": 0, "reason": why}
            for r, why in pending.skipped
        ]
        return {"rules": sorted(rules, key=lambda x: x["rule_id"])}

    def _report_audit(self, pending: PendingAudit) -> None:
        node, params = pending.node, pending.params
        for r in self.run.metadata(f"{node.id}.audit")["rules"]:
            self.report.adjustments.append(
                {"node": node.id, "at": params.at, "position": params.position, **r}
            )
            status = (
                f"{r['rows_matched']:,} rows matched"
                if r["status"] == "applied"
                else f"skipped: {r['reason']}"
            )
            self.log(f"  adjustment {r['rule_id']} at {params.position} {params.at}: {status}")

    def _check_schema(self, node: PlanNode, out: DataFrame) -> None:
        if not node.schema.known:
            return
        missing = [c for c in node.schema.names if c not in out.columns]
        if missing:
            raise LineageError(
                f"output lacks column(s) {', '.join(missing)} that the plan expects "
                f"(the op's schema rule and its function disagree)",
                pipeline=self.plan.pipeline,
                node=node.id,
                cob=self.run.cob,
            )

    def _verify_custom(
        self, node: PlanNode, inp: DataFrame, out: DataFrame
    ) -> Callable[[Path, int], None] | None:
        """A custom row-wise op must not invent, replace or duplicate lineage ids.

        When the output is persisted and the input is stored data, the check is returned to
        run on the written files before they are promoted (pyarrow: no Spark job); else it
        runs now, with Spark.
        """
        input_dir = self.stored.get(node.inputs[0])
        local = self.local_ids.get(node.inputs[0])
        if node.persisted and local is not None:
            return lambda written, rows: self._verify_custom_written(node, local, written, rows)
        if node.persisted and input_dir is not None:
            return lambda written, rows: self._verify_custom_written(node, input_dir, written, rows)
        self._verify_custom_spark(node, inp, out)
        return None

    def _verify_custom_written(
        self, node: PlanNode, input_ids: Path | pa.ChunkedArray, written: Path, rows: int
    ) -> None:
        """:meth:`_verify_custom` on the written output and the input's lineage ids: the
        stored input's folder, or the ids of an input computed on the driver."""
        if isinstance(input_ids, Path):
            input_dir = input_ids
            if max(rows, _parquet_rows(input_dir)) > LOCAL_CHECK_MAX_ROWS:
                inp = self.spark.read.parquet(str(input_dir))
                self._verify_custom_spark(node, inp, self.spark.read.parquet(str(written)))
                return
            input_ids = stored_lineage_ids(_parquet_files(input_dir))
        out_ids = stored_lineage_ids(_parquet_files(written))
        foreign = stored_foreign_ids(out_ids, input_ids)
        bad = out_ids.filter(foreign).to_pylist()
        if bad and node.lineage == "rollup":
            bad = self._not_rollup_totals(node, written, foreign)
        if bad:
            self._raise_foreign(node, bad)
        dups = stored_duplicate_ids(_parquet_files(written))
        if dups:
            self._raise_custom_duplicates(node, dups)

    def _not_rollup_totals(self, node: PlanNode, written: Path, foreign: Any) -> list[Any]:
        """Ids of the ``foreign`` written rows that are not the rollup's total rows.

        A total row's (rollup_by values, lineage id) must be one of the pairs recorded in
        the rollup checkpoint (each input row's rollup_by values and its total's id).
        """
        import pyarrow.parquet as pq

        by = _rollup_by(node)
        rows = (
            pq.ParquetDataset([str(f) for f in _parquet_files(written)], partitioning=None)
            .read(columns=[*by, LINEAGE_COLUMN])
            .filter(foreign)
        )
        ckpt_dir = self.run.node_dir(f"{node.id}.lineage")
        pairs = [*by, "_lineage_rollup_id"]
        ckpt = pq.ParquetDataset(
            [str(f) for f in _parquet_files(ckpt_dir)], partitioning=None
        ).read(columns=pairs)
        totals = {
            tuple(r[c] for c in pairs)
            for r in ckpt.group_by(pairs, use_threads=False).aggregate([]).to_pylist()
        }
        return [
            r[LINEAGE_COLUMN]
            for r in rows.to_pylist()
            if (*[r[c] for c in by], r[LINEAGE_COLUMN]) not in totals
        ]

    def _raise_foreign(self, node: PlanNode, bad: list[Any]) -> None:
        raise LineageError(
            f"operator '{node.op}' returned rows whose lineage ids are not in its input "
            f"(e.g. {bad[0]}); it must carry '{LINEAGE_COLUMN}' through unchanged",
            pipeline=self.plan.pipeline,
            node=node.id,
            cob=self.run.cob,
        )

    def _raise_custom_duplicates(self, node: PlanNode, dups: list[Any]) -> None:
        self._raise_source_duplicates()  # repeated source keys are not the operator's doing
        raise LineageError(
            f"operator '{node.op}' duplicated rows: lineage id {dups[0]} occurs more than "
            "once. Row-wise operators must return each input row at most once.",
            pipeline=self.plan.pipeline,
            node=node.id,
            cob=self.run.cob,
        )

    def _verify_custom_spark(self, node: PlanNode, inp: DataFrame, out: DataFrame) -> None:
        new = out
        if node.lineage == "rollup":
            by = _rollup_by(node)
            new = out.where(out[LINEAGE_COLUMN] != rollup_lineage_id(node.id, by))
        bad = foreign_ids(new, inp)
        if bad:
            self._raise_foreign(node, bad)
        dups = duplicate_ids(out)
        if dups:
            self._raise_custom_duplicates(node, dups)

    def _write_rollup_checkpoint(self, node: PlanNode, inp: DataFrame, params: Any) -> None:
        from pyspark.sql import functions as F

        by = list(getattr(params, "rollup_by", []) or [])
        members = inp.select(
            *by,
            F.col(LINEAGE_COLUMN),
            rollup_lineage_id(node.id, by).alias("_lineage_rollup_id"),
        )
        self._store(
            node,
            f"{node.id}.lineage",
            members,
            kind="lineage",
            keys=[*by, LINEAGE_COLUMN],
            cluster_by=by,
        )

    # ------------------------------------------------------------------ writes
    def _write(self, node: PlanNode, name: str, df: DataFrame, **kw: Any) -> DataFrame:
        """Store ``df`` as ``name`` and return the stored data, for what comes next."""
        from pyspark.sql.types import StructType

        schema = df.schema
        self._store(node, name, df, **kw)
        audits = kw.get("audits") or {}
        kept = StructType([f for f in schema.fields if f.name not in audits])
        return self._stored_frame(name, kept)

    def _store(
        self,
        node: PlanNode,
        name: str,
        df: DataFrame,
        *,
        kind: str,
        keys: list[str],
        unique_ids: bool = True,
        summarize: Callable[[Path], dict[str, Any]] | None = None,
        verify: Callable[[Path, int], None] | None = None,
        cluster_by: Sequence[str] = (),
        audits: Mapping[str, PendingAudit] | None = None,
    ) -> pa.Table | None:
        """Write ``df`` as ``name``: checked, with metadata, promoted atomically.

        ``cluster_by``: store each group's rows in one file, sorted by the group key then
        the lineage id (the layout of lineage checkpoints). Returns the clustered data when
        the driver clustered it (it is still in memory), else None. ``audits``: the audit
        columns of ``df``: their audits are written from the data the job wrote. A
        checkpoint (``cluster_by``) is rewritten without them; an output keeps them in its
        files, outside the schema its metadata records (``audit_tags`` names them): no
        rewrite, and the star reads each row's adjusted flags from them.
        """
        from pyspark.sql.types import StructType

        audits = audits or {}
        written_schema = df.schema
        schema = StructType([f for f in written_schema.fields if f.name not in audits])
        local: list[pa.Table | None] = [None]

        def write(tmp: Path) -> Path:
            df.write.mode("overwrite").parquet(str(tmp))
            if cluster_by:
                tmp, local[0] = self._cluster(
                    tmp, self.run.node_dir(name), cluster_by, written_schema, audits
                )
            elif audits:
                self._audit_written(tmp, written_schema, audits)
            return tmp

        described = summarize
        if audits and not cluster_by:

            def described(written: Path) -> dict[str, Any]:
                extra = summarize(written) if summarize is not None else {}
                return {**extra, "audit_tags": audit_tags(audits)}

        self._persist(
            node, name, write, schema,
            kind=kind, keys=keys, unique_ids=unique_ids, summarize=described, verify=verify,
        )  # fmt: skip
        return local[0]

    def _store_table(
        self, node: PlanNode, name: str, table: pa.Table, schema: StructType, *, keys: list[str]
    ) -> None:
        """Write ``table``, an output computed on the driver, as ``name`` (Spark schema
        ``schema``), like :meth:`_store`."""

        def write(tmp: Path) -> Path:
            _write_parquet_table(table, tmp)
            return tmp

        self._persist(
            node, name, write, schema,
            kind="output", keys=keys, unique_ids=True, summarize=None, verify=None,
        )  # fmt: skip

    def _persist(
        self,
        node: PlanNode,
        name: str,
        write: Callable[[Path], Path],
        schema: StructType,
        *,
        kind: str,
        keys: list[str],
        unique_ids: bool,
        summarize: Callable[[Path], dict[str, Any]] | None,
        verify: Callable[[Path, int], None] | None,
        spent: float = 0.0,
    ) -> None:
        """Write (``write`` fills a temporary folder and returns the folder holding the
        data), check, add metadata and promote atomically; a failure leaves nothing.
        ``spent``: seconds already spent making the data (reported with the write's)."""
        t0 = time.perf_counter() - spent
        final = self.run.node_dir(name)
        tmp = new_temp_dir(final)
        try:
            tmp = write(tmp)
            rows = _parquet_rows(tmp)
            if verify is not None:
                verify(tmp, rows)
            if unique_ids:
                dups = self._written_duplicates(tmp, rows, schema)
                if dups:
                    self._raise_duplicates(node, dups)
            meta = self._metadata(node, name, kind, rows, keys, schema, time.perf_counter() - t0)
            if summarize is not None:
                meta.update(summarize(tmp))
            promote(tmp, final, meta)
        except BaseException:
            discard(tmp)
            raise
        seconds = time.perf_counter() - t0
        self.report.outputs.append(OutputReport(name, kind, rows, round(seconds, 3), str(final)))
        self.log(f"  wrote {name}: {rows:,} rows in {seconds:.1f}s")

    def _cluster(
        self,
        written: Path,
        final: Path,
        keys: Sequence[str],
        schema: StructType,
        audits: Mapping[str, PendingAudit],
    ) -> tuple[Path, pa.Table | None]:
        """Lay the just-written data out as :func:`clustered` does, after writing the
        ``audits`` its audit columns hold, and without those columns; returns its folder,
        and the data when it was sorted on the driver.

        Data that fits the driver is sorted there with pyarrow, in place: much cheaper than
        a Spark shuffle and sort of every row before the write. Larger data (or key types
        that cannot be sorted exactly like Spark there) is re-written by Spark.
        """

        def stored() -> DataFrame:
            return self.spark.read.schema(schema).parquet(str(written))

        audited = [False]  # (cluster_parquet may decline before it calls store_audits)

        def store_audits(table: pa.Table | None) -> None:
            self._write_audits(audits, table, written, schema)
            audited[0] = True

        files = _parquet_files(written)
        small = (
            bool(files)
            and _parquet_rows(written) <= LOCAL_CLUSTER_MAX_ROWS
            and sum(f.stat().st_size for f in files) <= LOCAL_CLUSTER_MAX_BYTES
        )
        table = (
            cluster_parquet(written, keys, drop=list(audits), inspect=store_audits)
            if small
            else None
        )
        if table is not None:
            return written, table
        if not audited[0]:
            store_audits(None)
        if not files:
            return written, None
        again = new_temp_dir(final)
        try:
            clustered(stored().drop(*audits), keys).write.mode("overwrite").parquet(str(again))
        except BaseException:
            discard(again)
            raise
        discard(written)
        return again, None

    def _audit_written(
        self, written: Path, schema: StructType, audits: Mapping[str, PendingAudit]
    ) -> None:
        """Write the ``audits`` held by the audit columns of the just-written output (of
        ``schema``): their columns and the lineage ids read on the driver (the columns are
        null on every row no rule matched: a small read), or by a Spark job when the data
        is too large for the driver."""
        import pyarrow.parquet as pq

        files = _parquet_files(written)
        table = None
        if files and _parquet_rows(written) <= LOCAL_CLUSTER_MAX_ROWS:
            dataset = pq.ParquetDataset([str(f) for f in files], partitioning=None)
            table = dataset.read(columns=[LINEAGE_COLUMN, *audits])
        self._write_audits(audits, table, written, schema)

    def _write_audits(
        self,
        audits: Mapping[str, PendingAudit],
        table: pa.Table | None,
        written: Path,
        schema: StructType,
    ) -> None:
        """Write ``audits`` from ``table`` (the written rows' lineage ids and audit columns,
        in the driver's memory) where the driver can make them, else by a Spark job over
        the data written in ``written`` (of ``schema``); on a failure, none of them is left
        behind."""

        def stored() -> DataFrame:
            return self.spark.read.schema(schema).parquet(str(written))

        pendings = list(audits.values())
        local = self._local_audits(pendings, table) if table is not None else []
        done_all = local or [None] * len(pendings)
        try:
            for pending, done in zip(pendings, done_all, strict=True):
                if done is None:
                    self._store_audit(pending, stored())
                else:
                    self._promote_audit(done, schema)
        except BaseException:  # the audits not yet promoted go too
            _discard_audits(done_all)
            raise

    def _written_duplicates(self, written: Path, rows: int, schema: StructType) -> list[Any]:
        """Lineage ids occurring more than once in the just-written data.

        Read back with pyarrow (no Spark job: milliseconds for small outputs, well under a
        second for a million rows); outputs too large for the driver are checked by Spark.
        """
        local = schema[LINEAGE_COLUMN].dataType.typeName() in _LOCAL_ID_TYPES
        if local and rows <= LOCAL_CHECK_MAX_ROWS:
            return stored_duplicate_ids(_parquet_files(written))
        return duplicate_ids(self.spark.read.schema(schema).parquet(str(written)))

    def _raise_source_duplicates(self) -> None:
        """Fail naming the keys, if a source this stage read holds a primary key twice."""
        for name in self.stage.sources:
            if name in self.frames and duplicate_ids(self.frames[name], 1):
                src = self.plan.source(name)
                keys = duplicate_keys(self.frames[name], src)
                raise duplicate_keys_error(
                    src, keys or [("(keys that hash alike)", 2)],
                    pipeline=self.plan.pipeline, cob=self.run.cob,
                )  # fmt: skip

    def _raise_duplicates(self, node: PlanNode, dups: list[int]) -> None:
        """Find where duplicates first appear: a source with repeated keys, or a node."""
        self._raise_source_duplicates()
        for nid in self.stage.nodes:
            if nid in self.frames and duplicate_ids(self.frames[nid], 1):
                raise LineageError(
                    f"node '{nid}' duplicates rows: lineage id {dups[0]} occurs more than once",
                    pipeline=self.plan.pipeline,
                    node=nid,
                    cob=self.run.cob,
                )
        raise LineageError(
            f"duplicate lineage ids in the output of '{node.id}' (e.g. {dups[0]})",
            pipeline=self.plan.pipeline,
            node=node.id,
            cob=self.run.cob,
        )

    def _metadata(
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
            **run_identity(self.plan, self.run, self.run_meta),
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


def _node_of_expression(plan: Plan, nodes: Sequence[str], fragment: str | None) -> str | None:
    """The first of ``nodes`` whose params hold the SQL ``fragment`` (whitespace aside)."""
    if not fragment:
        return None

    def texts(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield " ".join(value.split())
        elif isinstance(value, Mapping):
            for v in value.values():
                yield from texts(v)
        elif isinstance(value, list | tuple):
            for v in value:
                yield from texts(v)

    want = fragment.lower()
    for nid in nodes:
        if any(want in t.lower() for t in texts(plan.node(nid).params)):
            return nid
    return None


def clustered(df: DataFrame, keys: Sequence[str]) -> DataFrame:
    """Each group's rows in one file, sorted by the group key within it.

    A hash repartition, not ``orderBy``: a global sort first samples its input, which would
    evaluate the whole stage upstream twice. Reading one group touches one file.
    """
    if not keys:
        return df
    return df.repartition(*keys).sortWithinPartitions(*keys, LINEAGE_COLUMN)


def _rollup_by(node: PlanNode) -> list[str]:
    """A rollup op's ``rollup_by``, defaults included (as its checkpoint was written)."""
    params = registry.get(node.op).params.model_validate(node.params)
    return list(getattr(params, "rollup_by", []) or [])


def observed(seen: Any) -> dict[str, Any] | None:
    """The metrics of an ``Observation`` once a job has computed them; None when no job
    did (``Observation.get`` would then wait for ever)."""
    jo = getattr(seen, "_jo", None)  # (the JVM Observation: set once a frame observes it)
    if jo is None or not jo.future().isCompleted():
        return None
    return dict(seen.get)


def collect_arrow(df: DataFrame, schema: StructType | None = None) -> pa.Table:
    """The rows of a small DataFrame as a pyarrow table, with ``toArrow``'s types.

    Collected as rows: a plan over rows the driver holds (``createDataFrame``) is evaluated
    while it is planned, with no Spark job (``toArrow`` always runs one). The values convert
    exactly: integers, decimals, dates, strings, booleans and floating point numbers (the
    types of ``_DRIVER_COPY_TYPES``, plus structs of them). ``schema``: ``df.schema``, when
    the caller has it (asking Spark for it is a call into the JVM).
    """
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow = to_arrow_schema(schema or df.schema, error_on_duplicated_field_names_in_struct=True)
    rows = [r.asDict(recursive=True) for r in df.collect()]
    return pa.Table.from_pylist(rows, schema=arrow)


def audit_tags(audits: Mapping[str, PendingAudit]) -> dict[str, dict[str, Any]]:
    """What an output's metadata records of the audit columns its files keep: for each,
    its adjust node and the rule ids of its masks' flags, in bit order (see
    :func:`regflow.runtime.adjust_ops.rule_bits`)."""
    return {
        column: {"node": p.node.id, "rules": rule_bits([r for r, _ in p.active])}
        for column, p in audits.items()
    }


def _discard_audits(made: Sequence[LocalAudit | None]) -> None:
    """Remove the temporary folders of audits :meth:`StageRunner._local_audit` made (a
    promoted one's folder is gone already: nothing to do)."""
    for done in made:
        if done is not None:
            discard(done.folder)


def _write_parquet_table(
    table: pa.Table, folder: Path, *, dictionary: Sequence[str] | None = None
) -> None:
    """``table`` as one Parquet file in a new ``folder``, laid out like Spark's (snappy, row
    groups of 128k rows). ``dictionary``: the only columns to dictionary-encode (Arrow's
    default tries every column, and gives up on unique values after paying for the
    attempt); None for that default."""
    import uuid

    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    pq.write_table(
        table,
        folder / f"part-00000-{uuid.uuid4()}-c000.snappy.parquet",
        compression="snappy",
        row_group_size=131_072,
        use_dictionary=True if dictionary is None else list(dictionary),
    )


def _parquet_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.parquet"))


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in _parquet_files(path))


def run_stage(
    plan: Plan,
    stage_id: str,
    *,
    cob: str,
    run_id: str,
    root: Path,
    params: dict[str, Any] | None = None,
    spark: SparkSession | None = None,
    run_meta: dict[str, Any] | None = None,
    log: Callable[[str], None] = progress.log,
    input_runs: Sequence[RunRef] = (),
    reuse_from: RunRef | None = None,
) -> StageReport:
    """Run one stage for ``cob`` into ``root``; the public entry point of the runtime.

    Upstream outputs are read from this run, else from ``input_runs`` (an earlier run whose
    outputs are still valid: how a preview or a rerun recomputes only what changed).
    ``reuse_from``: an earlier successful run of the cob whose outputs of this stage are
    taken instead of recomputing them when nothing they depend on changed (see
    :mod:`regflow.runtime.reuse`).
    """
    from regflow.runtime.session import exact_decimals, get_spark

    try:
        stage = plan.stage(stage_id)
    except KeyError:
        raise RunError(f"no stage '{stage_id}' in the plan", pipeline=plan.pipeline) from None
    registry.load_entry_points()
    operators = project_dir_of(Path(plan.file)) / "operators"
    registry.load_operator_files(operators, strict=False)
    missing = [n.op for n in plan.nodes if n.op not in registry.names()]
    if missing:
        failed = "".join(f"; {why}" for why in registry.import_failures(operators).values())
        raise RunError(
            f"op(s) {', '.join(sorted(set(missing)))} are not registered; is the "
            f"project's operators/ folder deployed next to pipelines/?{failed}",
            pipeline=plan.pipeline,
            cob=cob,
        )
    run = RunRef(root, plan.pipeline, cob, run_id)
    meta = {"adjustment_set_hash": plan.adjustment_set_hash, **(run_meta or {})}
    variables = run_variables(plan, cob, params)
    if reuse_from is not None and reuse_from.run_dir != run.run_dir:
        from regflow.runtime.reuse import reuse_stage, why_not_reuse

        why = why_not_reuse(plan, stage, run, reuse_from, variables, params or {})
        if why is None:
            log(
                f"stage {plan.task_id(stage.id)}: unchanged since run {reuse_from.run_id}; "
                "reusing its outputs"
            )
            return StageReport.from_dict(reuse_stage(plan, stage, run, reuse_from, meta, log))
        log(f"stage {plan.task_id(stage.id)}: recomputing: {why}")
    spark = spark or get_spark()
    exact_decimals(spark)
    runner = StageRunner(
        plan,
        stage,
        run,
        variables,
        spark,
        run_meta=meta,
        log=log,
        input_runs=input_runs,
    )
    return runner.execute()
