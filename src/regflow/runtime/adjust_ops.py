"""Apply adjustment rules on Spark, and build their row-level audit in the same plan.

Rules at one splice point apply in ascending ``rule_id``. A rule's conditions are evaluated
once, on the rows as they stand before that rule (its match flag is a column computed before
its adjustments are applied); its adjustments then change only the matching rows and the
fields they name. ``add``/``multiply`` results are cast back to the field's type, so the
schema never drifts.

The audit is one ``explode`` over the same lineage of DataFrames: one row per matched row and
adjusted field, (rule, field, lineage id, old, new). Spark prunes the helper columns from the
main output, so unaffected rows cost only the condition checks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from regflow.adjust.models import AdjustmentRule, Condition
from regflow.spec.models import LINEAGE_COLUMN

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import DataType

AUDIT_COLUMNS = ("rule_id", "field", LINEAGE_COLUMN, "old_value", "new_value")


def _lit(value: Any, dtype: DataType) -> Column:
    from pyspark.sql import functions as F
    from pyspark.sql.types import DecimalType

    if isinstance(dtype, DecimalType) and isinstance(value, float):
        value = Decimal(str(value))
    if isinstance(value, str) and dtype.simpleString() == "date":
        value = dt.date.fromisoformat(value)
    return F.lit(value).cast(dtype)


def condition(c: Condition, dtype: DataType) -> Column:
    """One condition as a Spark column (SQL null semantics: null never matches)."""
    from pyspark.sql import functions as F

    col = F.col(c.field)
    op = c.operator
    if op == "is null":
        return col.isNull()
    if op == "is not null":
        return col.isNotNull()
    if op in ("in", "not in"):
        values = [_lit(v, dtype) for v in c.value]  # type: ignore[union-attr]
        test = col.isin(*values)
        return test if op == "in" else ~test
    if op == "between":
        lo, hi = c.value  # type: ignore[misc,str-unpack]
        return col.between(_lit(lo, dtype), _lit(hi, dtype))
    v = _lit(c.value, dtype)
    return {
        "=": col == v,
        "!=": col != v,
        ">": col > v,
        ">=": col >= v,
        "<": col < v,
        "<=": col <= v,
    }[op]


def rule_condition(rule: AdjustmentRule, df: DataFrame) -> Column:
    from pyspark.sql import functions as F

    cond: Column = F.lit(True)
    for c in rule.conditions:
        cond = cond & condition(c, df.schema[c.field].dataType)
    # null (unknown) means "does not match"
    return F.coalesce(cond, F.lit(False))


def operate(operation: str, col: Column, value: Any, dtype: DataType) -> Column:
    if operation == "set":
        return _lit(value, dtype)
    v = _lit(value, dtype) if operation == "add" else _factor(value)
    out = col + v if operation == "add" else col * v
    return out.cast(dtype)


def _factor(value: Any) -> Column:
    from pyspark.sql import functions as F

    if isinstance(value, int | Decimal):
        return F.lit(Decimal(value))
    return F.lit(Decimal(str(value)))


def _plan(rules: Sequence[AdjustmentRule]) -> list[tuple[int, AdjustmentRule]]:
    return list(enumerate(sorted(rules, key=lambda r: r.rule_id)))


def tag_changes(df: DataFrame, rules: Sequence[AdjustmentRule], audit_col: str) -> DataFrame:
    """The adjusted rows plus ``audit_col``: for rows some rule matched, a struct of each
    rule's match flag (``m<i>``) and the old and new value of each field it set
    (``o<i>_<j>``, ``n<i>_<j>``); null for every other row.

    The column travels with the rows to the stage's next write (an aggregate's lineage
    checkpoint, typically), where :func:`audit_rows` reads the audit back from it: no second
    pass over the data upstream. A plain struct keeps Spark's generated code on the hot path;
    the per-change rows are only built for the few rows that changed.
    """
    from pyspark.sql import functions as F

    columns = list(df.columns)
    fields = []
    any_match = F.lit(False)
    plan = _plan(rules)
    writes = [(i, j, adj.field) for i, rule in plan for j, adj in enumerate(rule.adjustments)]
    for i, rule in plan:
        # One projection for the flag (on the rows as they stand before this rule) and one
        # per adjustment: few, wide projections keep Spark's analysis time linear in rules.
        flag = f"__adj_m{i}"
        df = df.select("*", rule_condition(rule, df).alias(flag))
        fields.append(F.col(flag).alias(f"m{i}"))
        any_match = any_match | F.col(flag)
        for j, adj in enumerate(rule.adjustments):
            dtype = df.schema[adj.field].dataType
            old = f"__adj_o{i}_{j}"
            new = F.when(
                F.col(flag), operate(adj.operation, F.col(adj.field), adj.value, dtype)
            ).otherwise(F.col(adj.field))
            later = any((k, m) > (i, j) and f == adj.field for k, m, f in writes)
            extra = [new.alias(f"__adj_n{i}_{j}")] if later else []
            df = df.select(
                *[new.alias(c) if c == adj.field else F.col(c) for c in df.columns],
                F.col(adj.field).alias(old),
                *extra,
            )
            # the new value: a snapshot if a later write changes the field again
            snap = f"__adj_n{i}_{j}" if later else adj.field
            fields += [F.col(old).alias(f"o{i}_{j}"), F.col(snap).alias(f"n{i}_{j}")]
    if not fields:
        return df.select(*columns, F.lit(None).cast("struct<none: boolean>").alias(audit_col))
    return df.select(*columns, F.when(any_match, F.struct(*fields)).alias(audit_col))


def audit_rows(df: DataFrame, audit_col: str, rules: Sequence[AdjustmentRule]) -> DataFrame:
    """One row per changed value (``AUDIT_COLUMNS``) from a DataFrame tagged by
    :func:`tag_changes` with the same rules."""
    from pyspark.sql import functions as F

    entries = []
    for i, rule in _plan(rules):
        for j, adj in enumerate(rule.adjustments):
            entries.append(
                F.when(
                    F.col(f"{audit_col}.m{i}"),
                    F.struct(
                        F.lit(rule.rule_id).alias("rule_id"),
                        F.lit(adj.field).alias("field"),
                        F.col(f"{audit_col}.o{i}_{j}").cast("string").alias("old_value"),
                        F.col(f"{audit_col}.n{i}_{j}").cast("string").alias("new_value"),
                    ),
                )
            )
    changed = df.where(F.col(audit_col).isNotNull())
    if not entries:
        return changed.select(
            F.lit(None).cast("string").alias("rule_id"),
            F.lit(None).cast("string").alias("field"),
            F.col(LINEAGE_COLUMN),
            F.lit(None).cast("string").alias("old_value"),
            F.lit(None).cast("string").alias("new_value"),
        ).limit(0)
    changes = F.filter(F.array(*entries), lambda x: x.isNotNull())
    return changed.select(F.col(LINEAGE_COLUMN), F.explode(changes).alias("c")).select(
        "c.rule_id", "c.field", LINEAGE_COLUMN, "c.old_value", "c.new_value"
    )


def apply_rules(df: DataFrame, rules: Sequence[AdjustmentRule]) -> tuple[DataFrame, DataFrame]:
    """The adjusted rows (same schema) and the audit (``AUDIT_COLUMNS``)."""
    col = "__regflow_audit"
    tagged = tag_changes(df, rules, col)
    return tagged.drop(col), audit_rows(tagged, col, rules)
