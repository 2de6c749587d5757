"""Apply adjustment rules on Spark, and build their row-level audit in the same plan.

Rules at one splice point apply in ascending ``rule_id``. A rule's conditions are evaluated
once, on the rows as they stand before that rule; its adjustments then change only the
matching rows and the fields they name. ``add``/``multiply`` results are cast back to the
field's type, so the schema never drifts.

The hot path is kept to what the rules need per row, in few projections (each costs the
driver its analysis and optimization, about 10 ms):

* **Match flags in one projection.** Rules are grouped into *layers*: a rule opens a new
  layer only when one of its conditions reads a field an earlier rule of the current layer
  writes. Every flag of a layer is computed in one projection on the rows as they stand
  before the layer, which is exactly "before that rule" for each of its rules.
* **A field's writes in one expression.** Writes to one field are grouped: a ``set``
  joins the group (it overrides whatever came before), and so does an ``add``/``multiply``
  whose rule cannot match a row an earlier rule of the group matches (their conditions
  test one field for disjoint values, see :func:`exclusive`). A group is one flat ``CASE``
  (the last matching write wins) in one projection; the next group of the field reads its
  result in the next projection. Rows no rule matched keep the value untouched, with no
  arithmetic.
* **Out of the loop that reads the rows.** The first projection reads each of its input
  columns twice (:func:`_split_reads`), so Spark's code generator compiles the rules, and
  what follows them, as methods of their own rather than growing the stage's single loop
  past the size the JVM's JIT optimizes.
* **A compact audit tag.** What rides with each row to the stage's next write is one
  nullable struct, set only on rows some rule matched: which rules matched (bit masks),
  and each written field's value before and after the splice point. Its size grows with the
  changes, not with the rows. The audit's rows, including the value between two writes to
  one field, are rebuilt from it where the audit is written
  (:func:`regflow.runtime.audit_rows.audit_rows` on Spark,
  :func:`regflow.runtime.driver.audit.audit_table` on the driver), off the hot loop.

The audit is one row per matched row and adjusted field: (rule, field, lineage id, old, new).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from regflow.adjust.models import Adjustment, AdjustmentRule, Condition
from regflow.runtime.spark_sql import quote_name as ident  # (a column name for Spark SQL)
from regflow.spec.models import LINEAGE_COLUMN

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType, StructField, StructType

AUDIT_COLUMNS = ("rule_id", "field", LINEAGE_COLUMN, "old_value", "new_value")


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


def condition(c: Condition, dtype: DataType, col: str | None = None) -> str:
    """One condition as Spark SQL (SQL null semantics: null never matches). ``col``: the
    SQL reading the field (default: the column itself)."""
    col = col or ident(c.field)
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


def rule_condition(
    rule: AdjustmentRule, types: Mapping[str, DataType], cols: Mapping[str, str] | None = None
) -> str:
    """The rule's conditions ANDed; null (unknown) means "does not match". ``cols``: the SQL
    reading a field, where it is not the column itself."""
    cols = cols or {}
    tests = " AND ".join(
        ["TRUE", *(condition(c, types[c.field], cols.get(c.field)) for c in rule.conditions)]
    )
    return f"COALESCE({tests}, FALSE)"


def operate(operation: str, col: str, value: Any, dtype: DataType, rule: str = "") -> str:
    """The new value of column expression ``col`` (SQL) after one operation.

    A ``multiply`` of a decimal field by a factor with decimals has more decimals than the
    field; the product is computed exactly, and a row whose product the field's type
    cannot hold exactly fails the run instead of being rounded (``regflow adjustments
    check`` reports what it can see of this without the data).
    """
    from pyspark.sql.types import DecimalType

    if operation == "set":
        return typed_value(value, dtype)
    if operation == "add":
        return f"CAST(({col} + {typed_value(value, dtype)}) AS {dtype.simpleString()})"
    factor = Decimal(value) if isinstance(value, int | Decimal) else Decimal(str(value))
    product = f"({col} * {sql_value(factor)})"
    cast = f"CAST({product} AS {dtype.simpleString()})"
    if not isinstance(dtype, DecimalType) or factor == factor.to_integral_value():
        return cast
    message = sql_value(
        f"adjustment rule {rule}: multiply by {factor} would round a value to the "
        f"{dtype.scale} decimals of its field ({dtype.simpleString()}); widen the field's "
        "scale in the pipeline (a calc type) or use a factor with fewer decimals"
    )
    return (
        f"CASE WHEN coalesce({product} - {cast} = 0, TRUE) THEN {cast} "
        f"ELSE CAST(raise_error(concat({message}, ' (', CAST({product} AS STRING), ')')) "
        f"AS {dtype.simpleString()}) END"
    )


# --------------------------------------------------------------------------- the plan
# rules per mask of the audit tag (bits 0..61 of a bigint: always positive)
MASK_BITS = 62


@dataclass(frozen=True)
class TagWrite:
    """One write of a splice point's rules, as its audit reads it back from the tag.

    ``k`` numbers the writes in (rule_id, adjustment) order; ``bit`` is the rule's number
    in rule_id order (its bit in the tag's masks, see :func:`mask_of`); ``slot`` numbers
    the written fields (the tag's ``o<slot>`` and ``n<slot>`` hold the field before and
    after the splice point).
    """

    k: int
    rule_id: str
    bit: int
    field: str
    slot: int
    adj: Adjustment


def mask_of(bit: int) -> tuple[str, int]:
    """The tag field holding rule ``bit``'s flag, and the flag's value in it."""
    return f"m{bit // MASK_BITS}", 1 << (bit % MASK_BITS)


def _ordered(rules: Sequence[AdjustmentRule]) -> list[tuple[int, AdjustmentRule]]:
    return list(enumerate(sorted(rules, key=lambda r: r.rule_id)))


def rule_bits(rules: Sequence[AdjustmentRule]) -> list[str]:
    """The rule ids in the order of their flags in the audit tag's masks (rule ``n``: bit
    ``n % 62`` of mask ``m<n // 62>``, see :func:`mask_of`)."""
    return [r.rule_id for _, r in _ordered(rules)]


def matched_rules_sql(tags: Mapping[str, Sequence[str]]) -> str:
    """Spark SQL: the ids of the rules a row matched, sorted and joined by commas, null
    when none, read from the masks of audit tag columns (``tags``: each column's rule ids
    in bit order, see :func:`rule_bits`). Only the masks are read."""
    terms = []
    for column, rule_ids in tags.items():
        for n, rule_id in enumerate(rule_ids):
            name, bit = mask_of(n)
            test = f"({ident(column)}.{name} & {bit}L) <> 0"
            terms.append((rule_id, f"CASE WHEN {test} THEN {sql_value(rule_id)} END"))
    if not terms:
        return "CAST(NULL AS STRING)"
    # a row no rule matched has null tags: it skips the tests
    tagged = " OR ".join(f"{ident(c)} IS NOT NULL" for c in tags)
    rules = f"nullif(concat_ws(',', {', '.join(t for _, t in sorted(terms))}), '')"
    return f"CASE WHEN {tagged} THEN {rules} END"


def tag_masks_type(rule_ids: Sequence[str]) -> str:
    """The Spark type of an audit tag reduced to its masks (what :func:`matched_rules_sql`
    reads): a read schema that leaves the values out of the read."""
    masks = dict.fromkeys(mask_of(n)[0] for n in range(len(rule_ids)))
    return f"STRUCT<{', '.join(f'{m}: BIGINT' for m in masks) or 'none: BOOLEAN'}>"


def written_fields(rules: Sequence[AdjustmentRule]) -> list[str]:
    """The fields the rules write, in write order (their slots in the tag)."""
    return list(dict.fromkeys(a.field for _, r in _ordered(rules) for a in r.adjustments))


def tag_writes(rules: Sequence[AdjustmentRule]) -> list[TagWrite]:
    """Every write of ``rules``, in the order they apply."""
    slot = {f: n for n, f in enumerate(written_fields(rules))}
    writes = [(i, r, a) for i, r in _ordered(rules) for a in r.adjustments]
    return [
        TagWrite(k, r.rule_id, i, a.field, slot[a.field], a) for k, (i, r, a) in enumerate(writes)
    ]


def set_only(writes: Sequence[TagWrite], slot: int) -> bool:
    """Whether every write to field ``slot`` is a ``set``: the tag then leaves out the
    field's value after the rules (``n<slot>``), which is the constant of the last write
    that applied."""
    return all(w.adj.operation == "set" for w in writes if w.slot == slot)


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


def _values(c: Condition, dtype: DataType) -> frozenset[Any] | None:
    """The values an ``=``/``in`` condition admits, when they compare in Python exactly as
    Spark compares them in the column (text in a string column, integers in an integer
    one); else None."""
    kind = dtype.typeName()
    values = c.value if c.operator == "in" else [c.value] if c.operator == "=" else None
    if not isinstance(values, list):
        return None
    if kind == "string" and all(isinstance(v, str) for v in values):
        return frozenset(values)
    integral = ("byte", "short", "integer", "long")
    if kind in integral and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return frozenset(values)
    return None


def _disjoint(a: Condition, b: Condition, dtype: DataType) -> bool:
    """Whether no value of one column passes both conditions (False when unsure)."""
    ops = {a.operator, b.operator}
    if "is null" in ops:  # a null passes only 'is null'; nothing else passes it
        return ops != {"is null"}
    va, vb = _values(a, dtype), _values(b, dtype)
    return va is not None and vb is not None and not (va & vb)


def exclusive(a: AdjustmentRule, b: AdjustmentRule, types: Mapping[str, DataType]) -> bool:
    """Whether no row can match both rules, judged from their conditions (False when
    unsure, and for a rule and itself)."""
    if a is b:
        return False
    return any(
        ca.field == cb.field and _disjoint(ca, cb, types[ca.field])
        for ca in a.conditions
        for cb in b.conditions
    )


def _groups(
    writes: Sequence[TagWrite], rules: Mapping[int, AdjustmentRule], types: Mapping[str, DataType]
) -> list[list[TagWrite]]:
    """One field's writes (in order) cut into groups that one flat CASE applies exactly: a
    write joins the current group when it is a ``set`` or its rule is exclusive with the
    rule of every write already in the group."""
    groups: list[list[TagWrite]] = []
    for w in writes:
        joins = groups and (
            w.adj.operation == "set"
            or all(exclusive(rules[w.bit], rules[o.bit], types) for o in groups[-1])
        )
        if joins:
            groups[-1].append(w)
        else:
            groups.append([w])
    return groups


def _flag_name(i: int) -> str:
    return f"__adj_m{i}"


# --------------------------------------------------------------------------- hot path
# Column types ``greatest`` orders (a non-nullable column of such a type can be read twice)
_ORDERABLE = frozenset(
    {"string", "boolean", "byte", "short", "integer", "long", "float", "double", "decimal",
     "date", "timestamp", "timestamp_ntz", "binary"}
)  # fmt: skip


def _split_reads(
    fields: Sequence[StructField], layer: Sequence[tuple[int, AdjustmentRule]]
) -> tuple[dict[str, str], dict[str, str]]:
    """SQL that reads a column twice and yields its value (``coalesce(c, c)``, or
    ``greatest(c, c)`` when it cannot be null): for each column's pass-through in the first
    projection of the rules, and for its read in a condition when no other condition of the
    layer reads it (a column the rules read once, and that nothing after them reads).

    This keeps the rules' code out of the method that reads the rows. Under whole-stage
    code generation, the operator feeding a projection that reads each of its input columns
    at least twice hands its rows to that projection through a separate method
    (``spark.sql.codegen.splitConsumeFuncByOperator``): the rules and everything after them
    compile as methods of their own, each small enough for the JIT, instead of growing the
    one loop of the stage past the size the JIT optimizes well (measured on the LCR
    benchmark: one method of 17.0 KB of bytecode became methods of 9.0, 4.6 and 4.1 KB).
    Spark's optimizer keeps both reads, and the generated code costs next to nothing. A
    column of a type neither function takes is read as is (the stage is then not split,
    and runs as before).
    """
    twice: dict[str, str] = {}
    for f in fields:
        col = ident(f.name)
        if f.nullable:
            twice[f.name] = f"coalesce({col}, {col})"
        elif f.dataType.typeName() in _ORDERABLE:
            twice[f.name] = f"greatest({col}, {col})"
    reads = Counter(c.field for _, rule in layer for c in rule.conditions)
    once = {f: twice[f] for f, n in reads.items() if n == 1 and f in twice}
    return twice, once


def _group_sql(group: Sequence[TagWrite], types: Mapping[str, DataType]) -> str:
    """A group's writes as one CASE on the field's current column (last write first)."""
    col = ident(group[0].field)
    dtype = types[group[0].field]
    branches = " ".join(
        f"WHEN {_flag_name(w.bit)} THEN "
        f"{operate(w.adj.operation, col, w.adj.value, dtype, w.rule_id)}"
        for w in reversed(group)
    )
    return f"CASE {branches} ELSE {col} END"


def _tag_sql(
    rules: Sequence[AdjustmentRule], writes: Sequence[TagWrite], final: Mapping[str, str]
) -> str:
    """The audit tag: null on rows no rule matched, else which rules matched (bit masks)
    and each written field before (``o<slot>``) and after (``n<slot>``: ``final`` SQL, or
    the field's column) the rules; ``n<slot>`` only when a write to the field is not a
    ``set`` (see :func:`set_only`). Every field of the tag is a column Parquet writes, null
    or not, for every row that reaches the checkpoint: the fewer the cheaper."""
    ordered = _ordered(rules)
    masks: dict[str, list[str]] = {}
    for i, _ in ordered:
        name, bit = mask_of(i)
        masks.setdefault(name, []).append(f"CASE WHEN {_flag_name(i)} THEN {bit}L ELSE 0L END")
    # (nullif: a nullable field, which Arrow accepts in a null struct; 0 is no match)
    parts = [f"'{name}', nullif({' | '.join(terms)}, 0L)" for name, terms in masks.items()]
    for slot, field in enumerate(dict.fromkeys(w.field for w in writes)):
        parts.append(f"'o{slot}', __adj_o{slot}")
        if not set_only(writes, slot):
            parts.append(f"'n{slot}', {final.get(field, ident(field))}")
    any_match = " OR ".join(_flag_name(i) for i, _ in ordered)
    return f"CASE WHEN {any_match} THEN named_struct({', '.join(parts)}) END"


def tag_changes(
    df: DataFrame,
    rules: Sequence[AdjustmentRule],
    audit_col: str,
    schema: StructType | None = None,
) -> DataFrame:
    """The adjusted rows plus ``audit_col``: for rows some rule matched, a struct with the
    rules' match flags (``m<n>``: bit masks, see :func:`mask_of`) and, per written field
    (see :func:`tag_writes`), its value before (``o<slot>``) and after (``n<slot>``, unless
    only ``set`` writes it: see :func:`set_only`) the rules; null for every other row.

    The column travels with the rows to the stage's next write (an aggregate's lineage
    checkpoint, typically), where ``audit_rows`` reads the audit back from it: no second
    pass over the data upstream. The projections are Spark SQL text: a handful of calls
    into the JVM per projection, however many rules and columns. ``schema``:
    ``df.schema``, when the caller has it.
    """
    columns_in = (schema or df.schema).fields  # (``df.schema``: a call into the JVM)
    types = {f.name: f.dataType for f in columns_in}
    columns = [ident(c) for c in types]
    tag = ident(audit_col)
    if not rules:
        return df.selectExpr(*columns, f"CAST(NULL AS STRUCT<none: BOOLEAN>) AS {tag}")
    writes = tag_writes(rules)
    by_rule = dict(_ordered(rules))
    carried: list[str] = []  # helper columns riding along: originals, then flags
    layers = _layers(rules)
    for n_layer, layer in enumerate(layers, start=1):
        first = not carried
        twice, once = _split_reads(columns_in, layer) if first else ({}, {})
        originals = (
            [f"{ident(f)} AS __adj_o{n}" for n, f in enumerate(written_fields(rules))]
            if first
            else []
        )
        flags = [f"{rule_condition(rule, types, once)} AS {_flag_name(i)}" for i, rule in layer]
        passed = [f"{twice[c]} AS {ident(c)}" if c in twice else ident(c) for c in types]
        df = df.selectExpr(*passed, *carried, *originals, *flags)
        carried += [f"__adj_o{n}" for n in range(len(originals))]
        carried += [_flag_name(i) for i, _ in layer]
        bits = {i for i, _ in layer}
        fields = dict.fromkeys(w.field for w in writes if w.bit in bits)
        groups = {
            f: _groups([w for w in writes if w.bit in bits and w.field == f], by_rule, types)
            for f in fields
        }
        rounds = max(len(g) for g in groups.values())
        for r in range(rounds):
            new = {f: _group_sql(g[r], types) for f, g in groups.items() if r < len(g)}
            out = [f"{new[c]} AS {ident(c)}" if c in new else ident(c) for c in types]
            if n_layer == len(layers) and r == rounds - 1:  # the last: with the tag
                # (the tag repeats the writes' SQL: Spark evaluates it once per row)
                return df.selectExpr(*out, f"{_tag_sql(rules, writes, new)} AS {tag}")
            df = df.selectExpr(*out, *carried)
    raise AssertionError("rules without writes")  # (validation: every rule writes)
