"""Drill-through: from a reported row down to the source rows and adjustments behind it.

Walks the plan backwards from a persisted node. Row-wise nodes keep lineage ids; a rollup's
checkpoint maps each total row to its members; an aggregate's checkpoint maps each group to
its member rows with their contributions; adjust nodes contribute their audit rows. At the
sources, ids are resolved by recomputing them over the run's input snapshot with Spark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from regflow.errors import StorageError
from regflow.plan.model import Plan
from regflow.spec.models import LINEAGE_COLUMN
from regflow.storage import RunRef, read_node


@dataclass
class Trace:
    figure: list[dict[str, Any]]
    steps: list[str] = field(default_factory=list)
    contributions: list[dict[str, Any]] = field(default_factory=list)  # aggregate members
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _read(run: RunRef, name: str) -> list[dict[str, Any]]:
    return read_node(run, name).to_pylist()


def trace(
    plan: Plan,
    run: RunRef,
    node: str,
    where: dict[str, str],
    measure: str | None = None,
    resolve_sources: bool = True,
) -> Trace:
    rows = [r for r in _read(run, node) if all(str(r.get(k)) == v for k, v in where.items())]
    if not rows:
        raise StorageError(f"no row of '{node}' matches {where}")
    result = Trace(figure=rows)
    pending: dict[str, set[int]] = {node: {r[LINEAGE_COLUMN] for r in rows}}
    order = [n.id for n in plan.nodes]
    while pending:
        name = max(pending, key=lambda n: order.index(n) if n in order else -1)
        ids = pending.pop(name)
        if plan.is_source(name):
            result.steps.append(f"{name}: {len(ids):,} source rows")
            result.sources[name] = (
                resolve(plan, run, name, ids)
                if resolve_sources
                else [{LINEAGE_COLUMN: i} for i in sorted(ids)]
            )
            continue
        pn = plan.node(name)
        nxt = plan.main_inputs(name)
        if pn.lineage == "rollup":
            members = _read(run, f"{name}.lineage")
            totals = {m["_lineage_rollup_id"] for m in members} & ids
            ids = (ids - totals) | {
                m[LINEAGE_COLUMN] for m in members if m["_lineage_rollup_id"] in totals
            }
            result.steps.append(f"{name}: rollup of {len(ids):,} rows")
        elif pn.lineage == "aggregate":
            keys = pn.params["group_by"]
            groups = {
                tuple(str(r[k]) for k in keys) for r in _read(run, name) if r[LINEAGE_COLUMN] in ids
            }
            members = [
                m for m in _read(run, f"{name}.lineage") if tuple(str(m[k]) for k in keys) in groups
            ]
            if measure and members and measure in members[0]:
                members = [m for m in members if m[measure] is not None]
            result.contributions = members
            ids = {m[LINEAGE_COLUMN] for m in members}
            total = (
                sum((m[measure] for m in members), Decimal(0))
                if measure and members and measure in members[0]
                else None
            )
            extra = f", {measure} contributions sum to {total:,}" if total is not None else ""
            result.steps.append(f"{name}: {len(groups)} group(s) <- {len(ids):,} rows{extra}")
        elif plan.op_of(name).applies_rules:
            audit = [a for a in _read(run, f"{name}.audit") if a[LINEAGE_COLUMN] in ids]
            result.adjustments += audit
            result.steps.append(f"{name}: {len(audit)} adjusted value(s)")
        for i in nxt:
            pending.setdefault(i, set()).update(ids)
    return result


def resolve(plan: Plan, run: RunRef, source: str, ids: set[int]) -> list[dict[str, Any]]:
    """The source rows with these lineage ids, read from the run's own input snapshot."""
    import json

    from pyspark.sql import functions as F

    from regflow.runtime.executor import run_variables
    from regflow.runtime.session import get_spark
    from regflow.runtime.sources import read_source

    summary_path = run.run_dir / "_RUN_SUCCESS"
    params = json.loads(summary_path.read_text()).get("params", {}) if summary_path.exists() else {}
    spark = get_spark()
    df, _ = read_source(
        spark, plan.source(source), run_variables(plan, run.cob, params), pipeline=plan.pipeline
    )
    wanted = spark.createDataFrame([(i,) for i in sorted(ids)], f"{LINEAGE_COLUMN} bigint")
    return [r.asDict() for r in df.join(F.broadcast(wanted), LINEAGE_COLUMN).collect()]
