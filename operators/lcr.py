"""LCR caps, HQLA and ratio (BCBS 238 Annex 1), plus the consolidated GROUP row.

A project operator: regflow imports every ``operators/*.py`` and the ``@operator`` decorator
registers it. pyspark is imported inside the function, so Airflow's DAG parsing stays light.
"""

from __future__ import annotations

from typing import Any

from regflow import OpParams, operator
from regflow.spec.types import Column, Schema, decimal_ps

MEASURES = ("l1", "l2a", "l2b", "outflows", "inflows")
DEFAULT_SCALE = 14  # when the input's types are not known at compile time
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


def amount_type(types: list[str]) -> str:
    """The type of every amount out of the caps: decimal(38, s) with ``s`` the largest scale
    of the input measures, so the sums keep every digit (the input measures are sums of
    exact deal amounts) and the caps' divisions are rounded once, to ``s`` decimals (Spark
    computes each quotient with at least that many; see ``lcr_caps``)."""
    scales = [ps[1] for ps in map(decimal_ps, types) if ps is not None]
    return f"decimal(38,{max(scales) if scales else DEFAULT_SCALE})"


def lcr_caps_schema(inputs: list[Schema], p: LcrCapsParams) -> Schema:
    base = inputs[0]
    amount = amount_type([base.type_of(m) for m in MEASURES if m in base])
    cols = [
        Column("cob_date", base.type_of("cob_date") if "cob_date" in base else "date"),
        Column(p.entity_column, "string"),
    ]
    cols += [Column(c, amount) for c in OUTPUT[2:-1]]
    cols += [Column("lcr", "double"), Column("_lineage_id", "bigint")]
    return Schema(tuple(cols))


def _check(inputs: list[Schema], p: LcrCapsParams) -> list[Any]:
    from regflow.ops.base import Check

    s = inputs[0]
    if not s.known:
        return []
    need = [*p.rollup_by, p.entity_column, *MEASURES]
    out = [
        Check(f"input lacks column '{c}' needed by lcr_caps", ("inputs",))
        for c in need
        if c not in s
    ]
    for m in MEASURES:
        t = s.type_of(m) if m in s else None
        if t is not None and decimal_ps(t) is None and t != "unknown":
            out.append(
                Check(
                    f"lcr_caps needs decimal measures; '{m}' is {t}",
                    ("inputs",),
                    "sum decimal amounts (e.g. a calc with type decimal(38,14) before the "
                    "aggregate): the caps are computed exactly from them",
                )
            )
    return out


@operator(
    "lcr_caps",
    params=LcrCapsParams,
    lineage="rollup",
    schema=lcr_caps_schema,
    check=_check,
    roundings="adj_15, adj_40 (and hqla), capped_inflows: each quotient (x * 15 / 85, "
    "x * 15 / 60, x * 2 / 3, x * 75 / 100) rounded half-up to the measures' scale (less than "
    "one unit of its last decimal off); the sums are exact",
)
def lcr_caps(df: Any, params: LcrCapsParams, ctx: Any) -> Any:
    """Per row: the Level 2 caps, HQLA, capped inflows, net outflows and the LCR.

    A GROUP row per cob is added first, with l1..inflows summed over the entities; its caps
    are then computed from those sums (caps are not additive). Every amount is a
    decimal(38, s), ``s`` the input measures' largest scale (:func:`amount_type`): the
    measures and their sums, differences and multiples are exact. The divisions are the
    only inexact steps; multiplications come before them (``x * 15 / 85``: a constant
    ``15/85`` would be rounded first), Spark rounds each quotient half-up to at least ``s``
    decimals (with precision loss disallowed, ``regflow.runtime.session``), and the cast to
    the amount type rounds it once more to ``s``: within 10**-s of the exact quotient.
    ``lcr`` is a double ratio of the decimals, null when net outflows are zero.
    """
    from pyspark.sql import functions as F

    from regflow.runtime.lineage import add_rollup

    AMOUNT = amount_type([df.schema[m].dataType.simpleString() for m in MEASURES])
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
