"""Independent reference computation of the simplified BCBS 238 LCR.

Written only from the reference README (classification tables, factors, cap formulas); it must
not import anything from ``regflow``: it is the oracle the framework's output is checked
against.  Amounts stay exact from input to output: per-category sums are exact DuckDB decimal
sums, every further step is done with :class:`fractions.Fraction`, and results are returned as
:class:`decimal.Decimal` rounded to 50 significant digits (far below the 0.01 USD tolerance).
"""

from __future__ import annotations

import csv
import decimal
from datetime import date, timedelta
from fractions import Fraction
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# The BCBS 238 factor table is spec data (copied from BCBS 238 Annex 4): the oracle reads the
# one copy regflow ships, ``src/regflow/reference/lcr_categories.csv``, as plain CSV (no regflow
# import; its classification and arithmetic below are its own). The pipeline's project copy,
# pipelines/reference/lcr_categories.csv, is checked identical (tests/test_reference_data.py).
FACTOR_TABLE = Path(__file__).resolve().parent.parent / "src/regflow/reference/lcr_categories.csv"


def _read_factor_table(path: Path) -> dict[str, tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return {r["lcr_category"]: (r["bucket"], r["factor"]) for r in csv.DictReader(f)}


# lcr_category -> (bucket, factor as its exact decimal text)
LCR_CATEGORIES: dict[str, tuple[str, str]] = _read_factor_table(FACTOR_TABLE)

BUCKET_COLUMNS = {
    "L1": "l1",
    "L2A": "l2a",
    "L2B": "l2b",
    "OUTFLOW": "outflows",
    "INFLOW": "inflows",
}

OUTPUT_COLUMNS = [
    "cob_date",
    "legal_entity",
    "l1",
    "l2a",
    "l2b",
    "adj_15",
    "adj_40",
    "hqla",
    "outflows",
    "inflows",
    "capped_inflows",
    "net_outflows",
    "lcr",
]

ASSETS = ("CASH", "CB_RESERVE", "GOV_BOND", "CORP_BOND", "COVERED_BOND", "RMBS", "EQUITY")
AA_MINUS_OR_BETTER = ("AAA", "AA+", "AA", "AA-")
A_BAND = ("A+", "A", "A-")
A_PLUS_TO_BBB_MINUS = ("A+", "A", "A-", "BBB+", "BBB", "BBB-")
AA_OR_BETTER = ("AAA", "AA+", "AA")
NFC_SOV_CB = ("NFC", "SOVEREIGN", "CENTRAL_BANK")
RETAIL_SME = ("RETAIL", "SME")
COLLATERAL_SUFFIX = {"L1": "L1", "L2A": "L2A", "L2B_RMBS": "L2B_RMBS", "L2B_OTHER": "L2B_OTHER"}

_DECIMAL_CONTEXT = decimal.Context(prec=50)


def classify_reference(deals: pd.DataFrame, cob: date) -> pd.Series:
    """LCR category of every deal (README step 1, first matching rule wins).

    Raises ValueError if a deal matches no rule (a product or counterparty type outside the
    README's tables).
    """
    product = deals["product_type"].to_numpy(dtype=object)
    cp = deals["counterparty_type"].to_numpy(dtype=object)
    rating = deals["rating"].to_numpy(dtype=object)
    collateral = deals["collateral_level"].to_numpy(dtype=object)
    insured = deals["insured"].to_numpy(dtype=object) == True  # noqa: E712 (null -> False)
    encumbered = deals["encumbered"].to_numpy(dtype=object) == True  # noqa: E712
    maturity = pd.to_datetime(deals["maturity_date"])
    horizon = pd.Timestamp(cob + timedelta(days=30))
    short = (maturity.isna() | (maturity <= horizon)).to_numpy(dtype=bool)

    def is_(values: np.ndarray, *options: str) -> np.ndarray:
        return np.isin(values, np.array(options, dtype=object))

    p = product
    rules: list[tuple[np.ndarray, str]] = []
    # Assets A0..A8
    asset = is_(p, *ASSETS)
    rules += [
        (asset & encumbered, "NON_HQLA"),
        (is_(p, "CASH", "CB_RESERVE"), "L1"),
        (is_(p, "GOV_BOND") & is_(rating, *AA_MINUS_OR_BETTER), "L1"),
        (is_(p, "GOV_BOND") & is_(rating, *A_BAND), "L2A"),
        (is_(p, "CORP_BOND", "COVERED_BOND") & is_(rating, *AA_MINUS_OR_BETTER), "L2A"),
        (is_(p, "RMBS") & is_(rating, *AA_OR_BETTER), "L2B_RMBS"),
        (is_(p, "CORP_BOND") & is_(rating, *A_PLUS_TO_BBB_MINUS), "L2B_CORP"),
        (is_(p, "EQUITY"), "L2B_EQUITY"),
        (asset, "NON_HQLA"),
    ]
    # Funding
    prod = is_(p, "RETAIL_DEPOSIT")
    rules += [
        (prod & ~short, "RETAIL_TERM"),
        (prod & insured, "RETAIL_STABLE"),
        (prod, "RETAIL_LESS_STABLE"),
    ]
    prod = is_(p, "SME_DEPOSIT")
    rules += [
        (prod & ~short, "WHOLESALE_TERM"),
        (prod & insured, "SME_STABLE"),
        (prod, "SME_LESS_STABLE"),
    ]
    prod = is_(p, "OPERATIONAL_DEPOSIT")
    rules += [(prod & insured, "OPERATIONAL_INSURED"), (prod, "OPERATIONAL")]
    prod = is_(p, "WHOLESALE_DEPOSIT")
    rules += [
        (prod & ~short, "WHOLESALE_TERM"),
        (prod & is_(cp, *NFC_SOV_CB) & insured, "NFC_INSURED"),
        (prod & is_(cp, *NFC_SOV_CB), "NFC_UNSECURED"),
        (prod & is_(cp, "BANK", "OTHER_FI", "RETAIL", "SME"), "FI_UNSECURED"),
    ]
    prod = is_(p, "REPO")
    rules.append((prod & ~short, "WHOLESALE_TERM"))
    rules += [(prod & is_(collateral, c), f"SF_{s}") for c, s in COLLATERAL_SUFFIX.items()]
    rules.append((prod, "SF_OTHER"))
    for product_name, prefix in (("CREDIT_FACILITY", "CF"), ("LIQUIDITY_FACILITY", "LF")):
        prod = is_(p, product_name)
        rules += [
            (prod & is_(cp, *RETAIL_SME), f"{prefix}_RETAIL"),
            (prod & is_(cp, *NFC_SOV_CB), f"{prefix}_NFC"),
            (prod & is_(cp, "BANK"), f"{prefix}_BANK"),
            (prod & is_(cp, "OTHER_FI"), f"{prefix}_OTHER_FI"),
        ]
    # Inflows
    prod = is_(p, "REVERSE_REPO")
    rules.append((prod & ~short, "INFLOW_TERM"))
    rules += [(prod & is_(collateral, c), f"SL_{s}") for c, s in COLLATERAL_SUFFIX.items()]
    rules.append((prod, "SL_OTHER"))
    prod = is_(p, "LOAN")
    rules += [
        (prod & ~short, "INFLOW_TERM"),
        (prod & is_(cp, *RETAIL_SME), "IN_RETAIL"),
        (prod & is_(cp, "NFC", "SOVEREIGN"), "IN_NFC"),
        (prod & is_(cp, "BANK", "OTHER_FI", "CENTRAL_BANK"), "IN_FI"),
    ]

    category = np.full(len(deals), None, dtype=object)
    for condition, name in rules:  # first match wins: only fill rows still unclassified
        take = condition & (category == None)  # noqa: E711
        category[take] = name
    unmatched = category == None  # noqa: E711
    if unmatched.any():
        bad = deals.loc[unmatched, ["product_type", "counterparty_type"]].drop_duplicates()
        raise ValueError(f"deals matching no classification rule: {bad.to_dict('records')}")
    return pd.Series(category, index=deals.index, name="lcr_category", dtype=object)


def read_partition(folder: Path) -> pa.Table:
    """All ``*.parquet`` files of one partition folder, in file-name order."""
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet files in {folder}")
    return pa.concat_tables([pq.read_table(f) for f in files])


def compute_lcr_reference(data_root: Path, cob: date) -> pd.DataFrame:
    """LCR per legal entity plus the GROUP row, for the ``cob`` partition under ``data_root``.

    Amount columns hold exact :class:`decimal.Decimal` values (rounded to 50 significant
    digits where the caps introduce non-terminating fractions), ``lcr`` a float (None when
    ``net_outflows`` is 0).  Rows are sorted by ``legal_entity`` with GROUP last.
    """
    data_root = Path(data_root)
    tag = f"cob={cob.isoformat()}"
    deals_arrow = read_partition(data_root / "deals" / tag)
    fx_arrow = read_partition(data_root / "fx_rates" / tag)

    deals = deals_arrow.select(
        [
            "cob_date",
            "legal_entity",
            "counterparty_type",
            "product_type",
            "rating",
            "maturity_date",
            "insured",
            "encumbered",
            "collateral_level",
        ]
    ).to_pandas()
    other_cobs = set(deals["cob_date"]) - {cob}
    if other_cobs:
        raise ValueError(f"deals of partition {tag} carry other cob_dates: {sorted(other_cobs)}")

    categories = classify_reference(deals, cob)
    classified = pa.table(
        {
            "cob_date": deals_arrow["cob_date"],
            "legal_entity": deals_arrow["legal_entity"],
            "currency": deals_arrow["currency"],
            "amount": deals_arrow["amount"],
            "lcr_category": pa.array(categories.to_list(), type=pa.string()),
        }
    )
    con = duckdb.connect()
    con.register("classified", classified)
    con.register("fx", fx_arrow)
    missing = con.sql(
        """
        select distinct d.cob_date, d.currency
        from classified d
        left join fx f on f.cob_date = d.cob_date and f.currency = d.currency
        where f.usd_rate is null
        order by 1, 2
        """
    ).fetchall()
    if missing:
        raise ValueError(f"no fx rate for deal currencies (cob_date, currency): {missing}")

    # Exact decimal sums of the original amounts per (entity, currency, category); the
    # multiplications by rate and factor are done exactly in Python below.
    grouped = con.sql(
        """
        select d.cob_date, d.legal_entity, d.lcr_category, f.usd_rate,
               sum(d.amount) as amount
        from classified d
        join fx f on f.cob_date = d.cob_date and f.currency = d.currency
        group by all
        """
    ).fetchall()

    sums: dict[tuple[date, str], dict[str, Fraction]] = {}
    for cob_date, entity, category, usd_rate, amount in grouped:
        bucket, factor = LCR_CATEGORIES[category]
        row = sums.setdefault((cob_date, entity), {c: Fraction(0) for c in BUCKET_COLUMNS.values()})
        if bucket == "NONE":
            continue
        row[BUCKET_COLUMNS[bucket]] += (
            Fraction(decimal.Decimal(amount))
            * Fraction(decimal.Decimal(usd_rate))
            * Fraction(factor)
        )

    records = [_lcr_row(cob_date, entity, b) for (cob_date, entity), b in sorted(sums.items())]
    for cob_date in sorted({key[0] for key in sums}):
        group = {
            c: sum((b[c] for (d, _), b in sums.items() if d == cob_date), Fraction(0))
            for c in BUCKET_COLUMNS.values()
        }
        records.append(_lcr_row(cob_date, "GROUP", group))
    return pd.DataFrame.from_records(records, columns=OUTPUT_COLUMNS)


def lcr_from_buckets(
    l1: Fraction, l2a: Fraction, l2b: Fraction, outflows: Fraction, inflows: Fraction
) -> dict[str, Fraction | None]:
    """README step 3 caps, HQLA, inflow cap and ratio, in exact rational arithmetic."""
    adj_15 = max(l2b - Fraction(15, 85) * (l1 + l2a), l2b - Fraction(15, 60) * l1, Fraction(0))
    adj_40 = max(l2a + l2b - adj_15 - Fraction(2, 3) * l1, Fraction(0))
    hqla = l1 + l2a + l2b - adj_15 - adj_40
    capped_inflows = min(inflows, Fraction(3, 4) * outflows)
    net_outflows = outflows - capped_inflows
    return {
        "l1": l1,
        "l2a": l2a,
        "l2b": l2b,
        "adj_15": adj_15,
        "adj_40": adj_40,
        "hqla": hqla,
        "outflows": outflows,
        "inflows": inflows,
        "capped_inflows": capped_inflows,
        "net_outflows": net_outflows,
        "lcr": None if net_outflows == 0 else hqla / net_outflows,
    }


def _lcr_row(cob_date: date, entity: str, buckets: dict[str, Fraction]) -> dict[str, object]:
    values = lcr_from_buckets(
        buckets["l1"], buckets["l2a"], buckets["l2b"], buckets["outflows"], buckets["inflows"]
    )
    row: dict[str, object] = {"cob_date": cob_date, "legal_entity": entity}
    for name, value in values.items():
        if name == "lcr":
            row[name] = None if value is None else float(value)
        else:
            assert value is not None
            row[name] = _to_decimal(value)
    return row


def _to_decimal(value: Fraction) -> decimal.Decimal:
    num = decimal.Decimal(value.numerator)
    return _DECIMAL_CONTEXT.divide(num, decimal.Decimal(value.denominator))
