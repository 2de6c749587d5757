"""Markdown docs for DAGs and tasks, shown in the Airflow UI."""

from __future__ import annotations

from regflow.plan.cob import describe as describe_cob_rule
from regflow.plan.model import Plan, PlanNode, Stage


def dag_doc(plan: Plan) -> str:
    lines = [f"# {plan.pipeline}", "", plan.description.strip() or "_No description._", ""]
    lines += [
        f"- **Spec:** `{plan.file}`",
        f"- **Owner:** {plan.owner}",
        f"- **Data hash:** `{plan.data_hash}` · **metadata hash:** `{plan.metadata_hash}`",
        "- **Params:** `cob` (close-of-business date, YYYY-MM-DD) and "
        + (", ".join(f"`{k}` (default `{v}`)" for k, v in plan.params.items()) or "none"),
        f"- **Cob of a run without a `cob` param** (a scheduled run"
        f"{f', `{plan.schedule}`' if plan.schedule else ''}): "
        + describe_cob_rule(plan.cob_rule, plan.cob_holidays),
        "",
        "## Stages",
        "",
        "| task | nodes | reads | writes | checkpoints | ends at |",
        "|---|---|---|---|---|---|",
    ]
    for s in plan.stages:
        lines.append(
            f"| `{plan.task_id(s.id)}` | {', '.join(f'`{n}`' for n in s.nodes)} | "
            f"{', '.join(f'`{x}`' for x in (*s.sources, *s.inputs)) or '-'} | "
            f"{', '.join(f'`{x}`' for x in s.outputs)} | "
            f"{', '.join(f'`{x}`' for x in s.checkpoints) or '-'} | {s.boundary} |"
        )
    lines += [
        "",
        "The final `publish` task marks the run complete; `regflow export` reads "
        "only published runs.",
    ]
    return "\n".join(lines)


def stage_doc(plan: Plan, stage: Stage) -> str:
    lines = [
        f"### Stage `{plan.task_id(stage.id)}`",
        "",
        f"Ends at a **{stage.boundary}** boundary.",
        "",
        "| node | op | description |",
        "|---|---|---|",
    ]
    for nid in stage.nodes:
        n = plan.node(nid)
        desc = n.description.replace("\n", " ") or "-"
        lines.append(f"| `{n.id}` | `{n.op}` | {desc} |")
    lines += [
        "",
        f"- **Sources read:** {', '.join(f'`{s}`' for s in stage.sources) or 'none'}",
        f"- **Upstream outputs read:** {', '.join(f'`{s}`' for s in stage.inputs) or 'none'}",
        f"- **Outputs written:** {', '.join(f'`{s}`' for s in stage.outputs)}",
        f"- **Lineage checkpoints:** {', '.join(f'`{s}`' for s in stage.checkpoints) or 'none'}",
    ]
    return "\n".join(lines) + adjustments_doc(plan, stage)


def _rules_at(plan: Plan, stage: Stage) -> list[tuple[str, dict]]:
    out = []
    for nid in stage.nodes:
        n = plan.node(nid)
        if plan.op_of(nid).applies_rules:
            out += [(nid, r) for r in n.params.get("rules", [])]
    return out


def stage_display_name(plan: Plan, stage: Stage) -> str:
    """The graph label: the stage, plus the adjustment rules it applies."""
    rules = _rules_at(plan, stage)
    if not rules:
        return plan.task_id(stage.id)
    return f"{plan.task_id(stage.id)} ✎ {', '.join(r['rule_id'] for _, r in rules)}"


def adjustments_doc(plan: Plan, stage: Stage) -> str:
    rules = _rules_at(plan, stage)
    if not rules:
        return ""
    lines = [
        "",
        "#### Adjustment rules applied in this stage",
        "",
        "| rule | at | changes | when | effective | approved by | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in rules:
        changes = "; ".join(f"{a['field']} {a['operation']} {a['value']}" for a in r["adjustments"])
        conds = (
            " and ".join(
                f"{c['field']} {c['operator']}" + ("" if c["value"] is None else f" {c['value']}")
                for c in r["conditions"]
            )
            or "all rows"
        )
        until = r.get("expiry_date") or "open"
        appr = r["approval"]
        ticket = f" ({appr['ticket']})" if appr.get("ticket") else ""
        lines.append(
            f"| `{r['rule_id']}` | {r['position']} `{r['stage']}` | {changes} | {conds} | "
            f"{r['effective_date']} .. {until} | {appr['approved_by']}{ticket} | "
            f"{r['reason']} |"
        )
    lines += [
        "",
        "Each change is audited row by row in `<node>__adjusted.audit` "
        "(`regflow export <pipeline> <node>__adjusted.audit --cob ...`).",
    ]
    return "\n".join(lines)


def load_doc(plan: Plan, node: PlanNode) -> str:
    """Docs of a ``load_<star>`` task: the tables it lands and how."""
    params = node.params
    schema = params.get("schema") or plan.pipeline
    dims = ", ".join(f"dim_{d}" for d in params.get("dimensions", {}))
    facts = ", ".join(f"fact_{f}" for f in params.get("facts", {}))
    reports = ", ".join(params.get("reports", {})) or "none"
    return (
        f"Prepares the warehouse schema `{schema}` for the star staged by `{node.id}` "
        "(REGFLOW_WAREHOUSE: embedded PostgreSQL by default, Redshift in production): DDL, "
        "column checks, staged tables complete. The rows land at `publish`, in one "
        "transaction (stage, lock, de-duplicate, merge, record the load) that commits with "
        "the run's publication.\n\n"
        f"- dimensions: {dims}\n- facts: {facts}\n- reports: {reports}\n"
        f"- load: {params.get('load', 'auto')}\n\n"
        "A rerun of the same cob replaces that cob's facts; a failure leaves the previous "
        "state in place."
    )
