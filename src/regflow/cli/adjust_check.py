"""Validate adjustment rules for ``regflow adjustments check`` and ``regflow validate``.

Validation covers every rule in the repository (ids must be unique across it) and reports the
ones asked about.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from regflow.adjust.identity import same_person
from regflow.adjust.loader import LoadedRule, RuleParts, load_rule_set
from regflow.errors import Problem, RegflowError, in_file_order
from regflow.plan.model import Plan

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
