"""The S3 hand-off for Redshift COPY: staged Parquet on S3 plus a COPY manifest.

Locally Spark writes ``file://``; the files are uploaded with boto3 under
``<staging>/<pipeline>/cob=<cob>/run=<run_id>/<table>/``. On EKS, Spark writes ``s3a://``
storage directly, and the manifest simply lists those objects (no upload). Staged objects are
deleted after a successful load and kept after a failure, so a retry can reuse them.

A manifest follows the Redshift format for columnar files: every entry has its ``url``,
``mandatory: true`` and ``meta.content_length`` (required for Parquet).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from regflow.errors import ConfigError, StorageError
from regflow.storage import fs
from regflow.storage.fs import Location, S3Path

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Amazon Redshift COPY manifest (columnar: Parquet/ORC)",
    "type": "object",
    "required": ["entries"],
    "additionalProperties": False,
    "properties": {
        "entries": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["url", "mandatory", "meta"],
                "additionalProperties": False,
                "properties": {
                    "url": {
                        "type": "string",
                        "pattern": "^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+",
                    },
                    "mandatory": {"type": "boolean"},
                    "meta": {
                        "type": "object",
                        "required": ["content_length"],
                        "properties": {"content_length": {"type": "integer", "minimum": 0}},
                    },
                },
            },
        }
    },
}


def split_s3(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("s3", "s3a") or not parts.netloc:
        raise ConfigError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
    return parts.netloc, parts.path.strip("/")


def s3_client(region: str | None = None) -> Any:
    import boto3

    # AWS_ENDPOINT_URL (or REGFLOW_S3_ENDPOINT) points boto3 at a local S3 API server
    from regflow.settings import current

    endpoint = current().s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client("s3", region_name=region, endpoint_url=endpoint or None)


@dataclass
class StagedTable:
    table: str
    manifest_url: str
    objects: list[str]  # keys, for cleanup
    bytes: int


class S3Staging:
    def __init__(self, staging_url: str, client: Any | None = None, region: str | None = None):
        self.bucket, self.prefix = split_s3(staging_url)
        self.client = client or s3_client(region)

    def run_prefix(self, pipeline: str, cob: str, run_id: str) -> str:
        parts = [p for p in (self.prefix, pipeline, f"cob={cob}", f"run={run_id}") if p]
        return "/".join(parts)

    def upload(self, table: str, files: list[Location], prefix: str) -> StagedTable:
        """Upload a staged table's Parquet files and write its manifest (files already on
        S3, in s3:// storage: copied there, server-side)."""
        entries = []
        keys = []
        total = 0
        for i, f in enumerate(sorted(files, key=str)):
            key = f"{prefix}/{table}/part-{i:05d}.parquet"
            size = fs.size(f)
            if isinstance(f, S3Path):
                source = {"Bucket": f.bucket, "Key": f.key}
                self.client.copy_object(CopySource=source, Bucket=self.bucket, Key=key)
            else:
                self.client.upload_file(str(f), self.bucket, key)
            entries.append(
                {
                    "url": f"s3://{self.bucket}/{key}",
                    "mandatory": True,
                    "meta": {"content_length": size},
                }
            )
            keys.append(key)
            total += size
        if not entries:
            raise StorageError(f"staged table {table} has no Parquet files to load")
        manifest_key = f"{prefix}/{table}.manifest"
        self.client.put_object(
            Bucket=self.bucket,
            Key=manifest_key,
            Body=json.dumps({"entries": entries}, indent=1).encode(),
            ContentType="application/json",
        )
        return StagedTable(
            table, f"s3://{self.bucket}/{manifest_key}", [*keys, manifest_key], total
        )

    def manifest_for(self, table: str, urls: list[str], prefix: str) -> StagedTable:
        """On EKS the Parquet is on S3 already: only write the manifest."""
        entries = []
        for url in urls:
            b, k = split_s3(url)
            size = self.client.head_object(Bucket=b, Key=k)["ContentLength"]
            entries.append(
                {"url": f"s3://{b}/{k}", "mandatory": True, "meta": {"content_length": size}}
            )
        manifest_key = f"{prefix}/{table}.manifest"
        self.client.put_object(
            Bucket=self.bucket, Key=manifest_key, Body=json.dumps({"entries": entries}).encode()
        )
        return StagedTable(table, f"s3://{self.bucket}/{manifest_key}", [manifest_key], 0)

    def cleanup(self, staged: list[StagedTable]) -> None:
        keys = [k for s in staged for k in s.objects]
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True},
            )

    def read_manifest(self, manifest_url: str) -> dict[str, Any]:
        b, k = split_s3(manifest_url)
        body = self.client.get_object(Bucket=b, Key=k)["Body"].read()
        return dict(json.loads(body))


def require_iam_role(iam_role: str | None) -> str:
    if not iam_role:
        raise ConfigError(
            "Redshift COPY needs an IAM role: add ?iam_role=arn:aws:iam::<account>:role/<name> "
            "to the warehouse URL (or 'iam_role' to the Airflow connection's extras)"
        )
    return iam_role


def copy_sql(dialect: Any, staging_table: str, manifest_url: str, iam_role: str) -> str:
    require_iam_role(iam_role)
    return (
        f"COPY {dialect.q(staging_table)} FROM {dialect.literal(manifest_url)} "
        f"IAM_ROLE {dialect.literal(iam_role)} FORMAT AS PARQUET MANIFEST"
    )
