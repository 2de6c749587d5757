"""Arrow column builders and atomic Parquet writing for the demo generator."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def epoch_day(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def dates(days: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    values = pa.array(days.astype(np.int32), type=pa.int32(), mask=null)
    return values.cast(pa.date32())


def labels(names: Sequence[str], codes: np.ndarray) -> pa.Array:
    """Strings ``names[code]``; a negative code gives null."""
    null = codes < 0
    index = pa.array(np.where(null, 0, codes), type=pa.int32(), mask=null if null.any() else None)
    return pc.take(pa.array(list(names), type=pa.string()), index)


def zero_padded(numbers: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(numbers, type=pa.int64()), pa.string()), width, "0")


def decimals(unscaled: np.ndarray, type_: pa.Decimal128Type) -> pa.Array:
    """Decimal array from unscaled integers (e.g. cents for scale 2), exactly and fast.

    A decimal128 value is a 16-byte little-endian two's-complement integer: the int64 value
    in the low word and its sign extension in the high word.
    """
    words = np.empty((unscaled.size, 2), dtype="<i8")
    words[:, 0] = unscaled
    words[:, 1] = np.where(unscaled < 0, -1, 0)
    return pa.Array.from_buffers(type_, unscaled.size, [None, pa.py_buffer(words.tobytes())])


# ---------------------------------------------------------------------------------------------
# writing


def _sibling(path: Path, kind: str) -> Path:
    """A hidden, unique, not yet existing path next to ``path`` (created later, with the umask)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.{kind}")


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")


def write_file_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        _write_parquet(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_partition(
    target: Path, parts: Sequence[pa.Table], on_part: Callable[[int], None] | None = None
) -> list[Path]:
    """Write ``parts`` as ``target/part-NNNNN.parquet``, replacing ``target`` as a whole.

    The files are written to a hidden sibling directory which is then swapped in, so a
    previous, larger partition leaves no stale part files behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, "tmp")
    staging.mkdir()
    old: Path | None = None
    try:
        names = []
        for i, part in enumerate(parts):
            name = f"part-{i:05d}.parquet"
            _write_parquet(part, staging / name)
            names.append(name)
            if on_part is not None:
                on_part(part.num_rows)
        if target.exists():
            old = _sibling(target, "old")
            os.replace(target, old)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old, target)  # put the previous partition back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return [target / name for name in names]
