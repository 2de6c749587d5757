"""Parse one Spark SQL expression of a spec with sqlglot (cached).

sqlglot is imported lazily: compiled plans are cached, so most DAG parses never need it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


class ExprError(ValueError):
    """An expression does not parse."""


@lru_cache(maxsize=4096)
def parse_expression(text: str) -> Any:
    import sqlglot
    from sqlglot.errors import ParseError

    if not text or not str(text).strip():
        raise ExprError("empty expression")
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(str(text), read="spark")
    except ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        first = str(err.get("description") or exc)
        if first.startswith("Required keyword"):
            # sqlglot names its own classes here; say what is wrong in the user's terms
            near = err.get("highlight") or ""
            first = f"an operand is missing after '{near}'" if near else "an operand is missing"
        raise ExprError(f"cannot parse expression '{text}': {first}") from None
    if isinstance(tree, exp.Alias):
        # "amount usd_rate" parses as "amount AS usd_rate": almost surely a missing operator
        raise ExprError(
            f"cannot parse expression '{text}': unexpected '{tree.alias}' (a missing operator?)"
        )
    return tree
