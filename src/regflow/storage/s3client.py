"""The S3 clients of :mod:`regflow.storage.fs`: boto3 (the conditional puts) and pyarrow's
``S3FileSystem`` (Parquet), from the standard AWS chain only (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
IRSA); ``REGFLOW_S3_ENDPOINT`` still overrides the endpoint."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

from regflow.errors import ConfigError, StorageError


def endpoint() -> str | None:
    """The S3 endpoint: ``REGFLOW_S3_ENDPOINT`` (an override kept for the warehouse
    staging), else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else AWS's own."""
    from regflow.settings import current

    return (
        current().s3_endpoint
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )


def region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def client() -> Any:
    return _cached_client(endpoint(), region())


@functools.lru_cache(maxsize=8)
def _cached_client(url: str | None, region_name: str | None) -> Any:
    try:
        import boto3
    except ImportError as e:  # pragma: no cover - the s3 extra is missing
        raise ConfigError("s3:// storage needs boto3: pip install 'regflow[s3]'") from e
    return boto3.client("s3", endpoint_url=url, region_name=region_name)


def arrow_s3() -> Any:
    return _cached_arrow(endpoint(), region())


@functools.lru_cache(maxsize=8)
def _cached_arrow(url: str | None, region_name: str | None) -> Any:
    import pyarrow.fs as pafs

    kw: dict[str, Any] = {}
    if url:
        scheme, _, host = url.partition("://")
        kw.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if region_name:
        kw["region"] = region_name
    return pafs.S3FileSystem(**kw)


def _error_code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


def _status(e: Exception) -> int:
    meta = getattr(e, "response", {}).get("ResponseMetadata", {})
    return int(meta.get("HTTPStatusCode", 0))


def failed(op: str, bucket: str, key: str, e: Exception) -> StorageError:
    """A clear error for an S3 request that failed for another reason than its condition
    (no bucket, access denied, no credentials, endpoint unreachable)."""
    code = _error_code(e) or type(e).__name__
    return StorageError(f"S3 {op} of s3://{bucket}/{key} failed: {code}: {e}; {hint(code, bucket)}")


def hint(code: str, bucket: str) -> str:
    """The fix for an S3 error ``code``."""
    return {
        "NoSuchBucket": f"create the bucket '{bucket}' or fix the URL",
        "AccessDenied": "grant the role the permissions listed in docs/storage.md",
        "NoCredentialsError": (
            "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or a profile, or IRSA on EKS)"
        ),
        "EndpointConnectionError": "check AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL and the network",
    }.get(code, "check the bucket, the AWS credentials and region, and docs/storage.md")


def error_code(e: Exception) -> str:
    return _error_code(e)


@contextlib.contextmanager
def requests(op: str, bucket: str, key: str) -> Iterator[None]:
    """Turn an S3 request's failure inside the block into :func:`failed`'s clear error."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as e:
        raise failed(op, bucket, key, e) from e


def _condition_failed(e: Exception) -> bool:
    """Whether a conditional request failed on its condition (412), lost to a concurrent
    conditional request (409), or named a missing object (404: ``If-Match`` on nothing);
    a missing bucket is no failed condition."""
    return _error_code(e) != "NoSuchBucket" and (
        _status(e) in (404, 409, 412)
        or _error_code(e) in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey")
    )


def conditional_put(bucket: str, key: str, data: bytes, **cond: str) -> bool:
    """``PutObject`` with a condition (``IfNoneMatch="*"`` or ``IfMatch=etag``); False when
    the condition failed."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client().put_object(Bucket=bucket, Key=key, Body=data, **cond)
    except ClientError as e:
        if _condition_failed(e):
            return False
        raise failed("conditional put", bucket, key, e) from e
    except BotoCoreError as e:
        raise failed("conditional put", bucket, key, e) from e
    return True


def conditional_delete(bucket: str, key: str, etag: str) -> bool:
    """``DeleteObject`` with ``If-Match: etag`` (S3 general purpose buckets honour it since
    September 2025); False when the object changed or is gone. A store that ignores the
    header deletes unconditionally: :func:`regflow.storage.fs.delete_if_match` checks the
    tag first, so the window is then only between the two calls."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client().delete_object(Bucket=bucket, Key=key, IfMatch=etag)
    except ClientError as e:
        if _condition_failed(e):
            return False
        raise failed("conditional delete", bucket, key, e) from e
    except BotoCoreError as e:
        raise failed("conditional delete", bucket, key, e) from e
    return True


def get(bucket: str, key: str) -> tuple[bytes, str] | None:
    """An object's bytes and ETag, or None."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        got = client().get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if _error_code(e) != "NoSuchBucket" and (
            _error_code(e) in ("NoSuchKey", "404") or _status(e) == 404
        ):
            return None
        raise failed("read", bucket, key, e) from e
    except BotoCoreError as e:
        raise failed("read", bucket, key, e) from e
    return got["Body"].read(), str(got["ETag"])


def head(bucket: str, key: str) -> dict[str, Any] | None:
    """An object's metadata, or None (a prefix is no object)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not key:
        return None
    try:
        return dict(client().head_object(Bucket=bucket, Key=key))
    except ClientError as e:
        if _status(e) == 404 or _error_code(e) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise failed("HEAD", bucket, key, e) from e
    except BotoCoreError as e:
        raise failed("HEAD", bucket, key, e) from e
