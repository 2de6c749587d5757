"""Apply adjustment rules on Spark, and build their row-level audit in the same plan.

Rules at one splice point apply in ascending ``rule_id``. A rule's conditions are evaluated
once, on the rows as they stand before that rule; its adjustments then change only the
matching rows and the fields they name. ``add``/``multiply`` results are cast back to the
field's type, so the schema never drifts.

The hot path is kept to what the rules need per row:

* **Match flags in one projection.** Rules are grouped into *layers*: a rule opens a new
  layer only when one of its conditions reads a field an earlier rule of the current layer
  writes. Every flag of a layer is computed in one projection on the rows as they stand
  before the layer, which is exactly "before that rule" for each of its rules.
* **Writes stacked, or nested.** A write's projection reads the column the previous write
  produced; rows no rule of the layer matched skip the arithmetic. Each write also has a
  form that reads the field once (``set``: pick the value; ``add``: add it or an exact
  zero; ``multiply``: multiply by it or an exact one), so up to ``MAX_CHAIN`` writes to a
  field can nest in one projection: fewer projections for stages run operator by operator
  (where each copies every row). Under whole-stage code generation, the default, stacking
  generates less code (see ``MAX_CHAIN``).
* **A compact audit tag.** What rides with each row to the stage's next write is one
  nullable array, set only on rows some rule matched, with an entry per write that applied
  (its number, the old and the new value, typed as the field, or as text when the writes
  have several types): its size grows with the changes, not with the rules or the rows.
  :func:`audit_rows` explodes it.

The audit is one row per matched row and adjusted field: (rule, field, lineage id, old, new).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from regflow.adjust.models import Adjustment, AdjustmentRule, Condition
from regflow.spec.models import LINEAGE_COLUMN

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType

AUDIT_COLUMNS = ("rule_id", "field", LINEAGE_COLUMN, "old_value", "new_value")


def ident(name: str) -> str:
    """A column name quoted for Spark SQL."""
    return "`" + name.replace("`", "``") + "`"


def sql_value(value: Any) -> str:
    """A Python value as a Spark SQL literal of the type ``F.lit(value)`` would have."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return str(value)
        return f"{value}L" if -(2**63) <= value < 2**63 else f"{value}BD"
    if isinstance(value, float):
        return f"CAST('{value!r}' AS DOUBLE)"  # exact, and covers nan / inf
    if isinstance(value, Decimal):
        return f"{value:f}BD"
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def typed_value(value: Any, dtype: DataType) -> str:
    """``value`` as a literal of the column type ``dtype`` (what ``lit(value).cast(dtype)``
    gives: a float for a decimal column is read through its text, a date from ISO text)."""
    from pyspark.sql.types import DecimalType

    if isinstance(dtype, DecimalType) and isinstance(value, float):
        value = Decimal(str(value))
    if isinstance(value, str) and dtype.simpleString() == "date":
        value = dt.date.fromisoformat(value)
    return f"CAST({sql_value(value)} AS {dtype.simpleString()})"


def condition(c: Condition, dtype: DataType) -> str:
    """One condition as Spark SQL (SQL null semantics: null never matches)."""
    col = ident(c.field)
    op = c.operator
    if op == "is null":
        return f"({col} IS NULL)"
    if op == "is not null":
        return f"({col} IS NOT NULL)"
    if op in ("in", "not in"):
        values = ", ".join(typed_value(v, dtype) for v in c.value)  # type: ignore[union-attr]
        test = f"({col} IN ({values}))"
        return test if op == "in" else f"(NOT {test})"
    if op == "between":
        lo, hi = c.value  # type: ignore[misc,str-unpack]
        return f"({col} >= {typed_value(lo, dtype)} AND {col} <= {typed_value(hi, dtype)})"
    sql_op = "<>" if op == "!=" else op
    return f"({col} {sql_op} {typed_value(c.value, dtype)})"


def rule_condition(rule: AdjustmentRule, types: Mapping[str, DataType]) -> str:
    """The rule's conditions ANDed; null (unknown) means "does not match"."""
    tests = " AND ".join(["TRUE", *(condition(c, types[c.field]) for c in rule.conditions)])
    return f"COALESCE({tests}, FALSE)"


def operate(operation: str, col: str, value: Any, dtype: DataType) -> str:
    """The new value of column expression ``col`` (SQL) after one operation."""
    if operation == "set":
        return typed_value(value, dtype)
    if operation == "add":
        return f"CAST(({col} + {typed_value(value, dtype)}) AS {dtype.simpleString()})"
    factor = Decimal(value) if isinstance(value, int | Decimal) else Decimal(str(value))
    return f"CAST(({col} * {sql_value(factor)}) AS {dtype.simpleString()})"


