"""Shared fixtures: one real local SparkSession, generated LCR data, an isolated project."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COB = dt.date(2026, 3, 31)

# Keep every test's Airflow and storage away from the developer's ./.regflow
os.environ.setdefault("REGFLOW_SHUFFLE_PARTITIONS", "4")


@pytest.fixture(scope="session")
def spark():
    from regflow.runtime.session import get_spark

    return get_spark()


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
