"""Finishing an aggregate on the driver, from its lineage checkpoint while it is in memory.

A lineage checkpoint small enough to be clustered on the driver (see
:func:`regflow.runtime.driver.cluster.cluster_parquet`) is already a pyarrow table there,
sorted by group key. Summing it there, and reading the adjustment audits it carries from
it, saves the Spark jobs that would read the checkpoint back, with the same results:

- a measure is finished here only when the result is exactly Spark's: sums and counts of
  integers and decimals (a decimal(p, s) sum is decimal(min(38, p + 10), s), like Spark's),
  sums of floating point numbers (summed in the checkpoint's order), minimums and maximums
  of integers, decimals and dates. Anything else is declined (:class:`Declined`) and the
  caller aggregates with Spark. So does a sum that could overflow: Arrow adds 64-bit integers
  and decimals modulo 2**64 and 2**128 without a word, so the sum of the values'
  magnitudes, in floating point alongside, must show that no partial sum in any order can
  leave the result type's range (by a wide margin); else Spark decides (it raises an
  overflow error);
- the aggregated row's lineage id is the checkpoint's group id column, computed by Spark
  (``xxhash64(node, group key...)``) when the checkpoint was written.

Pure pyarrow and numpy: no Spark here. Types are given as Spark's simple strings
(``decimal(20,2)``, ``bigint``...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from regflow.runtime.policy import Declined
from regflow.spec.models import LINEAGE_COLUMN

# the checkpoint column holding the id of the aggregated row each member contributes to
GROUP_ID_COLUMN = "_lineage_group_id"

_DECIMAL = re.compile(r"decimal\((\d+),(\d+)\)")
_SIMPLE = {
    "tinyint": "int8",
    "smallint": "int16",
    "int": "int32",
    "bigint": "int64",
    "float": "float32",
    "double": "float64",
    "string": "string",
    "date": "date32",
    "boolean": "bool_",
}
# a count's checkpoint column holds 1 per counted row: it is summed
_ARROW_FUNC = {"count": "sum"}


def arrow_type(spark_type: str) -> Any:
    """The pyarrow type Spark stores a column of ``spark_type`` (simple string) as."""
    import pyarrow as pa

    m = _DECIMAL.fullmatch(spark_type)
    if m:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    if spark_type not in _SIMPLE:
        raise ValueError(f"no local type for {spark_type}")
    return getattr(pa, _SIMPLE[spark_type])()


def _exact(func: str, t: Any) -> bool:
    import pyarrow as pa

    if func in ("sum", "count"):
        return bool(pa.types.is_integer(t) or pa.types.is_decimal(t) or pa.types.is_floating(t))
    if func in ("min", "max"):
        return bool(pa.types.is_integer(t) or pa.types.is_decimal(t) or pa.types.is_date(t))
    return False


def _may_overflow(t: Any, rows: int) -> bool:
    """Whether a sum of ``rows`` values of type ``t`` could leave Arrow's exact range."""
    import pyarrow as pa

    if pa.types.is_decimal(t):  # |x| < 10**p (unscaled); Arrow sums in 128 bits
        return bool(t.precision + len(str(rows)) > 37)
    return bool(pa.types.is_integer(t) and t.bit_width == 64)


def _safe_magnitude(result: Any) -> float:
    """Half the largest magnitude of ``result`` type: a float sum below it (with a float's
    rounding, far smaller than the margin) means the exact sum is in range."""
    import pyarrow as pa

    if pa.types.is_decimal(result):
        return 0.5 * 10.0 ** (result.precision - result.scale)
    return 2.0**62


def finish_aggregate(
    table: Any,
    group_by: Sequence[str],
    measures: Mapping[str, str],
    out_types: Mapping[str, str],
) -> Any | Declined:
    """The aggregate of a clustered checkpoint ``table``: one row per group, columns
    ``group_by``, the lineage id, then ``measures`` (name -> sum|count|min|max) typed as
    ``out_types`` (name -> Spark type). Declined when the result would not be exactly
    Spark's (see the module docs).

    Sums and counts of groups with no contributing row are 0, minimums and maximums null,
    like the Spark path (``aggregate_finish``).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    names = set(table.column_names)
    if not {*group_by, GROUP_ID_COLUMN, *measures} <= names:
        return Declined("the checkpoint lacks a column")
    if any(not _exact(f, table.schema.field(m).type) for m, f in measures.items()):
        return Declined("a measure is not exact on the driver (type or function)")
    work = table.select([*group_by, GROUP_ID_COLUMN, *measures])
    aggs: list[tuple[str, str]] = []
    # sums that could leave their type's range (64-bit integers, decimals): the magnitudes
    # also summed as floats, bounding every partial sum in any order (Spark fails when one
    # overflows); name -> the largest that bound may be
    checks: dict[str, float] = {}
    for m, f in measures.items():
        t = work.schema.field(m).type
        aggs.append((m, _ARROW_FUNC.get(f, f)))
        if f in ("sum", "count") and _may_overflow(t, table.num_rows):
            magnitude = pc.abs(pc.cast(work.column(m), pa.float64(), safe=False))
            work = work.append_column(f"__f_{m}", magnitude)
            aggs.append((f"__f_{m}", "sum"))
            checks[m] = _safe_magnitude(arrow_type(out_types[m]))
    keys = [*group_by, GROUP_ID_COLUMN]
    grouped = work.group_by(keys, use_threads=False).aggregate(aggs)
    for m, limit in checks.items():
        approx = grouped.column(f"__f_{m}_sum").to_numpy(zero_copy_only=False)
        if len(approx) and not float(abs(approx[approx == approx]).max(initial=0.0)) < limit:
            return Declined("a sum could overflow its type (Spark decides)")
    columns: dict[str, Any] = {k: grouped.column(k) for k in group_by}
    columns[LINEAGE_COLUMN] = grouped.column(GROUP_ID_COLUMN)
    for m, f in measures.items():
        col = grouped.column(f"{m}_{_ARROW_FUNC.get(f, f)}")
        target = arrow_type(out_types[m])
        if f in ("sum", "count"):
            col = pc.fill_null(col, pa.scalar(0).cast(col.type))
        try:
            columns[m] = pc.cast(col, target)  # a safe cast: fails rather than overflow
        except pa.ArrowInvalid:
            return Declined("a result does not fit its type (Spark decides)")
    return pa.table(columns)
