"""Check adjustment rules against the compiled plan of their pipeline.

The plan knows every node's output schema, so fields, value types and key columns are all
checked statically, before a rule is merged.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections import defaultdict
from decimal import Decimal
from typing import Any

from regflow.adjust.loader import LoadedRule, RuleParts
from regflow.adjust.models import Condition
from regflow.core.names import LINEAGE_COLUMN
from regflow.core.types import Schema, is_numeric
from regflow.errors import Problem
from regflow.plan.model import Plan
from regflow.plan.rule_rounding import adjustment_rounding, value_scale


def splice_schema(plan: Plan, stage: str, position: str) -> Schema:
    """The rows a rule at (stage, position) sees."""
    if position == "after":
        return plan.schema_of(stage)
    return plan.schema_of(plan.node(stage).inputs[0])


def key_columns(plan: Plan, name: str) -> set[str]:
    """The columns that identify a row at ``name``: the driving source's primary key, or the
    group keys of the nearest aggregation. Lookups joined in do not add keys."""
    if plan.is_source(name):
        return set(plan.source(name).primary_key)
    node = plan.node(name)
    if node.lineage == "aggregate":
        return set(node.params.get("group_by") or [])
    keys: set[str] = set()
    inputs = plan.main_inputs(name)
    for i in inputs:
        keys |= key_columns(plan, i)
    if node.lineage == "rollup":
        keys |= set(node.params.get("rollup_by") or [])
    return keys


def fits(value: Any, col_type: str) -> bool:
    if value is None or col_type == "unknown":
        return True
    if col_type == "string":
        return isinstance(value, str)
    if col_type == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if col_type == "date":
        return isinstance(value, dt.date) and not isinstance(value, dt.datetime)
    if col_type == "timestamp":
        return isinstance(value, dt.date)
    if col_type in ("int", "bigint"):
        return isinstance(value, int)
    if is_numeric(col_type):
        return isinstance(value, int | float | Decimal)
    return True


def _type_hint(col_type: str) -> str:
    return {
        "string": 'quote the value, e.g. "123"',
        "date": "write a date as YYYY-MM-DD",
        "boolean": "use true or false",
    }.get(col_type, f"use a value of type {col_type}")


def check_rule(plan: Plan, r: LoadedRule | RuleParts) -> list[Problem]:
    """The problems of a rule (or of the valid parts of an invalid one) against ``plan``:
    its splice point, and the fields, types and keys its conditions and adjustments use."""
    rule = r.parts() if isinstance(r, LoadedRule) else r
    out: list[Problem] = []
    names = [s.name for s in plan.sources] + [n.id for n in plan.nodes]
    if rule.stage not in names:
        close = difflib.get_close_matches(rule.stage, names, n=1)
        out.append(
            rule.problem(
                f"pipeline '{plan.pipeline}' has no node '{rule.stage}'",
                "stage",
                hint=f"did you mean '{close[0]}'?" if close else "nodes: " + ", ".join(names),
            )
        )
        return out
    if rule.position == "before" and plan.is_source(rule.stage):
        out.append(
            rule.problem(
                f"'{rule.stage}' is a source: nothing runs before it",
                "position",
                hint="use position: after",
            )
        )
        return out
    if not plan.is_source(rule.stage) and plan.node(rule.stage).lineage == "sink":
        out.append(
            rule.problem(
                f"'{rule.stage}' lands data in the warehouse: adjust the node it reads instead",
                "stage",
                hint="name one of its inputs: " + ", ".join(plan.node(rule.stage).inputs),
            )
        )
        return out
    schema = splice_schema(plan, rule.stage, rule.position)
    # the keys of the rows the rule sees: before a node, those of its (main) input
    seen = rule.stage if rule.position == "after" else plan.node(rule.stage).inputs[0]
    keys = key_columns(plan, seen) | {LINEAGE_COLUMN}

    def column(field: str, *path: str | int) -> str | None:
        if not schema.known:
            return "unknown"
        if field not in schema:
            visible = [n for n in schema.names if n != LINEAGE_COLUMN]
            close = difflib.get_close_matches(field, visible, n=1)
            out.append(
                rule.problem(
                    f"field '{field}' does not exist {rule.position} '{rule.stage}'",
                    *path,
                    hint=f"did you mean '{close[0]}'?"
                    if close
                    else "available fields: " + ", ".join(visible),
                )
            )
            return None
        return schema.type_of(field)

    for i, cond in rule.conditions:
        t = column(cond.field, "conditions", i, "field")
        if t is None:
            continue
        values = cond.value if isinstance(cond.value, list) else [cond.value]
        for v in values:
            if cond.operator not in ("is null", "is not null") and not fits(v, t):
                out.append(
                    rule.problem(
                        f"value {v!r} does not fit field '{cond.field}' of type {t}",
                        "conditions",
                        i,
                        "value",
                        hint=_type_hint(t),
                    )
                )
                break
        if cond.operator in (">", ">=", "<", "<=", "between") and t in ("string", "boolean"):
            out.append(
                rule.problem(
                    f"'{cond.operator}' on {t} field '{cond.field}'",
                    "conditions",
                    i,
                    "operator",
                    hint="compare numbers or dates; use = or in for text",
                )
            )
    for i, adj in rule.adjustments:
        if adj.field in keys:
            out.append(
                rule.problem(
                    f"field '{adj.field}' is a key or lineage column {rule.position} "
                    f"'{rule.stage}' and cannot be adjusted",
                    "adjustments",
                    i,
                    "field",
                    hint="adjust a measure or attribute; keys identify the row in the audit",
                )
            )
            continue
        t = column(adj.field, "adjustments", i, "field")
        if t is None:
            continue
        if adj.operation in ("add", "multiply") and t != "unknown" and not is_numeric(t):
            out.append(
                rule.problem(
                    f"'{adj.operation}' needs a numeric field; '{adj.field}' is {t}",
                    "adjustments",
                    i,
                    "operation",
                    hint="use operation: set",
                )
            )
        elif adj.operation in ("add", "multiply") and t in ("int", "bigint"):
            if not isinstance(adj.value, int):  # the result is cast back to the column's type
                out.append(
                    rule.problem(
                        f"'{adj.operation}' on integer field '{adj.field}' needs a whole "
                        f"number, got {adj.value!r}",
                        "adjustments",
                        i,
                        "value",
                        hint="use a whole number; the result must fit the integer field",
                    )
                )
        elif adj.operation in ("set", "add", "multiply") and (
            rounding := adjustment_rounding(
                adj.operation,
                adj.value,
                adj.field,
                t,
                value_scale(plan, seen, adj.field) if adj.field in plan.schema_of(seen) else None,
            )
        ):
            out.append(rule.problem(rounding[0], "adjustments", i, "value", hint=rounding[1]))
        elif adj.operation == "set" and not fits(adj.value, t):
            out.append(
                rule.problem(
                    f"value {adj.value!r} does not fit field '{adj.field}' of type {t}",
                    "adjustments",
                    i,
                    "value",
                    hint=_type_hint(t),
                )
            )
    return out


def _value_set(c: Condition) -> set[Any] | None:
    if c.operator == "=":
        return {c.value}
    if c.operator == "in" and isinstance(c.value, list):
        return set(c.value)
    return None


def _disjoint(a: Condition, b: Condition) -> bool:
    if a.field != b.field:
        return False
    sa, sb = _value_set(a), _value_set(b)
    if sa is not None and sb is not None:
        return not (sa & sb)
    if {a.operator, b.operator} == {"is null", "is not null"}:
        return True
    if "is null" in (a.operator, b.operator) and (sa is not None or sb is not None):
        return True
    if a.operator == b.operator == "between":
        alo, ahi = a.value  # type: ignore[misc,str-unpack]
        blo, bhi = b.value  # type: ignore[misc,str-unpack]
        try:
            return bool(ahi < blo or bhi < alo)  # type: ignore[operator]
        except TypeError:
            return False
    return False


def overlap_warnings(rules: list[LoadedRule]) -> list[Problem]:
    """Rules at one splice point writing the same field where both may match a row."""
    by_point: dict[tuple[str, str, str], list[LoadedRule]] = defaultdict(list)
    for r in rules:
        by_point[(r.rule.pipeline, r.rule.stage, r.rule.position)].append(r)
    out = []
    for group in by_point.values():
        group.sort(key=lambda r: r.rule.rule_id)
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                shared = sorted(
                    {x.field for x in a.rule.adjustments} & {x.field for x in b.rule.adjustments}
                )
                if not shared:
                    continue
                if any(_disjoint(ca, cb) for ca in a.rule.conditions for cb in b.rule.conditions):
                    continue
                # At both files: `adjustments check FILE` keeps the problems of FILE, and
                # either rule may be the one under review.
                for r in (b, a):
                    out.append(
                        r.problem(
                            f"rules {a.rule.rule_id} and {b.rule.rule_id} both write "
                            f"{', '.join(shared)} at {b.rule.position} '{b.rule.stage}' on "
                            f"conditions that may overlap; {b.rule.rule_id} applies last",
                            "adjustments",
                            severity="warning",
                            hint="make the conditions disjoint, or merge the rules",
                        )
                    )
    return out
