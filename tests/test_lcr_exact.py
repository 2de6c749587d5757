"""The LCR is exact to the last digit on data built to show any rounding (issue 17).

The deals are crafted so that rounding each deal's weighted amount to 6 decimals (what Spark's
default precision-loss rule did to ``amount_usd * factor``) would drift by several cents:
with an FX rate of 1.00000005, ``amount * rate * factor`` ends in exactly 5 at the 7th
decimal for every one of them, and half-up rounding moves each by +0.0000005. Other deals
have random amounts, rates and categories.

Expected figures are computed here with Python ``decimal`` from the reference's definition
(README: amount x usd_rate x factor, summed per entity and bucket; the caps through
``lcr_reference.lcr_from_buckets``), never with regflow. Sums must agree exactly (tolerance
0), the caps to within 0.01 (the contract) and in fact far better. Both engines are run:
the aggregates finished on the driver (pyarrow) and by Spark.
"""

from __future__ import annotations

import datetime as dt
import shutil
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lcr_reference import LCR_CATEGORIES, lcr_from_buckets

from regflow.plan.build import build_plan
from regflow.runtime.executor import run_stage
from regflow.storage import RunRef

# the whole LCR pipeline: `make test-fast` skips them (docs/development.md)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
COB = dt.date(2026, 3, 31)
N = 200_000
CENT = Decimal("0.01")
RATES = {"XTI": "1.00000005", "EUR": "1.08765431", "JPY": "0.00654321", "USD": "1.00000000"}
ENTITIES = ["LE001", "LE002", "LE003", "LE004"]
# kind -> (product_type, counterparty_type, rating, insured, category)
KINDS = [
    ("CASH", "BANK", None, False, "L1"),  # 0: ties at the 7th decimal (XTI)
    ("RETAIL_DEPOSIT", "RETAIL", None, True, "RETAIL_STABLE"),  # 1: ties too (XTI)
    ("GOV_BOND", "SOVEREIGN", "A", False, "L2A"),
    ("EQUITY", "NFC", None, False, "L2B_EQUITY"),
    ("LOAN", "RETAIL", None, False, "IN_RETAIL"),
    ("WHOLESALE_DEPOSIT", "NFC", None, False, "NFC_UNSECURED"),
    ("CASH", "BANK", None, False, "L1"),
]
BUCKETS = {"L1": "l1", "L2A": "l2a", "L2B": "l2b", "OUTFLOW": "outflows", "INFLOW": "inflows"}


