"""Read a plan's sources for one cob, and give every row its lineage id."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regflow.core.types import Schema, decimal_ps
from regflow.errors import DataError
from regflow.plan.cob import parse_cob
from regflow.plan.model import PlanSource
from regflow.runtime.lineage import source_lineage_id
from regflow.runtime.spark_sql import quote_name
from regflow.spec.models import LINEAGE_COLUMN

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def spark_type(t: str) -> str:
    """Our type names are Spark DDL names, except ``unknown``."""
    return "string" if t == "unknown" else t


def schema_ddl(columns: Iterable[Sequence[str]]) -> str:
    """A Spark DDL schema (``spark.read.schema``) from (name, Spark type) pairs, such as
    a stored output's metadata ``schema``."""
    return ", ".join(f"{quote_name(name)} {t}" for name, t in columns)


def render_path(template: str, variables: dict[str, Any]) -> str:
    return template.format_map({k: "" if v is None else str(v) for k, v in variables.items()})


def resolve_source_path(
    src: PlanSource, variables: dict[str, Any], *, pipeline: str | None = None
) -> tuple[Path, list[Path]]:
    """Find a source's data for the cob.

    A folder with ``cob=YYYY-MM-DD/`` subfolders is partitioned by cob: only
    ``<path>/cob=<cob>/`` is read, and a missing or empty one is no data for the cob (never
    a fallback to the other cobs' files). Otherwise tries ``<path>`` (a folder or file),
    then ``<path>.<format>`` (a single file). Returns the path and the data files behind it:
    none only for an empty cob partition of a source that allows it (``allow_empty``).
    A relative path is relative to the project root (``project_dir``), wherever the process
    runs.
    """
    base = Path(render_path(src.path, variables))
    if not base.is_absolute() and variables.get("project_dir"):
        base = Path(variables["project_dir"]) / base
    cob = str(variables["cob"])
    part = base / f"cob={cob}"
    if part.is_dir() or (base.is_dir() and any(p.is_dir() for p in base.glob("cob=*"))):
        files = _data_files(part, src.format) if part.is_dir() else []
        if files or src.allow_empty:
            return part, files
        state = "is empty" if part.is_dir() else "does not exist"
        cobs = [c for c in cob_partitions(base, src.format) if c != cob]
        raise EmptySourceError(src.name, cob, f"{part} {state}", cobs, pipeline=pipeline)
    for cand in (base, base.with_name(f"{base.name}.{src.format}")):
        if cand.is_dir():
            files = _data_files(cand, src.format)
            if files:
                return cand, files
        elif cand.is_file():
            return cand, [cand]
    tried = ", ".join(str(c) for c in (part, base, base.with_name(f"{base.name}.{src.format}")))
    raise DataError(
        f"source '{src.name}': no {src.format} data found (looked for {tried}). "
        "Check the data_root param (--param data_root=DIR) and the cob.",
        pipeline=pipeline,
        node=src.name,
        cob=cob,
    )


def _data_files(folder: Path, fmt: str) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob(f"*.{fmt}")
        if not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)
    )


def cob_partitions(base: Path, fmt: str) -> list[str]:
    """The cobs of a partitioned source folder that hold data files (``cob=*/``)."""
    if not base.is_dir():
        return []
    return sorted(
        p.name.removeprefix("cob=")
        for p in base.glob("cob=*")
        if p.is_dir() and _data_files(p, fmt)
    )


