"""A source's identity, to tell whether a stored stage read the same data.

Both parts are the same in every checkout of the project, so that a pull request checked out
in another folder (CI's case) still reuses the base run's stages (``storage/reuse.py``):

* where it is read from: :func:`regflow.storage.reuse.source_location`, the path relative
  to the project root for a file kept with the project (absolute outside it);
* what it holds: :func:`fingerprint`, a hash of the files' bytes up to a size limit, above
  it of their names, sizes and modification times; for objects on S3 (``s3://``), always
  of their names, sizes and ETags (no object is downloaded to hash it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from regflow.errors import DataError
from regflow.storage import s3client
from regflow.storage.fs import Location, S3Path
from regflow.storage.reuse import source_location

__all__ = ["CONTENT_HASH_MAX_BYTES", "fingerprint", "source_location"]

# Up to this many bytes in all, a source's files are fingerprinted by content: a small
# reference file kept with the pipeline is read once more, a data lake never twice.
CONTENT_HASH_MAX_BYTES = 64 * 1024 * 1024


def fingerprint(
    files: Sequence[Location], *, content_max_bytes: int = CONTENT_HASH_MAX_BYTES
) -> str:
    """Content identity of a snapshot of a source's files.

    Up to ``content_max_bytes`` in all: the files' names and bytes, so a corrected value is
    seen even when a file keeps its size and modification time, and a copy of the project
    elsewhere (new modification times) counts as unchanged. Above it: the files' names,
    sizes and modification times (as before content hashing), so a large source is not
    read just to hash it; a copy of it then counts as changed.

    Objects on S3: their names, sizes and ETags, whatever their size. S3 computes the ETag
    from the bytes written (their MD5 for a single-part upload), so any new write of other
    bytes changes it, a rewrite of the same bytes (in the same parts) keeps it, and nothing
    is downloaded: reading up to 64 MiB over the network on every run and every reuse check
    would cost more than the whole read of a small source.
    """
    if any(isinstance(f, S3Path) for f in files):
        return _s3_fingerprint(files)
    local = [f for f in files if isinstance(f, Path)]
    return _local_fingerprint(local, content_max_bytes)


def _s3_fingerprint(files: Sequence[Location]) -> str:
    h = hashlib.sha256()
    h.update(b"s3-etag\0")
    for f in files:
        if not isinstance(f, S3Path):
            raise TypeError(f"a source's files are all on S3 or all local, not {f}")
        head = s3client.head(f.bucket, f.key)
        if head is None:  # listed a moment ago, gone now: the source is being rewritten
            raise DataError(
                f"source file {f} disappeared while being read; rerun once the source is written"
            )
        h.update(f"{f.name}:{int(head['ContentLength'])}:{head['ETag']}\0".encode())
    return h.hexdigest()[:16]


def _local_fingerprint(files: list[Path], content_max_bytes: int) -> str:
    stats = [f.stat() for f in files]
    h = hashlib.sha256()
    if sum(st.st_size for st in stats) > content_max_bytes:
        for f, st in zip(files, stats, strict=True):
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]
    h.update(b"content\0")
    for f, st in zip(files, stats, strict=True):
        h.update(f"{f.name}:{st.st_size}\0".encode())
        with f.open("rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:16]
