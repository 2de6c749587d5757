"""Parquet helpers shared by persistence, the audits and the driver engine (pyarrow)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from regflow.storage import fs
from regflow.storage.fs import Location

if TYPE_CHECKING:
    import pyarrow as pa


def parquet_files(path: Location) -> list[Location]:
    return fs.glob(path, "*.parquet")


def parquet_dataset(files: Sequence[Location]) -> Any:
    """One pyarrow dataset of ``files`` (local or S3; no partition columns: the cob=/run=
    folders of the layout are not data)."""
    import pyarrow.parquet as pq

    filesystem = fs.arrow(files[0])[0] if files else None
    return pq.ParquetDataset(
        [fs.arrow(f)[1] for f in files], partitioning=None, filesystem=filesystem
    )


def parquet_file(path: Location) -> Any:
    import pyarrow.parquet as pq

    filesystem, where = fs.arrow(path)
    return pq.ParquetFile(where, filesystem=filesystem)


def parquet_rows(path: Location) -> int:
    return sum(parquet_file(f).metadata.num_rows for f in parquet_files(path))


def parquet_bytes(path: Location) -> int:
    return sum(fs.size(f) for f in parquet_files(path))


def read_parquet(path: Location, columns: Sequence[str]) -> pa.Table:
    """``columns`` of the Parquet files in ``path`` (one dataset, no partition columns)."""
    return parquet_dataset(parquet_files(path)).read(columns=list(columns))


def write_parquet_table(
    table: pa.Table,
    folder: Location,
    *,
    dictionary: Sequence[str] | None = None,
    name: str | None = None,
) -> None:
    """``table`` as one Parquet file in a new ``folder``, laid out like Spark's (snappy, row
    groups of 128k rows). ``dictionary``: the only columns to dictionary-encode (Arrow's
    default tries every column, and gives up on unique values after paying for the
    attempt); None for that default. ``name``: the file's (else a new part name)."""
    import uuid

    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    name = name or f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
    filesystem, where = fs.arrow(folder / name)
    pq.write_table(
        table,
        where,
        filesystem=filesystem,
        compression="snappy",
        row_group_size=131_072,
        use_dictionary=True if dictionary is None else list(dictionary),
    )
