"""The one filesystem abstraction of regflow's storage: a local folder or an S3 prefix.

A storage location is a :class:`Location`: a :class:`pathlib.Path` for local storage, an
:class:`S3Path` for ``s3://bucket/prefix``. :class:`S3Path` has the part of ``Path``'s API the
storage code uses (``/``, ``name``, ``parent``, ``read_text``/``read_bytes``,
``write_text``/``write_bytes`` (a plain put), ``exists``, ``is_dir``, ``iterdir``, one-level
``glob``, ``unlink``, ``mkdir`` (a no-op: S3 has no folders)); the functions here add what
``Path`` lacks, for both backends alike:

- :func:`put_if_absent`: create an object only if there is none (S3: ``PutObject`` with
  ``If-None-Match: *``; locally: a complete temporary file hard-linked into place, which
  fails if the name exists);
- :func:`read_with_tag` / :func:`put_if_match`: compare-and-swap (S3: the ETag and
  ``If-Match``; locally: the content's hash, checked and replaced under an ``fcntl`` lock);
- :func:`rmtree`, :func:`mtime`, :func:`spark_uri` (``s3a://`` for Spark's S3A connector),
  :func:`arrow` (a pyarrow filesystem and path);
- for ``regflow gc``: :func:`list_all` (everything under a prefix with sizes and times, in one
  pass), :func:`delete_keys` (``DeleteObjects`` in batches), :func:`pending_uploads` and
  :func:`abort_upload` (incomplete multipart uploads).

Credentials and endpoint come only from the standard AWS chain (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
IRSA; :mod:`regflow.storage.s3client`); ``REGFLOW_S3_ENDPOINT`` still overrides the endpoint.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from regflow.errors import ConfigError, StorageError
from regflow.storage import s3client

# the S3 bucket naming rules (3-63 lower-case letters, digits, dots and hyphens)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Path:
    """An object or prefix ``s3://bucket/key`` (``key`` without a trailing slash)."""

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, url: str, what: str = "storage URL") -> S3Path:
        """``s3://bucket/prefix``, validated: a legal bucket name and no ``.``/``..`` parts.
        ``what`` names the URL in an error (the storage URL, a source's path)."""
        rest = url[len("s3://") :]
        bucket, _, key = rest.partition("/")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise ConfigError(
                f"{what} '{url}': '{bucket}' is not a valid S3 bucket name (3-63 lower-case"
                " letters, digits, dots and hyphens); write s3://bucket/prefix"
            )
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ConfigError(
                f"{what} '{url}': '.' and '..' are not allowed in an S3 prefix; write the"
                " prefix out in full"
            )
        return cls(bucket, "/".join(parts))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    def __truediv__(self, part: str) -> S3Path:
        part = str(part).strip("/")
        return S3Path(self.bucket, f"{self.key}/{part}" if self.key else part)

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> S3Path:
        return S3Path(self.bucket, self.key.rsplit("/", 1)[0] if "/" in self.key else "")

    def with_name(self, name: str) -> S3Path:
        return self.parent / name

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in self.key.split("/") if p)

    def relative_to(self, other: S3Path) -> Path:
        if self.bucket != other.bucket or not (self.key + "/").startswith(other.key + "/"):
            raise ValueError(f"{self} is not under {other}")
        return Path(self.key[len(other.key) :].lstrip("/"))

    # -- reads and writes ------------------------------------------------------------------

    def read_bytes(self) -> bytes:
        got = s3client.get(self.bucket, self.key)
        if got is None:
            raise FileNotFoundError(str(self))
        return got[0]

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        with s3client.requests("write", self.bucket, self.key):
            s3client.client().put_object(Bucket=self.bucket, Key=self.key, Body=data)
        return len(data)

    def write_text(self, data: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(data.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        if not missing_ok and not self.is_file():
            raise FileNotFoundError(str(self))
        with s3client.requests("delete", self.bucket, self.key):
            s3client.client().delete_object(Bucket=self.bucket, Key=self.key)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """S3 has no folders: a prefix exists once an object is under it."""

    # -- listing ---------------------------------------------------------------------------

    def is_file(self) -> bool:
        return s3client.head(self.bucket, self.key) is not None

    def is_dir(self) -> bool:
        prefix = f"{self.key}/" if self.key else ""
        with s3client.requests("listing", self.bucket, prefix):
            page = s3client.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        return bool(page.get("KeyCount", 0))

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def iterdir(self) -> Iterator[S3Path]:
        """The objects and sub-prefixes one level below (sorted by name)."""
        prefix = f"{self.key}/" if self.key else ""
        names: set[str] = set()
        pages = s3client.client().get_paginator("list_objects_v2")
        with s3client.requests("listing", self.bucket, prefix):
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                names.update(
                    p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])
                )
                names.update(o["Key"][len(prefix) :] for o in page.get("Contents", []))
        for name in sorted(n for n in names if n):
            yield self / name

    def glob(self, pattern: str) -> Iterator[S3Path]:
        """One level only (``*.parquet``, ``run=*``), like the storage code uses it."""
        if "/" in pattern:
            raise ValueError(f"S3Path.glob supports one level only, not '{pattern}'")
        return (p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern))

    def walk_keys(self) -> Iterator[tuple[str, float, int]]:
        """Every object under this prefix: (key, mtime, size)."""
        prefix = f"{self.key}/" if self.key else ""
        pages = s3client.client().get_paginator("list_objects_v2")
        with s3client.requests("listing", self.bucket, prefix):
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
                for o in page.get("Contents", []):
                    yield o["Key"], o["LastModified"].timestamp(), int(o["Size"])


