"""An adjustment audit's rows replayed by Spark from the rows' audit tags (see
:mod:`regflow.runtime.adjust_ops`; the driver's twin is
:func:`regflow.runtime.driver.audit.audit_table`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from regflow.adjust.models import AdjustmentRule
from regflow.runtime.adjust_ops import (
    TagWrite,
    mask_of,
    operate,
    sql_value,
    tag_changes,
    tag_writes,
)
from regflow.runtime.sources import quote_name as ident  # (a column name for Spark SQL)
from regflow.spec.models import LINEAGE_COLUMN

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def audit_rows(df: DataFrame, audit_col: str, rules: Sequence[AdjustmentRule]) -> DataFrame:
    """One row per changed value (``AUDIT_COLUMNS``) from a DataFrame tagged by
    :func:`tag_changes` with the same rules: each write's old and new values replayed from
    the field's value before the rules, through the writes whose rules matched (the same
    SQL as the rules themselves: the same values)."""
    lid, tag = ident(LINEAGE_COLUMN), ident(audit_col)
    writes = tag_writes(rules)
    if not writes:
        return df.selectExpr(
            "CAST(NULL AS STRING) AS rule_id",
            "CAST(NULL AS STRING) AS field",
            lid,
            "CAST(NULL AS STRING) AS old_value",
            "CAST(NULL AS STRING) AS new_value",
        ).limit(0)
    types = {f.name: f.dataType for f in df.schema[audit_col].dataType.fields}  # type: ignore[attr-defined]

    def hit(w: TagWrite) -> str:
        name, bit = mask_of(w.bit)
        return f"((__t.{name} & {bit}L) <> 0)"

    # x<k>: the field after write k (replayed); one projection per write, rows untagged
    # get nulls throughout. No Filter before the generator: Spark would push it down
    # through the rules' projections (explode_outer, then the filter on its output).
    df = df.selectExpr(lid, f"{tag} AS __t")
    kept = [lid, "__t"]
    before: dict[int, str] = {}
    current = {w.slot: f"__t.o{w.slot}" for w in writes}
    for w in writes:
        col = current[w.slot]
        dtype = types[f"o{w.slot}"]
        value = operate(w.adj.operation, col, w.adj.value, dtype, w.rule_id)
        df = df.selectExpr(*kept, f"CASE WHEN {hit(w)} THEN {value} ELSE {col} END AS __x{w.k}")
        before[w.k] = col
        current[w.slot] = f"__x{w.k}"
        kept.append(f"__x{w.k}")
    entries = ", ".join(
        f"CASE WHEN {hit(w)} THEN named_struct('k', {w.k}, "
        f"'o', CAST({before[w.k]} AS STRING), 'n', CAST(__x{w.k} AS STRING)) END"
        for w in writes
    )
    ids = ", ".join(sql_value(w.rule_id) for w in writes)
    names = ", ".join(sql_value(w.field) for w in writes)
    return (
        df.selectExpr(
            lid, f"explode_outer(CASE WHEN __t IS NOT NULL THEN array({entries}) END) AS c"
        )
        .where("c IS NOT NULL")
        .selectExpr(
            f"element_at(array({ids}), c.k + 1) AS rule_id",
            f"element_at(array({names}), c.k + 1) AS field",
            lid,
            "c.o AS old_value",
            "c.n AS new_value",
        )
    )


def apply_rules(df: DataFrame, rules: Sequence[AdjustmentRule]) -> tuple[DataFrame, DataFrame]:
    """The adjusted rows (same schema) and the audit (``AUDIT_COLUMNS``)."""
    col = "__regflow_audit"
    tagged = tag_changes(df, rules, col)
    return tagged.drop(col), audit_rows(tagged, col, rules)
