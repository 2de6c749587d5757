"""What the compiler reports of decimals: roundings a spec does not ask for (errors of
``regflow validate``) and the ones it asks for (shown by ``regflow plan``).

The typing itself is :mod:`regflow.ops.decimals`.
"""

from __future__ import annotations

from regflow.core.types import Schema, decimal_ps
from regflow.ops.base import Check
from regflow.ops.decimals import MAX, Rounding, Typed, analyze


def decimal_checks(
    expr: str,
    schema: Schema,
    declared: str | None,
    at: tuple[str | int, ...],
    type_at: tuple[str | int, ...],
) -> list[Check]:
    """Roundings of decimals the spec does not ask for (:mod:`regflow.ops.decimals`):
    Spark cutting an exact result, a decimal turned into a double, and a declared type (a
    cast of each value) that drops digits."""
    typed = analyze(expr, schema)
    out = [
        Check(
            f"'{r.expr}' is rounded: {r.detail}",
            at,
            "choose where the digits go: round(...) or CAST(... AS decimal(p,s)) an operand "
            "on purpose (both are shown by `regflow plan`)"
            if r.kind == "cut"
            else "cast the floating point operand to a decimal, e.g. CAST(x AS decimal(18,8))",
        )
        for r in error_roundings(typed)
        if r.kind != "string"
    ]
    out += [string_check(r, expr, at) for r in error_roundings(typed) if r.kind == "string"]
    if declared is not None and typed is not None and typed.ps is not None:
        problem = declared_problem(expr, typed, declared)
        if problem is not None:
            out.append(Check(problem[0], type_at, problem[1]))
    return out


def string_check(r: Rounding, expr: str, at: tuple[str | int, ...]) -> Check:
    """Arithmetic on a string column: Spark would cast its text row by row at run time."""
    operand = r.detail.split("'")[1]
    where = f"'{r.expr}'" if r.expr == expr else f"'{r.expr}' in '{expr}'"
    return Check(
        f"{where} does arithmetic on a string: {r.detail}",
        at,
        f"declare the column's type in the source schema (e.g. decimal(18,2)), or cast it on "
        f"purpose: CAST({operand} AS decimal(18,2))",
    )


def declared_problem(expr: str, typed: Typed, declared: str) -> tuple[str, str] | None:
    """Whether casting ``expr`` (typed ``typed``) to the ``declared`` type loses digits.

    ``(message, hint)`` when it does: a declared type narrower in scale than an exact
    result would round every value without the spec saying so; wider than a quotient's
    scale it would show digits Spark never computed.
    """
    target = decimal_ps(declared)
    src = typed.ps
    if target is None or src is None:
        return None
    if typed.exact is not None:
        if target[1] < typed.exact:
            return (
                f"declared type {declared} rounds '{expr}' to {target[1]} decimals; its exact "
                f"value needs {typed.exact} (Spark computes {typed.type})",
                f"declare decimal({min(MAX, target[0] - target[1] + typed.exact)},"
                f"{typed.exact}) (a narrower precision is fine: too large a value fails the "
                f"run), or write round({expr}, {target[1]}) to round on purpose",
            )
        return None
    if target[1] > src[1]:
        return (
            f"declared type {declared} shows {target[1]} decimals, but Spark computes "
            f"'{expr}' as {typed.type}: only {src[1]} decimals are real",
            f"declare decimal({target[0]},{src[1]}), or cast the operands of the division "
            "to narrower precisions so Spark keeps more decimals",
        )
    if target[1] < src[1]:
        return (
            f"declared type {declared} rounds '{expr}' (Spark computes {typed.type}) a "
            f"second time, to {target[1]} decimals",
            f"write round({expr}, {target[1]}) to round on purpose",
        )
    return None


def shown_roundings(typed: Typed | None) -> list[Rounding]:
    """The roundings ``regflow plan`` lists (explicit ones and divisions)."""
    return [r for r in (typed.roundings if typed else ()) if not r.is_error]


def error_roundings(typed: Typed | None) -> list[Rounding]:
    return [r for r in (typed.roundings if typed else ()) if r.is_error]
