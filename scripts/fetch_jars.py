#!/usr/bin/env python3
"""Fetch the jars Spark needs for ``s3a://`` into one folder (default ``.regflow/jars``), once.

What it fetches (versions from ``deploy/versions.env``, the ones the container image uses):

- ``org.apache.hadoop:hadoop-aws:$HADOOP_VERSION`` (the S3A connector, the version of the
  hadoop-client jars pyspark bundles) and its runtime dependencies: the AWS SDK v2
  ``software.amazon.awssdk:bundle`` (~650 MiB), ``analyticsaccelerator-s3`` and
  ``wildfly-openssl``;
- ``org.apache.spark:spark-hadoop-cloud_2.13`` (Spark's ``PathOutputCommitProtocol`` and
  ``BindingParquetOutputCommitter``, which let Spark SQL use the S3A magic committer). Maven
  Central has none for Spark 4.3; the newest published (``SPARK_HADOOP_CLOUD_VERSION`` below)
  runs on Spark 4.3 (tests/test_spark_s3a.py proves it).

With ``mvn`` on the PATH it resolves hadoop-aws's runtime dependencies with
``mvn dependency:copy-dependencies`` (strict checksums) from a generated POM; otherwise it
downloads the same artifacts from Maven Central's standard layout and verifies each against
the checksum Central publishes (``.sha512``, else ``.sha256``, else ``.sha1``) and, for
hadoop-aws and the bundle, against the SHA-256 pinned in ``deploy/versions.env``. A mismatch
is an error and leaves nothing behind. Idempotent: a folder whose ``jars.json`` lists exactly
these artifacts, with each file's size and modification time unchanged, is left alone.

Standard library only. Usage: ``python scripts/fetch_jars.py [--dest DIR] [--no-mvn]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CENTRAL = "https://repo1.maven.org/maven2"
# Maven Central's newest spark-hadoop-cloud (none exists for Spark 4.3.0, checked 2026-12-06)
SPARK_HADOOP_CLOUD_VERSION = "4.1.2"
# hadoop-aws 3.5.0's compile/runtime dependencies besides the bundle (its POM, through
# hadoop-project); the mvn path checks that it resolves exactly this list
ANALYTICS_ACCELERATOR_VERSION = "1.3.1"
WILDFLY_OPENSSL_VERSION = "2.2.5.Final"
MANIFEST = "jars.json"


class FetchError(Exception):
    """A download or a checksum failed: the message says which artifact and what to do."""


def versions(path: Path = ROOT / "deploy" / "versions.env") -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def artifacts(v: dict[str, str]) -> list[dict[str, str]]:
    """Every jar to fetch: group, artifact, version, and the pinned SHA-256 where known."""
    return [
        {
            "group": "org.apache.hadoop",
            "artifact": "hadoop-aws",
            "version": v["HADOOP_VERSION"],
            "sha256": v.get("HADOOP_AWS_SHA256", ""),
        },
        {
            "group": "software.amazon.awssdk",
            "artifact": "bundle",
            "version": v["AWS_SDK_VERSION"],
            "sha256": v.get("AWS_SDK_BUNDLE_SHA256", ""),
        },
        {
            "group": "software.amazon.s3.analyticsaccelerator",
            "artifact": "analyticsaccelerator-s3",
            "version": v.get("ANALYTICS_ACCELERATOR_VERSION", ANALYTICS_ACCELERATOR_VERSION),
            "sha256": "",
        },
        {
            "group": "org.wildfly.openssl",
            "artifact": "wildfly-openssl",
            "version": v.get("WILDFLY_OPENSSL_VERSION", WILDFLY_OPENSSL_VERSION),
            "sha256": "",
        },
        {
            "group": "org.apache.spark",
            "artifact": "spark-hadoop-cloud_2.13",
            "version": v.get("SPARK_HADOOP_CLOUD_VERSION", SPARK_HADOOP_CLOUD_VERSION),
            "sha256": "",
        },
    ]


def jar_name(a: dict[str, str]) -> str:
    return f"{a['artifact']}-{a['version']}.jar"


def _say(msg: str) -> None:
    print(f"fetch_jars: {msg}", flush=True)


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def up_to_date(dest: Path, arts: list[dict[str, str]]) -> bool:
    """True when ``dest`` holds exactly these jars, as verified and recorded last time."""
    try:
        recorded = json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if set(recorded) != {jar_name(a) for a in arts}:
        return False
    for name, stamp in recorded.items():
        path = dest / name
        if not path.is_file() or {k: stamp.get(k) for k in ("size", "mtime_ns")} != _stamp(path):
            return False
    return True


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_url(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            data: bytes = r.read()
            return data
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise FetchError(f"{url}: HTTP {e.code}") from e
    except OSError as e:
        raise FetchError(f"{url}: {e}") from e


def _download(url: str, to: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as r, to.open("wb") as out:
            total = int(r.headers.get("Content-Length") or 0)
            done, shown = 0, -1
            for block in iter(lambda: r.read(1 << 20), b""):
                out.write(block)
                done += len(block)
                tenth = done * 10 // total if total else -1
                if total > (50 << 20) and tenth != shown:
                    shown = tenth
                    _say(f"  {done >> 20} / {total >> 20} MiB")
    except OSError as e:  # HTTPError and URLError included
        raise FetchError(f"{url}: {e}") from e


def verify(path: Path, a: dict[str, str], base_url: str) -> str:
    """Check ``path`` against Central's published checksum (strongest available) and the
    pinned SHA-256; return what was checked. Raises :class:`FetchError` on a mismatch."""
    url = f"{base_url}/{jar_name(a)}"
    checked = ""
    for algo in ("sha512", "sha256", "sha1"):
        published = _read_url(f"{url}.{algo}")
        if published is None:
            continue
        want = published.decode().split()[0].strip().lower()
        got = _digest(path, algo)
        if got != want:
            raise FetchError(
                f"{jar_name(a)}: {algo} {got} does not match the published {want} ({url}.{algo})"
                "; the download is corrupt or tampered with: nothing was installed, run again"
            )
        checked = algo
        break
    if not checked:
        raise FetchError(f"{url}: no .sha512, .sha256 or .sha1 published; refusing to trust it")
    if a.get("sha256"):
        got = _digest(path, "sha256")
        if got != a["sha256"]:
            raise FetchError(
                f"{jar_name(a)}: sha256 {got} is not the {a['sha256']} pinned in "
                "deploy/versions.env"
            )
        checked += "+pinned sha256"
    return checked


def fetch_plain(arts: list[dict[str, str]], into: Path, central: str) -> None:
    for a in arts:
        base = f"{central}/{a['group'].replace('.', '/')}/{a['artifact']}/{a['version']}"
        part = into / (jar_name(a) + ".part")
        _say(f"downloading {base}/{jar_name(a)}")
        _download(f"{base}/{jar_name(a)}", part)
        checked = verify(part, a, base)
        part.rename(into / jar_name(a))
        size = (into / jar_name(a)).stat().st_size
        shown = f"{size / (1 << 20):.1f} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
        _say(f"  {jar_name(a)}: {shown}, {checked} verified")


POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>regflow</groupId><artifactId>s3a-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>{deps}</dependencies>
</project>
"""
DEP = """
    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>
      <version>{version}</version>{exclusions}</dependency>"""
