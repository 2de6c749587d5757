"""Read a plan's sources for one cob, and give every row its lineage id."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regflow.errors import DataError
from regflow.plan.model import PlanSource
from regflow.runtime.lineage import source_lineage_id
from regflow.spec.models import LINEAGE_COLUMN
from regflow.spec.types import Schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def spark_type(t: str) -> str:
    """Our type names are Spark DDL names, except ``unknown``."""
    return "string" if t == "unknown" else t


def quote_name(name: str) -> str:
    """A column name as a Spark SQL identifier (backquoted)."""
    return "`" + name.replace("`", "``") + "`"


def schema_ddl(columns: Iterable[Sequence[str]]) -> str:
    """A Spark DDL schema (``spark.read.schema``) from (name, Spark type) pairs, such as
    a stored output's metadata ``schema``."""
    return ", ".join(f"{quote_name(name)} {t}" for name, t in columns)


def render_path(template: str, variables: dict[str, Any]) -> str:
    return template.format_map({k: "" if v is None else str(v) for k, v in variables.items()})


def resolve_source_path(src: PlanSource, variables: dict[str, Any]) -> tuple[Path, list[Path]]:
    """Find a source's data for the cob.

    Tries, in order: ``<path>/cob=<cob>/`` (a cob partition), ``<path>`` (a folder or file),
    ``<path>.<format>`` (a single file). Returns the path and the data files behind it.
    """
    base = Path(render_path(src.path, variables))
    cob = variables["cob"]
    candidates = [base / f"cob={cob}", base, base.with_name(f"{base.name}.{src.format}")]
    for cand in candidates:
        if cand.is_dir():
            files = sorted(
                p
                for p in cand.rglob(f"*.{src.format}")
                if not any(part.startswith((".", "_")) for part in p.relative_to(cand).parts)
            )
            if files:
                return cand, files
        elif cand.is_file():
            return cand, [cand]
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"source '{src.name}': no {src.format} data found (looked for {tried}). "
        "Check the data_root param (--param data_root=DIR) and the cob."
    )


_ARROW_TO_SPARK = {
    "string": "string",
    "large_string": "string",
    "bool": "boolean",
    "int8": "tinyint",
    "int16": "smallint",
    "int32": "int",
    "int64": "bigint",
    "float": "float",
    "double": "double",
    "date32[day]": "date",
    "binary": "binary",
    "large_binary": "binary",
}


def _parquet_schema(files: list[Path], declared: Schema, max_files: int = 256) -> str | None:
    """The declared columns with their types in the files, as Spark would infer them, read
    from the Parquet footers (no Spark job); None when in doubt (Spark then infers it).

    Only plain types whose mapping is unambiguous are used (no timestamps, nested or
    unsigned types), and every file must agree.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not files or len(files) > max_files:
        return None
    names = [c.name for c in declared.columns]
    found: dict[str, str] | None = None
    for f in files:
        schema = pq.read_schema(f)
        types: dict[str, str] = {}
        for name in names:
            if schema.get_field_index(name) < 0:
                return None  # a missing column: Spark's own read reports it
            t = schema.field(name).type
            if pa.types.is_decimal(t) and t.bit_width == 128:
                types[name] = f"decimal({t.precision},{t.scale})"
            elif str(t) in _ARROW_TO_SPARK:
                types[name] = _ARROW_TO_SPARK[str(t)]
            else:
                return None
        if found is not None and types != found:
            return None
        found = types
    assert found is not None
    return ", ".join(f"{quote_name(n)} {found[n]}" for n in names)


def fingerprint(files: list[Path]) -> str:
    """Content identity of a snapshot: file names, sizes and modification times."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def read_source(
    spark: SparkSession, src: PlanSource, variables: dict[str, Any], *, pipeline: str
) -> tuple[DataFrame, dict[str, Any]]:
    """The source as a DataFrame with ``_lineage_id``, plus facts for the run's metadata."""
    from pyspark.sql import functions as F

    cob = str(variables["cob"])
    path, files = resolve_source_path(src, variables)
    declared = Schema(
        tuple(c for c in src.schema.columns if c.name != LINEAGE_COLUMN), known=src.schema.known
    )
    reader = spark.read
    if src.format == "csv":
        opts = {"header": "true", **{k: str(v) for k, v in src.options.items()}}
        reader = reader.options(**opts)
        if declared.known:
            reader = reader.schema(
                ", ".join(f"{quote_name(c.name)} {spark_type(c.type)}" for c in declared.columns)
            )
        df = reader.csv(str(path))
    else:
        options = {k: str(v) for k, v in src.options.items()}
        known = None if options or not declared.known else _parquet_schema(files, declared)
        if known is not None:  # saves the Spark job that would infer it from the files
            reader = reader.schema(known)
        df = reader.options(**options).parquet(str(path))
    rows_at_most = _rows_at_most(df, src.format)
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
        _check_no_rounding(df, declared, src.name, str(path), pipeline=pipeline, cob=cob)
        # Cast to the declared types (e.g. decimal scale), and keep only declared columns.
        # (SQL text: PySpark's Column methods cost several JVM round trips each.)
        df = df.selectExpr(
            *[
                f"CAST({quote_name(c.name)} AS {spark_type(c.type)}) AS {quote_name(c.name)}"
                for c in declared.columns
            ]
        )
    if src.cob_column:
        df = df.where(F.col(src.cob_column) == F.lit(cob).cast("date"))
    df = df.withColumn(LINEAGE_COLUMN, source_lineage_id(src.name, cob, src.primary_key))
    facts = {
        "path": str(path),
        "files": len(files),
        "fingerprint": fingerprint(files),
        "rows_at_most": rows_at_most,
    }
    return df, facts


def _check_no_rounding(
    df: DataFrame, declared: Schema, name: str, path: str, *, pipeline: str, cob: str
) -> None:
    """Fail if casting a decimal column of the files to its declared type would round it:
    a declared scale below the files' drops digits of every value (issue 17)."""
    from pyspark.sql.types import DecimalType

    from regflow.spec.types import decimal_ps

    types = {f.name: f.dataType for f in df.schema.fields}
    for c in declared.columns:
        want, have = decimal_ps(c.type), types.get(c.name)
        if want is not None and isinstance(have, DecimalType) and have.scale > want[1]:
            raise DataError(
                f"source '{name}' at {path}: column '{c.name}' is {have.simpleString()} in the "
                f"files but declared {c.type}; reading it would round every value to "
                f"{want[1]} decimals. Declare decimal({max(want[0], have.precision)},"
                f"{have.scale}) in the spec's schema (round in a calc if that is meant)",
                pipeline=pipeline,
                node=name,
                cob=cob,
            )


def _rows_at_most(df: DataFrame, fmt: str, max_files: int = 256) -> int | None:
    """At most how many rows the file source ``df`` has, from the files Spark reads, without
    a Spark job: the row counts in the Parquet footers; for CSV, the bytes (every row but
    a file's last ends with a line break). None for files elsewhere than on the local file
    system, too many files, or unreadable ones."""
    from urllib.parse import unquote, urlparse

    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = []
    for uri in df.inputFiles():
        parsed = urlparse(uri)
        if parsed.scheme not in ("", "file"):
            return None
        paths.append(Path(unquote(parsed.path)))
    if len(paths) > max_files:
        return None
    try:
        if fmt == "parquet":
            return sum(pq.read_metadata(f).num_rows for f in paths)
        return sum(f.stat().st_size + 1 for f in paths)
    except (OSError, pa.ArrowException):
        return None
