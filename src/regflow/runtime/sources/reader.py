"""Read a source for one cob as a DataFrame, and give every row its lineage id."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from regflow.core.types import Schema
from regflow.errors import DataError
from regflow.plan.model import PlanSource
from regflow.runtime.lineage import source_lineage_id
from regflow.runtime.sources.emptiness import cob_values, has_rows, partition_cobs, rows_upper_bound
from regflow.runtime.sources.identity import fingerprint, source_location
from regflow.runtime.sources.keys import require_keys
from regflow.runtime.sources.paths import EmptySourceError, resolve_source_path
from regflow.runtime.sources.schema import (
    CorruptFileError,
    check_no_rounding,
    checked_cast,
    is_number,
    parquet_schema,
    spark_type,
)
from regflow.runtime.spark_sql import quote_name
from regflow.spec.models import LINEAGE_COLUMN
from regflow.storage.fs import Location, spark_uri

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def read_source(
    spark: SparkSession, src: PlanSource, variables: dict[str, Any], *, pipeline: str
) -> tuple[DataFrame, dict[str, Any]]:
    """The source as a DataFrame with ``_lineage_id``, plus facts for the run's metadata."""
    from pyspark.sql import functions as F

    cob = str(variables["cob"])
    path, files = resolve_source_path(src, variables, pipeline=pipeline)
    declared = Schema(
        tuple(c for c in src.schema.columns if c.name != LINEAGE_COLUMN), known=src.schema.known
    )
    ddl = ", ".join(f"{quote_name(c.name)} {spark_type(c.type)}" for c in declared.columns)
    if not files:  # an empty cob partition the source allows: no rows, the declared columns
        df = spark.createDataFrame([], ddl)
        rows_at_most: int | None = 0
    else:
        try:
            df = _read_files(spark, src, path, files, declared)
        except CorruptFileError as exc:
            raise CorruptFileError(
                f"source '{src.name}': {exc}", pipeline=pipeline, node=src.name, cob=cob
            ) from exc
        rows_at_most = rows_upper_bound(df, src.format)
    if declared.known:
        missing = [c.name for c in declared.columns if c.name not in df.columns]
        if missing:
            raise DataError(
                f"source '{src.name}' at {path} lacks declared column(s) {', '.join(missing)}; "
                f"it has {', '.join(df.columns)}",
                pipeline=pipeline,
                node=src.name,
                cob=cob,
            )
        check_no_rounding(df, declared, src.name, str(path), pipeline=pipeline, cob=cob)
        # Cast to the declared types (e.g. decimal scale), and keep only declared columns.
        # (SQL text: PySpark's Column methods cost several JVM round trips each.)
        have = {f.name: f.dataType.simpleString() for f in df.schema.fields}
        df = df.selectExpr(
            *[
                f"{checked_cast(src, c.name, have.get(c.name), spark_type(c.type))} "
                f"AS {quote_name(c.name)}"
                for c in declared.columns
            ]
        )
    every_cob = df
    if src.cob_column:
        df = df.where(F.col(src.cob_column) == F.lit(cob).cast("date"))
    try:
        empty = (
            bool(files) and not src.allow_empty and not has_rows(df, src, files, rows_at_most, cob)
        )
    except CorruptFileError as exc:
        raise CorruptFileError(
            f"source '{src.name}': {exc}", pipeline=pipeline, node=src.name, cob=cob
        ) from exc
    if empty:
        raise EmptySourceError(
            src.name,
            cob,
            f"{path} holds no rows"
            + (f" with {src.cob_column} = {cob}" if src.cob_column and rows_at_most != 0 else ""),
            sorted({*partition_cobs(path, src), *cob_values(every_cob, src, rows_at_most)} - {cob}),
            pipeline=pipeline,
        )
    df = require_keys(df, src)
    df = df.withColumn(LINEAGE_COLUMN, source_lineage_id(src.name, cob, src.primary_key))
    facts = {
        "path": str(path),
        # where it is read from, the same in every checkout of the project (storage/reuse.py)
        "location": source_location(str(path), variables.get("project_dir")),
        "files": len(files),
        "fingerprint": fingerprint(files),
        "rows_at_most": rows_at_most,
    }
    return df, facts


def _read_files(
    spark: SparkSession,
    src: PlanSource,
    path: Location,
    files: list[Location],
    declared: Schema,
) -> DataFrame:
    reader = spark.read
    if src.format == "csv":
        opts = {"header": "true", **{k: str(v) for k, v in src.options.items()}}
        reader = reader.options(**opts)
        if declared.known:  # numbers as text: checked_cast reads them, naming a bad value
            reader = reader.schema(
                ", ".join(
                    f"{quote_name(c.name)} "
                    + ("string" if is_number(c.type) else spark_type(c.type))
                    for c in declared.columns
                )
            )
        return reader.csv(spark_uri(path))
    options = {k: str(v) for k, v in src.options.items()}
    known = None if options or not declared.known else parquet_schema(files, declared)
    if known is not None:  # saves the Spark job that would infer it from the files
        reader = reader.schema(known)
    return reader.options(**options).parquet(spark_uri(path))
