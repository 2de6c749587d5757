"""A few rows held by the driver: Spark evaluates plans over them while planning, and
collects them with no job (an adjust node's small input, see the runner's adjust path)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from regflow.runtime.parquet import parquet_dataset, parquet_files
from regflow.storage.fs import Location

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

# Column types that survive a trip to the driver and back (toArrow, createDataFrame) as is
DRIVER_COPY_TYPES = frozenset(
    {"long", "integer", "short", "byte", "string", "decimal", "boolean", "date", "double", "float"}
)


def copyable(schema: StructType) -> bool:
    """Whether rows of ``schema`` survive a trip to the driver and back unchanged."""
    return all(f.dataType.typeName() in DRIVER_COPY_TYPES for f in schema.fields)


def driver_copy(
    spark: SparkSession, df: DataFrame, schema: StructType, stored: Location | None
) -> DataFrame:
    """``df`` (a few rows, of ``schema``; ``stored``: its folder when it is stored data as
    is) as rows held by the driver. Stored data is read with pyarrow; anything else is
    collected once."""
    if stored is None:
        return spark.createDataFrame(df.toArrow(), schema=schema)
    files = parquet_files(stored)
    if not files:
        return df
    table = parquet_dataset(files).read(columns=schema.names)
    # (createDataFrame pairs columns by position: read in the schema's order)
    return spark.createDataFrame(table, schema=schema)


def collect_arrow(df: DataFrame, schema: StructType | None = None) -> pa.Table:
    """The rows of a small DataFrame as a pyarrow table, with ``toArrow``'s types.

    Collected as rows: a plan over rows the driver holds (``createDataFrame``) is evaluated
    while it is planned, with no Spark job (``toArrow`` always runs one). The values convert
    exactly: integers, decimals, dates, strings, booleans and floating point numbers (the
    types of ``DRIVER_COPY_TYPES``, plus structs of them). ``schema``: ``df.schema``, when
    the caller has it (asking Spark for it is a call into the JVM).
    """
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow = to_arrow_schema(schema or df.schema, error_on_duplicated_field_names_in_struct=True)
    rows = [r.asDict(recursive=True) for r in df.collect()]
    return pa.Table.from_pylist(rows, schema=arrow)