Location = Union[Path, S3Path]  # noqa: UP007 (a runtime alias, usable in isinstance)


def glob(path: Location, pattern: str) -> list[Location]:
    """The entries of ``path`` (one level) whose name matches ``pattern``, sorted."""
    return sorted(path.glob(pattern), key=str)


# -- conditional writes --------------------------------------------------------------------


def put_if_absent(path: Location, data: bytes) -> bool:
    """Create ``path`` holding ``data`` if nothing is there; False (nothing written) if it
    exists. Readers never see a partial object."""
    if isinstance(path, S3Path):
        return s3client.conditional_put(path.bucket, path.key, data, IfNoneMatch="*")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)  # fails if the name exists, and never replaces it
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def read_with_tag(path: Location) -> tuple[bytes, str] | None:
    """``path``'s content and a tag for :func:`put_if_match`; None if there is no object."""
    if isinstance(path, S3Path):
        return s3client.get(path.bucket, path.key)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return data, hashlib.sha256(data).hexdigest()


def put_if_match(path: Location, data: bytes, tag: str) -> bool:
    """Replace ``path`` with ``data`` only if it still has ``tag`` (from
    :func:`read_with_tag`); False (nothing written) if it changed or is gone."""
    if isinstance(path, S3Path):
        return s3client.conditional_put(path.bucket, path.key, data, IfMatch=tag)
    with _locked(path):
        now = read_with_tag(path)
        if now is None or now[1] != tag:
            return False
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return True


