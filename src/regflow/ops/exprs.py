"""Static analysis of Spark SQL expressions written in specs, through sqlglot.

Used by the compiler to find column references that do not exist and to infer result types.
sqlglot is imported lazily: compiled plans are cached, so most DAG parses never need it.
"""

from __future__ import annotations

from typing import Any

from regflow.core.types import Schema, TypeParseError, normalize_type
from regflow.ops.decimals import analyze
from regflow.ops.expr_parse import ExprError, parse_expression

_SQLGLOT_TO_TYPE = {
    "BOOLEAN": "boolean",
    "VARCHAR": "string",
    "TEXT": "string",
    "CHAR": "string",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "DATETIME": "timestamp",
    "INT": "int",
    "SMALLINT": "int",
    "TINYINT": "int",
    "BIGINT": "bigint",
    "DOUBLE": "double",
    "FLOAT": "double",
    "DECIMAL": "decimal",
}


def referenced_columns(text: str) -> list[str]:
    """Column names an expression reads, in order of appearance, without duplicates.

    Lambda parameters of higher-order functions (``transform(xs, x -> x + 1)``) are skipped.
    """
    from sqlglot import exp

    tree = parse_expression(text)
    out: list[str] = []
    for col in tree.find_all(exp.Column, bfs=False):  # depth-first: left to right
        name = col.name
        if name and name not in out and not _lambda_bound(col):
            out.append(name)
    return out


def _lambda_bound(col: Any) -> bool:
    """Whether ``col`` is a parameter of a lambda around it (only inside that lambda)."""
    from sqlglot import exp

    node = col.parent
    while node is not None:
        if isinstance(node, exp.Lambda) and col.name in {i.name for i in node.expressions}:
            return True
        node = node.parent
    return False


def check_expression(text: str, schema: Schema) -> list[tuple[str, str]]:
    """Problems of an expression against a known input schema, as ``(message, hint)``."""
    import difflib

    try:
        cols = referenced_columns(text)
    except ExprError as exc:
        return [(str(exc), 'write a Spark SQL expression, e.g. "amount * usd_rate"')]
    if not schema.known:
        return []
    problems = []
    for name in cols:
        if name not in schema:
            close = difflib.get_close_matches(name, schema.names, n=1)
            hint = (
                f"did you mean '{close[0]}'?"
                if close
                else (
                    "available columns: "
                    + ", ".join(n for n in schema.names if not n.startswith("_"))
                )
            )
            problems.append((f"unknown column '{name}' in expression '{text}'", hint))
    return problems


def infer_type(text: str, schema: Schema) -> str:
    """Best-effort result type of an expression; ``unknown`` when sqlglot can't tell.

    Decimal arithmetic is typed by Spark's rules (:mod:`regflow.ops.decimals`); a decimal
    whose precision cannot be told (e.g. from a function sqlglot types) is ``decimal``.
    """
    from sqlglot import exp
    from sqlglot.optimizer.annotate_types import annotate_types

    try:
        tree = parse_expression(text).copy()
    except ExprError:
        return "unknown"
    typed = analyze(text, schema)
    if typed is not None and typed.type != "unknown":
        return typed.type
    exact = _exact_type(tree, schema)
    if exact is not None:
        return exact
    spark_schema: dict[str, object] = {"t": {c.name: _to_sqlglot(c.type) for c in schema.columns}}
    select = exp.select(tree.as_("out")).from_("t")
    for col in select.find_all(exp.Column):
        col.set("table", exp.to_identifier("t"))
    try:
        annotated = annotate_types(select, schema=spark_schema, dialect="spark")
    except Exception:  # sqlglot may not know every function; typing is best-effort
        return "unknown"
    dtype = annotated.selects[0].type
    if dtype is None:
        return "unknown"
    name = dtype.this.name if hasattr(dtype.this, "name") else str(dtype.this)
    return _SQLGLOT_TO_TYPE.get(name.upper(), "unknown")


def _exact_type(tree: Any, schema: Schema) -> str | None:
    """A column reference or a cast has an exact type, decimal precision included."""
    from sqlglot import exp

    if isinstance(tree, exp.Column) and not tree.table and tree.name in schema:
        return schema.type_of(tree.name)
    if isinstance(tree, exp.Cast):  # spark reads CAST as TryCast, a Cast subclass
        try:
            return normalize_type(tree.to.sql(dialect="spark"))
        except TypeParseError:
            return None
    return None


def _to_sqlglot(t: str) -> str:
    if t.startswith("decimal("):
        return t.upper()
    if t == "decimal":
        return "DECIMAL(38,10)"
    return {"string": "STRING", "unknown": "STRING"}.get(t, t.upper())
