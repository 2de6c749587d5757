"""Decimal typing of spec expressions: the exact type of a result and the type Spark gives it.

regflow's Spark session runs with ``spark.sql.decimalOperations.allowPrecisionLoss=false``
and ANSI mode (see :mod:`regflow.runtime.session`). Under those settings Spark computes
``+``, ``-``, ``*`` and ``%`` of decimals exactly, unless the result would need more than 38
digits after the point, and fails the run (``NUMERIC_VALUE_OUT_OF_RANGE``) rather than
return a value whose integer part does not fit. The rules below are Spark's
(``DecimalPrecision`` and the arithmetic expressions' ``resultDecimalType`` with precision
loss disallowed, ``RoundBase.dataType``, ``DecimalType.fromLiteral``), checked against Spark
itself in ``tests/test_decimal_types.py``.

For every decimal sub-expression the analysis knows:

- ``type``: the type Spark gives it;
- ``exact``: how many digits after the point the exact value needs (``None`` for a quotient,
  whose exact value may need infinitely many);
- ``roundings``: where a value is rounded. A ``cut`` (Spark drops digits of an exact result)
  or a ``double`` (a decimal turned into a floating point number) is an error of the spec;
  an explicit ``round()`` or ``CAST``, and a division, are shown by ``regflow plan``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from regflow.core.types import Schema, TypeParseError, decimal_ps, normalize_type
from regflow.ops.expr_parse import ExprError, parse_expression

MAX = 38
MIN_ADJUSTED_SCALE = 6
_INT_DIGITS = {"tinyint": 3, "smallint": 5, "int": 10, "bigint": 20}
_FLOATING = {"double", "float"}


@dataclass(frozen=True)
class Rounding:
    """One place an expression rounds a decimal."""

    kind: str  # cut | double | string (errors) | round | cast | division (shown)
    expr: str  # the sub-expression, as Spark SQL
    detail: str

    @property
    def is_error(self) -> bool:
        return self.kind in ("cut", "double", "string")


@dataclass(frozen=True)
class Typed:
    """An expression's Spark type, the scale its exact value needs, and its roundings."""

    type: str
    exact: int | None = None  # decimals only; None: inexact (a quotient) or not known
    roundings: tuple[Rounding, ...] = ()
    literal_digits: int | None = None  # an integer literal: Spark widens it to its digits
    literal: bool = False  # a literal (a decimal literal with a double is not a data value)

    @property
    def ps(self) -> tuple[int, int] | None:
        return decimal_ps(self.type)


def dec(p: int, s: int) -> str:
    return f"decimal({p},{s})"


def bounded(p: int, s: int) -> tuple[int, int]:
    return min(p, MAX), min(s, MAX)


