"""Clustering a lineage checkpoint on the driver: Spark's ``repartition`` and
``sortWithinPartitions`` by group key, done with pyarrow and numpy (see
:func:`regflow.runtime.persist.clustered`, its Spark twin)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from regflow.runtime.parquet import parquet_dataset
from regflow.runtime.policy import Declined
from regflow.spec.models import LINEAGE_COLUMN
from regflow.storage import fs
from regflow.storage.fs import Location

if TYPE_CHECKING:
    import pyarrow as pa


def cluster_parquet(
    folder: Location,
    keys: Sequence[str],
    *,
    row_group_rows: int = 131_072,
    drop: Sequence[str] = (),
    inspect: Callable[[pa.Table], None] | None = None,
) -> pa.Table | Declined:
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

    Declines (:class:`Declined`), changing nothing, when there is no file or a key or the
    lineage id has a type (or nulls) this does not order exactly like Spark (e.g.
    floating-point keys: -0.0 and 0.0 are one value to Spark); the caller then sorts with
    Spark.
    """
    import os
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = fs.glob(folder, "*.parquet")
    if not files:
        return Declined("no rows written")
    dataset = parquet_dataset(files)
    # The dropped columns are read on their own, and only for ``inspect``: pyarrow reads
    # a table that mixes flat and nested (struct) columns markedly slower than the two
    # parts apart (measured: 0.125 s against 0.06 + 0.03 s for a 1M-row checkpoint with
    # two audit tags).
    table = dataset.read(columns=[c for c in dataset.schema.names if c not in drop])
    lid = table.column(LINEAGE_COLUMN)
    if not pa.types.is_integer(lid.type) or lid.null_count:
        return Declined(f"lineage ids of type {lid.type} or null: not ordered like Spark here")
    for k in keys:
        if not _rankable(table.schema.field(k).type):
            t = table.schema.field(k).type
            return Declined(f"key '{k}' of type {t}: not ordered exactly like Spark here")

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
        filesystem, target = fs.arrow(folder / f"part-{i:05d}-{run}-c000.snappy.parquet")
        pq.write_table(
            part,
            target,
            filesystem=filesystem,
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
