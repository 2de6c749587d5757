"""The container image's versions agree with each other and with what the tests run.

``deploy/versions.env`` is the one list; the Dockerfile's ARG defaults repeat it (Docker
cannot read an env file into ARGs), so this test compares them, then each version with its
source of truth: pyspark in this venv, the hadoop-client jars pyspark bundles, and the AWS
SDK v2 version hadoop-aws's POM declares (through its parent, hadoop-project).

Does not prove: that the image builds (no Docker engine here), that the base image
``apache/spark:<SPARK_VERSION>-python3`` exists with Python 3.11+ and spark-hadoop-cloud (the
Dockerfile checks both at build time), or that the jars' checksums are right (the build
checks them against the values here).
"""

from __future__ import annotations

import hashlib
import re
import urllib.request
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import pyspark

ROOT = Path(__file__).resolve().parent.parent
CENTRAL = "https://repo1.maven.org/maven2"
M2 = Path.home() / ".m2" / "repository"
NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def _versions() -> dict[str, str]:
    out = {}
    for line in (ROOT / "deploy" / "versions.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _dockerfile_args() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))


def _pom(group: str, artifact: str, version: str) -> ET.Element:
    """A POM from the local Maven repository, else from Maven Central, checked against the
    SHA-1 Central publishes next to it."""
    rel = f"{group.replace('.', '/')}/{artifact}/{version}/{artifact}-{version}.pom"
    local = M2 / rel
    if local.is_file():
        data = local.read_bytes()
    else:
        with urllib.request.urlopen(f"{CENTRAL}/{rel}", timeout=30) as r:
            data = r.read()
        with urllib.request.urlopen(f"{CENTRAL}/{rel}.sha1", timeout=30) as r:
            assert hashlib.sha1(data).hexdigest() == r.read().decode().split()[0]
    return ET.fromstring(data)


def test_dockerfile_args_equal_versions_env() -> None:
    """Every ARG default of the Dockerfile is the value of deploy/versions.env, and none is
    missing on either side."""
    assert _dockerfile_args() == _versions()


def test_spark_and_hadoop_versions_match_pyspark() -> None:
    """The image's Spark is the pyspark the tests run; its hadoop-aws is the version of the
    hadoop-client jars pyspark bundles (S3A must match the Hadoop classes on the path)."""
    v = _versions()
    assert v["SPARK_VERSION"] == metadata.version("pyspark") == pyspark.__version__
    jars = {p.name for p in (Path(pyspark.__file__).parent / "jars").glob("hadoop-client-*.jar")}
    assert f"hadoop-client-api-{v['HADOOP_VERSION']}.jar" in jars
    assert f"hadoop-client-runtime-{v['HADOOP_VERSION']}.jar" in jars


def test_aws_sdk_version_is_what_hadoop_aws_declares() -> None:
    """hadoop-aws depends on software.amazon.awssdk:bundle, whose version its parent POM
    (hadoop-project) sets in ``aws-java-sdk-v2.version``: the one the image downloads."""
    v = _versions()
    aws = _pom("org.apache.hadoop", "hadoop-aws", v["HADOOP_VERSION"])
    deps = {
        (d.findtext("m:groupId", namespaces=NS), d.findtext("m:artifactId", namespaces=NS))
        for d in aws.iterfind("m:dependencies/m:dependency", NS)
    }
    assert ("software.amazon.awssdk", "bundle") in deps
    parent = aws.find("m:parent", NS)
    assert parent is not None
    assert parent.findtext("m:artifactId", namespaces=NS) == "hadoop-project"
    project = _pom("org.apache.hadoop", "hadoop-project", parent.findtext("m:version", "", NS))
    declared = project.findtext("m:properties/m:aws-java-sdk-v2.version", namespaces=NS)
    assert declared == v["AWS_SDK_VERSION"]


def test_image_layout_matches_the_manifests() -> None:
    """The Dockerfile puts the launcher where the SparkApplication's mainApplicationFile
    points, and the project where the manifests' ``--spec`` points."""
    from regflow.render.k8s import MAIN_FILE, PROJECT_IN_IMAGE

    text = (ROOT / "Dockerfile").read_text()
    assert f"COPY deploy/stage_main.py {MAIN_FILE.removeprefix('local://')}" in text
    assert f"COPY pipelines {PROJECT_IN_IMAGE}/pipelines" in text
    assert re.search(r"^USER 185$", text, flags=re.M)  # the last USER is not root
    assert text.rstrip().splitlines()[-2] == "USER 185"


def test_the_image_gets_the_jars_the_tests_run_with() -> None:
    """The Spark image fetches its S3A and committer jars with the script `make jars` runs,
    from the same versions.env, so the image's jars are the ones the tests' Spark loads."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("fetch_jars", ROOT / "scripts" / "fetch_jars.py")
    assert spec is not None and spec.loader is not None
    fetch_jars = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch_jars)

    text = (ROOT / "Dockerfile").read_text()
    assert "COPY deploy/versions.env scripts/fetch_jars.py /tmp/fetch/" in text
    assert "fetch_jars.py --no-mvn --versions /tmp/fetch/versions.env" in text
    assert 'cp /tmp/fetch/jars/*.jar "${SPARK_HOME}/jars/"' in text
    image = {fetch_jars.jar_name(a) for a in fetch_jars.artifacts(_versions())}
    assert f"hadoop-aws-{_versions()['HADOOP_VERSION']}.jar" in image
    assert f"spark-hadoop-cloud_2.13-{_versions()['SPARK_HADOOP_CLOUD_VERSION']}.jar" in image
    fetched = ROOT / ".regflow" / "jars" / "jars.json"  # `make test` fetched them first
    assert fetched.is_file(), "run `make jars` first"
    assert set(json.loads(fetched.read_text())) == image
