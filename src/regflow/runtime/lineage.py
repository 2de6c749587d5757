"""Row-level lineage ids, rollup rows, and the checks that operators keep them.

A source row's id is ``xxhash64("<source>@<cob>", primary key...)``: stable across reruns of
the same data (never ``monotonically_increasing_id``), and stable across a late correction of
one deal, so the old and new versions of a row can be matched. Aggregated rows get
``xxhash64("<node>", group key...)``; their members are listed in the node's lineage
checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regflow.errors import LineageError
from regflow.runtime.spark_sql import quote_name
from regflow.spec.models import LINEAGE_COLUMN

if TYPE_CHECKING:
    import pyarrow as pa
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


def cluster_parquet(
    folder: Path,
    keys: Sequence[str],
    *,
    row_group_rows: int = 131_072,
    drop: Sequence[str] = (),
    inspect: Callable[[pa.Table], None] | None = None,
) -> pa.Table | None:
    """Rewrite the Parquet files in ``folder`` sorted by ``keys``, then lineage id; a group's
    rows are contiguous and in one file. Returns the sorted data (still in memory: the
    caller may use it, e.g. to finish an aggregate, without reading it back).

    ``inspect`` sees the data as read, before anything is rewritten (the files are still
    there), in a thread of its own while the order is computed; the columns in ``drop`` are
    then left out of the rewritten files and the result.

    The order is Spark's ascending order (nulls first, strings and binary by their bytes).
    Runs on the driver with pyarrow and numpy (integer ranks, radix sorts), writing a file
    per core in parallel: for narrow data of a few million rows, a fraction of the cost of
    a Spark shuffle and sort.

    Returns None, changing nothing, when there is no file or a key or the lineage id has a
    type (or nulls) this does not order exactly like Spark (e.g. floating-point keys: -0.0
    and 0.0 are one value to Spark); the caller then sorts with Spark.
    """
    import os
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*.parquet"))
    if not files:
        return None
    dataset = pq.ParquetDataset([str(f) for f in files], partitioning=None)
    # The dropped columns are read on their own, and only for ``inspect``: pyarrow reads
    # a table that mixes flat and nested (struct) columns markedly slower than the two
    # parts apart (measured: 0.125 s against 0.06 + 0.03 s for a 1M-row checkpoint with
    # two audit tags).
    table = dataset.read(columns=[c for c in dataset.schema.names if c not in drop])
    lid = table.column(LINEAGE_COLUMN)
    if not pa.types.is_integer(lid.type) or lid.null_count:
        return None
    if not all(_rankable(table.schema.field(k).type) for k in keys):
        return None

    def look(inspect: Callable[[pa.Table], None]) -> None:
        seen = table
        if drop:  # (same files, same order: the rows line up)
            extra = dataset.read(columns=list(drop))
            for i, field in enumerate(extra.schema):
                seen = seen.append_column(field, extra.column(i))
        inspect(seen)

    # ``inspect`` runs beside the sort (numpy, on one core), and is done before any file
    # is written: it may read the folder as the job left it.
    with ThreadPoolExecutor(1) as side:
        looking = side.submit(look, inspect) if inspect is not None else None
        order, group = _group_order(lid.to_numpy(), [_ranks(table.column(k)) for k in keys])
        starts = np.flatnonzero(np.diff(group)) + 1
        if looking is not None:
            looking.result()
    # About one file per core (of at least 250k rows), cut only where a group starts.
    rows = table.num_rows
    parts = max(1, min(os.cpu_count() or 1, -(-rows // 250_000)))
    cuts: list[int] = []
    for i in range(1, parts):
        j = int(np.searchsorted(starts, rows * i // parts))
        if j < len(starts) and (not cuts or starts[j] > cuts[-1]):
            cuts.append(int(starts[j]))
    bounds = list(zip([0, *cuts], [*cuts, rows], strict=True))
    run = uuid.uuid4()
    parts_out: list[pa.Table | None] = [None] * len(bounds)

    def write(i: int) -> None:
        a, b = bounds[i]
        part = parts_out[i] = table.take(pa.array(order[a:b]))
        target = folder / f"part-{i:05d}-{run}-c000.snappy.parquet"
        pq.write_table(
            part,
            target,
            row_group_size=row_group_rows,
            compression="snappy",
            use_dictionary=list(keys),  # (a checkpoint's other columns hardly repeat)
        )

    with ThreadPoolExecutor(len(bounds)) as pool:
        list(pool.map(write, range(len(bounds))))
    for f in files:
        f.unlink()
        f.with_name(f".{f.name}.crc").unlink(missing_ok=True)
    return pa.concat_tables([p for p in parts_out if p is not None])


def _group_order(lid: Any, ranks: list[Any]) -> tuple[Any, Any]:
    """The row order by (ranks..., lid), and each row's group number in that order."""
    import numpy as np

    n = len(lid)
    cards = [int(r.max()) + 1 if len(r) else 1 for r in ranks]
    if np.prod(np.array(cards, dtype=np.float64)) >= 2.0**62:
        order = np.lexsort([lid, *reversed(ranks)])
        group = np.zeros(n, dtype=np.int64)
        if n:
            changed = np.zeros(n - 1, dtype=bool)
            for r in ranks:
                ro = r[order]
                changed |= ro[1:] != ro[:-1]
            group[1:] = np.cumsum(changed)
        return order, group
    code = np.zeros(n, dtype=np.int64)
    for r, c in zip(ranks, cards, strict=True):  # mixed radix: order-preserving
        code = code * c + r
    by_id = np.argsort(lid)
    if code.max(initial=0) < 2**16:  # numpy's stable sort of 16-bit ints is a radix sort
        order = by_id[np.argsort(code[by_id].astype(np.uint16), kind="stable")]
    else:
        order = by_id[np.argsort(code[by_id], kind="stable")]
    return order, code[order]


def _rankable(t: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_integer(t)
        or pa.types.is_decimal(t)
        or pa.types.is_boolean(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_date(t)
        or pa.types.is_timestamp(t)
    )


def _ranks(column: Any) -> Any:
    """Each value's rank among the column's distinct values, in Spark's ascending order."""
    import numpy as np
    import pyarrow.compute as pc

    if len(column) == 0:  # (pyarrow cannot convert an empty dictionary column to numpy)
        return np.zeros(0, dtype=np.int64)
    enc = pc.dictionary_encode(column, null_encoding="encode").combine_chunks()
    values = enc.dictionary
    order = pc.sort_indices(values).to_numpy()  # nulls last here; Spark puts them first
    null = values.is_null().to_numpy(zero_copy_only=False)[order]
    order = np.concatenate([order[null], order[~null]])
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values), dtype=np.int64)
    return rank[enc.indices.to_numpy(zero_copy_only=False)]