class EmptySourceError(DataError):
    """A source has no rows for the run's cob (and does not say ``allow_empty: true``)."""

    def __init__(
        self, source: str, cob: str, why: str, cobs: Sequence[str], *, pipeline: str | None
    ):
        self.source, self.cobs = source, list(cobs)
        shown = ", ".join(cobs[-10:]) if cobs else "none"
        more = f" (and {len(cobs) - 10} earlier)" if len(cobs) > 10 else ""
        super().__init__(
            f"source '{source}' has no rows for cob {cob}: {why}; cobs present: {shown}{more}. "
            "Check --cob and the data_root param (--param data_root=DIR), or set "
            "'allow_empty: true' on the source if an empty cob is expected.",
            pipeline=pipeline,
            node=source,
            cob=cob,
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


class CorruptFileError(DataError):
    """A source's data file cannot be read (not Parquet, truncated, a bad footer)."""


def read_parquet_schema(f: Path) -> Any:
    """The Arrow schema in ``f``'s footer; a file that is no readable Parquet fails naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(f)
    except (OSError, pa.ArrowException) as exc:
        raise corrupt_file(f, str(exc)) from exc


def corrupt_file(f: Path | str, why: str) -> CorruptFileError:
    first = why.strip().splitlines()[0] if why.strip() else "unreadable"
    return CorruptFileError(
        f"file {f} is not a readable Parquet file ({first}). Replace it with a good copy "
        "(or remove it) and rerun"
    )


def _parquet_schema(files: list[Path], declared: Schema, max_files: int = 256) -> str | None:
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
            sorted(
                {*_partition_cobs(path, src), *_cob_values(every_cob, src, rows_at_most)} - {cob}
            ),
            pipeline=pipeline,
        )
    df = _require_keys(df, src)
    df = df.withColumn(LINEAGE_COLUMN, source_lineage_id(src.name, cob, src.primary_key))
    facts = {
        "path": str(path),
        "files": len(files),
        "fingerprint": fingerprint(files),
        "rows_at_most": rows_at_most,
    }
    return df, facts


def sql_text(text: str) -> str:
    """``text`` as a Spark SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_NUMBERS = frozenset({"tinyint", "smallint", "int", "bigint", "float", "double"})


def _is_number(t: str) -> bool:
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


def _read_files(
    spark: SparkSession,
    src: PlanSource,
    path: Path,
    files: list[Path],
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
                    + ("string" if _is_number(c.type) else spark_type(c.type))
                    for c in declared.columns
                )
            )
        return reader.csv(str(path))
    options = {k: str(v) for k, v in src.options.items()}
    known = None if options or not declared.known else _parquet_schema(files, declared)
    if known is not None:  # saves the Spark job that would infer it from the files
        reader = reader.schema(known)
    return reader.options(**options).parquet(str(path))


# ------------------------------------------------------------------ a source without rows
# A source with no rows for the cob fails the run before any compute (unless it says
# ``allow_empty: true``): an empty input would otherwise publish empty figures for the cob.
# Whether it has rows is known from the Parquet footers (row counts, and the cob column's
# min/max per row group) or the first lines of CSV files; only when those cannot tell does
# Spark look, with a job that stops at the first matching row.


def has_rows(
    df: DataFrame, src: PlanSource, files: list[Path], rows_at_most: int | None, cob: str
) -> bool:
    """Whether the source ``df`` (filtered to the cob) has a row."""
    if rows_at_most == 0:
        return False
    if src.format == "parquet" and rows_at_most is not None and not src.options:
        if not src.cob_column:
            return True  # the footers' row count is exact
        known = _cob_in_row_groups(files, src.cob_column, parse_cob(cob))
        if known is not None:
            return known
    if src.format == "csv" and not src.cob_column:
        known = _csv_has_rows(files, src.options)
        if known is not None:
            return known
    return not df.isEmpty()


