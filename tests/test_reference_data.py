"""The BCBS 238 factor table has one source, and the demo's tables are data that is checked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from regflow.demo.tables import Scenario, check_tables, load_tables

ROOT = Path(__file__).resolve().parent.parent
PACKAGED = ROOT / "src" / "regflow" / "reference" / "lcr_categories.csv"
PROJECT_COPY = ROOT / "pipelines" / "reference" / "lcr_categories.csv"


def test_pipeline_factor_table_is_the_packaged_one() -> None:
    # The LCR pipeline reads its project's copy ({spec_dir}/reference/, shipped with the
    # project, e.g. in the Airflow image); the demo generator and the tests' oracle read the
    # packaged one. A factor changed in one and not the other fails here.
    assert PROJECT_COPY.read_bytes() == PACKAGED.read_bytes()


def test_demo_tables_use_the_factor_table() -> None:
    tables = load_tables()
    categories = {s.category for s in tables.scenarios}
    # every category of the factor table is drawn by some scenario, and no other
    assert categories == set(tables.category_factors)
    assert tables.category_factors["L2A"] == ("L2A", 0.85)
    assert tables.category_factors["RETAIL_STABLE"] == ("OUTFLOW", 0.05)


def test_inconsistent_demo_tables_are_refused() -> None:
    tables = load_tables()
    bad = Scenario("SWAPTION", "L1", 1.0, 1e6, 1.0, (("ALIEN", 1.0),), ratings=("AAAA",))
    broken = dataclasses.replace(tables, scenarios=(*tables.scenarios, bad))
    with pytest.raises(ValueError) as err:
        check_tables(broken)
    message = str(err.value)
    n = len(broken.scenarios)
    assert f"scenario {n} (SWAPTION -> L1): unknown product 'SWAPTION'" in message
    assert "unknown counterparty type 'ALIEN'" in message
    assert "unknown rating 'AAAA'" in message