def _deals() -> pa.Table:
    rng = np.random.default_rng(17)
    kind = rng.choice(len(KINDS), size=N, p=[0.35, 0.25, 0.1, 0.08, 0.08, 0.08, 0.06])
    j = np.arange(N, dtype=np.int64)
    random_cents = rng.integers(100, 10**11, size=N, dtype=np.int64)  # 1.00 .. 1e9
    # amounts in cents: CASH ties 10 + 20 j, deposit ties 200 + 400 j (see the module docs)
    cents = np.where(
        kind == 0, 1000 + 2000 * j, np.where(kind == 1, 20000 + 40000 * j, random_cents)
    )
    currency = np.where(kind <= 1, "XTI", rng.choice(["EUR", "JPY", "USD"], size=N))
    pick = lambda k: np.array([KINDS[i][k] for i in kind], dtype=object)  # noqa: E731
    return pa.table(
        {
            "deal_id": pa.array([f"D{i:07d}" for i in range(N)]),
            "cob_date": pa.array(np.full(N, COB)),
            "legal_entity": pa.array(np.array(ENTITIES)[j % len(ENTITIES)]),
            "counterparty_id": pa.array([f"CP{i % 997:05d}" for i in range(N)]),
            "counterparty_type": pa.array(pick(1), pa.string()),
            "product_type": pa.array(pick(0), pa.string()),
            "rating": pa.array(pick(2), pa.string()),
            "currency": pa.array(currency, pa.string()),
            "amount": pa.array([Decimal(int(c)).scaleb(-2) for c in cents], pa.decimal128(20, 2)),
            "maturity_date": pa.array([None] * N, pa.date32()),
            "insured": pa.array(pick(3), pa.bool_()),
            "encumbered": pa.array(np.zeros(N, dtype=bool)),
            "collateral_level": pa.array([None] * N, pa.string()),
        }
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lcr-exact")
    tag = f"cob={COB.isoformat()}"
    (root / "deals" / tag).mkdir(parents=True)
    pq.write_table(_deals(), root / "deals" / tag / "part-00000.parquet")
    (root / "fx_rates" / tag).mkdir(parents=True)
    fx = pa.table(
        {
            "cob_date": pa.array([COB] * len(RATES)),
            "currency": list(RATES),
            "usd_rate": pa.array([Decimal(r) for r in RATES.values()], pa.decimal128(18, 8)),
        }
    )
    pq.write_table(fx, root / "fx_rates" / tag / "part-00000.parquet")
    pq.write_table(
        pa.table(
            {
                "legal_entity": ENTITIES,
                "entity_name": ENTITIES,
                "country": ["GB"] * len(ENTITIES),
                "parent_entity": [None] * len(ENTITIES),
            }
        ),
        root / "entities.parquet",
    )
    return root


class Expected:
    """Per deal and per entity, in Python decimal from the reference's definition."""

    def __init__(self, data: Path):
        deals = pq.read_table(data / "deals" / f"cob={COB.isoformat()}").to_pydict()
        categories = {k[0:4]: k[4] for k in KINDS}
        self.amount_usd: dict[str, Decimal] = {}
        self.weighted: dict[str, Decimal] = {}
        self.bucket: dict[str, str] = {}
        self.sums = {e: {b: Decimal(0) for b in BUCKETS.values()} for e in ENTITIES}
        with localcontext(prec=60):  # far more digits than any value has: exact
            for i, deal in enumerate(deals["deal_id"]):
                key = (
                    deals["product_type"][i],
                    deals["counterparty_type"][i],
                    deals["rating"][i],
                    deals["insured"][i],
                )
                bucket, factor = LCR_CATEGORIES[categories[key]]
                usd = deals["amount"][i] * Decimal(RATES[deals["currency"][i]])
                self.amount_usd[deal] = usd
                self.weighted[deal] = usd * Decimal(factor)
                self.bucket[deal] = bucket
                if bucket != "NONE":
                    self.sums[deals["legal_entity"][i]][BUCKETS[bucket]] += self.weighted[deal]
        group = {b: sum((s[b] for s in self.sums.values()), Decimal(0)) for b in BUCKETS.values()}
        self.rows = {e: lcr_from_buckets(**{b: Fraction(v) for b, v in s.items()}) for e, s in
                     [*self.sums.items(), ("GROUP", group)]}  # fmt: skip


@pytest.fixture(scope="module")
def expected(data) -> Expected:
    return Expected(data)


def _run(tmp: Path, data: Path, spark, policy) -> tuple[RunRef, list]:
    project = tmp / "project"
    for name in ("pipelines", "operators"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "adjustments" / "lcr").mkdir(parents=True)
    plan = build_plan(project / "pipelines" / "lcr.yaml", project / "adjustments" / "lcr")
    reports = [
        run_stage(
            plan,
            stage,
            cob=COB.isoformat(),
            run_id="r1",
            root=tmp / "storage",
            params={"data_root": str(data)},
            spark=spark,
            log=lambda _m: None,
            policy=policy,
        )
        for stage in ("weigh", "entity_buckets", "entity_lcr")  # (not the warehouse star)
    ]
    return RunRef(tmp / "storage", "lcr", COB.isoformat(), "r1"), reports


def _read(run: RunRef, name: str) -> list[dict]:
    files = sorted(str(p) for p in run.node_dir(name).glob("*.parquet"))
    return pq.ParquetDataset(files, partitioning=None).read().to_pylist()


@pytest.fixture(scope="module")
def run(engine, tmp_path_factory, data, spark):
    """The LCR on the crafted deals, on each engine: its aggregates finished on the driver
    (engine driver) or by Spark (engine spark: the driver engine never runs)."""
    ref, reports = _run(tmp_path_factory.mktemp(f"lcr-exact-{engine.mode}"), data, spark, engine)
    # the engine that finished entity_buckets is the one asked for
    steps = {e["step"]: e["engine"] for r in reports for e in r.engines}
    assert steps["aggregate entity_buckets"] == engine.mode, steps
    return ref


def test_crafted_data_would_drift_if_each_deal_were_rounded(expected):
    """A guard on the data: rounding each weighted amount half-up to 6 decimals (the old
    behaviour) moves some GROUP sum by more than a cent."""
    with localcontext(prec=60):
        drift = {b: Decimal(0) for b in BUCKETS}
        for deal, w in expected.weighted.items():
            if expected.bucket[deal] in drift:
                drift[expected.bucket[deal]] += w.quantize(Decimal("1e-6"), ROUND_HALF_UP) - w
    assert drift["L1"] > 2 * CENT and drift["OUTFLOW"] > 2 * CENT, drift


def test_every_deal_keeps_every_digit(run, expected):
    rows = _read(run, "weigh")
    assert len(rows) == N
    bad = [
        r["deal_id"]
        for r in rows
        if r["amount_usd"] != expected.amount_usd[r["deal_id"]]
        or r["weighted_amount"] != expected.weighted[r["deal_id"]]
    ]
    assert bad == []


def test_entity_sums_are_exact(run, expected):
    rows = {r["legal_entity"]: r for r in _read(run, "entity_buckets")}
    assert sorted(rows) == ENTITIES
    for e in ENTITIES:
        for b in BUCKETS.values():
            assert rows[e][b] - expected.sums[e][b] == 0, (e, b)  # tolerance 0


def test_entity_lcr_is_exact_for_sums_and_within_far_less_than_a_cent(run, expected):
    rows = {r["legal_entity"]: r for r in _read(run, "entity_lcr")}
    assert sorted(rows) == sorted([*ENTITIES, "GROUP"])
    for e, want in expected.rows.items():
        got = rows[e]
        for col, value in want.items():
            if col == "lcr":
                assert value is not None and got["lcr"] is not None
                assert abs(got["lcr"] - float(value)) <= 1e-9 * abs(float(value)), e
                continue
            assert value is not None
            diff = abs(Fraction(got[col]) - value)
            assert diff <= Fraction(CENT), (e, col, float(diff))  # the contract
            if col in BUCKETS.values():
                assert diff == 0, (e, col)  # sums: exact
            else:
                assert diff <= Fraction(1, 10**12), (e, col, float(diff))  # caps: divisions
