"""Shared fixtures: one real local SparkSession, generated LCR data, an isolated project."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from regflow.spec.models import LINEAGE_COLUMN as LID

ROOT = Path(__file__).resolve().parent.parent
COB = dt.date(2026, 3, 31)

# Keep every test's Airflow and storage away from the developer's ./.regflow
os.environ.setdefault("REGFLOW_SHUFFLE_PARTITIONS", "4")


def _test_java_options() -> str:
    """The test JVMs' options: regflow's own, and the C1 compiler only. A test's Spark work is
    seconds on a few rows, over before the C2 compiler's optimised code pays back the CPU
    it costs to build (test_runtime_checks + test_decimal_types, alternated on a shared
    machine: 1m47s and 1m36s with C2, 1m05s and 1m14s with C1 only). Results do not change:
    the JIT tier changes speed, never semantics."""
    from regflow.runtime.session import DEFAULT_JAVA_OPTIONS

    return f"{DEFAULT_JAVA_OPTIONS} -XX:TieredStopAtLevel=1"


os.environ.setdefault("REGFLOW_DRIVER_JAVA_OPTIONS", _test_java_options())


def unmarked_attempts(run_dir: Path) -> list[str]:
    """The attempts under ``run_dir``'s nodes that no marker names (what a killed or failed
    write leaves; the commit protocol, docs/storage.md)."""
    import json

    out = []
    for node in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        marker = node / "_SUCCESS"
        named = json.loads(marker.read_text())["attempt"] if marker.exists() else None
        out += [f"{node.name}/{a.name}" for a in node.glob("attempt=*") if a.name != named]
    return sorted(out)


@pytest.fixture(autouse=True)
def _fresh_settings():
    """No test sees another's settings (the CLI's configure(), an override left behind)."""
    from regflow import settings

    settings.reset()
    yield
    settings.reset()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API server (moto) on 127.0.0.1 with the standard AWS environment set
    (tests/s3_server.py): ``.endpoint``, ``.client()``, ``.new_bucket()``, ``.keys()``."""
    from s3_server import serve

    with pytest.MonkeyPatch.context() as mp:
        yield from serve(mp)


@pytest.fixture(scope="session")
def spark(s3_server):
    """The process's one SparkSession, started after the S3 server: the JVM reads the AWS
    credentials from its environment once, at launch (no secret ever goes in a conf)."""
    import logging

    from regflow.runtime.session import get_spark

    yield get_spark()
    # py4j logs "Closing down clientserver connection" from __del__ at interpreter exit,
    # after pytest has closed the stream its handler writes to: a "Logging error" trace
    logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="module", params=["spark", "driver"])
def engine(request):
    """The execution policy of each engine a runtime test runs on (pass it to ``run_stage``
    as ``policy=``): ``spark`` (the driver engine never runs: the path production takes at
    scale) and ``driver`` (the driver engine takes every step it can, with no threshold)."""
    from regflow.runtime.policy import ExecutionPolicy

    return ExecutionPolicy.for_mode(request.param)


@pytest.fixture(scope="session")
def lcr_data(tmp_path_factory) -> Path:
    """10k deals, 5 entities: every LCR category, caps binding for some entities."""
    from regflow.demo.data import generate_demo_data

    root = tmp_path_factory.mktemp("lcr-data")
    generate_demo_data(root, cob=COB, deals=10_000, entities=5, seed=42)
    return root


@pytest.fixture()
def project(tmp_path) -> Path:
    """A copy of the repository's project folders (pipelines, operators, dags)."""
    for name in ("pipelines", "operators", "dags"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.fixture()
def deals(spark):
    """Four deals with a lineage id column; nulls in amount, rating and insured."""
    rows = [
        (1, "D1", "LE1", "USD", Decimal("100.10"), "AAA", True),
        (2, "D2", "LE1", "EUR", Decimal("200.20"), None, False),
        (3, "D3", "LE2", "GBP", Decimal("300.30"), "BBB", None),
        (4, "D4", "LE2", "EUR", None, "A", False),
    ]
    schema = (
        f"{LID} bigint, deal_id string, legal_entity string, currency string, "
        "amount decimal(20,2), rating string, insured boolean"
    )
    return spark.createDataFrame(rows, schema)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A module's embedded PostgreSQL, regflow's own server (as root, it widens no
    permissions; see warehouse/embedded.py)."""
    from regflow.warehouse.embedded import EmbeddedServer

    srv = EmbeddedServer(tmp_path_factory.mktemp("pg")).start()
    yield srv
    srv.release()
