"""Spark on ``s3a://`` for real: the fetched S3A jars, the endpoint and region from the standard
AWS environment, the S3A magic committer, against a real moto S3 server on loopback.

Never skips: without the jars (``make jars``) the Spark tests fail with the command to run.
Does not prove: AWS S3 itself (moto stands in), IRSA on EKS (the SDK's default chain is
configured, its web-identity link is not exercised here), a cluster's executors (local mode).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from regflow.errors import ConfigError
from regflow.runtime import s3a

ROOT = Path(__file__).resolve().parent.parent
FETCH = ROOT / "scripts" / "fetch_jars.py"
ROWS = [(i, f"deal-{i:04d}", Decimal(i * 7) / Decimal(100)) for i in range(1, 2001)]


# --- the conf: from the standard AWS variables only, never a credential ----------------------


def test_s3a_conf_takes_endpoint_and_region_from_the_aws_variables_and_no_secret():
    env = {
        "AWS_ENDPOINT_URL": "https://generic.example:443",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-secret",
        "AWS_SESSION_TOKEN": "session-token-value",
    }
    conf = s3a.s3a_conf(env)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"  # _S3 wins
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    assert conf["spark.hadoop.mapreduce.outputcommitter.factory.scheme.s3a"].endswith(
        "S3ACommitterFactory"
    )
    assert conf["spark.hadoop.fs.s3a.committer.name"] == "magic"
    for secret in ("AKIDEXAMPLE", "wJalrXUtnFEMI-secret", "session-token-value"):
        assert not any(secret in k or secret in v for k, v in conf.items())
    assert not any("secret" in k or "access.key" in k for k in conf)

    generic = s3a.s3a_conf({"AWS_ENDPOINT_URL": "https://minio.example", "AWS_REGION": "r1"})
    assert generic["spark.hadoop.fs.s3a.endpoint"] == "https://minio.example"
    assert generic["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert generic["spark.hadoop.fs.s3a.endpoint.region"] == "r1"
    # on AWS S3 (EKS, IRSA): no endpoint, no path-style; the committer and the chain remain
    aws = s3a.s3a_conf({})
    assert not set(aws) & set(s3a.ENDPOINT_KEYS)
    assert aws["spark.sql.sources.commitProtocolClass"].endswith("PathOutputCommitProtocol")
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL"):
        s3a.s3a_conf({"AWS_ENDPOINT_URL_S3": "127.0.0.1:9000"})


def test_missing_jars_fail_with_the_command_to_fetch_them(tmp_path, monkeypatch):
    monkeypatch.setenv("REGFLOW_JARS_DIR", str(tmp_path / "nothing-here"))
    assert s3a.local_jars() == []
    with pytest.raises(ConfigError, match="make jars"):
        s3a.require_jars()


def test_the_pinned_dependency_versions_are_what_hadoop_project_declares():
    """The plain download fetches a fixed list (no POM resolution): the versions of hadoop-aws's
    other runtime dependencies must be the ones its parent POM, hadoop-project, declares."""
    from test_deploy_versions import NS, _pom, _versions

    fetch_jars = _fetch_module()
    parent = _pom("org.apache.hadoop", "hadoop-project", _versions()["HADOOP_VERSION"])
    props = parent.find("m:properties", NS)
    assert props is not None
    declared = {el.tag.split("}")[1]: (el.text or "").strip() for el in props}
    assert declared["amazon-s3-analyticsaccelerator-s3.version"] == (
        fetch_jars.ANALYTICS_ACCELERATOR_VERSION
    )
    assert declared["openssl-wildfly.version"] == fetch_jars.WILDFLY_OPENSSL_VERSION
    assert declared["aws-java-sdk-v2.version"] == _versions()["AWS_SDK_VERSION"]


def _fetch_module():
    sys.path.insert(0, str(FETCH.parent))
    try:
        import fetch_jars
    finally:
        sys.path.pop(0)
    return fetch_jars


# --- the fetch script's plain-download path (no mvn), against a local Maven layout ------------


def _fake_repo(root: Path) -> tuple[Path, dict[str, bytes]]:
    """A Maven-layout folder with a small fake jar for every artifact the script fetches, each
    with its .sha1 (the bundle also with a .sha512), and a versions.env pinning two SHA-256s."""
    fetch_jars = _fetch_module()
    v = {"HADOOP_VERSION": "9.9.9", "AWS_SDK_VERSION": "2.0.1"}
    blobs = {}
    for a in fetch_jars.artifacts(v):
        name = f"{a['artifact']}-{a['version']}.jar"
        data = f"jar bytes of {name}".encode() * 50
        d = root / a["group"].replace(".", "/") / a["artifact"] / a["version"]
        d.mkdir(parents=True)
        (d / name).write_bytes(data)
        (d / f"{name}.sha1").write_text(hashlib.sha1(data).hexdigest())
        if a["artifact"] == "bundle":
            (d / f"{name}.sha512").write_text(hashlib.sha512(data).hexdigest() + "  " + name)
        blobs[name] = data
    pins = {
        "HADOOP_AWS_SHA256": hashlib.sha256(blobs["hadoop-aws-9.9.9.jar"]).hexdigest(),
        "AWS_SDK_BUNDLE_SHA256": hashlib.sha256(blobs["bundle-2.0.1.jar"]).hexdigest(),
    }
    env = root / "versions.env"
    env.write_text("".join(f"{k}={val}\n" for k, val in {**v, **pins}.items()))
    return env, blobs


@pytest.fixture()
def maven_repo(tmp_path):
    repo = tmp_path / "repo"
    env, blobs = _fake_repo(repo)
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(repo), **kw)

        def log_message(self, *a):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", repo, env, blobs, requests
    httpd.shutdown()


def _run_fetch(central: str, env: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    versions = ["--versions", str(env)]
    # mvn hidden: a PATH with nothing on it, the interpreter by its absolute path
    return subprocess.run(
        [sys.executable, str(FETCH), "--dest", str(dest), "--central", central, *versions],
        env={**os.environ, "PATH": str(Path(sys.executable).parent / "no-such-dir")},
        capture_output=True,
        text=True,
        check=False,
    )


def test_fetch_without_mvn_downloads_verifies_and_is_idempotent(maven_repo, tmp_path):
    central, _, env, blobs, requests = maven_repo
    dest = tmp_path / "jars"
    out = _run_fetch(central, env, dest)
    assert out.returncode == 0, out.stderr
    assert {p.name for p in dest.glob("*.jar")} == set(blobs)
    for name, data in blobs.items():
        assert (dest / name).read_bytes() == data
    assert "sha512+pinned sha256 verified" in out.stdout  # the bundle: strongest + the pin
    assert "sha1+pinned sha256 verified" in out.stdout  # hadoop-aws
    assert any(r.endswith("bundle-2.0.1.jar.sha512") for r in requests)
    assert set(json.loads((dest / "jars.json").read_text())) == set(blobs)

    requests.clear()
    again = _run_fetch(central, env, dest)
    assert again.returncode == 0 and "up to date" in again.stdout
    assert requests == []  # nothing downloaded the second time

    (dest / "bundle-2.0.1.jar").write_bytes(b"truncated")  # a damaged jar is fetched again
    third = _run_fetch(central, env, dest)
    assert third.returncode == 0, third.stderr
    assert (dest / "bundle-2.0.1.jar").read_bytes() == blobs["bundle-2.0.1.jar"]


@pytest.mark.parametrize("what", ["published", "pinned"])
def test_fetch_checksum_mismatch_is_an_error_and_installs_nothing(maven_repo, tmp_path, what):
    central, repo, env, _, _ = maven_repo
    if what == "published":  # the server's .sha1 does not match the jar it serves
        sha1 = next(repo.rglob("hadoop-aws-9.9.9.jar.sha1"))
        sha1.write_text("0" * 40)
    else:  # the jar matches Central's checksum but not deploy/versions.env's pin
        env.write_text(env.read_text().replace("HADOOP_AWS_SHA256=", "HADOOP_AWS_SHA256=ab"))
    dest = tmp_path / "jars"
    out = _run_fetch(central, env, dest)
    assert out.returncode == 1
    assert "hadoop-aws-9.9.9.jar" in out.stderr and "error" in out.stderr
    assert ("does not match the published" if what == "published" else "pinned") in out.stderr
    assert not list(dest.glob("*.jar")) and not (dest / "jars.json").exists()
    assert not list(tmp_path.glob(".fetch-*"))  # the temporary folder is gone too


# --- Spark through s3a:// against moto ---------------------------------------------------------


@pytest.fixture(scope="module")
def s3a_spark(spark, s3_server):
    """The test process's one session (created before or after the AWS variables were set),
    with the S3A connector: the product path, get_spark(), sets the endpoint on it."""
    s3a.require_jars()  # never skip: fail with the command that fetches them
    from regflow.runtime.session import get_spark

    session = get_spark()
    assert session is spark
    jvm_key = session._jvm.java.lang.System.getenv("AWS_ACCESS_KEY_ID")
    assert jvm_key == os.environ["AWS_ACCESS_KEY_ID"], (
        "the Spark JVM was launched before the s3_server fixture set the AWS environment: "
        "it reads credentials from its environment at launch only"
    )
    return session


def _frame(spark):
    from pyspark.sql.types import DecimalType, LongType, StringType, StructField, StructType

    schema = StructType(
        [
            StructField("id", LongType()),
            StructField("deal", StringType()),
            StructField("amount", DecimalType(18, 2)),
        ]
    )
    return spark.createDataFrame(ROWS, schema).repartition(4)


def _arrow_rows(s3_server, bucket: str, prefix: str) -> list[tuple]:
    import pyarrow.dataset as ds
    from pyarrow import fs

    s3 = fs.S3FileSystem(
        endpoint_override=s3_server.endpoint.split("://")[1], scheme="http", region="us-east-1"
    )
    table = ds.dataset(f"{bucket}/{prefix}", filesystem=s3, format="parquet").to_table()
    return sorted(
        zip(*(table.column(c).to_pylist() for c in ("id", "deal", "amount")), strict=True)
    )


def test_spark_writes_parquet_to_s3a_through_the_magic_committer(s3a_spark, s3_server):
    bucket = s3_server.new_bucket("sparks3a")
    hconf = s3a_spark.sparkContext._jsc.hadoopConfiguration()
    key = "mapreduce.fileoutputcommitter.marksuccessfuljobs"
    before = hconf.get(key)
    hconf.set(key, "true")  # the committer's JSON _SUCCESS names it (regflow turns it off)
    try:
        _frame(s3a_spark).write.parquet(f"s3a://{bucket}/x/")
    finally:
        hconf.set(key, before)

    back = s3a_spark.read.parquet(f"s3a://{bucket}/x/")
    assert sorted(tuple(r) for r in back.collect()) == ROWS
    assert _arrow_rows(s3_server, bucket, "x/") == ROWS  # the same objects, through the S3 API

    keys = s3_server.keys(bucket)
    parts = [k for k in keys if k.endswith(".parquet")]
    assert len(parts) == 4 and all(k.startswith("x/part-") for k in parts)
    assert not [k for k in keys if "_temporary" in k or "__magic" in k]  # no staging left
    success = json.loads(
        s3_server.client().get_object(Bucket=bucket, Key="x/_SUCCESS")["Body"].read()
    )
    assert success["committer"] == "magic"
    assert sorted(success["filenames"]) == sorted(f"/{k}" for k in parts)
    # nothing was copied: every object was a multipart upload the job commit completed
    assert success["metrics"].get("committer_commits_completed", len(parts)) == len(parts)


def test_a_job_failing_in_a_task_leaves_no_object_a_reader_would_take(s3a_spark, s3_server):
    from pyspark.sql import functions as F

    bucket = s3_server.new_bucket("sparkfail")
    df = _frame(s3a_spark).withColumn(
        "amount",
        F.when(F.col("id") == 1999, F.raise_error(F.lit("injected task failure"))).otherwise(
            F.col("amount")
        ),
    )
    with pytest.raises(Exception, match="injected task failure"):
        df.write.parquet(f"s3a://{bucket}/y/")
    keys = s3_server.keys(bucket)
    assert not [k for k in keys if k.endswith(".parquet") or k.endswith("_SUCCESS")], keys
    # the other tasks' uploads were pending, never completed, and the job abort dropped them
    uploads = s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []
    assert not [k for k in keys if "__magic" in k and not k.endswith("/")], keys


def test_the_session_conf_carries_no_credential(s3a_spark):
    """regflow puts no credential in the Spark conf (what a SparkApplication's sparkConf and
    Spark's event log show); S3A authenticates through the SDK's default chain. (Spark itself
    copies AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY into the in-memory Hadoop configuration,
    SparkHadoopUtil; the configured provider does not read them.)"""
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    conf = dict(s3a_spark.sparkContext.getConf().getAll())
    provider = "spark.hadoop.fs.s3a.aws.credentials.provider"
    assert conf[provider].endswith("DefaultCredentialsProvider")
    hconf = s3a_spark.sparkContext._jsc.hadoopConfiguration()
    assert hconf.get(provider[len("spark.hadoop.") :]) == conf[provider]
    assert not [k for k, v in conf.items() if "s3a" in k and secret in v]
    assert not [k for k in conf if "secret" in k or "access.key" in k or "session.token" in k]


PROBE = """
import sys
from regflow.runtime.session import get_spark
spark = get_spark()
spark.range(5).write.parquet(f"s3a://{sys.argv[1]}/probe/")
assert spark.read.parquet(f"s3a://{sys.argv[1]}/probe/").count() == 5
import time; time.sleep(0.5)  # (the forwarding thread writes asynchronously)
"""


@pytest.mark.slow
def test_a_task_using_s3a_logs_no_slf4j_noise(s3_server):
    """The AWS SDK bundle's shaded SLF4J prints three lines on stderr at the first s3a://
    access; a task's stderr is logged by Airflow as ERROR, so the session's filter drops them.
    A fresh process: the test process's JVM printed them long ago."""
    s3a.require_jars()
    bucket = s3_server.new_bucket("probe")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, bucket], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SLF4J" not in proc.stderr, proc.stderr[-3000:]
    assert any(k.endswith(".parquet") for k in s3_server.keys(bucket, "probe/"))
