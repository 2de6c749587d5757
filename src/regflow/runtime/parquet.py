"""Parquet helpers shared by persistence, the audits and the driver engine (pyarrow)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


def parquet_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.parquet"))


def parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(path))


def parquet_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in parquet_files(path))


def read_parquet(path: Path, columns: Sequence[str]) -> pa.Table:
    """``columns`` of the Parquet files in ``path`` (one dataset, no partition columns)."""
    import pyarrow.parquet as pq

    files = [str(f) for f in parquet_files(path)]
    return pq.ParquetDataset(files, partitioning=None).read(columns=list(columns))


def write_parquet_table(
    table: pa.Table, folder: Path, *, dictionary: Sequence[str] | None = None
) -> None:
    """``table`` as one Parquet file in a new ``folder``, laid out like Spark's (snappy, row
    groups of 128k rows). ``dictionary``: the only columns to dictionary-encode (Arrow's
    default tries every column, and gives up on unique values after paying for the
    attempt); None for that default."""
    import uuid

    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    pq.write_table(
        table,
        folder / f"part-00000-{uuid.uuid4()}-c000.snappy.parquet",
        compression="snappy",
        row_group_size=131_072,
        use_dictionary=True if dictionary is None else list(dictionary),
    )
