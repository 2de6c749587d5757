"""Markdown docs for DAGs and tasks, shown in the Airflow UI."""

from __future__ import annotations

from regflow.plan.model import Plan, Stage


def dag_doc(plan: Plan) -> str:
    lines = [f"# {plan.pipeline}", "", plan.description.strip() or "_No description._", ""]
    lines += [
        f"- **Spec:** `{plan.file}`",
        f"- **Owner:** {plan.owner}",
        f"- **Data hash:** `{plan.data_hash}` · **metadata hash:** `{plan.metadata_hash}`",
        "- **Params:** `cob` (close-of-business date, YYYY-MM-DD) and "
        + (", ".join(f"`{k}` (default `{v}`)" for k, v in plan.params.items()) or "none"),
        "",
        "## Stages",
        "",
        "| task | nodes | reads | writes | checkpoints | ends at |",
        "|---|---|---|---|---|---|",
    ]
    for s in plan.stages:
        lines.append(
            f"| `{s.id}` | {', '.join(f'`{n}`' for n in s.nodes)} | "
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
        f"### Stage `{stage.id}`",
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
    return "\n".join(lines)