# Writes to one field nested in one projection. 1: every write its own projection. Under
# whole-stage code generation a projection copies nothing, while nesting makes the audit's
# intermediate values recompute their whole chain (conditional branches share no common
# subexpressions): the LCR benchmark's stage grew to 19.6 KB of bytecode with 8, 15.4 KB
# with 1, and only the latter is JIT-compiled. More helps stages run operator by operator.
MAX_CHAIN = 1


def _decimal_literal_type(d: Decimal) -> tuple[int, int]:
    """(precision, scale) Spark gives the literal ``{d:f}BD``."""
    t = Decimal(f"{d:f}").as_tuple()
    scale = max(0, -int(t.exponent))
    return max(len(t.digits), scale), scale


def _product_scale(p1: int, s1: int, p2: int, s2: int) -> int:
    """The scale of decimal(p1,s1) * decimal(p2,s2) in Spark (precision loss allowed)."""
    p, s = p1 + p2 + 1, s1 + s2
    if p <= 38:
        return s
    return max(38 - (p - s), min(s, 6))


def chained(operation: str, col: str, value: Any, dtype: DataType, flag: str) -> str | None:
    """The field after one write, as SQL that reads ``col`` once (so writes can nest in one
    projection): ``set`` picks the value, ``add`` adds it or an exact zero, ``multiply``
    multiplies by the factor or an exact one. None when no exact one-read form exists (a
    decimal factor whose type, widened to hold 1, would change the product's scale)."""
    from pyspark.sql.types import DecimalType, DoubleType, FloatType

    t = dtype.simpleString()
    if operation == "set":
        return f"CASE WHEN {flag} THEN {typed_value(value, dtype)} ELSE {col} END"
    if operation == "add":
        zero = "-0.0D" if isinstance(dtype, DoubleType | FloatType) else "0"  # x + -0.0 == x
        delta = f"CASE WHEN {flag} THEN {typed_value(value, dtype)} ELSE CAST({zero} AS {t}) END"
        return f"CAST(({col} + {delta}) AS {t})"
    factor = Decimal(value) if isinstance(value, int | Decimal) else Decimal(str(value))
    p2, s2 = _decimal_literal_type(factor)
    wide = max(p2, s2 + 1)  # room for the 1
    integral = {"tinyint": 3, "smallint": 5, "int": 10, "bigint": 20}
    if isinstance(dtype, DecimalType) or t in integral:
        p1, s1 = (
            (dtype.precision, dtype.scale) if isinstance(dtype, DecimalType) else (integral[t], 0)
        )
        scale = _product_scale(p1, s1, p2, s2)
        if scale != _product_scale(p1, s1, wide, s2) or scale < s1:
            return None
    lit = f"DECIMAL({wide},{s2})"
    by = f"CASE WHEN {flag} THEN CAST({factor:f}BD AS {lit}) ELSE CAST(1 AS {lit}) END"
    return f"CAST(({col} * {by}) AS {t})"


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class _Write:
    """Adjustment ``j`` of the ``i``-th rule (in ``rule_id`` order)."""

    i: int
    j: int
    adj: Adjustment


def _ordered(rules: Sequence[AdjustmentRule]) -> list[tuple[int, AdjustmentRule]]:
    return list(enumerate(sorted(rules, key=lambda r: r.rule_id)))


def _layers(rules: Sequence[AdjustmentRule]) -> list[list[tuple[int, AdjustmentRule]]]:
    """Consecutive rules whose flags can be computed together: a rule starts a new layer
    when a condition reads a field that an earlier rule of the current layer writes."""
    layers: list[list[tuple[int, AdjustmentRule]]] = []
    written: set[str] = set()
    for i, rule in _ordered(rules):
        if not layers or {c.field for c in rule.conditions} & written:
            layers.append([])
            written = set()
        layers[-1].append((i, rule))
        written |= {a.field for a in rule.adjustments}
    return layers


def _chains(
    writes: Sequence[_Write], types: Mapping[str, DataType]
) -> list[dict[str, list[_Write]]]:
    """Writes in order, grouped into projections: per field, a chain of up to
    ``MAX_CHAIN`` writes nested in one expression. A write joins its field's chain only if
    it has a one-read form (:func:`chained`); otherwise, it starts a chain in the next
    projection, reading the column the chain before it wrote."""
    rounds: list[dict[str, list[_Write]]] = [{}]
    depth: dict[str, int] = {}  # field -> index of the round holding its latest write
    for w in writes:
        field = w.adj.field
        form = chained(w.adj.operation, "x", w.adj.value, types[field], _flag_name(w.i))
        k = depth.get(field, 0)
        chain = rounds[k].get(field) if k < len(rounds) else None
        if chain is not None and (form is None or len(chain) >= MAX_CHAIN):
            k += 1  # the next round: starts from the column this round writes
            chain = None
        while k >= len(rounds):
            rounds.append({})
        if chain is None:
            rounds[k][field] = [w]
        else:
            chain.append(w)
        depth[field] = k
    return [r for r in rounds if r]


