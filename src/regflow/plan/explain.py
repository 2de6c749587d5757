"""Print a plan readably: what ``regflow plan`` shows, stage by stage."""

from __future__ import annotations

from regflow.core.types import Schema
from regflow.ops import registry
from regflow.ops.builtin import AggregateParams, CalcParams, _calc_schema_upto
from regflow.ops.decimal_checks import shown_roundings
from regflow.ops.decimals import analyze
from regflow.plan.model import Plan


def explain(plan: Plan) -> str:
    out = [
        f"pipeline {plan.pipeline}  ({plan.file})",
        f"  owner {plan.owner} · tags {', '.join(plan.tags) or '-'} · "
        f"schedule {plan.schedule or 'manual'}"
        + (f" · cob {plan.cob_rule}" if plan.cob_rule != "run_date" else "")
        + (f" ({len(plan.cob_holidays)} holidays)" if plan.cob_holidays else ""),
        f"  data hash {plan.data_hash} · metadata hash {plan.metadata_hash}",
        f"  params: {', '.join(f'{k}={v}' for k, v in plan.params.items()) or 'none'}",
        *([f"  adjustments: {_rules(plan)}"] if plan.adjustments_dir else []),
        "",
        "sources:",
    ]
    for s in plan.sources:
        cols = len([c for c in s.schema.columns if not c.name.startswith("_")])
        schema = f"{cols} columns" if s.schema.known else "schema inferred at run time"
        out.append(
            f"  {s.name:<16} {s.format:<8} {s.path}  key=({', '.join(s.primary_key)}) {schema}"
            + (" · may be empty" if s.allow_empty else "")
        )
    out.append("")
    for i, st in enumerate(plan.stages, start=1):
        # one name per stage: its Airflow task id, as `regflow run` and Airflow show it
        after = f" after {', '.join(plan.task_id(u) for u in st.upstream)}" if st.upstream else ""
        task = plan.task_id(st.id)
        out.append(f"stage {i}: {task}  (task '{task}', ends at {st.boundary}{after})")
        reads = [*st.sources, *st.inputs]
        out.append(f"  reads   {', '.join(reads)}")
        for nid in st.nodes:
            n = plan.node(nid)
            marks = []
            if n.persisted:
                marks.append("persisted")
            if n.lineage_checkpoint:
                marks.append(f"checkpoint {n.lineage_checkpoint}")
            mark = f"  [{'; '.join(marks)}]" if marks else ""
            out.append(f"  {n.id:<18} {n.op:<10} <- {', '.join(n.inputs)}{mark}")
            if n.schema.known:
                shown = [
                    f"{c.name}:{c.type}" for c in n.schema.columns if not c.name.startswith("_")
                ]
                out.append(f"  {'':<18} -> {', '.join(shown)}")
            if n.op in ("calc", "aggregate"):
                ins = [plan.schema_of(i) for i in n.inputs]
                for note in decimal_notes(n.op, dict(n.params), ins):
                    out.append(f"  {'':<18} rounds {note}")
            elif n.op in registry.names() and registry.get(n.op).extra.get("roundings"):
                out.append(f"  {'':<18} rounds {registry.get(n.op).extra['roundings']}")
        out.append(f"  writes  {', '.join([*st.outputs, *st.checkpoints])}")
        out.append("")
    for n in plan.star_nodes():
        schema = n.params.get("schema") or plan.pipeline
        tables = [f"dim_{d}" for d in n.params.get("dimensions", {})] + [
            f"fact_{f}" for f in n.params.get("facts", {})
        ]
        out.append(
            f"then: load_{n.id} (lands {', '.join(tables)} and "
            f"{', '.join(n.params.get('reports', {})) or 'no reports'} in warehouse schema "
            f"'{schema}', one transaction; load: {n.params.get('load', 'auto')})"
        )
    out.append("then: publish (marks the run complete)")
    if plan.warnings:
        out += ["", "warnings:", *plan.warnings]
    return "\n".join(out)


def _rules(plan: Plan) -> str:
    n = sum(len(node.params.get("rules", [])) for node in plan.adjustment_nodes())
    if not n:
        return f"none (folder {plan.adjustments_dir})"
    return f"{n} rule(s) from {plan.adjustments_dir} (set {plan.adjustment_set_hash})"


def decimal_notes(op: str, params: dict[str, object], inputs: list[Schema]) -> list[str]:
    """What ``regflow plan`` says of the decimals a calc or an aggregate rounds on purpose:
    explicit ``round()``/``CAST`` and divisions (whose quotient Spark rounds)."""
    if not inputs or not inputs[0].known:
        return []
    found: list[tuple[str, str]] = []
    if op == "calc":
        calc = CalcParams.model_validate(params)
        for name, expr, _ in calc.items():
            schema = _calc_schema_upto(inputs[0], calc, name)
            found += [
                (name, f"{r.expr}: {r.detail}") for r in shown_roundings(analyze(expr, schema))
            ]
    elif op == "aggregate":
        agg = AggregateParams.model_validate(params)
        for name, m in agg.measures.items():
            typed = analyze(m.expr, inputs[0]) if m.func != "count" else None
            found += [(name, f"{r.expr}: {r.detail}") for r in shown_roundings(typed)]
    return [f"{name}: {what}" for name, what in found]
