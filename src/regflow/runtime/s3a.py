"""Spark on ``s3a://``: the connector's jars, its endpoint and region, and the S3A committer.

One source of truth for the local session (:func:`regflow.runtime.session.get_spark`) and a
SparkApplication's ``sparkConf`` (:func:`s3a_conf`):

- **Credentials** come from the AWS SDK v2 default chain (``DefaultCredentialsProvider``):
  ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` locally, the IRSA web identity token on EKS,
  a profile or the instance role elsewhere. No credential is ever put in a conf value.
- **Endpoint and region** come from the standard variables: ``AWS_ENDPOINT_URL_S3``, else
  ``AWS_ENDPOINT_URL`` (an S3-compatible server such as moto or MinIO: path-style access,
  TLS only for an ``https://`` URL), and ``AWS_REGION``, else ``AWS_DEFAULT_REGION``.
- **The committer**: Spark SQL's writes go through Spark's ``PathOutputCommitProtocol``
  (spark-hadoop-cloud), which asks Hadoop's committer factory for the output path's scheme:
  for ``s3a://`` the S3A **magic** committer (tasks upload their files as pending multipart
  uploads under ``__magic_job-*/``; the job commit completes them; nothing is renamed or
  copied, and an aborted or killed job leaves no object at the destination). Other schemes
  (``file://``) keep Hadoop's ``FileOutputCommitter``, as without it.

Imports no pyspark at module level (``s3a_conf`` is used by the Kubernetes renderer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from regflow.errors import ConfigError
from regflow.settings import current, variable

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

HADOOP = "spark.hadoop."
# The S3A committer and the credential chain: identical on a laptop and on EKS.
COMMITTER_CONF = {
    "spark.sql.sources.commitProtocolClass": (
        "org.apache.spark.internal.io.cloud.PathOutputCommitProtocol"
    ),
    "spark.sql.parquet.output.committer.class": (
        "org.apache.spark.internal.io.cloud.BindingParquetOutputCommitter"
    ),
    "spark.hadoop.mapreduce.outputcommitter.factory.scheme.s3a": (
        "org.apache.hadoop.fs.s3a.commit.S3ACommitterFactory"
    ),
    "spark.hadoop.fs.s3a.committer.name": "magic",
    "spark.hadoop.fs.s3a.committer.magic.enabled": "true",
    # a failed job's pending uploads are aborted (no storage billed for them)
    "spark.hadoop.fs.s3a.committer.abort.pending.uploads": "true",
}
CREDENTIALS_CONF = {
    "spark.hadoop.fs.s3a.aws.credentials.provider": (
        "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"
    ),
}
# the keys endpoint_conf() may set: unset on a running session when the environment drops them
ENDPOINT_KEYS = (
    "spark.hadoop.fs.s3a.endpoint",
    "spark.hadoop.fs.s3a.endpoint.region",
    "spark.hadoop.fs.s3a.path.style.access",
    "spark.hadoop.fs.s3a.connection.ssl.enabled",
)
FETCH_COMMAND = "make jars  (or: python3 scripts/fetch_jars.py)"
_MANIFEST = "jars.json"


def endpoint_conf(environ: Mapping[str, str]) -> dict[str, str]:
    """The endpoint and region the standard AWS variables of ``environ`` give."""
    out: dict[str, str] = {}
    url = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if url:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise ConfigError(
                f"AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL={url!r} is not an http(s) URL: set it to "
                "e.g. http://127.0.0.1:9000 or unset it to use AWS S3"
            )
        out["spark.hadoop.fs.s3a.endpoint"] = url
        out["spark.hadoop.fs.s3a.path.style.access"] = "true"
        out["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(scheme == "https").lower()
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        out["spark.hadoop.fs.s3a.endpoint.region"] = region
    return out


def s3a_conf(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Spark conf for ``s3a://`` with the S3A committer: put it in a SparkApplication's
    ``sparkConf`` (``environ`` = the pod's AWS variables, ``{}`` on AWS S3 with IRSA and the
    region from the pod), or on a session. Never holds a credential."""
    import os

    env = os.environ if environ is None else environ
    return {**COMMITTER_CONF, **CREDENTIALS_CONF, **endpoint_conf(env)}


def jars_dir() -> Path:
    """Where ``scripts/fetch_jars.py`` puts the jars: ``$REGFLOW_JARS_DIR``, else the
    checkout's ``.regflow/jars``."""
    configured = current().jars_dir
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / ".regflow" / "jars"


def local_jars() -> list[str]:
    """The fetched jars (those ``jars.json`` lists), or [] when they were not fetched."""
    folder = jars_dir()
    try:
        names = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    paths = [folder / name for name in sorted(names)]
    return [str(p) for p in paths] if all(p.is_file() for p in paths) else []


def require_jars() -> list[str]:
    """The fetched jars; a :class:`ConfigError` naming the command when they are missing."""
    jars = local_jars()
    if not jars:
        raise ConfigError(
            f"the S3A jars are not in {jars_dir()} (set by {variable('jars_dir')}): Spark cannot "
            f"read or write s3a:// without them. Fetch them with `{FETCH_COMMAND}`"
        )
    return jars


def apply_endpoint(spark: SparkSession, environ: Mapping[str, str] | None = None) -> None:
    """Set the environment's endpoint and region on a running session's Hadoop configuration
    (a session created before the variables were set, e.g. by another test), and unset the
    ones the environment no longer gives. Reaches every S3A filesystem created afterwards."""
    import os

    wanted = endpoint_conf(os.environ if environ is None else environ)
    hconf: Any = spark.sparkContext._jsc.hadoopConfiguration()
    for key in ENDPOINT_KEYS:
        name = key[len(HADOOP) :]
        if key in wanted:
            if hconf.get(name) != wanted[key]:
                hconf.set(name, wanted[key])
        elif hconf.get(name) is not None:  # back to S3A's own default
            hconf.unset(name)
