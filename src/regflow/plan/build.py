"""Compile a spec together with its adjustment rules: validate, splice, compile."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from regflow.adjust.loader import LoadedRule, RuleParts, load_rule_set
from regflow.errors import AdjustmentError, Problem, in_file_order
from regflow.plan.compiler import compile_spec
from regflow.plan.model import Plan
from regflow.plan.rule_checks import check_rule, overlap_warnings
from regflow.plan.splice import splice
from regflow.project import default_adjustments_dir as _project_adjustments_dir
from regflow.spec.loader import LoadedSpec, load_spec, project_dir_of


def default_adjustments_dir(spec_path: Path, pipeline: str) -> Path:
    return _project_adjustments_dir(project_dir_of(spec_path), pipeline)


def adjustment_set_hash(rules: list[LoadedRule]) -> str:
    if not rules:
        return "none"
    blob = json.dumps(
        sorted((r.rule.runtime_dict() for r in rules), key=lambda d: d["rule_id"]),
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_rules(
    plan: Plan, rules: list[LoadedRule], partial: Sequence[RuleParts] = ()
) -> list[Problem]:
    """The problems of ``rules`` against ``plan``, and of the valid parts of the rule files
    that failed validation (``partial``: their unknown fields and wrong types are reported
    in the same pass as their other problems)."""
    problems: list[Problem] = []
    for parts in partial:
        if parts.pipeline == plan.pipeline:
            problems += check_rule(plan, parts)
    for r in rules:
        if r.rule.pipeline != plan.pipeline:
            problems.append(
                r.problem(
                    f"rule is for pipeline '{r.rule.pipeline}' but sits with pipeline "
                    f"'{plan.pipeline}'",
                    "pipeline",
                    hint=f"move it to adjustments/{r.rule.pipeline}/ or fix 'pipeline'",
                )
            )
            continue
        problems += check_rule(plan, r)
    return problems + overlap_warnings(rules)


def build_plan(spec_path: Path | str, adjustments: Path | str | None = None) -> Plan:
    """The plan of a spec with the rules in ``adjustments`` (default: the project's
    ``adjustments/<pipeline>/``; an empty or missing folder means no rules) spliced in."""
    spec_path = Path(spec_path)
    loaded = load_spec(spec_path)
    base = compile_spec(loaded)
    folder = (
        Path(adjustments)
        if adjustments is not None
        else default_adjustments_dir(spec_path, base.pipeline)
    )
    rules, partial, problems = load_rule_set([folder]) if folder.exists() else ([], [], [])
    return _with_rules(loaded, base, rules, problems, str(folder.resolve()), partial)


def build_plan_with_rules(spec_path: Path | str, rules: list[LoadedRule], label: str) -> Plan:
    """The plan of a spec with exactly ``rules`` (e.g. a run's rules plus a PR's changes)."""
    loaded = load_spec(Path(spec_path))
    return _with_rules(loaded, compile_spec(loaded), rules, [], label)


def _with_rules(
    loaded: LoadedSpec,
    base: Plan,
    rules: list[LoadedRule],
    problems: list[Problem],
    where: str,
    partial: Sequence[RuleParts] = (),
) -> Plan:
    problems = problems + check_rules(base, rules, partial)
    if any(p.severity == "error" for p in problems):
        raise AdjustmentError(in_file_order(problems))
    if not rules:
        return replace(base, adjustments_dir=where)
    plan = compile_spec(splice(loaded, [r.rule for r in rules]))
    warnings = tuple(p.format() for p in problems if p.severity == "warning")
    return replace(
        plan,
        adjustments_dir=where,
        adjustment_set_hash=adjustment_set_hash(rules),
        warnings=plan.warnings + warnings,
    )