def _written_fields(rules: Sequence[AdjustmentRule]) -> list[str]:
    return list(dict.fromkeys(a.field for _, r in _ordered(rules) for a in r.adjustments))


def _flag_name(i: int) -> str:
    return f"__adj_m{i}"


# --------------------------------------------------------------------------- hot path
def _value_slots(rules: Sequence[AdjustmentRule]) -> tuple[list[str], list[_Write], list[int]]:
    """Value slots: the original value of each written field, then the result
    of each write in (rule, adjustment) order. Returns the fields, the writes, and for each
    write the slot of the value it started from (its field's previous write, or original)."""
    fields = _written_fields(rules)
    writes = [_Write(i, j, a) for i, r in _ordered(rules) for j, a in enumerate(r.adjustments)]
    last = {f: k for k, f in enumerate(fields)}
    before = []
    for k, w in enumerate(writes):
        before.append(last[w.adj.field])
        last[w.adj.field] = len(fields) + k
    return fields, writes, before


def write_targets(rules: Sequence[AdjustmentRule]) -> tuple[list[str], list[str]]:
    """Each write's rule id and field, by the write number ``k`` of a tag entry."""
    ordered = _ordered(rules)
    _, writes, _ = _value_slots(rules)
    rule_ids = {i: rule.rule_id for i, rule in ordered}
    return [rule_ids[w.i] for w in writes], [w.adj.field for w in writes]


def tag_changes(df: DataFrame, rules: Sequence[AdjustmentRule], audit_col: str) -> DataFrame:
    """The adjusted rows plus ``audit_col``: for rows some rule matched, an array with one
    entry per write whose rule matched, ``(k, o, n)``: the write's number in (rule_id,
    adjustment) order and the field before and after it (of the field's type when all the
    writes write one type, else as text); null for every other row.

    The column travels with the rows to the stage's next write (an aggregate's lineage
    checkpoint, typically), where :func:`audit_rows` reads the audit back from it: no second
    pass over the data upstream. The projections are Spark SQL text: a handful of calls
    into the JVM per projection, however many rules and columns.
    """
    types = {f.name: f.dataType for f in df.schema.fields}  # the one schema lookup
    columns = [ident(c) for c in types]
    tag = ident(audit_col)
    if not rules:
        return df.selectExpr(*columns, f"CAST(NULL AS STRUCT<none: BOOLEAN>) AS {tag}")
    fields, all_writes, before = _value_slots(rules)
    slot = {(w.i, w.j): len(fields) + k for k, w in enumerate(all_writes)}
    # Helper columns riding along: the original values of written fields (__adj_s<slot>),
    # the flags, whether any rule of a layer matched (__adj_a<layer>), and the value after
    # every write that a later write overwrites (a snapshot, for the audit).
    carried: list[str] = []
    holder: dict[int, str] = {}  # slot -> the column holding its value
    in_field: dict[str, int] = {}  # field column -> the write slot it holds
    for n_layer, layer in enumerate(_layers(rules)):
        originals = [] if carried else [f"{ident(f)} AS __adj_s{k}" for k, f in enumerate(fields)]
        flags = [f"{rule_condition(rule, types)} AS {_flag_name(i)}" for i, rule in layer]
        hit = f"__adj_a{n_layer}"
        any_flag = f"({' OR '.join(_flag_name(i) for i, _ in layer)}) AS {hit}"
        df = df.selectExpr(*columns, *carried, *originals, *flags, any_flag)
        if not carried:
            carried = [f"__adj_s{k}" for k in range(len(fields))]
            holder = {k: f"__adj_s{k}" for k in range(len(fields))}
        carried += [*(_flag_name(i) for i, _ in layer), hit]
        writes = [_Write(i, j, a) for i, rule in layer for j, a in enumerate(rule.adjustments)]
        for round_ in _chains(writes, types):
            new: dict[str, str] = {}
            snapshots: dict[str, str] = {}  # name -> SQL
            for field, chain in round_.items():
                col = ident(field)
                if col in in_field:  # the field holds an earlier write's result: keep it
                    prev = in_field.pop(col)
                    snapshots[f"__adj_s{prev}"] = col
                    holder[prev] = f"__adj_s{prev}"
                expr = col
                for k, w in enumerate(chain):
                    flag, dtype = _flag_name(w.i), types[field]
                    if k == 0:  # the first of its chain reads the column (maybe twice)
                        value = operate(w.adj.operation, col, w.adj.value, dtype)
                        expr = f"CASE WHEN {flag} THEN {value} ELSE {col} END"
                    else:
                        form = chained(w.adj.operation, f"({expr})", w.adj.value, dtype, flag)
                        assert form is not None  # _chains put it here for having one
                        expr = form
                    name = f"__adj_s{slot[(w.i, w.j)]}"
                    if k < len(chain) - 1:  # overwritten in this projection: snapshot
                        snapshots[name] = f"CASE WHEN {hit} THEN {expr} END"
                        holder[slot[(w.i, w.j)]] = name
                    else:
                        holder[slot[(w.i, w.j)]] = col
                        in_field[col] = slot[(w.i, w.j)]
                if len(chain) > 1:  # rows no rule of the layer matched skip the chain's
                    # arithmetic (every write is the identity for them; decimal products are
                    # costly): exactly the same values, less work per row
                    expr = f"CASE WHEN {hit} THEN {expr} ELSE {col} END"
                new[col] = f"{expr} AS {col}"
            kept = [f"{sql} AS {name}" for name, sql in snapshots.items()]
            df = df.selectExpr(*[new.get(c, c) for c in columns], *carried, *kept)
            carried += list(snapshots)
    # One entry per write whose rule matched the row: (write number, old value, new value).
    # The values keep the field's type when every write here writes one type (the usual
    # case): their text is made where the audit is written, off the rows' hot loop (text
    # conversion of decimals is most of the generated code otherwise, enough to push the
    # stage's method past what the JIT compiles).
    one_type = len({types[w.adj.field].simpleString() for w in all_writes}) == 1

    def entry_value(col: str) -> str:
        return col if one_type else f"CAST({col} AS STRING)"

    entries = ", ".join(
        f"CASE WHEN {_flag_name(w.i)} THEN named_struct('k', {k}, "
        f"'o', {entry_value(holder[before[k]])}, 'n', {entry_value(holder[slot[(w.i, w.j)]])}) END"
        for k, w in enumerate(all_writes)
    )
    any_match = " OR ".join(_flag_name(i) for i in range(len(rules)))
    changed = f"filter(array({entries}), x -> x IS NOT NULL)"
    return df.selectExpr(*columns, f"CASE WHEN {any_match} THEN {changed} END AS {tag}")