def add_type(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (p1, s1), (p2, s2) = a, b
    s = max(s1, s2)
    return bounded(max(p1 - s1, p2 - s2) + s + 1, s)


def mul_type(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (p1, s1), (p2, s2) = a, b
    return bounded(p1 + p2 + 1, s1 + s2)


def div_type(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (p1, s1), (p2, s2) = a, b
    int_dig = min(MAX, p1 - s1 + s2)
    dec_dig = min(MAX, max(MIN_ADJUSTED_SCALE, s1 + p2 + 1))
    diff = int_dig + dec_dig - MAX
    if diff > 0:
        dec_dig -= diff // 2 + 1
        int_dig = MAX - dec_dig
    return bounded(int_dig + dec_dig, dec_dig)


def mod_type(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (p1, s1), (p2, s2) = a, b
    s = max(s1, s2)
    return bounded(min(p1 - s1, p2 - s2) + s, s)


def wider_type(types: list[tuple[int, int]]) -> tuple[int, int]:
    s = max(t[1] for t in types)
    return bounded(max(p - q for p, q in types) + s, s)


def round_type(a: tuple[int, int], n: int) -> tuple[int, int]:
    p, s = a
    new = min(s, max(n, 0))
    return min(p - s + 1 + new, MAX), new


def sum_type(t: str) -> str:
    """Spark's ``sum`` of a column of type ``t``: decimal(p,s) gives decimal(min(38, p+10), s)."""
    ps = decimal_ps(t)
    if ps is not None:
        return dec(min(MAX, ps[0] + 10), ps[1])
    return "bigint" if t in _INT_DIGITS else t


def literal_ps(text: str) -> tuple[int, int]:
    """``0.75`` is decimal(2,2) in Spark SQL, ``1.05`` decimal(3,2), ``100`` 3 digits."""
    d = Decimal(text).as_tuple()
    scale = max(0, -int(d.exponent))
    return max(len(d.digits), scale, 1), scale


def scale_of_value(value: Any) -> int:
    """Digits after the point of a literal value from YAML (an int has none)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return 0
    try:
        d = Decimal(str(value)).normalize() if not isinstance(value, int) else Decimal(0)
    except InvalidOperation:
        return 0
    return max(0, -int(d.as_tuple().exponent))


def _as_decimal(t: Typed) -> tuple[int, int] | None:
    if t.ps is not None:
        return t.ps
    if t.literal_digits is not None:
        return t.literal_digits, 0
    if t.type in _INT_DIGITS:
        return _INT_DIGITS[t.type], 0
    return None


def _exact_of(t: Typed) -> int | None:
    if t.ps is not None:
        return t.exact
    return 0 if _as_decimal(t) is not None else None


def analyze(text: str, schema: Schema) -> Typed | None:
    """The decimal typing of expression ``text`` over ``schema``; ``None`` if it does not
    parse. A type the analysis cannot tell is ``unknown`` (the caller may ask sqlglot)."""
    try:
        tree = parse_expression(text)
    except ExprError:
        return None
    return _walk(tree, schema)


def _sql(node: Any) -> str:
    return str(node.sql(dialect="spark"))


def _walk(node: Any, schema: Schema) -> Typed:
    from sqlglot import exp

    if isinstance(node, exp.Paren):
        return _walk(node.this, schema)
    if isinstance(node, exp.Column):
        if node.table or node.name not in schema:
            return Typed("unknown")
        t = schema.type_of(node.name)
        ps = decimal_ps(t)
        return Typed(t, ps[1] if ps else None)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return Typed("string")
        text = node.this
        if any(c in text.lower() for c in "ed"):  # 1.5e0, 1d: floating point
            return Typed("double")
        if "." in text:
            p, s = literal_ps(text)
            if p > MAX:
                return Typed("double")
            return Typed(dec(p, s), s, literal=True)
        n = int(text)
        digits = len(str(abs(n)))
        if -(2**31) <= n < 2**31:
            return Typed("int", literal_digits=digits)
        if -(2**63) <= n < 2**63:
            return Typed("bigint", literal_digits=digits)
        return Typed(dec(digits, 0), 0)
    if isinstance(node, exp.Neg | exp.Abs):
        inner = _walk(node.this, schema)
        return Typed(inner.type, inner.exact, inner.roundings, inner.literal_digits)
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod):
        return _arith(node, _walk(node.this, schema), _walk(node.expression, schema))
    if isinstance(node, exp.Cast):
        return _cast(node, _walk(node.this, schema))
    if isinstance(node, exp.Round) or (
        isinstance(node, exp.Anonymous) and str(node.this).lower() == "bround"
    ):
        return _round(node, schema)
    if isinstance(node, exp.Greatest | exp.Least | exp.Coalesce):
        parts = [node.this, *node.expressions]
        return _wider([_walk(p, schema) for p in parts], [], schema)
    if isinstance(node, exp.If):
        values = [node.args.get("true"), node.args.get("false")]
        return _wider([_walk(v, schema) for v in values if v is not None], [node.this], schema)
    if isinstance(node, exp.Case):
        ifs = node.args.get("ifs") or []
        values = [i.args.get("true") for i in ifs]
        default = node.args.get("default")
        if default is not None:
            values.append(default)
        conds = [i.this for i in ifs]
        if node.this is not None:
            conds.append(node.this)
        return _wider([_walk(v, schema) for v in values if v is not None], conds, schema)
    # anything else: its own type is left to sqlglot; its operands may still round
    found: list[Rounding] = []
    for child in node.iter_expressions():
        found += _walk(child, schema).roundings
    return Typed("unknown", roundings=tuple(found))


def _arith(node: Any, a: Typed, b: Typed) -> Typed:
    from sqlglot import exp

    found = (*a.roundings, *b.roundings)
    strings = [
        (side, t) for side, t in ((node.this, a), (node.expression, b)) if t.type == "string"
    ]
    if strings:  # Spark casts the text of every row at run time: a wrong value fails the run
        side, _ = strings[0]
        return Typed(
            "unknown",
            roundings=(
                *found,
                Rounding(
                    "string",
                    _sql(node),
                    f"'{_sql(side)}' is a string: arithmetic on it casts the text of every row "
                    "at run time, and a value that is no number fails the run",
                ),
            ),
        )
    da, db = _as_decimal(a), _as_decimal(b)
    a_dec, b_dec = a.ps is not None, b.ps is not None
    if "unknown" in (a.type, b.type) or a.type == "decimal" or b.type == "decimal":
        return Typed("decimal" if "decimal" in (a.type, b.type) else "unknown", roundings=found)
    data_dec = (a_dec and not a.literal) or (b_dec and not b.literal)
    if data_dec and (a.type in _FLOATING or b.type in _FLOATING):
        return Typed(
            "double",
            roundings=(
                *found,
                Rounding(
                    "double",
                    _sql(node),
                    "a decimal combined with a floating point number is a double: "
                    "the result is no longer exact",
                ),
            ),
        )
    if a.type in _FLOATING or b.type in _FLOATING:
        return Typed("double", roundings=found)
    if not (a_dec or b_dec):
        if isinstance(node, exp.Div):  # Spark's / of integers is a double
            return Typed("double" if da or a.type in _FLOATING else "unknown", roundings=found)
        if a.type == b.type == "int":
            return Typed("int", roundings=found)
        if da and db:
            return Typed("bigint", roundings=found)
        return Typed("double" if a.type in _FLOATING else "unknown", roundings=found)
    if da is None or db is None:
        return Typed("unknown", roundings=found)
    ea, eb = _exact_of(a), _exact_of(b)
    if isinstance(node, exp.Div):
        p, s = div_type(da, db)
        return Typed(
            dec(p, s),
            None,
            (
                *found,
                Rounding(
                    "division", _sql(node), f"the quotient is rounded half-up to {s} decimals"
                ),
            ),
        )
    if isinstance(node, exp.Mul):
        p, s = mul_type(da, db)
        exact = None if ea is None or eb is None else ea + eb
        want = da[1] + db[1]
    elif isinstance(node, exp.Mod):
        p, s = mod_type(da, db)
        exact = None if ea is None or eb is None else max(ea, eb)
        want = max(da[1], db[1])
    else:
        p, s = add_type(da, db)
        exact = None if ea is None or eb is None else max(ea, eb)
        want = max(da[1], db[1])
    if want > s:
        found = (
            *found,
            Rounding(
                "cut",
                _sql(node),
                f"{dec(*da)} and {dec(*db)} give a result with {want} decimals, but Spark keeps "
                f"at most {MAX} digits after the point: it rounds to decimal({p},{s})",
            ),
        )
        exact = None if exact is None else min(exact, s)
    return Typed(dec(p, s), exact, found)


def _cast(node: Any, inner: Typed) -> Typed:
    try:
        to = normalize_type(node.to.sql(dialect="spark"))
    except TypeParseError:
        return Typed("unknown", roundings=inner.roundings)
    ps = decimal_ps(to)
    if ps is None:
        if to in _FLOATING and inner.ps is not None:
            return Typed(
                to,
                roundings=(
                    *inner.roundings,
                    Rounding("cast", _sql(node), "an explicit cast of a decimal to a double"),
                ),
            )
        return Typed(to, roundings=inner.roundings)
    src = _as_decimal(inner)
    exact = _exact_of(inner) if src is not None else None
    found = inner.roundings
    if src is not None and src[1] > ps[1] and (exact is None or exact > ps[1]):
        found = (
            *found,
            Rounding("cast", _sql(node), f"explicitly rounded half-up to {ps[1]} decimals"),
        )
    new_exact = ps[1] if exact is None else min(exact, ps[1])
    return Typed(to, new_exact, found)


def _round(node: Any, schema: Schema) -> Typed:
    from sqlglot import exp

    if isinstance(node, exp.Round):
        arg, places = node.this, node.args.get("decimals")
    else:
        args = node.expressions
        arg, places = args[0], (args[1] if len(args) > 1 else None)
    inner = _walk(arg, schema)
    n = 0
    if places is not None:
        if not (isinstance(places, exp.Literal) and not places.is_string):
            return Typed("unknown", roundings=inner.roundings)
        n = int(places.this)
    src = _as_decimal(inner)
    if inner.ps is None or src is None:
        return Typed(inner.type, roundings=inner.roundings)
    p, s = round_type(src, n)
    found = inner.roundings
    if inner.exact is None or inner.exact > s:
        found = (
            *found,
            Rounding("round", _sql(node), f"explicitly rounded half-up to {s} decimals"),
        )
    exact = s if inner.exact is None else min(inner.exact, s)
    return Typed(dec(p, s), exact, found)


def _wider(values: list[Typed], conditions: list[Any], schema: Schema) -> Typed:
    found: list[Rounding] = []
    for c in conditions:
        found += _walk(c, schema).roundings
    for v in values:
        found += v.roundings
    if not values or any(v.type in ("unknown", "decimal") for v in values):
        return Typed("unknown", roundings=tuple(found))
    if not any(v.ps is not None for v in values):
        types = {v.type for v in values}
        return Typed(types.pop() if len(types) == 1 else "unknown", roundings=tuple(found))
    decs = [_as_decimal(v) for v in values]
    if any(d is None for d in decs):
        return Typed("unknown", roundings=tuple(found))
    p, s = wider_type([d for d in decs if d is not None])
    exacts = [_exact_of(v) for v in values]
    exact = None if any(e is None for e in exacts) else max(e for e in exacts if e is not None)
    return Typed(dec(p, s), exact, tuple(found))
