"""Whether an adjustment rounds a decimal field, seen from the plan (no data).

An ``add``/``multiply`` result and a ``set`` value are cast back to the field's type. That
cast must not drop digits (no op rounds a decimal unless the spec says so):

- a ``set`` or ``add`` value with more decimals than the field's scale would be rounded;
- a ``multiply`` by a factor with ``k`` decimals needs ``k`` more decimals than the field's
  values use. How many they use is known from the plan (the exact scale of the expression
  that made them, :mod:`regflow.ops.decimals`), else taken to be the field's scale. The
  runtime also checks every multiplied value (:func:`regflow.runtime.adjust_ops.operate`):
  rules at several splice points may multiply one field more than once.
"""

from __future__ import annotations

from typing import Any

from regflow.core.types import decimal_ps
from regflow.ops.builtin import AggregateParams, CalcParams, _calc_schema_upto
from regflow.ops.decimals import analyze, scale_of_value
from regflow.plan.model import Plan


def value_scale(plan: Plan, name: str, field: str, depth: int = 0) -> int | None:
    """Digits after the point the values of ``field`` out of node/source ``name`` need at
    most; ``None`` if the field is not a decimal."""
    schema = plan.schema_of(name)
    ps = decimal_ps(schema.type_of(field)) if field in schema else None
    if ps is None:
        return None
    if plan.is_source(name) or depth > 200:
        return ps[1]
    node = plan.node(name)
    exact = _made_by(plan, node.op, node.params, node.inputs, field)
    if exact is not None:
        return min(exact, ps[1])
    for inp in node.inputs[: (2 if node.op == "join" else 1)]:
        if field in plan.schema_of(inp):
            if node.op == "join" and inp == node.inputs[0] and _joined(node.params, field):
                continue
            upstream = value_scale(plan, inp, field, depth + 1)
            return ps[1] if upstream is None else min(upstream, ps[1])
    return ps[1]


def _joined(params: dict[str, Any], field: str) -> bool:
    cols = params.get("columns")
    return cols is not None and field in cols


def _made_by(
    plan: Plan, op: str, params: dict[str, Any], inputs: tuple[str, ...], field: str
) -> int | None:
    """The exact scale of ``field`` if node's op computes it from an expression."""
    try:
        if op == "calc":
            calc = CalcParams.model_validate(params)
            for name, expr, _ in calc.items():
                if name == field:
                    schema = _calc_schema_upto(plan.schema_of(inputs[0]), calc, name)
                    typed = analyze(expr, schema)
                    return typed.exact if typed is not None and typed.ps else None
        if op == "aggregate":
            m = AggregateParams.model_validate(params).measures.get(field)
            if m is not None and m.func in ("sum", "min", "max"):
                typed = analyze(m.expr, plan.schema_of(inputs[0]))
                return typed.exact if typed is not None and typed.ps else None
    except Exception:  # a node the compiler accepted; typing here is best-effort
        return None
    return None


def adjustment_rounding(
    operation: str, value: Any, field: str, field_type: str, used: int | None
) -> tuple[str, str] | None:
    """``(message, hint)`` when the adjustment rounds the decimal field; ``used``: the
    decimals its values use (:func:`value_scale`)."""
    ps = decimal_ps(field_type)
    if ps is None or value is None or operation not in ("set", "add", "multiply"):
        return None
    k = scale_of_value(value)
    scale = ps[1]
    if operation in ("set", "add") and k > scale:
        return (
            f"'{operation}' {value} would be rounded to the {scale} decimals of field "
            f"'{field}' ({field_type})",
            f"use a value with at most {scale} decimals",
        )
    need = (scale if used is None else used) + k
    if operation == "multiply" and need > scale:
        return (
            f"'multiply' by {value} would round field '{field}' ({field_type}): its values "
            f"use {scale if used is None else used} decimals, their product with {value} "
            f"needs {need}",
            f"use a factor with at most {max(0, scale - need + k)} decimals (0: a whole "
            "number), or have the "
            f"pipeline declare '{field}' with scale {need} or more (e.g. a calc type "
            f"decimal(38,{need}))",
        )
    return None
