"""The adjustment audits: from the rows an adjust node tagged to the ``<node>.audit``
output (one row per rule, row and field changed).

An adjust node tags the rows it changes in an audit column (:class:`PendingAudit`) that rides
along with the rows through the ops that keep every column (``OpDef.carries_audits``). The audit
is written from the data a job wrote anyway: :class:`Audits` subscribes to the writer's
``on_written`` hook and, when the written data carries audit columns, makes their audits,
on the driver when it can (:mod:`regflow.runtime.driver`), else by a Spark job over the
written rows. Before any other op, the audits are written from the rows (:meth:`flush`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from regflow.adjust.models import AdjustmentRule
from regflow.ops.adjust import AdjustParams
from regflow.plan.model import PlanNode
from regflow.runtime.adjust_ops import AUDIT_COLUMNS, rule_bits, tag_writes
from regflow.runtime.audit_rows import audit_rows
from regflow.runtime.driver.audit import audit_table, matched_rows
from regflow.runtime.parquet import parquet_files, parquet_rows, read_parquet, write_parquet_table
from regflow.runtime.persist import Writer, Written
from regflow.runtime.policy import Declined
from regflow.runtime.report import identity_columns
from regflow.spec.models import LINEAGE_COLUMN
from regflow.storage import RunRef, discard_uncommitted, new_attempt
from regflow.storage.fs import Location, spark_uri

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

# An audit's key columns (one row per rule, row and field)
AUDIT_KEYS = ("rule_id", LINEAGE_COLUMN, "field")
# why an audit is made by a Spark job of its own: its rows reach an op that drops its column
_BEFORE_AN_OP = Declined("written from the rows before an op that does not carry audits")


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
    folder: Location
    summary: dict[str, Any]
    seconds: float


def audit_tags(audits: Mapping[str, PendingAudit]) -> dict[str, dict[str, Any]]:
    """What an output's metadata records of the audit columns its files keep: for each,
    its adjust node and the rule ids of its masks' flags, in bit order (see
    :func:`regflow.runtime.adjust_ops.rule_bits`)."""
    return {
        column: {"node": p.node.id, "rules": rule_bits([r for r, _ in p.active])}
        for column, p in audits.items()
    }


class Audits:
    """The audits of a stage: pending (carried by rows), then written."""

    def __init__(self, writer: Writer, log: Callable[[str], None]):
        self.writer, self.log = writer, log
        self.pending: dict[str, PendingAudit] = {}
        writer.on_written.append(self.on_written)

    # ------------------------------------------------------------------ carried columns
    def carried(self, df: DataFrame) -> dict[str, PendingAudit]:
        """The pending audits whose columns ``df`` carries, taken off the pending list: the
        caller writes them. (``df.columns`` is a call into the JVM: asked once, and only
        when an audit is pending.)"""
        if not self.pending:
            return {}
        columns = set(df.columns)
        return {c: self.pending.pop(c) for c in list(self.pending) if c in columns}

    def flush(self, df: DataFrame) -> DataFrame:
        """Write the audits still carried by ``df`` (a separate Spark job) and drop them."""
        for column, pending in self.carried(df).items():
            self.writer.note(f"audit {pending.node.id}", _BEFORE_AN_OP)
            self.store_spark(pending, df)
            df = df.drop(column)
        return df

    def on_written(self, written: Written) -> None:
        """Write the audits whose columns the just-written data carries (the hook)."""
        audits = {c: p for c, p in written.carried.items() if isinstance(p, PendingAudit)}
        if not audits:
            return
        assert written.schema is not None
        table = written.table
        if not written.clustering:  # an output: its audit columns, read on the driver
            files = parquet_files(written.folder)
            rows = parquet_rows(written.folder) if files else 0
            why = self.writer.policy.decline("cluster_max_rows", rows) if files else None
            if files and why is None:
                table = read_parquet(written.folder, [LINEAGE_COLUMN, *audits])
            elif why is not None:
                self.writer.note(f"read audit columns of {written.name}", why)
        self._write(audits, table, written.folder, written.schema)

    def _write(
        self,
        audits: Mapping[str, PendingAudit],
        table: pa.Table | None,
        written: Location,
        schema: StructType,
    ) -> None:
        """Write ``audits`` from ``table`` (the written rows' lineage ids and audit columns,
        in the driver's memory) where the driver can make them, else by a Spark job over
        the data written in ``written`` (of ``schema``); on a failure, none of them is left
        behind."""
        spark = self.writer.spark

        def stored() -> DataFrame:
            return spark.read.schema(schema).parquet(spark_uri(written))

        pendings = list(audits.values())
        made = self._locals(pendings, table) if table is not None else []
        done_all = made or [Declined("the driver does not hold the rows")] * len(pendings)
        try:
            for pending, done in zip(pendings, done_all, strict=True):
                if isinstance(done, Declined):
                    self.writer.note(f"audit {pending.node.id}", done)
                    self.store_spark(pending, stored())
                else:
                    self.writer.note(f"audit {pending.node.id}", None)
                    self._promote(done, schema)
        except BaseException:  # the audits not yet promoted go too
            _discard(self.writer.run, done_all)
            raise

    # ------------------------------------------------------------------ by Spark
    def constants(self, params: AdjustParams) -> dict[str, tuple[Any, str]]:
        """The run-identity columns of an audit: name -> (value, Spark type)."""
        w = self.writer
        return {
            **identity_columns(w.plan, w.run, w.run_meta),
            "stage": (params.at, "string"),
            "position": (params.position, "string"),
        }

    def _frame(self, pending: PendingAudit, tagged: DataFrame) -> DataFrame:
        """The audit of ``pending`` as a Spark plan over ``tagged`` (``AUDIT_COLUMNS``
        after the run identity)."""
        from pyspark.sql import functions as F

        audit = audit_rows(tagged, pending.column, [r for r, _ in pending.active])
        ident = [
            F.lit(value).cast(t).alias(name)
            for name, (value, t) in self.constants(pending.params).items()
        ]
        return audit.select(*ident, *AUDIT_COLUMNS)

    def _schema(self, pending: PendingAudit, schema: StructType) -> StructType:
        """The Spark schema of :meth:`_frame` over data of ``schema``, without building its
        plan."""
        from pyspark.sql.types import DateType, StringType, StructField, StructType

        kinds = {"string": StringType(), "date": DateType()}  # (no parser: no JVM call)
        fields = [
            StructField(name, kinds[t], nullable=False)
            for name, (_, t) in self.constants(pending.params).items()
        ]
        lineage = schema[LINEAGE_COLUMN]
        rest = [
            lineage if c == LINEAGE_COLUMN else StructField(c, StringType()) for c in AUDIT_COLUMNS
        ]
        return StructType(fields + rest)

    def store_spark(self, pending: PendingAudit, tagged: DataFrame) -> None:
        """Write the audit carried by ``tagged`` (a Spark job)."""
        audit = self._frame(pending, tagged)
        writer = self.writer

        def summarize(written: Location) -> dict[str, Any]:
            # The audit is small (changed rows only): counted with pyarrow, no Spark job
            files = parquet_files(written)
            rows = parquet_rows(written) if files else 0
            why = writer.policy.decline("check_max_rows", rows) if files else None
            matched: dict[str, int] = {}
            if why is not None:
                matched = _matched_by_spark(writer.spark.read.parquet(spark_uri(written)))
            elif files:
                matched = matched_rows(read_parquet(written, ["rule_id", LINEAGE_COLUMN]))
            return self._summary(pending, matched)

        # Laid out by rule then lineage id like a checkpoint: sorted on the driver when small
        # (the usual case: changed rows only), no shuffle in the audit's job.
        writer.store(
            pending.node,
            f"{pending.node.id}.audit",
            audit,
            kind="audit",
            keys=list(AUDIT_KEYS),
            unique_ids=False,
            summarize=summarize,
            cluster_by=["rule_id"],
        )
        self._report(pending)

    # ------------------------------------------------------------------ on the driver
    def store_table(
        self, pending: PendingAudit, table: pa.Table, schema: StructType
    ) -> Declined | None:
        """Write the audit carried by ``table``, data in the driver's memory (a few
        adjusted rows): computed there, no Spark job. ``schema`` (the data's Spark schema)
        gives the audit's. Declined, writing nothing, when the audit cannot be made there
        exactly as Spark makes it."""
        done = self._local(pending, table)
        if isinstance(done, Declined):
            return done
        self._promote(done, schema)
        return None

    def _local(self, pending: PendingAudit, table: pa.Table) -> LocalAudit | Declined:
        """The audit carried by ``table``, computed on the driver and written to a
        temporary folder (nothing else is touched: safe in a thread of its own); declined
        when it cannot be made there exactly as Spark makes it."""
        t0 = time.perf_counter()
        writes = tag_writes([r for r, _ in pending.active])
        constants = self.constants(pending.params)
        audit = audit_table(table, pending.column, writes, constants)
        if isinstance(audit, Declined):
            return audit
        summary = self._summary(pending, matched_rows(audit))
        name = f"{pending.node.id}.audit"
        folder = new_attempt(self.writer.run, name)
        try:
            # (the values that repeat: the only columns worth a dictionary)
            write_parquet_table(audit, folder, dictionary=[*constants, "rule_id", "field"])
            self.writer.show(Written(pending.node, name, folder, None, table=audit))
        except BaseException:
            discard_uncommitted(self.writer.run, name, folder)
            raise
        return LocalAudit(pending, folder, summary, time.perf_counter() - t0)

    def _locals(
        self, pendings: Sequence[PendingAudit], table: pa.Table
    ) -> list[LocalAudit | Declined]:
        """:meth:`_local` of each of ``pendings``, side by side in threads (pyarrow and
        numpy release the GIL: the audits of a stage's splice points share the cores); on a
        failure, none is left behind."""
        from concurrent.futures import ThreadPoolExecutor

        if len(pendings) < 2:
            return [self._local(p, table) for p in pendings]
        with ThreadPoolExecutor(len(pendings)) as pool:
            futures = [pool.submit(self._local, p, table) for p in pendings]
        failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            _discard(self.writer.run, [f.result() for f in futures if f.exception() is None])
            raise failed[0]  # type: ignore[misc]
        return [f.result() for f in futures]

    def _promote(self, done: LocalAudit, schema: StructType) -> None:
        """Check, describe and promote an audit :meth:`_local` wrote; report it."""
        pending = done.pending
        self.writer.persist(
            pending.node,
            f"{pending.node.id}.audit",
            lambda _tmp: done.folder,
            self._schema(pending, schema),
            kind="audit",
            keys=list(AUDIT_KEYS),
            unique_ids=False,
            summarize=lambda _written: done.summary,
            verify=None,
            spent=done.seconds,
        )
        self._report(pending)

    # ------------------------------------------------------------------ what they did
    @staticmethod
    def _summary(pending: PendingAudit, matched: dict[str, int]) -> dict[str, Any]:
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

    def _report(self, pending: PendingAudit) -> None:
        node, params = pending.node, pending.params
        for r in self.writer.run.metadata(f"{node.id}.audit")["rules"]:
            self.writer.report.adjustments.append(
                {"node": node.id, "at": params.at, "position": params.position, **r}
            )
            status = (
                f"{r['rows_matched']:,} rows matched"
                if r["status"] == "applied"
                else f"skipped: {r['reason']}"
            )
            self.log(f"  adjustment {r['rule_id']} at {params.position} {params.at}: {status}")


def _matched_by_spark(audit: DataFrame) -> dict[str, int]:
    """Rows changed per rule id in a stored audit (distinct lineage ids), by Spark."""
    from pyspark.sql import functions as F

    rows = audit.groupBy("rule_id").agg(F.countDistinct(LINEAGE_COLUMN).alias("n")).collect()
    return {r["rule_id"]: int(r["n"]) for r in rows if r["n"]}


def _discard(run: RunRef, made: Sequence[LocalAudit | Declined]) -> None:
    """Remove the attempts of audits :meth:`Audits._local` made (a committed one's stays)."""
    for done in made:
        if isinstance(done, LocalAudit):
            discard_uncommitted(run, f"{done.pending.node.id}.audit", done.folder)
