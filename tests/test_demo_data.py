"""Tests of the synthetic LCR data generator and of the independent reference computation."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lcr_reference import (
    LCR_CATEGORIES,
    OUTPUT_COLUMNS,
    classify_reference,
    compute_lcr_reference,
    read_partition,
)

from regflow.demo.data import DemoDataSummary, generate_demo_data

COB = date(2026, 3, 31)
TAG = "cob=2026-03-31"
AMOUNT_COLUMNS = OUTPUT_COLUMNS[2:-1]
BUCKETS = ["l1", "l2a", "l2b", "outflows", "inflows"]

# Written from the README "Inputs" section, independently of the generator's own constants.
EXPECTED_DEALS_SCHEMA = pa.schema(
    [
        pa.field("deal_id", pa.string(), nullable=False),
        pa.field("cob_date", pa.date32(), nullable=False),
        pa.field("legal_entity", pa.string(), nullable=False),
        pa.field("counterparty_id", pa.string(), nullable=False),
        pa.field("counterparty_type", pa.string(), nullable=False),
        pa.field("product_type", pa.string(), nullable=False),
        pa.field("rating", pa.string(), nullable=True),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("amount", pa.decimal128(20, 2), nullable=False),
        pa.field("maturity_date", pa.date32(), nullable=True),
        pa.field("insured", pa.bool_(), nullable=False),
        pa.field("encumbered", pa.bool_(), nullable=False),
        pa.field("collateral_level", pa.string(), nullable=True),
    ]
)
EXPECTED_FX_SCHEMA = pa.schema(
    [
        pa.field("cob_date", pa.date32(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("usd_rate", pa.decimal128(18, 8), nullable=False),
    ]
)
EXPECTED_ENTITIES_SCHEMA = pa.schema(
    [
        pa.field("legal_entity", pa.string(), nullable=False),
        pa.field("entity_name", pa.string(), nullable=False),
        pa.field("country", pa.string(), nullable=False),
        pa.field("parent_entity", pa.string(), nullable=True),
    ]
)
COUNTERPARTY_TYPES = {"RETAIL", "SME", "NFC", "SOVEREIGN", "CENTRAL_BANK", "BANK", "OTHER_FI"}
PRODUCTS = {
    "CASH",
    "CB_RESERVE",
    "GOV_BOND",
    "CORP_BOND",
    "COVERED_BOND",
    "RMBS",
    "EQUITY",
    "RETAIL_DEPOSIT",
    "SME_DEPOSIT",
    "OPERATIONAL_DEPOSIT",
    "WHOLESALE_DEPOSIT",
    "REPO",
    "REVERSE_REPO",
    "CREDIT_FACILITY",
    "LIQUIDITY_FACILITY",
    "LOAN",
}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo5000")
    generate_demo_data(root, cob=COB, deals=5000)
    return root


@pytest.fixture(scope="module")
def default_lcr(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("demo10000")
    generate_demo_data(root, cob=COB, deals=10_000, entities=5, seed=42)
    return compute_lcr_reference(root, COB)


def _deals(root: Path) -> pd.DataFrame:
    return read_partition(root / "deals" / TAG).to_pandas()


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ---- generator: layout, schema, content --------------------------------------------------------


def test_layout_summary_and_progress(tmp_path: Path) -> None:
    messages: list[str] = []
    summary = generate_demo_data(
        tmp_path, cob=COB, deals=1200, entities=3, progress=messages.append
    )

    expected = (
        tmp_path / "deals" / TAG / "part-00000.parquet",
        tmp_path / "fx_rates" / TAG / "part-00000.parquet",
        tmp_path / "entities.parquet",
    )
    assert summary == DemoDataSummary(
        root=tmp_path,
        cob=COB,
        deals=1200,
        entities=3,
        currencies=("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD"),
        files=expected,
    )
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(expected)
    assert "deals: 1200/1200 rows written" in messages
    assert pq.read_metadata(expected[0]).num_rows == 1200


def test_schemas_are_exactly_the_readme_inputs(small_root: Path) -> None:
    files = {
        small_root / "deals" / TAG / "part-00000.parquet": EXPECTED_DEALS_SCHEMA,
        small_root / "fx_rates" / TAG / "part-00000.parquet": EXPECTED_FX_SCHEMA,
        small_root / "entities.parquet": EXPECTED_ENTITIES_SCHEMA,
    }
    for path, expected in files.items():
        schema = pq.read_schema(path)
        assert schema.equals(expected, check_metadata=False), f"{path}:\n{schema}"


def test_nullability_and_value_domains(small_root: Path) -> None:
    table = read_partition(small_root / "deals" / TAG)
    nulls = {name: table[name].null_count for name in table.column_names}
    assert {name for name, count in nulls.items() if count} == {
        "rating",
        "maturity_date",
        "collateral_level",
    }

    deals = table.to_pandas()
    assert set(deals["cob_date"]) == {COB}
    assert set(deals["legal_entity"]) == {f"LE00{i}" for i in range(1, 6)}
    assert set(deals["counterparty_type"]) == COUNTERPARTY_TYPES
    assert set(deals["product_type"]) == PRODUCTS
    assert set(deals["currency"]) == {"USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD"}
    assert deals["insured"].any() and deals["encumbered"].any()

    # collateral_level only on repos / reverse repos, with every level and some nulls there
    sft = deals["product_type"].isin(["REPO", "REVERSE_REPO"])
    assert deals.loc[~sft, "collateral_level"].isna().all()
    assert deals.loc[sft, "collateral_level"].isna().any()
    assert set(deals.loc[sft, "collateral_level"].dropna()) == {
        "L1",
        "L2A",
        "L2B_RMBS",
        "L2B_OTHER",
        "NONE",
    }

    # maturities: null, on the 30-day boundary, the day after, and far out
    maturity = deals["maturity_date"].dropna()
    assert deals["maturity_date"].isna().any()
    assert (maturity == COB + timedelta(days=30)).any()
    assert (maturity == COB + timedelta(days=31)).any()
    assert (maturity > COB + timedelta(days=365)).any()
    assert (maturity >= COB).all()

    # amounts: positive, two decimals, thousands to hundreds of millions
    amounts = deals["amount"]
    assert all(a > 0 and a == a.quantize(Decimal("0.01")) for a in amounts)
    assert all(a.as_tuple().exponent == -2 for a in amounts)
    fx = read_partition(small_root / "fx_rates" / TAG).to_pandas()
    rate = dict(zip(fx["currency"], fx["usd_rate"], strict=True))
    usd = [float(a * rate[c]) for a, c in zip(amounts, deals["currency"], strict=True)]
    assert min(usd) < 10_000 and max(usd) > 100_000_000


def test_ids(small_root: Path) -> None:
    deals = _deals(small_root)
    assert deals["deal_id"].is_unique
    assert deals["deal_id"].str.fullmatch(r"D20260331-\d{8}").all()
    assert deals["counterparty_id"].str.fullmatch(r"CP\d{7}").all()
    # a counterparty always has the same type
    assert (deals.groupby("counterparty_id")["counterparty_type"].nunique() == 1).all()


def test_entities_and_fx_rates(small_root: Path) -> None:
    entities = pq.read_table(small_root / "entities.parquet").to_pylist()
    assert [e["legal_entity"] for e in entities] == ["LE001", "LE002", "LE003", "LE004", "LE005"]
    assert [e["parent_entity"] for e in entities] == [None] + ["LE001"] * 4
    assert all(e["entity_name"] and re.fullmatch(r"[A-Z]{2}", e["country"]) for e in entities)

    fx = pq.read_table(small_root / "fx_rates" / TAG).to_pylist()
    rates = {row["currency"]: row["usd_rate"] for row in fx}
    assert {row["cob_date"] for row in fx} == {COB}
    assert rates["USD"] == Decimal(1)
    assert Decimal("0.004") < rates["JPY"] < Decimal("0.01")
    assert all(Decimal("0.5") < rates[c] < Decimal("1.5") for c in rates if c != "JPY")


def test_deterministic_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 42), ("b", 42), ("c", 7)):
        generate_demo_data(tmp_path / name, cob=COB, deals=3000, seed=seed)
    a, b, c = (_file_bytes(tmp_path / name) for name in "abc")
    assert len(a) == 3
    assert a == b
    assert a.keys() == c.keys()
    assert a[f"deals/{TAG}/part-00000.parquet"] != c[f"deals/{TAG}/part-00000.parquet"]
    assert a[f"fx_rates/{TAG}/part-00000.parquet"] != c[f"fx_rates/{TAG}/part-00000.parquet"]


def test_parts_and_overwrite(tmp_path: Path) -> None:
    other = generate_demo_data(tmp_path, cob=date(2026, 3, 30), deals=100, max_rows_per_part=2000)
    summary = generate_demo_data(tmp_path, cob=COB, deals=5000, max_rows_per_part=2000)
    part_dir = tmp_path / "deals" / TAG
    assert [p.name for p in sorted(part_dir.iterdir())] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert [pq.read_metadata(p).num_rows for p in summary.files[:3]] == [2000, 2000, 1000]
    assert read_partition(part_dir)["deal_id"].to_pylist() == [
        f"D20260331-{i:08d}" for i in range(1, 5001)
    ]

    # a smaller rerun replaces the partition as a whole: no stale parts, no temp leftovers
    generate_demo_data(tmp_path, cob=COB, deals=1500, max_rows_per_part=2000)
    assert [p.name for p in part_dir.iterdir()] == ["part-00000.parquet"]
    assert read_partition(part_dir).num_rows == 1500
    assert not [p for p in tmp_path.rglob(".*")]
    assert all(p.exists() for p in other.files)  # the other COB is left alone


def test_tiny_and_invalid_requests(tmp_path: Path) -> None:
    summary = generate_demo_data(tmp_path, cob=COB, deals=3, entities=1)
    assert read_partition(tmp_path / "deals" / TAG).num_rows == 3
    assert pq.read_table(summary.files[-1])["parent_entity"].to_pylist() == [None]
    with pytest.raises(ValueError):
        generate_demo_data(tmp_path, cob=COB, deals=0)
    with pytest.raises(ValueError):
        generate_demo_data(tmp_path, cob=COB, entities=0)


# ---- generator x reference: coverage of the calculation ----------------------------------------


def test_every_lcr_category_appears(small_root: Path) -> None:
    deals = _deals(small_root)
    categories = classify_reference(deals, COB)
    assert set(categories) == set(LCR_CATEGORIES)


def test_classification_branches_exercised(small_root: Path) -> None:
    deals = _deals(small_root)
    deals["category"] = classify_reference(deals, COB)
    short = deals["maturity_date"].isna() | (deals["maturity_date"] <= COB + timedelta(days=30))
    p, cat = deals["product_type"], deals["category"]

    def some(mask: pd.Series) -> bool:
        return bool(mask.any())

    assets = p.isin(["CASH", "CB_RESERVE", "GOV_BOND", "CORP_BOND", "COVERED_BOND", "RMBS"])
    assert some(assets & deals["encumbered"] & (cat == "NON_HQLA"))  # A0
    assert some(assets & ~deals["encumbered"] & (cat == "NON_HQLA"))  # A8
    assert some((p == "CASH") & deals["encumbered"])  # A0 before A1
    assert some((p == "GOV_BOND") & deals["rating"].isna())
    assert some((p == "RMBS") & (deals["rating"] == "AA-") & (cat == "NON_HQLA"))
    assert some((p == "WHOLESALE_DEPOSIT") & ~short & (cat == "WHOLESALE_TERM"))
    assert some((p == "SME_DEPOSIT") & (cat == "WHOLESALE_TERM"))
    assert some((p == "REPO") & (cat == "WHOLESALE_TERM"))
    assert some((p == "REVERSE_REPO") & (cat == "INFLOW_TERM"))
    assert some((p == "LOAN") & (cat == "INFLOW_TERM"))
    for product, category in (("REPO", "SF_OTHER"), ("REVERSE_REPO", "SL_OTHER")):
        rows = deals[(p == product) & (cat == category)]
        assert rows["collateral_level"].isna().any() and (rows["collateral_level"] == "NONE").any()
    fi = deals[cat == "FI_UNSECURED"]["counterparty_type"]
    assert {"BANK", "OTHER_FI", "RETAIL", "SME"} <= set(fi)
    assert some((cat == "FI_UNSECURED") & deals["insured"])
    for category, types in {
        "CF_NFC": {"NFC", "SOVEREIGN", "CENTRAL_BANK"},
        "LF_RETAIL": {"RETAIL", "SME"},
        "IN_FI": {"BANK", "OTHER_FI", "CENTRAL_BANK"},
        "IN_NFC": {"NFC", "SOVEREIGN"},
    }.items():
        assert set(deals.loc[cat == category, "counterparty_type"]) == types


def test_default_data_gives_plausible_lcr_with_binding_caps(default_lcr: pd.DataFrame) -> None:
    entities = default_lcr[default_lcr["legal_entity"] != "GROUP"]
    assert list(entities["legal_entity"]) == ["LE001", "LE002", "LE003", "LE004", "LE005"]
    for column in BUCKETS:
        assert (entities[column] > Decimal(10_000_000)).all(), column
    assert entities["lcr"].between(1.0, 2.5).all()
    assert (entities["adj_15"] > 0).any()
    assert (entities["adj_40"] > 0).any()
    assert (entities["adj_15"] == 0).any()  # and some entity is not capped
    assert (entities["inflows"] > entities["capped_inflows"]).any()  # 75% inflow cap binds
    assert (entities["inflows"] == entities["capped_inflows"]).any()


def test_every_bucket_filled_for_every_entity_at_1000_deals(tmp_path: Path) -> None:
    generate_demo_data(tmp_path, cob=COB, deals=1000)
    result = compute_lcr_reference(tmp_path, COB)
    entities = result[result["legal_entity"] != "GROUP"]
    assert len(entities) == 5
    for column in BUCKETS:
        assert (entities[column] > 0).all(), column
    assert entities["lcr"].between(0.9, 2.6).all()


# ---- reference computation ---------------------------------------------------------------------


def test_reference_output_shape(default_lcr: pd.DataFrame) -> None:
    assert list(default_lcr.columns) == OUTPUT_COLUMNS
    assert list(default_lcr["legal_entity"])[-1] == "GROUP"
    assert set(default_lcr["cob_date"]) == {COB}
    for column in AMOUNT_COLUMNS:
        assert all(isinstance(v, Decimal) for v in default_lcr[column]), column
    assert all(isinstance(v, float) for v in default_lcr["lcr"])


def test_group_row_sums_entities_but_recomputes_caps(default_lcr: pd.DataFrame) -> None:
    entities = default_lcr[default_lcr["legal_entity"] != "GROUP"]
    group = default_lcr[default_lcr["legal_entity"] == "GROUP"].iloc[0]
    for column in BUCKETS:
        assert group[column] == sum(entities[column], Decimal(0)), column
    assert (entities["adj_15"] > 0).any()
    assert group["adj_15"] != sum(entities["adj_15"], Decimal(0))
    assert group["adj_15"] < sum(entities["adj_15"], Decimal(0))
    with localcontext(prec=60):
        hqla = group["l1"] + group["l2a"] + group["l2b"] - group["adj_15"] - group["adj_40"]
    assert abs(group["hqla"] - hqla) < Decimal("1e-30")
    assert group["lcr"] == pytest.approx(float(group["hqla"] / group["net_outflows"]), rel=1e-12)


def test_missing_fx_rate_is_an_error(tmp_path: Path) -> None:
    generate_demo_data(tmp_path, cob=COB, deals=2000)
    fx_path = tmp_path / "fx_rates" / TAG / "part-00000.parquet"
    fx = pq.read_table(fx_path)
    pq.write_table(fx.filter(pa.compute.not_equal(fx["currency"], "GBP")), fx_path)
    with pytest.raises(ValueError, match="GBP"):
        compute_lcr_reference(tmp_path, COB)


def _write_inputs(root: Path, rows: list[dict[str, object]], rates: dict[str, str]) -> None:
    defaults: dict[str, object] = {
        "cob_date": COB,
        "counterparty_id": "CP0000001",
        "counterparty_type": "BANK",
        "rating": None,
        "currency": "USD",
        "maturity_date": None,
        "insured": False,
        "encumbered": False,
        "collateral_level": None,
    }
    records = [
        {**defaults, "deal_id": f"X{i}", **row, "amount": Decimal(str(row["amount"]))}
        for i, row in enumerate(rows)
    ]
    deals = pa.Table.from_pylist(records, schema=EXPECTED_DEALS_SCHEMA)
    fx = pa.Table.from_pylist(
        [{"cob_date": COB, "currency": c, "usd_rate": Decimal(r)} for c, r in rates.items()],
        schema=EXPECTED_FX_SCHEMA,
    )
    for name, table in (("deals", deals), ("fx_rates", fx)):
        (root / name / TAG).mkdir(parents=True)
        pq.write_table(table, root / name / TAG / "part-00000.parquet")


def test_reference_caps_on_hand_computed_example(tmp_path: Path) -> None:
    le1 = {"legal_entity": "LE001"}
    le2 = {"legal_entity": "LE002"}
    rows: list[dict[str, object]] = [
        # LE001: l1 = 100, l2b = 100 (equity 200 * 0.50), outflows 100, inflows 90 (> 75)
        {**le1, "product_type": "CASH", "amount": "100.00"},
        {**le1, "product_type": "EQUITY", "amount": "200.00"},
        {**le1, "product_type": "WHOLESALE_DEPOSIT", "counterparty_type": "BANK", "amount": "100"},
        {**le1, "product_type": "LOAN", "counterparty_type": "BANK", "amount": "90.00"},
        # LE002: l1 = 300 (EUR 250 * 1.2), l2a = 85 (100 * 0.85), outflows 40, no inflows
        {**le2, "product_type": "CB_RESERVE", "currency": "EUR", "amount": "250.00"},
        {**le2, "product_type": "GOV_BOND", "rating": "A", "amount": "100.00"},
        {**le2, "product_type": "WHOLESALE_DEPOSIT", "counterparty_type": "NFC", "amount": "100"},
        # ignored: encumbered cash, term loan
        {**le2, "product_type": "CASH", "encumbered": True, "amount": "1000.00"},
        {
            **le2,
            "product_type": "LOAN",
            "maturity_date": COB + timedelta(days=31),
            "amount": "1000.00",
        },
    ]
    _write_inputs(tmp_path, rows, {"USD": "1", "EUR": "1.2"})
    result = compute_lcr_reference(tmp_path, COB).set_index("legal_entity")

    def exact(value: Fraction) -> Decimal:  # 50 significant digits, like the reference
        with localcontext(prec=50):
            return Decimal(value.numerator) / Decimal(value.denominator)

    le1_adj15 = max(Fraction(100) - Fraction(15, 85) * 100, Fraction(100) - Fraction(25))
    assert result.loc["LE001", "adj_15"] == exact(le1_adj15)  # 82.35294117647...
    assert result.loc["LE001", "adj_40"] == 0
    # with the 15% cap binding alone, HQLA = L1 / 0.85
    assert result.loc["LE001", "hqla"] == exact(Fraction(100) / Fraction("0.85"))
    assert result.loc["LE001", "capped_inflows"] == Decimal(75)
    assert result.loc["LE001", "net_outflows"] == Decimal(25)
    assert result.loc["LE001", "lcr"] == pytest.approx(float(Fraction(2000, 17) / 25), rel=1e-15)

    assert result.loc["LE002", "l1"] == Decimal(300)
    assert result.loc["LE002", "l2a"] == Decimal(85)
    assert result.loc["LE002", "outflows"] == Decimal(40)
    assert result.loc["LE002", "inflows"] == 0
    assert result.loc["LE002", "adj_15"] == 0 and result.loc["LE002", "adj_40"] == 0
    assert result.loc["LE002", "lcr"] == pytest.approx(385 / 40, rel=1e-15)

    # group: l1 400, l2a 85, l2b 100 -> adj_15 = max(100 - 15/85*485, 100 - 100, 0) = 14.41...
    group = result.loc["GROUP"]
    assert group["adj_15"] == exact(Fraction(100) - Fraction(15, 85) * 485)
    assert group["adj_40"] == 0
    assert group["outflows"] == Decimal(140) and group["inflows"] == Decimal(90)
    assert group["net_outflows"] == Decimal(50)


def test_reference_null_ratio_when_no_net_outflows(tmp_path: Path) -> None:
    _write_inputs(
        tmp_path,
        [{"legal_entity": "LE001", "product_type": "CASH", "amount": "10.00"}],
        {"USD": "1"},
    )
    result = compute_lcr_reference(tmp_path, COB)
    assert list(result["legal_entity"]) == ["LE001", "GROUP"]
    assert result["net_outflows"].tolist() == [Decimal(0), Decimal(0)]
    assert result["lcr"].isna().all()


def test_classify_reference_rule_order() -> None:
    cob = COB
    rows = [
        ("CASH", "CENTRAL_BANK", None, None, False, True, None, "NON_HQLA"),
        ("GOV_BOND", "SOVEREIGN", "AA-", None, False, False, None, "L1"),
        ("GOV_BOND", "SOVEREIGN", None, None, False, False, None, "NON_HQLA"),
        ("COVERED_BOND", "BANK", "A+", None, False, False, None, "NON_HQLA"),
        ("CORP_BOND", "NFC", "BBB-", None, False, False, None, "L2B_CORP"),
        ("RMBS", "OTHER_FI", "AA-", None, False, False, None, "NON_HQLA"),
        ("RETAIL_DEPOSIT", "RETAIL", None, 30, True, False, None, "RETAIL_STABLE"),
        ("RETAIL_DEPOSIT", "RETAIL", None, 31, True, False, None, "RETAIL_TERM"),
        ("SME_DEPOSIT", "SME", None, 31, False, False, None, "WHOLESALE_TERM"),
        ("OPERATIONAL_DEPOSIT", "NFC", None, 400, True, False, None, "OPERATIONAL_INSURED"),
        ("WHOLESALE_DEPOSIT", "CENTRAL_BANK", None, None, True, False, None, "NFC_INSURED"),
        ("WHOLESALE_DEPOSIT", "BANK", None, None, True, False, None, "FI_UNSECURED"),
        ("REPO", "BANK", None, 5, False, False, None, "SF_OTHER"),
        ("REPO", "BANK", None, 45, False, False, "L1", "WHOLESALE_TERM"),
        ("REVERSE_REPO", "BANK", None, 0, False, False, "L2B_RMBS", "SL_L2B_RMBS"),
        ("CREDIT_FACILITY", "SOVEREIGN", None, 900, False, False, None, "CF_NFC"),
        ("LIQUIDITY_FACILITY", "SME", None, None, False, False, None, "LF_RETAIL"),
        ("LOAN", "CENTRAL_BANK", None, None, False, True, None, "IN_FI"),
        ("LOAN", "SOVEREIGN", None, 10, False, False, None, "IN_NFC"),
    ]
    deals = pd.DataFrame(
        [
            {
                "product_type": r[0],
                "counterparty_type": r[1],
                "rating": r[2],
                "maturity_date": None if r[3] is None else cob + timedelta(days=r[3]),
                "insured": r[4],
                "encumbered": r[5],
                "collateral_level": r[6],
            }
            for r in rows
        ]
    )
    assert classify_reference(deals, cob).tolist() == [r[7] for r in rows]

    unknown = deals.iloc[:1].assign(product_type="SWAP")
    with pytest.raises(ValueError, match="SWAP"):
        classify_reference(unknown, cob)