NO_TRANSITIVE = "<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId>" + (
    "</exclusion></exclusions>"
)


def fetch_mvn(mvn: str, arts: list[dict[str, str]], into: Path) -> None:
    """hadoop-aws with its runtime dependencies, spark-hadoop-cloud alone (its own POM drags
    in Hadoop and Azure/GCS connectors Spark does not need here)."""
    deps = DEP.format(**arts[0], exclusions="") + DEP.format(**arts[-1], exclusions=NO_TRANSITIVE)
    (into / "pom.xml").write_text(POM.format(deps=deps))
    out = into / "jars"
    _say(f"resolving with {mvn} (hadoop-aws's runtime dependencies; the bundle is ~650 MiB)")
    cmd = [
        mvn,
        "-B",
        "-q",
        "--strict-checksums",
        "-f",
        str(into / "pom.xml"),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={out}",
    ]
    if subprocess.run(cmd, check=False).returncode != 0:
        raise FetchError(f"`{' '.join(cmd)}` failed (see its output above)")
    got = {p.name for p in out.glob("*.jar")}
    want = {jar_name(a) for a in arts}
    if got != want:
        raise FetchError(
            f"mvn resolved {sorted(got)}, expected {sorted(want)}: update the versions in "
            "scripts/fetch_jars.py to what hadoop-aws's POM declares"
        )
    for a in arts:
        if a.get("sha256") and _digest(out / jar_name(a), "sha256") != a["sha256"]:
            raise FetchError(f"{jar_name(a)}: not the sha256 pinned in deploy/versions.env")
        (out / jar_name(a)).rename(into / jar_name(a))


def fetch(
    dest: Path, *, use_mvn: bool = True, central: str = CENTRAL, env_file: Path | None = None
) -> bool:
    """Make ``dest`` hold the jars; False when it already did."""
    arts = artifacts(versions(env_file) if env_file else versions())
    if up_to_date(dest, arts):
        _say(f"{dest}: up to date ({len(arts)} jars)")
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    mvn = shutil.which("mvn") if use_mvn else None
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        if mvn:
            fetch_mvn(mvn, arts, work)
        else:
            fetch_plain(arts, work, central)
        dest.mkdir(exist_ok=True)
        for stale in dest.glob("*.jar"):  # another version's jars: never two on the classpath
            stale.unlink()
        (dest / MANIFEST).unlink(missing_ok=True)
        stamps = {}
        for a in arts:
            target = dest / jar_name(a)
            os.replace(work / jar_name(a), target)
            stamps[jar_name(a)] = {**_stamp(target), "coordinates": _coords(a)}
        (dest / MANIFEST).write_text(json.dumps(stamps, indent=2) + "\n")
    total = sum(s["size"] for s in stamps.values())  # type: ignore[misc]
    _say(f"{dest}: {len(arts)} jars, {total / (1 << 20):.0f} MiB")
    return True


def _coords(a: dict[str, str]) -> str:
    return f"{a['group']}:{a['artifact']}:{a['version']}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", type=Path, default=ROOT / ".regflow" / "jars")
    p.add_argument("--no-mvn", action="store_true", help="plain download even if mvn exists")
    p.add_argument("--central", default=CENTRAL, help="Maven repository base URL")
    p.add_argument("--versions", type=Path, default=None, help="a versions.env to read")
    args = p.parse_args(argv)
    try:
        fetch(args.dest, use_mvn=not args.no_mvn, central=args.central, env_file=args.versions)
    except FetchError as e:
        print(f"fetch_jars: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
