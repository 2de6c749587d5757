"""A source's columns: Spark types, the types in the Parquet footers, and the checked
casts to the declared types (a value that does not fit fails naming it, nothing is rounded)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from regflow.core.types import Schema, decimal_ps
from regflow.errors import DataError
from regflow.plan.model import PlanSource
from regflow.runtime.spark_sql import quote_name
from regflow.storage.fs import Location, S3Path, arrow

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def spark_type(t: str) -> str:
    """Our type names are Spark DDL names, except ``unknown``."""
    return "string" if t == "unknown" else t


def schema_ddl(columns: Iterable[Sequence[str]]) -> str:
    """A Spark DDL schema (``spark.read.schema``) from (name, Spark type) pairs, such as
    a stored output's metadata ``schema``."""
    return ", ".join(f"{quote_name(name)} {t}" for name, t in columns)


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


class CorruptFileError(DataError):
    """A source's data file cannot be read (not Parquet, truncated, a bad footer)."""


def read_parquet_schema(f: Location) -> Any:
    """The Arrow schema in ``f``'s footer; a file that is no readable Parquet fails naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if isinstance(f, S3Path):
            fs, where = arrow(f)
            return pq.read_schema(where, filesystem=fs)
        return pq.read_schema(f)
    except (OSError, pa.ArrowException) as exc:
        raise corrupt_file(f, str(exc)) from exc


def corrupt_file(f: Location | str, why: str) -> CorruptFileError:
    first = why.strip().splitlines()[0] if why.strip() else "unreadable"
    return CorruptFileError(
        f"file {f} is not a readable Parquet file ({first}). Replace it with a good copy "
        "(or remove it) and rerun"
    )


def parquet_schema(files: Sequence[Location], declared: Schema, max_files: int = 256) -> str | None:
    """The declared columns with their types in the files, as Spark would infer them, read
    from the Parquet footers (no Spark job); None when in doubt (Spark then infers it).

    Only plain types whose mapping is unambiguous are used (no timestamps, nested or
    unsigned types), and every file must agree.
    """
    import pyarrow as pa

    if not files or len(files) > max_files:
        return None
    names = [c.name for c in declared.columns]
    found: dict[str, str] | None = None
    for f in files:
        schema = read_parquet_schema(f)
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


def sql_text(text: str) -> str:
    """``text`` as a Spark SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_NUMBERS = frozenset({"tinyint", "smallint", "int", "bigint", "float", "double"})


def is_number(t: str) -> bool:
    """Whether a declared type is a number (Spark's CSV reader turns a bad one into null)."""
    return t.startswith("decimal") or t in _NUMBERS


def checked_cast(src: PlanSource, column: str, have: str | None, want: str) -> str:
    """SQL casting source ``column`` (of file type ``have``) to its declared type ``want``.

    A column whose files hold another type (text, a wider decimal) is cast with a check:
    a value that cannot be read as ``want`` (no number, too many digits, no date) fails the
    run naming the source, the column, the value and the row's primary key, instead of
    Spark's ``CAST_INVALID_INPUT`` or ``NUMERIC_VALUE_OUT_OF_RANGE`` at whichever node later
    runs the job (with its advice to turn ANSI mode off).
    """
    col = quote_name(column)
    plain = f"CAST({col} AS {want})"
    if have is None or have == want or want == "string":
        return plain
    if have == "string" and want not in ("date", "timestamp", "boolean", "binary"):
        why = f"IF(try_cast({col} AS double) IS NULL, 'it is no number', 'it is too large')"
    elif have == "string":
        why = sql_text(f"it is no {want}")
    elif have in ("float", "double"):
        why = f"IF(isnan({col}), 'it is NaN', 'it is too large')"
    else:
        why = sql_text("it is too large")
    parts = [
        sql_text(f"[regflow:node={src.name}] source '{src.name}', column '{column}': value '"),
        f"replace(replace(CAST({col} AS STRING), '\\n', ' '), '\\r', ' ')",
        sql_text(f"' ({have}) cannot be read as {want}: "),
        why,
    ]
    if src.primary_key:
        parts.append(sql_text(" (the row with "))
        for i, k in enumerate(src.primary_key):
            parts.append(sql_text(f"{', ' if i else ''}{k}="))
            parts.append(f"coalesce(CAST({quote_name(k)} AS STRING), 'null')")
        parts.append(sql_text(")"))
    parts.append(
        sql_text(
            f". Correct the value in the source data, or declare a type that holds it for "
            f"'{column}' in the spec's sources.{src.name}.schema"
        )
    )
    return (
        f"CASE WHEN {col} IS NOT NULL AND try_cast({col} AS {want}) IS NULL "
        f"THEN raise_error(concat({', '.join(parts)})) ELSE {plain} END"
    )


def check_no_rounding(
    df: DataFrame, declared: Schema, name: str, path: str, *, pipeline: str, cob: str
) -> None:
    """Fail if casting a decimal column of the files to its declared type would round it:
    a declared scale below the files' drops digits of every value (issue 17)."""
    from pyspark.sql.types import DecimalType

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