# --------------------------------------------------------------------------- audit
def audit_rows(df: DataFrame, audit_col: str, rules: Sequence[AdjustmentRule]) -> DataFrame:
    """One row per changed value (``AUDIT_COLUMNS``) from a DataFrame tagged by
    :func:`tag_changes` with the same rules: the tag's entries, exploded."""
    ordered = _ordered(rules)
    lid, tag = ident(LINEAGE_COLUMN), ident(audit_col)
    if not ordered:
        return df.selectExpr(
            "CAST(NULL AS STRING) AS rule_id",
            "CAST(NULL AS STRING) AS field",
            lid,
            "CAST(NULL AS STRING) AS old_value",
            "CAST(NULL AS STRING) AS new_value",
        ).limit(0)
    rule_ids, fields = write_targets(rules)
    ids = ", ".join(sql_value(r) for r in rule_ids)
    names = ", ".join(sql_value(f) for f in fields)
    # No Filter on the tag before the generator: Spark would push it down through the
    # rules' projections, inlining every flag and value expression (exponential in the
    # number of rules reading a field an earlier rule wrote). explode_outer, then the
    # filter on its output: neither can move below the generator (a plain explode would
    # get an inferred filter on its array, pushed down the same way).
    return (
        df.selectExpr(lid, f"explode_outer({tag}) AS c")
        .where("c IS NOT NULL")
        .selectExpr(
            f"element_at(array({ids}), c.k + 1) AS rule_id",
            f"element_at(array({names}), c.k + 1) AS field",
            lid,
            "CAST(c.o AS STRING) AS old_value",
            "CAST(c.n AS STRING) AS new_value",
        )
    )


def apply_rules(df: DataFrame, rules: Sequence[AdjustmentRule]) -> tuple[DataFrame, DataFrame]:
    """The adjusted rows (same schema) and the audit (``AUDIT_COLUMNS``)."""
    col = "__regflow_audit"
    tagged = tag_changes(df, rules, col)
    return tagged.drop(col), audit_rows(tagged, col, rules)
