"""LCR caps, HQLA and ratio (BCBS 238 Annex 1), plus the consolidated GROUP row.

A project operator: regflow imports every ``operators/*.py`` and the ``@operator`` decorator
registers it. pyspark is imported inside the function, so Airflow's DAG parsing stays light.
"""

from __future__ import annotations

from typing import Any

from regflow import OpParams, operator
from regflow.spec.types import Column, Schema

MEASURES = ("l1", "l2a", "l2b", "outflows", "inflows")
AMOUNT = "decimal(38,6)"
OUTPUT = (
    "cob_date",
    "legal_entity",
    "l1",
    "l2a",
    "l2b",
    "adj_15",
    "adj_40",
    "hqla",
    "outflows",
    "inflows",
    "capped_inflows",
    "net_outflows",
    "lcr",
)


class LcrCapsParams(OpParams):
    rollup_by: list[str] = ["cob_date"]
    entity_column: str = "legal_entity"
    total_label: str = "GROUP"


def lcr_caps_schema(inputs: list[Schema], p: LcrCapsParams) -> Schema:
    base = inputs[0]
    cols = [
        Column("cob_date", base.type_of("cob_date") if "cob_date" in base else "date"),
        Column(p.entity_column, "string"),
    ]
    cols += [Column(c, AMOUNT) for c in OUTPUT[2:-1]]
    cols += [Column("lcr", "double"), Column("_lineage_id", "bigint")]
    return Schema(tuple(cols))


def _check(inputs: list[Schema], p: LcrCapsParams) -> list[Any]:
    from regflow.ops.base import Check

    s = inputs[0]
    if not s.known:
        return []
    need = [*p.rollup_by, p.entity_column, *MEASURES]
    return [
        Check(f"input lacks column '{c}' needed by lcr_caps", ("inputs",))
        for c in need
        if c not in s
    ]


@operator("lcr_caps", params=LcrCapsParams, lineage="rollup", schema=lcr_caps_schema, check=_check)
def lcr_caps(df: Any, params: LcrCapsParams, ctx: Any) -> Any:
    """Per row: the Level 2 caps, HQLA, capped inflows, net outflows and the LCR.

    A GROUP row per cob is added first, with l1..inflows summed over the entities; its caps
    are then computed from those sums (caps are not additive). Multiplications come before
    divisions (``x * 15 / 85``): Spark keeps only 6 fractional digits of ``15/85``, which
    would be hundreds of dollars off on a billion. ``lcr`` is a double ratio of the exact
    decimals, null when net outflows are zero.
    """
    from pyspark.sql import functions as F

    from regflow.runtime.lineage import add_rollup

    df = df.select(
        *params.rollup_by,
        params.entity_column,
        *[F.col(m).cast(AMOUNT).alias(m) for m in MEASURES],
        "_lineage_id",
    )
    df = add_rollup(
        df,
        node=ctx.node,
        by=params.rollup_by,
        labels={params.entity_column: params.total_label},
        sums=MEASURES,
    )
    l1, l2a, l2b = F.col("l1"), F.col("l2a"), F.col("l2b")
    outflows, inflows = F.col("outflows"), F.col("inflows")
    zero = F.lit(0).cast(AMOUNT)

    def amt(c: Any) -> Any:
        return c.cast(AMOUNT)

    adj_15 = amt(F.greatest(l2b - (l1 + l2a) * 15 / 85, l2b - l1 * 15 / 60, zero))
    df = df.withColumn("adj_15", adj_15)
    adj_40 = amt(F.greatest(l2a + l2b - F.col("adj_15") - l1 * 2 / 3, zero))
    df = df.withColumn("adj_40", adj_40)
    df = df.withColumn("hqla", amt(l1 + l2a + l2b - F.col("adj_15") - F.col("adj_40")))
    df = df.withColumn("capped_inflows", amt(F.least(inflows, outflows * 75 / 100)))
    df = df.withColumn("net_outflows", amt(outflows - F.col("capped_inflows")))
    df = df.withColumn(
        "lcr",
        F.when(
            F.col("net_outflows") != 0,
            F.col("hqla").cast("double") / F.col("net_outflows").cast("double"),
        ),
    )
    return df.select(*OUTPUT, "_lineage_id")
