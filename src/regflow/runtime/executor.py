"""Execute one stage of a plan on Spark: read inputs, apply ops, write checkpoints and outputs.

The runner dispatches each node of the stage to its op, inside an error boundary
(:mod:`regflow.runtime.boundary`) that names the pipeline, node and cob and keeps the
original exception as the cause. The rest lives beside it: reports and run identity
(:mod:`.report`), persistence (:mod:`.persist`), the adjustment audits (:mod:`.audits`),
verification of lineage ids (:mod:`.verify`), the driver engine (:mod:`.driver`) and the
execution policy choosing between it and Spark (:mod:`.policy`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regflow.adjust.models import AdjustmentRule
from regflow.errors import RegflowError, RunError
from regflow.ops import registry
from regflow.ops.adjust import AdjustParams
from regflow.ops.builtin import AggregateParams
from regflow.plan.model import Plan, PlanNode, Stage
from regflow.runtime import builtin_ops, progress
from regflow.runtime.adjust_ops import tag_changes
from regflow.runtime.audits import Audits, PendingAudit, audit_tags
from regflow.runtime.boundary import wrap_error
from regflow.runtime.context import OpContext
from regflow.runtime.driver.aggregate import finish_aggregate
from regflow.runtime.driver.copy import collect_arrow, copyable, driver_copy
from regflow.runtime.lineage import require_lineage_column, rollup_lineage_id
from regflow.runtime.persist import StoredFrames, Writer, Written
from regflow.runtime.policy import Declined, ExecutionPolicy
from regflow.runtime.report import OutputReport, StageReport, run_identity, run_variables
from regflow.runtime.reuse import completed_report, reuse_stage, why_not_reuse
from regflow.runtime.sources import read_source, schema_ddl
from regflow.runtime.star import run_star
from regflow.runtime.verify import Verifier
from regflow.spec.loader import project_dir_of
from regflow.spec.models import LINEAGE_COLUMN
from regflow.storage import RunRef, write_json_atomic
from regflow.storage.fs import Location, spark_uri

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "OutputReport",
    "StageReport",
    "StageRunner",
    "run_identity",
    "run_stage",
    "run_variables",
]


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
        policy: ExecutionPolicy | None = None,
        on_written: Sequence[Callable[[Written], None]] = (),
    ):
        self.plan, self.stage, self.run, self.variables = plan, stage, run, variables
        self.spark = spark
        self.log = log
        self.policy = policy or ExecutionPolicy()
        self.frames: dict[str, DataFrame] = {}
        self.stored = StoredFrames(run, tuple(input_runs))
        self.report = StageReport(plan.pipeline, stage.id, run.cob, run.run_id)
        self.observations: list[tuple[dict[str, Any], Any]] = []  # (see OpContext)
        self.verifier = Verifier(
            plan, stage, run, spark, self.policy, self.frames, self.stored, self._note
        )
        self.writer = Writer(
            plan, stage, run, spark, self.report, self.stored,
            run_meta=run_meta or {}, log=log, policy=self.policy,
            check_unique=self.verifier.check_unique,
        )  # fmt: skip
        self.audits = Audits(self.writer, log)  # (subscribes to the writer's on_written)
        self.writer.on_written.extend(on_written)

    def _note(self, step: str, declined: Declined | None) -> None:
        self.writer.note(step, declined)

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
            source_run = self.stored.run_of(name)
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
        self.stored.paths[name] = path
        try:
            meta = run.metadata(name)
            self.stored.rows[name] = int(meta["rows"])
            return self.spark.read.schema(schema_ddl(meta["schema"])).parquet(spark_uri(path))
        except Exception:  # metadata without a usable schema: let Spark infer it
            return self.spark.read.parquet(spark_uri(path))

    def _one_partition_if_small(self, node: PlanNode, inputs: list[DataFrame]) -> list[DataFrame]:
        """A node whose inputs are all small stored outputs (at most the policy's
        ``one_partition_max_rows``) gets them as one partition each: Spark then plans its
        aggregations without a shuffle, which on a few rows is all cost (a job each)."""
        rows = [self.stored.rows.get(i) for i in node.inputs]
        if not rows or not all(self.policy.allows("one_partition_max_rows", r) for r in rows):
            return inputs
        return [df.coalesce(1) for df in inputs]

    def _rows_at_most(self, name: str) -> int | None:
        """At most how many rows the frame ``name`` has, known without a Spark job: stored
        data's row count, or a source's from its files (see ``read_source``)."""
        if name in self.stored.rows:
            return self.stored.rows[name]
        if self.plan.is_source(name):
            rows = self.report.sources.get(name, {}).get("rows_at_most")
            return rows if isinstance(rows, int) else None
        return None

    # ------------------------------------------------------------------ errors
    @contextmanager
    def _boundary(self, node: str, *, user_code: bool) -> Iterator[None]:
        try:
            yield
        except RegflowError:
            raise
        except Exception as exc:
            raise wrap_error(
                exc, node, user_code, self.plan, self.stage, self.run.cob, self.report.sources
            ) from exc

    # ------------------------------------------------------------------ run
    def execute(self) -> StageReport:
        t0 = time.perf_counter()
        self.log(f"stage {self.plan.task_id(self.stage.id)}: nodes {', '.join(self.stage.nodes)}")
        for node_id in self.stage.nodes:
            self._run_node(self.plan.node(node_id))
        if self.audits.pending:  # a stage ends at a write, so nothing can be left; guard anyway
            raise RunError(
                f"unwritten audits: {', '.join(self.audits.pending)}",
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
            policy=self.policy,
        )

    def _run_node(self, node: PlanNode) -> None:
        op = registry.get(node.op)
        inputs = [self._input(i) for i in node.inputs]
        # Audit columns ride along with the rows only through ops known to keep every column
        # of their main inputs (OpDef.carries_audits); before any other op, and beside a
        # join's lookup, they are written out and dropped.
        if op.carries_audits:
            main = len(op.main_of(node.inputs))
            inputs = [*inputs[:main], *[self.audits.flush(df) for df in inputs[main:]]]
        elif op.lineage != "aggregate":
            inputs = [self.audits.flush(df) for df in inputs]
        if op.lineage == "sink":  # star_schema: stages its tables for the warehouse loader
            with self._boundary(node.id, user_code=False):
                run_star(self.writer, node, dict(zip(node.inputs, inputs, strict=True)))
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
            for e in ctx.engines:  # (the op's own steps, e.g. a join's key check)
                self._note(e["step"], Declined(e["why"]) if e["engine"] == "spark" else None)
            require_lineage_column(out, node=node.id, pipeline=self.plan.pipeline, cob=self.run.cob)
            self.verifier.check_schema(node, out)
            if custom and op.lineage in ("rowwise", "rollup"):
                verify = self.verifier.custom(node, inputs[0], out)
        self.frames[node.id] = out
        if node.persisted and not stored:
            keys = [LINEAGE_COLUMN]
            if isinstance(params, AggregateParams):
                keys = [*params.group_by]
            # The audits the rows carry are read from what the job writes, like a
            # checkpoint's: no second pass upstream per audit.
            carried = self.audits.carried(out)
            tags = {"audit_tags": audit_tags(carried)} if carried else None
            with self._boundary(node.id, user_code=False):
                self.frames[node.id] = self.writer.write(
                    node, node.id, out,
                    kind="output", keys=keys, verify=verify, carried=carried, describe=tags,
                )  # fmt: skip

    def _aggregate(
        self, node: PlanNode, df: DataFrame, params: AggregateParams
    ) -> tuple[DataFrame, bool]:
        """Write the lineage checkpoint, then aggregate it.

        The job writing the checkpoint also writes each member row's adjustments (audit
        columns): the audits are read from what it wrote, with no second pass upstream,
        before the checkpoint is clustered without them. When the driver clusters the
        checkpoint, the aggregate and the audits are computed there from the data still in
        memory (:mod:`regflow.runtime.driver`); otherwise by Spark jobs reading it.
        """
        carried = self.audits.carried(df)
        contrib = builtin_ops.aggregate_contributions(df, params, extra=[*carried], node=node.id)
        name = f"{node.id}.lineage"
        local = self.writer.store(
            node,
            name,
            contrib,
            kind="lineage",
            keys=[*params.group_by, LINEAGE_COLUMN],
            cluster_by=params.group_by,
            carried=carried,
        )
        ckpt = self.writer.stored_frame(name, contrib.drop(*carried).schema)
        out = builtin_ops.aggregate_finish(ckpt, params, node.id)  # (its plan: no job yet)
        if not node.persisted:
            return out, False
        finished: Any = Declined("the checkpoint was clustered by Spark")
        if local is not None:
            finished = self.policy.decline("aggregate_max_rows", local.num_rows)
        if local is not None and finished is None:
            types = {f.name: f.dataType.simpleString() for f in out.schema.fields}
            measures = {m: spec.func for m, spec in params.measures.items()}
            finished = finish_aggregate(local, params.group_by, measures, types)
        self._note(f"aggregate {node.id}", finished if isinstance(finished, Declined) else None)
        if isinstance(finished, Declined):
            return out, False
        self.writer.store_table(node, node.id, finished, out.schema, keys=[*params.group_by])
        return self.writer.stored_frame(node.id, out.schema), True

    def _adjust(self, node: PlanNode, df: DataFrame, params: AdjustParams) -> DataFrame:
        """Apply the rules effective on this cob; their audit travels with the rows."""
        cob = self.run.cob_date
        active: list[tuple[AdjustmentRule, str]] = []
        skipped: list[tuple[AdjustmentRule, str]] = []
        for rule in sorted(params.rules, key=lambda r: r.rule_id):
            ok, why = rule.applies_on(cob)
            (active if ok else skipped).append((rule, why))
        column = f"_audit__{node.id}"
        pending = PendingAudit(node, params, active, skipped, column)
        rules = [r for r, _ in active]
        schema = df.schema
        off = self.policy.decline("adjust_max_rows", self._rows_at_most(node.inputs[0]))
        if off is None and not copyable(schema):
            off = Declined("a column type does not survive a trip to the driver")
        self._note(f"adjust {node.id}", off)
        if off is not None:
            self.audits.pending[column] = pending
            return tag_changes(df, rules, column, schema)
        # A few rows (an entity-level splice point): adjusted once, on the driver's copy.
        # The audit is read from it (no Spark job) and the op after it gets the rows as
        # they are (its lineage check runs on the driver too, see Verifier.custom).
        copy = driver_copy(self.spark, df, schema, self.stored.paths.get(node.inputs[0]))
        tagged = tag_changes(copy, rules, column, schema)
        tagged_schema = tagged.schema
        table = collect_arrow(tagged, tagged_schema)
        declined = self.audits.store_table(pending, table, tagged_schema)
        self._note(f"audit {node.id}", declined)
        if declined is not None:
            self.audits.store_spark(pending, tagged)
        adjusted = table.drop_columns([column])
        self.stored.local_ids[node.id] = adjusted.column(LINEAGE_COLUMN)
        self.stored.rows[node.id] = adjusted.num_rows
        return self.spark.createDataFrame(adjusted, schema=schema)

    def _write_rollup_checkpoint(self, node: PlanNode, inp: DataFrame, params: Any) -> None:
        from pyspark.sql import functions as F

        by = list(getattr(params, "rollup_by", []) or [])
        members = inp.select(
            *by,
            F.col(LINEAGE_COLUMN),
            rollup_lineage_id(node.id, by).alias("_lineage_rollup_id"),
        )
        self.writer.store(
            node,
            f"{node.id}.lineage",
            members,
            kind="lineage",
            keys=[*by, LINEAGE_COLUMN],
            cluster_by=by,
        )


def observed(seen: Any) -> dict[str, Any] | None:
    """The metrics of an ``Observation`` once a job has computed them; None when no job
    did (``Observation.get`` would then wait for ever)."""
    jo = getattr(seen, "_jo", None)  # (the JVM Observation: set once a frame observes it)
    if jo is None or not jo.future().isCompleted():
        return None
    return dict(seen.get)


def run_stage(
    plan: Plan,
    stage_id: str,
    *,
    cob: str,
    run_id: str,
    root: Location,
    params: dict[str, Any] | None = None,
    spark: SparkSession | None = None,
    run_meta: dict[str, Any] | None = None,
    log: Callable[[str], None] = progress.log,
    input_runs: Sequence[RunRef] = (),
    reuse_from: RunRef | None = None,
    policy: ExecutionPolicy | None = None,
    on_written: Sequence[Callable[[Written], None]] = (),
) -> StageReport:
    """Run one stage for ``cob`` into ``root``; the public entry point of the runtime.

    Upstream outputs are read from this run, else from ``input_runs`` (an earlier run whose
    outputs are still valid: how a preview or a rerun recomputes only what changed).
    ``reuse_from``: an earlier successful run of the cob whose outputs of this stage are
    taken instead of recomputing them when nothing they depend on changed (see
    :mod:`regflow.runtime.reuse`). ``policy``: where each step runs (None: mode auto, see
    :mod:`regflow.runtime.policy`). ``on_written``: called with each write's data
    (:class:`regflow.runtime.persist.Written`) before it is checked and promoted.
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
    done = completed_report(plan, stage, run)
    if done is not None:
        log(
            f"stage {plan.task_id(stage.id)}: already complete in run {run.run_id} (an earlier "
            "attempt committed every output); not recomputed"
        )
        return StageReport.from_dict(done)
    if reuse_from is not None and reuse_from.run_dir != run.run_dir:
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
        policy=policy,
        on_written=on_written,
    )
    return runner.execute()
