"""``regflow adjustments check``: validate rules and preview their impact for a pull request.

Validation covers every rule in the repository (ids must be unique across it) and reports the
ones asked about. The preview recomputes, for the cob's latest successful run, only the stages
whose node hashes changed (reusing every upstream output whose hash still matches), then
compares the pipeline's final outputs before and after.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regflow.adjust.identity import same_person
from regflow.adjust.loader import LoadedRule, RuleParts, load_rule_set
from regflow.errors import Problem, RegflowError, StorageError, in_file_order
from regflow.plan.model import Plan
from regflow.spec.models import LINEAGE_COLUMN

if TYPE_CHECKING:
    from regflow.adjust.review import PullRequestReview


@dataclass
class RuleCheck:
    rules: list[LoadedRule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    plans: dict[str, Plan] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def validate_rules(
    project: Path,
    files: list[Path] | None = None,
    pipeline: str | None = None,
    author: str | None = None,
    review: PullRequestReview | None = None,
) -> RuleCheck:
    """Check every rule of the repository; keep the problems of ``files`` (default: all).

    With ``review`` (the pull request as the code host records it), every rule file the pull
    request changes is also checked against its approvals, whether or not ``files`` names it.
    """
    from regflow.plan.build import check_rules
    from regflow.plan.compiler import compile_file

    root = project / "adjustments"
    extra = [f for f in (files or []) if not _inside(f, root)]
    rules, partial, problems = load_rule_set([root, *extra], file_names=True)
    out = RuleCheck(problems=list(problems))
    partial_by: dict[str, list[RuleParts]] = defaultdict(list)
    for parts in partial:  # (their pipeline's problems are reported by the file's own)
        if _pipeline_folder(parts.path, root) in (None, parts.pipeline):
            partial_by[parts.pipeline].append(parts)
    by_pipeline: dict[str, list[LoadedRule]] = defaultdict(list)
    for r in rules:
        folder = _pipeline_folder(r.path, root)
        if folder is not None and folder != r.rule.pipeline:
            out.problems.append(
                r.problem(
                    f"rule for pipeline '{r.rule.pipeline}' sits in adjustments/{folder}/",
                    "pipeline",
                    hint=f"move it to adjustments/{r.rule.pipeline}/ or fix 'pipeline'",
                )
            )
            continue
        by_pipeline[r.rule.pipeline].append(r)
    for name in sorted({*by_pipeline, *partial_by}):
        group = by_pipeline.get(name, [])
        spec = project / "pipelines" / f"{name}.yaml"
        if not spec.exists():
            known = sorted(p.stem for p in (project / "pipelines").glob("*.yaml"))
            where: list[LoadedRule | RuleParts] = [*group, *partial_by.get(name, [])]
            for at in where:
                out.problems.append(
                    at.problem(
                        f"no pipeline '{name}' in {project / 'pipelines'}",
                        "pipeline",
                        hint="pipelines: " + ", ".join(known),
                    )
                )
            continue
        try:
            plan = compile_file(spec)
        except RegflowError as exc:
            for r in group:
                out.problems.append(
                    r.problem(
                        f"pipeline '{name}' does not compile: {str(exc).splitlines()[0]}",
                        "pipeline",
                        hint=f"run `regflow validate {spec}`",
                    )
                )
            continue
        out.plans[name] = plan
        out.problems += check_rules(plan, group, partial_by.get(name, []))
    if author:
        for r in rules:
            if same_person(r.rule.approval.approved_by, author):
                out.problems.append(
                    r.problem(
                        f"maker-checker: the pull request's author '{author}' cannot be the "
                        "approver",
                        "approval",
                        "approved_by",
                        hint="a second person must approve the rule",
                    )
                )
    if review is not None:
        from regflow.adjust.review import verify_approvals

        out.problems += verify_approvals(rules, review, project)
        changed = [r.path for r in rules if _changed_by(review, r.path, project)]
        files = [*files, *changed] if files else files
    selected = {f.resolve() for f in rule_file_list(files)} if files else None
    keep = [
        r
        for r in rules
        if (selected is None or r.path.resolve() in selected)
        and (pipeline is None or r.rule.pipeline == pipeline)
    ]
    out.rules = keep
    out.problems = in_file_order(out.problems)
    if selected is not None or pipeline is not None:
        names = {str(r.path) for r in keep} | {str(f) for f in (selected or [])}
        out.problems = [
            p
            for p in out.problems
            if p.location is None
            or p.location.file in names
            or Path(p.location.file).resolve() in (selected or set())
        ]
    return out


def _changed_by(review: PullRequestReview, path: Path, project: Path) -> bool:
    try:
        return review.changes(path.resolve().relative_to(project.resolve()).as_posix())
    except ValueError:
        return False


def rule_file_list(files: list[Path] | None) -> list[Path]:
    from regflow.adjust.loader import rule_files

    return rule_files(files or [])


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _pipeline_folder(path: Path, root: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return rel.parts[0] if len(rel.parts) > 1 else None


# ---------------------------------------------------------------------------- preview
def preview(
    spec: Path, project: Path, rules: list[LoadedRule], cob: str, storage: Path, log: Any = print
) -> dict[str, Any]:
    """Recompute what the rules change for ``cob`` and compare the final outputs."""
    from regflow.adjust.models import AdjustmentRule
    from regflow.plan.build import build_plan_with_rules
    from regflow.plan.compiler import compile_file
    from regflow.plan.reuse import reusable_stages
    from regflow.runtime.executor import run_stage, run_variables
    from regflow.runtime.sources import fingerprint, resolve_source_path
    from regflow.spec.yamlpos import SourceMap
    from regflow.storage import RUN_SUCCESS_FILE, RunRef, latest_run

    pipeline = compile_file(spec).pipeline
    try:
        before = latest_run(storage, pipeline, cob)
    except StorageError as exc:
        return {"skipped": True, "reason": str(exc)}
    summary = json.loads((before.run_dir / RUN_SUCCESS_FILE).read_text())
    params = summary.get("params") or {}
    # The run's own rules, with the rules under review added or replacing theirs by rule_id.
    merged: dict[str, LoadedRule] = {}
    for d in summary.get("rules") or []:
        rule = AdjustmentRule.model_validate(d)
        merged[rule.rule_id] = LoadedRule(before.run_dir, rule, SourceMap(str(before.run_dir), ""))
    for r in rules:
        merged[r.rule.rule_id] = r
    plan = build_plan_with_rules(spec, list(merged.values()), label=f"run {before.run_id} + PR")
    variables = run_variables(plan, cob, params)

    def source_state(name: str) -> tuple[str, str]:
        path, files = resolve_source_path(plan.source(name), variables)
        return str(path), fingerprint(files)

    # the run's own rule: a stage is taken from the base run only when nothing it depends on
    # changed (its node, the params, its sources' files, the regflow version, its upstream)
    why_not = reusable_stages(plan, before, params=params, source_state=source_state)
    reuse = {s for s, why in why_not.items() if why is None}
    scratch_root = Path(tempfile.mkdtemp(prefix="regflow-preview-"))
    after = RunRef(scratch_root, plan.pipeline, cob, "preview")
    reports = []
    for stage in plan.stages:
        if plan.node(stage.id).lineage == "sink":
            continue  # a preview compares figures; it stages nothing for the warehouse
        if stage.id in reuse:
            log(f"  reusing stage {stage.id} from run {before.run_id} (unchanged)")
            continue
        log(f"  recomputing stage {stage.id}: {why_not[stage.id]}")
        reports.append(
            run_stage(
                plan,
                stage.id,
                cob=cob,
                run_id="preview",
                root=scratch_root,
                params=params,
                input_runs=[before],
                log=log,
            )
        )
    ids = {r.rule.rule_id for r in rules}
    matched = [a for rep in reports for a in rep.adjustments if a["rule_id"] in ids]
    # the reported figures: final outputs of the calculation (what only a warehouse star reads)
    calc = [s for s in plan.stages if plan.node(s.id).lineage != "sink"]
    sinks = [s.id for s in calc if not any(s.id in t.upstream for t in calc)]
    old_sinks = _sinks_of(before)
    changes = {}
    for sink in sinks:
        new_run = after if after.is_complete(sink) else before
        base_name = sink if before.is_complete(sink) else _base_sink(sink, old_sinks)
        if base_name is None:
            continue
        changes[sink] = compare(_read(before, base_name), _read(new_run, sink))
    shutil.rmtree(scratch_root, ignore_errors=True)  # a preview is a report, not a run
    return {
        "skipped": False,
        "pipeline": plan.pipeline,
        "cob": cob,
        "base_run": before.run_id,
        "reused_stages": sorted(reuse),
        "recomputed_stages": [r.stage for r in reports],
        "rules": matched,
        "changes": changes,
        "adjustment_set_hash": plan.adjustment_set_hash,
    }


def _sinks_of(run: Any) -> list[str]:
    return [p.name for p in run.run_dir.iterdir() if p.is_dir() and "." not in p.name]


def _base_sink(sink: str, old: list[str]) -> str | None:
    base = sink.split("__adjusted")[0]
    return base if base in old else None


def _read(run: Any, node: str) -> list[dict[str, Any]]:
    from regflow.storage import read_node

    return read_node(run, node).to_pylist()


def compare(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row key (the non-numeric columns), every numeric column that changed."""
    if not after:
        return []
    rows = before + after
    cols = [c for c in after[0] if c != LINEAGE_COLUMN]
    numeric = [
        c
        for c in cols
        if any(
            isinstance(r.get(c), int | float | Decimal) and not isinstance(r.get(c), bool)
            for r in rows
        )
    ]
    keys = [c for c in cols if c not in numeric]

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(str(r.get(k)) for k in keys)

    old = {key(r): r for r in before}
    out = []
    for r in sorted(after, key=key):
        prev = old.get(key(r), {})
        for c in numeric:
            a, b = prev.get(c), r.get(c)
            if a != b:
                delta = None if a is None or b is None else b - a
                out.append(
                    {
                        **{k: str(r.get(k)) for k in keys},
                        "measure": c,
                        "before": a,
                        "after": b,
                        "change": delta,
                    }
                )
    return out


