"""Whether a source has rows for the cob, mostly without a Spark job."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from regflow.plan.cob import parse_cob
from regflow.plan.model import PlanSource
from regflow.runtime.sources.paths import cob_partitions
from regflow.runtime.sources.schema import corrupt_file
from regflow.runtime.spark_sql import quote_name
from regflow.storage.fs import Location, S3Path, arrow

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


# ------------------------------------------------------------------ a source without rows
# A source with no rows for the cob fails the run before any compute (unless it says
# ``allow_empty: true``): an empty input would otherwise publish empty figures for the cob.
# Whether it has rows is known from the Parquet footers (row counts, and the cob column's
# min/max per row group) or the first lines of CSV files; only when those cannot tell does
# Spark look, with a job that stops at the first matching row.


def has_rows(
    df: DataFrame, src: PlanSource, files: Sequence[Location], rows_at_most: int | None, cob: str
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


def _parquet_metadata(f: Location) -> Any:
    """``f``'s Parquet footer (local or on S3: only the footer's bytes are fetched)."""
    import pyarrow.parquet as pq

    if isinstance(f, S3Path):
        fs, where = arrow(f)
        return pq.read_metadata(where, filesystem=fs)
    return pq.read_metadata(f)


def _cob_in_row_groups(files: Sequence[Location], column: str, cob: dt.date) -> bool | None:
    """From the row groups' statistics of ``column``: True when one holds only ``cob``,
    False when none can hold it, None when they cannot tell."""
    import pyarrow as pa

    maybe = False
    for f in files:
        try:
            meta = _parquet_metadata(f)
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


def _csv_has_rows(files: Sequence[Location], options: dict[str, Any]) -> bool | None:
    """Whether CSV ``files`` hold a data line (after the header), from their first lines;
    None for options that change what a line is."""
    if set(options) - {"header", "sep", "delimiter", "encoding"}:
        return None
    header = str(options.get("header", "true")).lower() == "true"
    encoding = str(options.get("encoding", "utf-8"))
    for f in files:
        with _open_text(f, encoding) as fh:
            lines = (line for line in fh if line.strip())
            if header:
                next(lines, None)
            if next(lines, None) is not None:
                return True
    return False


def _open_text(f: Location, encoding: str) -> IO[str]:
    if isinstance(f, S3Path):  # streamed: only the first lines are read
        fs, where = arrow(f)
        return io.TextIOWrapper(fs.open_input_stream(where), encoding=encoding, errors="replace")
    return f.open(encoding=encoding, errors="replace")


def partition_cobs(path: Location, src: PlanSource) -> list[str]:
    return cob_partitions(path.parent, src.format) if path.name.startswith("cob=") else []


def cob_values(
    every_cob: DataFrame, src: PlanSource, rows_at_most: int | None, limit: int = 20
) -> list[str]:
    """The cobs the source's rows have (a Spark job: only on the way to failing)."""
    if not src.cob_column or rows_at_most == 0:
        return []
    col = quote_name(src.cob_column)
    rows = every_cob.selectExpr(f"CAST({col} AS STRING) AS c").distinct().limit(limit).collect()
    return [r["c"] for r in rows if r["c"] is not None]


def rows_upper_bound(df: DataFrame, fmt: str, max_files: int = 256) -> int | None:
    """At most how many rows the file source ``df`` has, from the files Spark reads, without
    a Spark job: the row counts in the Parquet footers; for CSV, the bytes (every row but
    a file's last ends with a line break). None for files elsewhere than on the local file
    system or S3 (``s3a://``), too many files, or unreadable ones."""
    from urllib.parse import unquote, urlparse

    import pyarrow as pa

    from regflow.storage.fs import size

    paths: list[Location] = []
    for uri in df.inputFiles():
        parsed = urlparse(uri)
        if parsed.scheme in ("s3a", "s3"):
            paths.append(S3Path(parsed.netloc, unquote(parsed.path).lstrip("/")))
        elif parsed.scheme in ("", "file"):
            paths.append(Path(unquote(parsed.path)))
        else:
            return None
    if len(paths) > max_files:
        return None
    try:
        if fmt == "parquet":
            return sum(_parquet_metadata(f).num_rows for f in paths)
        return sum(size(f) + 1 for f in paths)
    except (OSError, pa.ArrowException):
        return None
