"""Lineage-id checks on written data, on the driver.

The runtime checks what it has just written (or an input it stored earlier) by reading the
``_lineage_id`` column of the Parquet files with pyarrow: no Spark job, a few milliseconds
for small outputs and well under a second for millions of rows. The Spark twins are
:func:`regflow.runtime.lineage.duplicate_ids` and :func:`~regflow.runtime.lineage.foreign_ids`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from regflow.runtime.parquet import parquet_dataset
from regflow.spec.models import LINEAGE_COLUMN
from regflow.storage.fs import Location


def stored_lineage_ids(files: Sequence[Location]) -> Any:
    """The ``_lineage_id`` column of Parquet ``files`` as a pyarrow ChunkedArray."""
    import pyarrow as pa

    if not files:
        return pa.chunked_array([], pa.int64())
    table = parquet_dataset(files).read(columns=[LINEAGE_COLUMN])
    return table.column(LINEAGE_COLUMN)


def stored_duplicate_ids(files: Sequence[Location], limit: int = 5) -> list[Any]:
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


def not_rollup_totals(
    written: Sequence[Location], checkpoint: Sequence[Location], by: Sequence[str], foreign: Any
) -> list[Any]:
    """Ids of the ``foreign`` rows (a mask) of a custom rollup's ``written`` files that are
    not its total rows.

    A total row's (rollup_by values, lineage id) must be one of the pairs recorded in the
    rollup's ``checkpoint`` files (each input row's rollup_by values and its total's id).
    """
    rows = parquet_dataset(written).read(columns=[*by, LINEAGE_COLUMN]).filter(foreign)
    pairs = [*by, "_lineage_rollup_id"]
    ckpt = parquet_dataset(checkpoint).read(columns=pairs)
    totals = {
        tuple(r[c] for c in pairs)
        for r in ckpt.group_by(pairs, use_threads=False).aggregate([]).to_pylist()
    }
    return [
        r[LINEAGE_COLUMN]
        for r in rows.to_pylist()
        if (*[r[c] for c in by], r[LINEAGE_COLUMN]) not in totals
    ]


def repeated_keys(
    rows: Sequence[Sequence[Any]], limit: int = 3
) -> tuple[list[tuple[Any, ...]], int]:
    """Up to ``limit`` key tuples occurring more than once in ``rows`` (a lookup's key
    columns, collected), and the number of distinct keys; grouped as Spark groups (and
    joins): NaN equals NaN, nulls form one key."""
    import math
    from collections import Counter

    nan = "NaN"
    counts = Counter(
        tuple(nan if isinstance(v, float) and math.isnan(v) else v for v in r) for r in rows
    )
    dups = [k for k, n in counts.items() if n > 1]
    return sorted(dups, key=repr)[:limit], len(counts)