# ---------------------------------------------------------------------------- report
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6f}"
    if isinstance(v, Decimal):
        return f"{v:,.2f}"
    return str(v)


def markdown(check: RuleCheck, previews: list[dict[str, Any]]) -> str:
    errors, warnings = check.errors, [p for p in check.problems if p.severity == "warning"]
    status = "❌ invalid" if errors else "✅ valid"
    lines = [
        "## regflow adjustments check",
        "",
        f"**Validation: {status}** — {len(check.rules)} rule(s), {len(errors)} error(s), "
        f"{len(warnings)} warning(s)",
        "",
    ]
    for r in sorted(check.rules, key=lambda x: x.rule.rule_id):
        rule = r.rule
        until = rule.expiry_date or "open-ended"
        ticket = f", {rule.approval.ticket}" if rule.approval.ticket else ""
        lines.append(
            f"- `{rule.rule_id}` ({r.path}): {rule.position} `{rule.stage}` of "
            f"`{rule.pipeline}`, effective {rule.effective_date} .. {until}; requested "
            f"by {rule.approval.requested_by}, approved by {rule.approval.approved_by}"
            f"{ticket}. {rule.reason}"
        )
    if check.problems:
        lines += ["", "```text", *[p.format() for p in check.problems], "```"]
    for pv in previews:
        lines.append("")
        if pv.get("skipped"):
            lines.append(f"**Impact preview skipped:** {pv['reason']}")
            continue
        lines += [
            f"### Impact on `{pv['pipeline']}`, cob {pv['cob']}",
            f"Compared with run `{pv['base_run']}`; recomputed "
            f"{', '.join(pv['recomputed_stages']) or 'nothing'}, reused "
            f"{', '.join(pv['reused_stages']) or 'nothing'}.",
            "",
            "| rule | status | rows matched | note |",
            "|---|---|---:|---|",
        ]
        for a in pv["rules"]:
            lines.append(
                f"| `{a['rule_id']}` | {a['status']} | {a['rows_matched']:,} | "
                f"{a['reason'] or ''} |"
            )
        for sink, rows in pv["changes"].items():
            lines += ["", f"**`{sink}`**", ""]
            if not rows:
                lines.append("No reported figure changes.")
                continue
            keys = [k for k in rows[0] if k not in ("measure", "before", "after", "change")]
            lines.append("| " + " | ".join([*keys, "measure", "before", "after", "change"]) + " |")
            lines.append("|" + "---|" * len(keys) + "---|---:|---:|---:|")
            for row in rows:
                lines.append(
                    "| "
                    + " | ".join(
                        [
                            *(row[k] for k in keys),
                            row["measure"],
                            _fmt(row["before"]),
                            _fmt(row["after"]),
                            _fmt(row["change"]),
                        ]
                    )
                    + " |"
                )
    return "\n".join(lines)


def as_json(check: RuleCheck, previews: list[dict[str, Any]]) -> str:
    data = {
        "valid": not check.errors,
        "rules": [
            {
                "rule_id": r.rule.rule_id,
                "file": str(r.path),
                "pipeline": r.rule.pipeline,
                "stage": r.rule.stage,
                "position": r.rule.position,
            }
            for r in check.rules
        ],
        "problems": [
            {
                "severity": p.severity,
                "message": p.message,
                "location": str(p.location) if p.location else None,
                "hint": p.hint,
            }
            for p in check.problems
        ],
        "previews": previews,
    }
    return json.dumps(data, indent=2, default=str)