def delete_if_match(path: Location, tag: str) -> bool:
    """Remove ``path`` if it still has ``tag``. On S3 a ``DeleteObject`` with ``If-Match``,
    after a read of the tag (an S3-compatible store that ignores the condition on deletes
    then only leaves the window between the two calls)."""
    if isinstance(path, S3Path):
        now = s3client.get(path.bucket, path.key)
        if now is None or now[1] != tag:
            return False
        return s3client.conditional_delete(path.bucket, path.key, tag)
    with _locked(path):
        now = read_with_tag(path)
        if now is None or now[1] != tag:
            return False
        path.unlink(missing_ok=True)
    return True


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``'s sibling lock file, across processes (``fcntl``) and
    threads (flock locks belong to the open file, so threads need their own lock too)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = path.parent / f".{path.name}.lock"
    with _GUARD:
        tlock = _THREAD_LOCKS.setdefault(str(lock_file), threading.Lock())
    with tlock, open(lock_file, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- the rest of Path's API, for both --------------------------------------------------------


def rmtree(path: Location) -> None:
    """Remove ``path`` and everything under it (no error if it is gone)."""
    if isinstance(path, Path):
        shutil.rmtree(path, ignore_errors=True)
        return
    _delete_batches(path.bucket, [k for k, _, _ in path.walk_keys()])  # (refusals ignored)


def mtime(path: Location) -> float:
    """When ``path`` was last written (a prefix: its newest object); FileNotFoundError."""
    if isinstance(path, Path):
        return path.stat().st_mtime
    head = s3client.head(path.bucket, path.key)
    if head is not None:
        return float(head["LastModified"].timestamp())
    times = [t for _, t, _ in path.walk_keys()]
    if not times:
        raise FileNotFoundError(str(path))
    return max(times)


def size(path: Location) -> int:
    if isinstance(path, Path):
        return path.stat().st_size
    head = s3client.head(path.bucket, path.key)
    if head is None:
        raise FileNotFoundError(str(path))
    return int(head["ContentLength"])


def spark_uri(path: Location) -> str:
    """The URI Spark reads and writes: ``s3a://bucket/key`` (the S3A connector) or the
    local path."""
    if isinstance(path, S3Path):
        return f"s3a://{path.bucket}/{path.key}"
    return str(path)


def arrow(path: Location) -> tuple[Any, str]:
    """A pyarrow filesystem and the path in it."""
    import pyarrow.fs as pafs

    if isinstance(path, S3Path):
        return s3client.arrow_s3(), f"{path.bucket}/{path.key}"
    return pafs.LocalFileSystem(), str(path)


# -- listing and bulk removal (regflow gc) ----------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One thing under a listed prefix (:func:`list_all`)."""

    rel: str  # relative to the listed prefix, '/'-separated
    mtime: float  # a file's or folder's modification time; an object's LastModified
    size: int  # bytes (a folder: 0)
    folder: bool = False  # a local folder, or an S3 folder marker object (a key ending in /)
    key: str = ""  # on S3: the object's key
    link: tuple[int, int, int] | None = None  # locally: (st_dev, st_ino, st_nlink)


def list_all(path: Location) -> list[Entry]:
    """Everything under ``path`` with its size and modification time, in one pass: on S3 one
    paginated ``ListObjectsV2`` (one request per 1,000 keys, no per-object ``HEAD``); locally a
    walk (folders too: S3 has none, but a local folder's own time counts for its age).
    Nothing (an empty list) if ``path`` does not exist; on S3 a missing bucket is a
    :class:`StorageError`."""
    out: list[Entry] = []
    if isinstance(path, S3Path):
        prefix = f"{path.key}/" if path.key else ""
        for key, mtime, size in path.walk_keys():
            rel = key[len(prefix) :]
            if rel.strip("/"):
                out.append(Entry(rel.strip("/"), mtime, size, folder=rel.endswith("/"), key=key))
        return out
    for dirpath, dirs, files in os.walk(path):
        here = Path(dirpath)
        subdirs = set(dirs)
        for name in [*dirs, *files]:
            p = here / name
            try:
                st = p.lstat()
            except FileNotFoundError:  # (removed while listing)
                continue
            folder = name in subdirs and not p.is_symlink()
            rel = p.relative_to(path).as_posix()
            if folder:
                out.append(Entry(rel, st.st_mtime, 0, folder=True))
            else:
                out.append(
                    Entry(rel, st.st_mtime, st.st_size, link=(st.st_dev, st.st_ino, st.st_nlink))
                )
    return out


def delete_keys(bucket: str, keys: list[str]) -> None:
    """Delete the objects ``keys`` of ``bucket``: ``DeleteObjects`` in batches of 1,000 (its
    limit). Objects S3 could not delete are a :class:`StorageError` naming them (the first
    five) and the fix, after every batch was tried."""
    failed = _delete_batches(bucket, keys)
    if failed:
        _, code, message = failed[0]
        hint = s3client.hint(code, bucket)
        names = ", ".join(f"s3://{bucket}/{k} ({c})" for k, c, _ in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        raise StorageError(
            f"S3 could not delete {len(failed)} object(s): {names}{more}: {code}: {message}; {hint}"
        )


def _delete_batches(bucket: str, keys: list[str]) -> list[tuple[str, str, str]]:
    """``DeleteObjects`` of ``keys`` in batches of 1,000 (its limit); the objects S3 refused
    to delete: (key, code, message)."""
    refused: list[tuple[str, str, str]] = []
    for i in range(0, len(keys), 1000):
        batch = keys[i : i + 1000]
        with s3client.requests("delete", bucket, batch[0]):
            got = s3client.client().delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
        refused += [
            (str(e.get("Key")), str(e.get("Code")), str(e.get("Message", "")))
            for e in got.get("Errors", [])
        ]
    return refused


@dataclass(frozen=True)
class Upload:
    """An incomplete multipart upload (S3 only)."""

    key: str
    upload_id: str
    initiated: float
    size: int  # the bytes of its parts uploaded so far


def pending_uploads(path: Location) -> list[Upload]:
    """The incomplete multipart uploads under ``path`` (``ListMultipartUploads``, one request
    per 1,000, and ``ListParts`` for each one's size); none locally."""
    if not isinstance(path, S3Path):
        return []
    prefix = f"{path.key}/" if path.key else ""
    client = s3client.client()
    out: list[Upload] = []
    with s3client.requests("multipart upload listing", path.bucket, prefix):
        pages = client.get_paginator("list_multipart_uploads")
        for page in pages.paginate(Bucket=path.bucket, Prefix=prefix):
            for u in page.get("Uploads", []):
                size = 0
                for parts in client.get_paginator("list_parts").paginate(
                    Bucket=path.bucket, Key=u["Key"], UploadId=u["UploadId"]
                ):
                    size += sum(int(p["Size"]) for p in parts.get("Parts", []))
                out.append(Upload(u["Key"], u["UploadId"], u["Initiated"].timestamp(), size))
    return out


def abort_upload(bucket: str, upload: Upload) -> None:
    """Abort an incomplete multipart upload (its parts are deleted); gone already: nothing."""
    from botocore.exceptions import ClientError

    try:
        with s3client.requests("multipart upload abort", bucket, upload.key):
            try:
                s3client.client().abort_multipart_upload(
                    Bucket=bucket, Key=upload.key, UploadId=upload.upload_id
                )
            except ClientError as e:
                if s3client.error_code(e) != "NoSuchUpload":
                    raise
    except StorageError as e:
        raise StorageError(f"{e} (upload id {upload.upload_id})") from e