def _cob_in_row_groups(files: list[Path], column: str, cob: dt.date) -> bool | None:
    """From the row groups' statistics of ``column``: True when one holds only ``cob``,
    False when none can hold it, None when they cannot tell."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    maybe = False
    for f in files:
        try:
            meta = pq.read_metadata(f)
        except (OSError, pa.ArrowException) as exc:
            raise corrupt_file(f, str(exc)) from exc
        names = [meta.schema.column(i).path for i in range(meta.num_columns)]
        if column not in names:
            return None
        i = names.index(column)
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            if rg.num_rows == 0:
                continue
            stats = rg.column(i).statistics
            if stats is None or not stats.has_min_max:
                if stats is not None and stats.null_count == rg.num_rows:
                    continue  # only nulls: no row of any cob
                return None
            lo, hi = stats.min, stats.max
            if type(lo) is not dt.date or type(hi) is not dt.date:
                return None
            if lo == hi == cob:
                return True
            maybe = maybe or lo <= cob <= hi
    return None if maybe else False


def _csv_has_rows(files: list[Path], options: dict[str, Any]) -> bool | None:
    """Whether CSV ``files`` hold a data line (after the header), from their first lines;
    None for options that change what a line is."""
    if set(options) - {"header", "sep", "delimiter", "encoding"}:
        return None
    header = str(options.get("header", "true")).lower() == "true"
    encoding = str(options.get("encoding", "utf-8"))
    for f in files:
        with f.open(encoding=encoding, errors="replace") as fh:
            lines = (line for line in fh if line.strip())
            if header:
                next(lines, None)
            if next(lines, None) is not None:
                return True
    return False


def _partition_cobs(path: Path, src: PlanSource) -> list[str]:
    return cob_partitions(path.parent, src.format) if path.name.startswith("cob=") else []


def _cob_values(
    every_cob: DataFrame, src: PlanSource, rows_at_most: int | None, limit: int = 20
) -> list[str]:
    """The cobs the source's rows have (a Spark job: only on the way to failing)."""
    if not src.cob_column or rows_at_most == 0:
        return []
    col = quote_name(src.cob_column)
    rows = every_cob.selectExpr(f"CAST({col} AS STRING) AS c").distinct().limit(limit).collect()
    return [r["c"] for r in rows if r["c"] is not None]


def _check_no_rounding(
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


# ------------------------------------------------------------------ primary keys
# A row's lineage id is a hash of its primary key: a null key gives no id of its own (the hash
# skips nulls), and a repeated key repeats the id. A null key fails the job that reads the row
# (a filter in the read, no extra pass); repeated keys are found when written data holds a
# lineage id twice, and then traced back here (:func:`duplicate_keys`).


def _key_text(src: PlanSource) -> list[str]:
    """SQL pieces (for concat) spelling a row's primary key as ``k1=v1, k2=v2``."""
    out: list[str] = []
    for i, k in enumerate(src.primary_key):
        out.append(sql_text(f"{', ' if i else ''}{k}="))
        out.append(f"coalesce(CAST({quote_name(k)} AS STRING), 'null')")
    return out


def _require_keys(df: DataFrame, src: PlanSource) -> DataFrame:
    """``df``, failing the job that reads a row whose primary key has a null."""
    if not src.primary_key:
        return df
    null = " OR ".join(f"{quote_name(k)} IS NULL" for k in src.primary_key)
    message = ", ".join(
        [
            sql_text(
                f"[regflow:node={src.name}] source '{src.name}' has a row with a null primary "
                f"key ({', '.join(src.primary_key)}): "
            ),
            *_key_text(src),
            sql_text(
                ". Every row needs its key, which is its lineage id: fill it in the source "
                "data, or fix the declared primary_key"
            ),
        ]
    )
    return df.where(f"CASE WHEN {null} THEN raise_error(concat({message})) ELSE true END")


def duplicate_keys(df: DataFrame, src: PlanSource, limit: int = 5) -> list[tuple[str, int]]:
    """Up to ``limit`` primary keys the source ``df`` holds more than once, spelled
    ``k1=v1, k2=v2``, with how many rows have each (a Spark job: only on the way to
    failing)."""
    key = ", ".join(_key_text(src))
    rows = (
        df.groupBy(*src.primary_key)
        .count()
        .where("count > 1")
        .orderBy(*src.primary_key)
        .limit(limit)
        .selectExpr(f"concat({key}) AS k", "count")
        .collect()
    )
    return [(r["k"], int(r["count"])) for r in rows]


def duplicate_keys_error(
    src: PlanSource, dups: list[tuple[str, int]], *, pipeline: str, cob: str
) -> DataError:
    shown = "; ".join(f"{k} ({n} rows)" for k, n in dups)
    return DataError(
        f"source '{src.name}' has duplicate primary keys ({', '.join(src.primary_key)}): "
        f"{shown}{' ...' if len(dups) >= 5 else ''}. Each row's key is its lineage id and must "
        "be unique: de-duplicate the source data, or fix the declared primary_key",
        pipeline=pipeline,
        node=src.name,
        cob=cob,
    )
