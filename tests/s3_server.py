"""A real S3 API server (moto) on loopback for the tests, with dummy credentials.

Started once per test process (an xdist worker has its own). The environment it sets is the
standard AWS chain (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
``AWS_ENDPOINT_URL_S3``), exactly what a user sets to point regflow at an S3-compatible
server: boto3, pyarrow and Spark's S3A all read it, and no regflow flag is needed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# anything that could point the clients elsewhere than the test's server
AWS_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "REGFLOW_S3_ENDPOINT")


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def new_bucket(self, prefix: str = "regflow") -> str:
        """A new, empty bucket (a unique name: tests never see each other's objects)."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out: list[str] = []
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        for page in pages:
            out += [o["Key"] for o in page.get("Contents", [])]
        return sorted(out)


def serve(mp: Any) -> Iterator[S3Server]:
    """Start moto on 127.0.0.1 (a free port), set the AWS environment with ``mp`` (a
    MonkeyPatch), yield the server, stop it."""
    from moto.server import ThreadedMotoServer

    for k, v in AWS_ENV.items():
        mp.setenv(k, v)
    for k in AWS_UNSET:
        mp.delenv(k, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    mp.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    try:
        yield S3Server(endpoint)
    finally:
        server.stop()
