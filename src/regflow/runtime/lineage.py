"""Row-level lineage ids, rollup rows, and the checks that operators keep them.

A source row's id is ``xxhash64("<source>@<cob>", primary key...)``: stable across reruns of
the same data (never ``monotonically_increasing_id``), and stable across a late correction of
one deal, so the old and new versions of a row can be matched. Aggregated rows get
``xxhash64("<node>", group key...)``; their members are listed in the node's lineage
checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from regflow.errors import LineageError
from regflow.runtime.spark_sql import quote_name
from regflow.spec.models import LINEAGE_COLUMN

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def source_lineage_id(source: str, cob: str, primary_key: Sequence[str]) -> Column:
    from pyspark.sql import functions as F

    return F.xxhash64(F.lit(f"{source}@{cob}"), *primary_key)


def group_lineage_id(node: str, keys: Sequence[str]) -> Column:
    from pyspark.sql import functions as F

    return F.xxhash64(F.lit(node), *keys)


def add_rollup(
    df: DataFrame, *, node: str, by: Sequence[str], labels: dict[str, Any], sums: Sequence[str]
) -> DataFrame:
    """Append one total row per value of ``by``: ``sums`` summed, ``labels`` set as literals.

    The total rows get the lineage id ``xxhash64("<node>/rollup", by...)``; the framework
    records their members (the input rows with the same ``by`` values) in the lineage
    checkpoint of a ``rollup`` op. Other columns are null on total rows.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    # (column names and SQL text where they do: PySpark's Column methods cost several JVM
    # round trips each)
    totals = df.groupBy(*by).agg(
        *[F.expr(f"sum({quote_name(c)}) AS {quote_name(c)}") for c in sums]
    )
    if labels:
        totals = totals.select(
            *[c for c in totals.columns if c not in labels],
            *[F.lit(v).alias(k) for k, v in labels.items()],
        )
    have = {f.name: f.dataType for f in totals.schema.fields}
    have[LINEAGE_COLUMN] = LongType()
    # one projection (each DataFrame step costs Spark an analysis of the whole plan)
    cols: list[Column | str] = []
    for f in df.schema.fields:
        if f.name != LINEAGE_COLUMN and have.get(f.name) == f.dataType:
            cols.append(f.name)  # as it is
            continue
        if f.name == LINEAGE_COLUMN:
            c = rollup_lineage_id(node, by)
        else:
            c = F.col(f.name) if f.name in have else F.lit(None)
        if have.get(f.name) != f.dataType:
            c = c.cast(f.dataType)
        cols.append(c.alias(f.name))
    return df.unionByName(totals.select(*cols))


def rollup_lineage_id(node: str, by: Sequence[str]) -> Column:
    return group_lineage_id(f"{node}/rollup", by)


def require_lineage_column(df: DataFrame, *, node: str, pipeline: str, cob: str) -> None:
    if LINEAGE_COLUMN not in df.columns:
        raise LineageError(
            f"operator output has no '{LINEAGE_COLUMN}' column: the operator dropped the lineage "
            "id. Row-wise operators must keep it (select it, or use withColumn instead of "
            "select).",
            pipeline=pipeline,
            node=node,
            cob=cob,
        )


def duplicate_ids(df: DataFrame, limit: int = 5) -> list[int]:
    """Lineage ids that occur more than once (at most ``limit`` of them)."""
    from pyspark.sql import functions as F

    rows = df.groupBy(LINEAGE_COLUMN).count().where(F.col("count") > 1).limit(limit).collect()
    return [r[LINEAGE_COLUMN] for r in rows]


def foreign_ids(out: DataFrame, inp: DataFrame, limit: int = 5) -> list[int]:
    """Ids in ``out`` that are not in ``inp`` (a row-wise op invented or replaced ids)."""
    rows = (
        out.select(LINEAGE_COLUMN)
        .join(inp.select(LINEAGE_COLUMN), LINEAGE_COLUMN, "left_anti")
        .limit(limit)
        .collect()
    )
    return [r[LINEAGE_COLUMN] for r in rows]
