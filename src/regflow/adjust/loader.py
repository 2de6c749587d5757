"""Load adjustment rule files, collecting every problem with its file:line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from regflow.adjust.models import RULE_ID, Adjustment, AdjustmentRule, Condition
from regflow.core.problems import pydantic_problems
from regflow.core.yamlpos import SourceMap, YamlSyntaxError, load_yaml
from regflow.errors import Problem


@dataclass(frozen=True)
class LoadedRule:
    path: Path
    rule: AdjustmentRule
    smap: SourceMap

    def problem(
        self, message: str, *path: str | int, hint: str = "", severity: str = "error"
    ) -> Problem:
        return self.smap.problem(message, tuple(path), hint=hint, severity=severity)

    def parts(self) -> RuleParts:
        """What the plan checks read of the rule."""
        r = self.rule
        return RuleParts(
            self.path, self.smap, r.pipeline, r.stage, r.position,
            tuple(enumerate(r.conditions)), tuple(enumerate(r.adjustments)),
        )  # fmt: skip


@dataclass(frozen=True)
class RuleParts:
    """A rule as the plan checks see it: its splice point, and its conditions and
    adjustments with their positions in the file.

    Of a file that failed validation, the parts that are valid on their own: the plan
    checks then report their problems (an unknown field, a value of the wrong type) in the
    same pass as the file's own, not after the author fixed those. Such parts are checked,
    never applied.
    """

    path: Path
    smap: SourceMap
    pipeline: str
    stage: str
    position: str
    conditions: tuple[tuple[int, Condition], ...]
    adjustments: tuple[tuple[int, Adjustment], ...]

    def problem(
        self, message: str, *path: str | int, hint: str = "", severity: str = "error"
    ) -> Problem:
        return self.smap.problem(message, tuple(path), hint=hint, severity=severity)


def _valid_parts(raw: dict[str, Any], smap: SourceMap, path: Path) -> RuleParts | None:
    """The :class:`RuleParts` of an invalid rule file's mapping ``raw``; None when its
    splice point itself is not valid (nothing can be checked against the plan)."""
    pipeline, stage = raw.get("pipeline"), raw.get("stage")
    position = raw.get("position", "after")
    if not (isinstance(pipeline, str) and isinstance(stage, str)):
        return None
    if position not in ("after", "before"):
        return None

    def valid(model: type[Condition] | type[Adjustment], items: Any) -> list[tuple[int, Any]]:
        out = []
        for i, item in enumerate(items if isinstance(items, list) else []):
            try:
                out.append((i, model.model_validate(item)))
            except ValidationError:
                continue  # (reported with the file's own problems)
        return out

    return RuleParts(
        path, smap, pipeline, stage, position,
        tuple(valid(Condition, raw.get("conditions"))),
        tuple(valid(Adjustment, raw.get("adjustments"))),
    )  # fmt: skip


def rule_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted([*p.rglob("*.yaml"), *p.rglob("*.yml")])
        elif p.is_file():
            out.append(p)
    return sorted(set(out))


@dataclass(frozen=True)
class RuleIdAt:
    """The ``rule_id`` a file declares, also when the file is otherwise invalid."""

    rule_id: str
    path: Path
    smap: SourceMap

    def problem(self, message: str, hint: str = "") -> Problem:
        return self.smap.problem(message, ("rule_id",), hint=hint)


def load_rule_file(path: Path) -> tuple[LoadedRule | None, list[Problem]]:
    rule, _, problems, _ = _load(path)
    return rule, problems


def _load(
    path: Path,
) -> tuple[LoadedRule | None, RuleParts | None, list[Problem], RuleIdAt | None]:
    """The rule in ``path``, or the parts of it that are valid on their own (see
    :class:`RuleParts`) with its problems; and the rule_id it declares."""
    text = path.read_text(encoding="utf-8")
    try:
        raw, smap = load_yaml(text, str(path))
    except YamlSyntaxError as exc:
        return None, None, [exc.problem], None
    if not isinstance(raw, dict):
        return (
            None,
            None,
            [
                smap.problem(
                    "an adjustment rule file must be a YAML mapping",
                    (),
                    hint="start with 'rule_id: ADJ-...'",
                )
            ],
            None,
        )
    rule_id = raw.get("rule_id")
    id_at = RuleIdAt(rule_id, path, smap) if isinstance(rule_id, str) else None
    try:
        rule = AdjustmentRule.model_validate(raw)
    except ValidationError as exc:
        problems = pydantic_problems(exc, smap, (), AdjustmentRule)
        return None, _valid_parts(raw, smap, path), problems, id_at
    return LoadedRule(path, rule, smap), None, [], id_at


def load_rules(paths: list[Path]) -> tuple[list[LoadedRule], list[Problem]]:
    """Every rule in ``paths`` (files or folders) plus every problem, including duplicate ids."""
    rules, _, problems = load_rule_set(paths)
    return rules, problems


def load_rule_set(
    paths: list[Path], *, file_names: bool = False
) -> tuple[list[LoadedRule], list[RuleParts], list[Problem]]:
    """:func:`load_rules`, plus the valid parts of the files that failed validation (for the
    plan checks: see :class:`RuleParts`). With ``file_names``, a file whose name is not its
    rule_id is a problem too (the repository check; a run does not care what files are
    called)."""
    rules: list[LoadedRule] = []
    partial: list[RuleParts] = []
    problems: list[Problem] = []
    ids: list[RuleIdAt] = []
    for f in rule_files(paths):
        rule, parts, probs, id_at = _load(f)
        problems += probs
        if rule is not None:
            rules.append(rule)
        elif parts is not None:
            partial.append(parts)
        if id_at is not None:
            ids.append(id_at)
    problems += duplicate_rule_ids(ids)
    if file_names:
        problems += misnamed_files(ids)
    return rules, partial, problems


def misnamed_files(ids: list[RuleIdAt]) -> list[Problem]:
    """A file is named after its rule (``ADJ-2026-0001.yaml``): a reviewer reads the name in
    the pull request's file list, and the preview merges rules by rule_id."""
    return [
        r.problem(
            f"file name '{r.path.name}' differs from its rule_id '{r.rule_id}'",
            hint=f"rename the file to {r.rule_id}{r.path.suffix}",
        )
        for r in ids
        if RULE_ID.match(r.rule_id) and r.path.stem != r.rule_id
    ]


def duplicate_rule_ids(ids: list[RuleIdAt]) -> list[Problem]:
    """One problem at every file whose rule_id another file also uses, naming the others,
    whether or not those files are otherwise valid.

    Reported at each of them, not only at the later one: ``adjustments check NEW.yaml`` keeps
    the problems of the files asked about, and a new file may sort before the old one."""
    by_id: dict[str, list[RuleIdAt]] = {}
    for r in ids:
        group = by_id.setdefault(r.rule_id, [])
        if all(g.path.resolve() != r.path.resolve() for g in group):
            group.append(r)
    out = []
    for rule_id, group in by_id.items():
        for r in group if len(group) > 1 else []:
            where = ", ".join(str(o.smap.location(("rule_id",))) for o in group if o is not r)
            out.append(
                r.problem(
                    f"rule_id '{rule_id}' is already used by {where}",
                    hint="rule ids are unique across the repository; take the next number",
                )
            )
    return out
