"""Load adjustment rule files, collecting every problem with its file:line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from regflow.adjust.models import AdjustmentRule
from regflow.errors import Problem
from regflow.spec.loader import pydantic_problems
from regflow.spec.yamlpos import SourceMap, YamlSyntaxError, load_yaml


@dataclass(frozen=True)
class LoadedRule:
    path: Path
    rule: AdjustmentRule
    smap: SourceMap

    def problem(
        self, message: str, *path: str | int, hint: str = "", severity: str = "error"
    ) -> Problem:
        return self.smap.problem(message, tuple(path), hint=hint, severity=severity)


def rule_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted([*p.rglob("*.yaml"), *p.rglob("*.yml")])
        elif p.is_file():
            out.append(p)
    return sorted(set(out))


def load_rule_file(path: Path) -> tuple[LoadedRule | None, list[Problem]]:
    text = path.read_text(encoding="utf-8")
    try:
        raw, smap = load_yaml(text, str(path))
    except YamlSyntaxError as exc:
        return None, [exc.problem]
    if not isinstance(raw, dict):
        return None, [
            smap.problem(
                "an adjustment rule file must be a YAML mapping",
                (),
                hint="start with 'rule_id: ADJ-...'",
            )
        ]
    try:
        rule = AdjustmentRule.model_validate(raw)
    except ValidationError as exc:
        return None, pydantic_problems(exc, smap, (), AdjustmentRule)
    return LoadedRule(path, rule, smap), []


def load_rules(paths: list[Path]) -> tuple[list[LoadedRule], list[Problem]]:
    """Every rule in ``paths`` (files or folders) plus every problem, including duplicate ids."""
    rules: list[LoadedRule] = []
    problems: list[Problem] = []
    for f in rule_files(paths):
        rule, probs = load_rule_file(f)
        problems += probs
        if rule is not None:
            rules.append(rule)
    problems += duplicate_rule_ids(rules)
    return rules, problems


def duplicate_rule_ids(rules: list[LoadedRule]) -> list[Problem]:
    """One problem at every file whose rule_id another file also uses, naming the others.

    Reported at each of them, not only at the later one: ``adjustments check NEW.yaml`` keeps
    the problems of the files asked about, and a new file may sort before the old one."""
    by_id: dict[str, list[LoadedRule]] = {}
    for r in rules:
        group = by_id.setdefault(r.rule.rule_id, [])
        if all(g.path.resolve() != r.path.resolve() for g in group):
            group.append(r)
    out = []
    for rule_id, group in by_id.items():
        for r in group if len(group) > 1 else []:
            where = ", ".join(str(o.smap.location(("rule_id",))) for o in group if o is not r)
            out.append(
                r.problem(
                    f"rule_id '{rule_id}' is already used by {where}",
                    "rule_id",
                    hint="rule ids are unique across the repository; take the next number",
                )
            )
    return out
