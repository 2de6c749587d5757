"""Row-level lineage ids, rollup rows, and the checks that operators keep them.

A source row's id is ``xxhash64("<source>@<cob>", primary key...)``: stable across reruns of
the same data (never ``monotonically_increasing_id``), and stable across a late correction of
one deal, so the old and new versions of a row can be matched. Aggregated rows get
``xxhash64("<node>", group key...)``; their members are listed in the node's lineage
checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regflow.errors import LineageError
from regflow.spec.models import LINEAGE_COLUMN

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def source_lineage_id(source: str, cob: str, primary_key: Sequence[str]) -> Column:
    from pyspark.sql import functions as F

    return F.xxhash64(F.lit(f"{source}@{cob}"), *[F.col(c) for c in primary_key])


def group_lineage_id(node: str, keys: Sequence[str]) -> Column:
    from pyspark.sql import functions as F

    return F.xxhash64(F.lit(node), *[F.col(c) for c in keys])


def add_rollup(
    df: DataFrame, *, node: str, by: Sequence[str], labels: dict[str, Any], sums: Sequence[str]
) -> DataFrame:
    """Append one total row per value of ``by``: ``sums`` summed, ``labels`` set as literals.

    The total rows get the lineage id ``xxhash64("<node>/rollup", by...)``; the framework
    records their members (the input rows with the same ``by`` values) in the lineage
    checkpoint of a ``rollup`` op. Other columns are null on total rows.
    """
    from pyspark.sql import functions as F

    aggs = [F.sum(F.col(c)).alias(c) for c in sums]
    totals = df.groupBy(*by).agg(*aggs)
    for col, value in labels.items():
        totals = totals.withColumn(col, F.lit(value))
    totals = totals.withColumn(LINEAGE_COLUMN, rollup_lineage_id(node, by))
    for field in df.schema.fields:
        if field.name not in totals.columns:
            totals = totals.withColumn(field.name, F.lit(None).cast(field.dataType))
    totals = totals.select(*[F.col(f.name).cast(f.dataType) for f in df.schema.fields])
    return df.unionByName(totals)


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


# ------------------------------------------------------------------ checks on written data
# The runtime checks what it has just written (or an input it stored earlier) by reading the
# ``_lineage_id`` column of the Parquet files with pyarrow: no Spark job, a few milliseconds
# for small outputs and well under a second for millions of rows.


def stored_lineage_ids(files: Sequence[Path]) -> Any:
    """The ``_lineage_id`` column of Parquet ``files`` as a pyarrow ChunkedArray."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not files:
        return pa.chunked_array([], pa.int64())
    table = pq.ParquetDataset([str(f) for f in files], partitioning=None).read(
        columns=[LINEAGE_COLUMN]
    )
    return table.column(LINEAGE_COLUMN)


def stored_duplicate_ids(files: Sequence[Path], limit: int = 5) -> list[Any]:
    """Lineage ids that occur more than once in Parquet ``files`` (at most ``limit``).

    Same answer as :func:`duplicate_ids` on the same rows (a repeated null counts too).
    """
    import numpy as np

    ids = stored_lineage_ids(files)
    dups: list[Any] = [None] if ids.null_count > 1 else []
    values = np.sort(ids.drop_null().to_numpy())
    repeated = values[1:][values[1:] == values[:-1]]
    dups += np.unique(repeated)[:limit].tolist()
    return dups[:limit]


def stored_foreign_ids(out_ids: Any, inp_ids: Any) -> Any:
    """Boolean mask over ``out_ids``: true where the id is not among ``inp_ids``."""
    import pyarrow.compute as pc

    return pc.invert(pc.is_in(out_ids, value_set=inp_ids.combine_chunks(), skip_nulls=False))
