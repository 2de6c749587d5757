"""Synthetic, deterministic input data for the LCR reference pipeline.

The generator writes the layout the reference calculation (simplified BCBS 238 LCR) reads::

    root/deals/cob=YYYY-MM-DD/part-00000.parquet   (at most ``MAX_ROWS_PER_PART`` rows each)
    root/fx_rates/cob=YYYY-MM-DD/part-00000.parquet
    root/entities.parquet

Every deal is drawn from a *scenario*: a product together with the attribute values that lead
to one branch of the classification rules (e.g. "short, insured retail deposit" or "encumbered
government bond").  Every scenario is guaranteed to occur once the data set is large enough,
so every LCR category and every classification branch is exercised.  Asset and inflow amounts
are then scaled per legal entity so that each entity lands on a plausible LCR (roughly
110%-230%) with a per-entity HQLA composition profile; some profiles are chosen so that the
15% (Level 2B) and 40% (Level 2) caps and the 75% inflow cap bind.

Only numpy and pyarrow are used (this module is imported by the CLI); 1,000,000 deals take a
few seconds.  The output is byte-identical for identical arguments.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "CURRENCIES",
    "DEALS_SCHEMA",
    "ENTITIES_SCHEMA",
    "FX_RATES_SCHEMA",
    "MAX_ROWS_PER_PART",
    "DemoDataSummary",
    "generate_demo_data",
]

#: Maximum number of rows in one ``deals`` Parquet part file.
MAX_ROWS_PER_PART = 500_000

DEALS_SCHEMA = pa.schema(
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

FX_RATES_SCHEMA = pa.schema(
    [
        pa.field("cob_date", pa.date32(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("usd_rate", pa.decimal128(18, 8), nullable=False),
    ]
)

ENTITIES_SCHEMA = pa.schema(
    [
        pa.field("legal_entity", pa.string(), nullable=False),
        pa.field("entity_name", pa.string(), nullable=False),
        pa.field("country", pa.string(), nullable=False),
        pa.field("parent_entity", pa.string(), nullable=True),
    ]
)

# currency -> (approximate USD per unit, share of deals)
_FX_BASE: dict[str, tuple[float, float]] = {
    "USD": (1.0, 0.38),
    "EUR": (1.0825, 0.24),
    "GBP": (1.2650, 0.13),
    "JPY": (0.006650, 0.08),
    "CHF": (1.1240, 0.06),
    "CAD": (0.7380, 0.06),
    "AUD": (0.6540, 0.05),
}
CURRENCIES: tuple[str, ...] = tuple(_FX_BASE)

_COUNTERPARTY_TYPES = ("RETAIL", "SME", "NFC", "SOVEREIGN", "CENTRAL_BANK", "BANK", "OTHER_FI")
_CP_INDEX = {name: i for i, name in enumerate(_COUNTERPARTY_TYPES)}

_PRODUCTS = (
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
)
_PRODUCT_INDEX = {name: i for i, name in enumerate(_PRODUCTS)}

_RATINGS = (
    "AAA",
    "AA+",
    "AA",
    "AA-",
    "A+",
    "A",
    "A-",
    "BBB+",
    "BBB",
    "BBB-",
    "BB+",
    "BB",
    "BB-",
    "B+",
    "B",
    "B-",
    "CCC+",
    "CCC",
    "CCC-",
    "CC",
    "C",
    "D",
)
_RATING_INDEX = {name: i for i, name in enumerate(_RATINGS)}
_AA_MINUS_OR_BETTER = ("AAA", "AA+", "AA", "AA-")
_A_BAND = ("A+", "A", "A-")
_A_PLUS_TO_BBB_MINUS = ("A+", "A", "A-", "BBB+", "BBB", "BBB-")
_AA_OR_BETTER = ("AAA", "AA+", "AA")

_COLLATERAL = ("L1", "L2A", "L2B_RMBS", "L2B_OTHER", "NONE")
_COLLATERAL_INDEX = {name: i for i, name in enumerate(_COLLATERAL)}

# LCR buckets used to calibrate amounts (index into the per-entity bucket sums).
_L1, _L2A, _L2B, _OUT, _IN, _NONE = range(6)
_BUCKET_INDEX = {"L1": _L1, "L2A": _L2A, "L2B": _L2B, "OUTFLOW": _OUT, "INFLOW": _IN, "NONE": _NONE}

# lcr_category -> (bucket, factor): BCBS 238 Annex 4 factors, used only to calibrate amounts.
_CATEGORY_FACTORS: dict[str, tuple[str, float]] = {
    "L1": ("L1", 1.00),
    "L2A": ("L2A", 0.85),
    "L2B_RMBS": ("L2B", 0.75),
    "L2B_CORP": ("L2B", 0.50),
    "L2B_EQUITY": ("L2B", 0.50),
    "NON_HQLA": ("NONE", 0.00),
    "RETAIL_STABLE": ("OUTFLOW", 0.05),
    "RETAIL_LESS_STABLE": ("OUTFLOW", 0.10),
    "RETAIL_TERM": ("NONE", 0.00),
    "SME_STABLE": ("OUTFLOW", 0.05),
    "SME_LESS_STABLE": ("OUTFLOW", 0.10),
    "OPERATIONAL": ("OUTFLOW", 0.25),
    "OPERATIONAL_INSURED": ("OUTFLOW", 0.05),
    "NFC_UNSECURED": ("OUTFLOW", 0.40),
    "NFC_INSURED": ("OUTFLOW", 0.20),
    "FI_UNSECURED": ("OUTFLOW", 1.00),
    "WHOLESALE_TERM": ("NONE", 0.00),
    "SF_L1": ("OUTFLOW", 0.00),
    "SF_L2A": ("OUTFLOW", 0.15),
    "SF_L2B_RMBS": ("OUTFLOW", 0.25),
    "SF_L2B_OTHER": ("OUTFLOW", 0.50),
    "SF_OTHER": ("OUTFLOW", 1.00),
    "CF_RETAIL": ("OUTFLOW", 0.05),
    "CF_NFC": ("OUTFLOW", 0.10),
    "CF_BANK": ("OUTFLOW", 0.40),
    "CF_OTHER_FI": ("OUTFLOW", 0.40),
    "LF_RETAIL": ("OUTFLOW", 0.05),
    "LF_NFC": ("OUTFLOW", 0.30),
    "LF_BANK": ("OUTFLOW", 0.40),
    "LF_OTHER_FI": ("OUTFLOW", 1.00),
    "SL_L1": ("INFLOW", 0.00),
    "SL_L2A": ("INFLOW", 0.15),
    "SL_L2B_RMBS": ("INFLOW", 0.25),
    "SL_L2B_OTHER": ("INFLOW", 0.50),
    "SL_OTHER": ("INFLOW", 1.00),
    "IN_RETAIL": ("INFLOW", 0.50),
    "IN_NFC": ("INFLOW", 0.50),
    "IN_FI": ("INFLOW", 1.00),
    "INFLOW_TERM": ("NONE", 0.00),
}

# Maturity modes of a scenario.
_MAT_OPEN = "open"  # always null (cash, reserves, equity)
_MAT_BOND = "bond"  # security maturity, 1 day .. 30 years (irrelevant to classification)
_MAT_SHORT = "short"  # null (open / on demand) or cob .. cob+30 (boundary included)
_MAT_LONG = "long"  # cob+31 (boundary included) .. cob+5 years
_MAT_ANY = "any"  # null or cob .. cob+5 years (maturity irrelevant to classification)

_SHORT_DAYS = 30
_MAX_TERM_DAYS = 5 * 365
_MAX_BOND_DAYS = 30 * 365

_WHOLESALE_CPS = (("NFC", 0.4), ("SOVEREIGN", 0.1), ("CENTRAL_BANK", 0.05), ("BANK", 0.3))
_SFT_CPS = (("BANK", 0.5), ("OTHER_FI", 0.35), ("CENTRAL_BANK", 0.15))


@dataclass(frozen=True)
class _Scenario:
    """One way of producing a deal, leading to one classification branch (``category``)."""

    product: str
    category: str  # the LCR category the attributes below must classify to
    weight: float  # relative frequency
    median_usd: float
    sigma: float
    counterparties: tuple[tuple[str, float], ...]
    ratings: tuple[str, ...] = ()  # uniform choice; empty means always null
    rating_null_p: float = 0.0
    insured_p: float = 0.0
    encumbered_p: float = 0.0
    maturity: str = _MAT_ANY
    open_p: float = 0.0  # share of null maturities for short / any
    collateral: tuple[str, ...] = ()  # uniform choice; empty means always null
    collateral_null_p: float = 0.0


def _s(
    product: str,
    category: str,
    weight: float,
    median_usd: float,
    counterparties: Sequence[tuple[str, float]],
    *,
    sigma: float = 1.0,
    **kwargs: Any,
) -> _Scenario:
    """Shorthand constructor of a :class:`_Scenario`."""
    return _Scenario(product, category, weight, median_usd, sigma, tuple(counterparties), **kwargs)


_CP_RATING: dict[str, Any] = {
    "ratings": _RATINGS[:10],
    "rating_null_p": 0.7,
}  # counterparty rating, often null

_SCENARIOS: tuple[_Scenario, ...] = (
    # ---- assets -------------------------------------------------------------------------
    _s("CASH", "L1", 1.0, 1e7, [("CENTRAL_BANK", 1.0)], maturity=_MAT_OPEN),
    _s("CB_RESERVE", "L1", 0.75, 7.5e7, [("CENTRAL_BANK", 1.0)], maturity=_MAT_OPEN, sigma=0.8),
    _s(
        "GOV_BOND",
        "L1",
        2.5,
        1.25e7,
        [("SOVEREIGN", 0.9), ("CENTRAL_BANK", 0.1)],
        ratings=_AA_MINUS_OR_BETTER,
        maturity=_MAT_BOND,
    ),
    _s("GOV_BOND", "L2A", 1.25, 7.5e6, [("SOVEREIGN", 1.0)], ratings=_A_BAND, maturity=_MAT_BOND),
    _s(
        "CORP_BOND",
        "L2A",
        1.0,
        4e6,
        [("NFC", 0.7), ("OTHER_FI", 0.2), ("BANK", 0.1)],
        ratings=_AA_MINUS_OR_BETTER,
        maturity=_MAT_BOND,
    ),
    _s(
        "COVERED_BOND",
        "L2A",
        1.0,
        5e6,
        [("BANK", 1.0)],
        ratings=_AA_MINUS_OR_BETTER,
        maturity=_MAT_BOND,
    ),
    _s(
        "RMBS",
        "L2B_RMBS",
        1.0,
        4e6,
        [("OTHER_FI", 0.8), ("BANK", 0.2)],
        ratings=_AA_OR_BETTER,
        maturity=_MAT_BOND,
    ),
    _s(
        "CORP_BOND",
        "L2B_CORP",
        1.5,
        2.5e6,
        [("NFC", 1.0)],
        ratings=_A_PLUS_TO_BBB_MINUS,
        maturity=_MAT_BOND,
    ),
    _s(
        "EQUITY",
        "L2B_EQUITY",
        1.5,
        1.5e6,
        [("NFC", 0.7), ("BANK", 0.15), ("OTHER_FI", 0.15)],
        maturity=_MAT_OPEN,
    ),
    # A0: encumbered assets are never HQLA, even cash and AAA government bonds.
    _s(
        "GOV_BOND",
        "NON_HQLA",
        1.0,
        1.25e7,
        [("SOVEREIGN", 1.0)],
        ratings=_AA_MINUS_OR_BETTER,
        encumbered_p=1.0,
        maturity=_MAT_BOND,
    ),
    _s(
        "CASH",
        "NON_HQLA",
        0.15,
        2.5e6,
        [("CENTRAL_BANK", 1.0)],
        encumbered_p=1.0,
        maturity=_MAT_OPEN,
    ),
    _s(
        "CORP_BOND",
        "NON_HQLA",
        0.35,
        2.5e6,
        [("NFC", 1.0)],
        ratings=_AA_MINUS_OR_BETTER + _A_BAND,
        encumbered_p=1.0,
        maturity=_MAT_BOND,
    ),
    _s(
        "RMBS",
        "NON_HQLA",
        0.25,
        4e6,
        [("OTHER_FI", 1.0)],
        ratings=_AA_OR_BETTER,
        encumbered_p=1.0,
        maturity=_MAT_BOND,
    ),
    _s("EQUITY", "NON_HQLA", 0.25, 1.5e6, [("NFC", 1.0)], encumbered_p=1.0, maturity=_MAT_OPEN),
    # A8: assets outside every HQLA rule (low or missing ratings, AA- RMBS, A-rated covered).
    _s(
        "GOV_BOND",
        "NON_HQLA",
        0.5,
        5e6,
        [("SOVEREIGN", 1.0)],
        ratings=_RATINGS[7:17],
        rating_null_p=0.2,
        maturity=_MAT_BOND,
    ),
    _s(
        "CORP_BOND",
        "NON_HQLA",
        0.75,
        2e6,
        [("NFC", 1.0)],
        ratings=_RATINGS[10:],
        rating_null_p=0.2,
        maturity=_MAT_BOND,
    ),
    _s(
        "COVERED_BOND",
        "NON_HQLA",
        0.35,
        3e6,
        [("BANK", 1.0)],
        ratings=_RATINGS[4:12],
        rating_null_p=0.2,
        maturity=_MAT_BOND,
    ),
    _s(
        "RMBS",
        "NON_HQLA",
        0.35,
        3e6,
        [("OTHER_FI", 1.0)],
        ratings=_RATINGS[3:15],
        rating_null_p=0.2,
        maturity=_MAT_BOND,
    ),
    # ---- funding (outflows) -------------------------------------------------------------
    _s(
        "RETAIL_DEPOSIT",
        "RETAIL_STABLE",
        8.0,
        30e3,
        [("RETAIL", 1.0)],
        insured_p=1.0,
        maturity=_MAT_SHORT,
        open_p=0.8,
    ),
    _s(
        "RETAIL_DEPOSIT",
        "RETAIL_LESS_STABLE",
        5.0,
        150e3,
        [("RETAIL", 1.0)],
        maturity=_MAT_SHORT,
        open_p=0.8,
    ),
    _s(
        "RETAIL_DEPOSIT",
        "RETAIL_TERM",
        3.0,
        80e3,
        [("RETAIL", 1.0)],
        insured_p=0.7,
        maturity=_MAT_LONG,
    ),
    _s(
        "SME_DEPOSIT",
        "SME_STABLE",
        3.0,
        200e3,
        [("SME", 1.0)],
        insured_p=1.0,
        maturity=_MAT_SHORT,
        open_p=0.7,
    ),
    _s(
        "SME_DEPOSIT",
        "SME_LESS_STABLE",
        3.0,
        600e3,
        [("SME", 1.0)],
        maturity=_MAT_SHORT,
        open_p=0.7,
    ),
    _s(
        "SME_DEPOSIT",
        "WHOLESALE_TERM",
        1.5,
        500e3,
        [("SME", 1.0)],
        insured_p=0.5,
        maturity=_MAT_LONG,
    ),
    _s(
        "OPERATIONAL_DEPOSIT",
        "OPERATIONAL_INSURED",
        1.0,
        250e3,
        [("NFC", 0.5), ("SME", 0.3), ("BANK", 0.1), ("OTHER_FI", 0.1)],
        insured_p=1.0,
        maturity=_MAT_ANY,
        open_p=0.7,
    ),
    _s(
        "OPERATIONAL_DEPOSIT",
        "OPERATIONAL",
        2.5,
        8e6,
        [("NFC", 0.6), ("SME", 0.1), ("BANK", 0.15), ("OTHER_FI", 0.15)],
        maturity=_MAT_ANY,
        open_p=0.7,
        **_CP_RATING,
    ),
    _s(
        "WHOLESALE_DEPOSIT",
        "WHOLESALE_TERM",
        2.0,
        10e6,
        [*_WHOLESALE_CPS, ("OTHER_FI", 0.15)],
        insured_p=0.1,
        maturity=_MAT_LONG,
        **_CP_RATING,
    ),
    _s(
        "WHOLESALE_DEPOSIT",
        "NFC_INSURED",
        1.0,
        200e3,
        [("NFC", 0.8), ("SOVEREIGN", 0.1), ("CENTRAL_BANK", 0.1)],
        insured_p=1.0,
        maturity=_MAT_SHORT,
        open_p=0.5,
    ),
    _s(
        "WHOLESALE_DEPOSIT",
        "NFC_UNSECURED",
        4.0,
        15e6,
        [("NFC", 0.75), ("SOVEREIGN", 0.15), ("CENTRAL_BANK", 0.1)],
        maturity=_MAT_SHORT,
        open_p=0.5,
        **_CP_RATING,
    ),
    _s(
        "WHOLESALE_DEPOSIT",
        "FI_UNSECURED",
        3.0,
        10e6,
        [("BANK", 0.5), ("OTHER_FI", 0.4), ("RETAIL", 0.05), ("SME", 0.05)],
        insured_p=0.1,
        maturity=_MAT_SHORT,
        open_p=0.3,
        **_CP_RATING,
    ),
    _s(
        "REPO",
        "WHOLESALE_TERM",
        1.0,
        40e6,
        _SFT_CPS,
        maturity=_MAT_LONG,
        collateral=_COLLATERAL,
        collateral_null_p=0.1,
    ),
    _s("REPO", "SF_L1", 3.0, 40e6, _SFT_CPS, maturity=_MAT_SHORT, open_p=0.3, collateral=("L1",)),
    _s("REPO", "SF_L2A", 1.5, 30e6, _SFT_CPS, maturity=_MAT_SHORT, open_p=0.3, collateral=("L2A",)),
    _s(
        "REPO",
        "SF_L2B_RMBS",
        0.7,
        20e6,
        _SFT_CPS,
        maturity=_MAT_SHORT,
        open_p=0.3,
        collateral=("L2B_RMBS",),
    ),
    _s(
        "REPO",
        "SF_L2B_OTHER",
        0.7,
        20e6,
        _SFT_CPS,
        maturity=_MAT_SHORT,
        open_p=0.3,
        collateral=("L2B_OTHER",),
    ),
    _s(
        "REPO",
        "SF_OTHER",
        1.0,
        15e6,
        _SFT_CPS,
        maturity=_MAT_SHORT,
        open_p=0.3,
        collateral=("NONE",),
        collateral_null_p=0.4,
    ),
    _s(
        "CREDIT_FACILITY",
        "CF_RETAIL",
        3.0,
        25e3,
        [("RETAIL", 0.7), ("SME", 0.3)],
        maturity=_MAT_ANY,
        open_p=0.3,
    ),
    _s(
        "CREDIT_FACILITY",
        "CF_NFC",
        3.0,
        20e6,
        [("NFC", 0.85), ("SOVEREIGN", 0.1), ("CENTRAL_BANK", 0.05)],
        maturity=_MAT_ANY,
        **_CP_RATING,
    ),
    _s("CREDIT_FACILITY", "CF_BANK", 0.7, 15e6, [("BANK", 1.0)], maturity=_MAT_ANY, **_CP_RATING),
    _s(
        "CREDIT_FACILITY",
        "CF_OTHER_FI",
        0.7,
        15e6,
        [("OTHER_FI", 1.0)],
        maturity=_MAT_ANY,
        **_CP_RATING,
    ),
    _s(
        "LIQUIDITY_FACILITY",
        "LF_RETAIL",
        0.7,
        100e3,
        [("RETAIL", 0.4), ("SME", 0.6)],
        maturity=_MAT_ANY,
        open_p=0.3,
    ),
    _s(
        "LIQUIDITY_FACILITY",
        "LF_NFC",
        1.5,
        20e6,
        [("NFC", 0.85), ("SOVEREIGN", 0.1), ("CENTRAL_BANK", 0.05)],
        maturity=_MAT_ANY,
        **_CP_RATING,
    ),
    _s("LIQUIDITY_FACILITY", "LF_BANK", 0.5, 15e6, [("BANK", 1.0)], maturity=_MAT_ANY),
    _s("LIQUIDITY_FACILITY", "LF_OTHER_FI", 0.7, 10e6, [("OTHER_FI", 1.0)], maturity=_MAT_ANY),
    # ---- inflows ------------------------------------------------------------------------
    _s(
        "REVERSE_REPO",
        "INFLOW_TERM",
        1.0,
        40e6,
        _SFT_CPS,
        maturity=_MAT_LONG,
        collateral=_COLLATERAL,
        collateral_null_p=0.1,
    ),
    _s(
        "REVERSE_REPO",
        "SL_L1",
        2.5,
        40e6,
        _SFT_CPS,
        maturity=_MAT_SHORT,
        open_p=0.3,
        collateral=("L1",),
    ),
    _s(
        "REVERSE_REPO",
        "SL_L2A",
        1.0,
        25e6,
        _SFT_CPS,
        maturity=_MAT_SHORT,
        open_p=0.3,
        collateral=("L2A",),
    ),
    _s(
        "REVERSE_REPO",
        "SL_L2B_RMBS",
        0.5,
        20e6,
        _SFT_CPS,
        maturity=_MAT_SHORT,
        open_p=0.3,
        collateral=("L2B_RMBS",),
    ),
    _s(
        "REVERSE_REPO",
        "SL_L2B_OTHER",
        0.5,
        20e6,
        _SFT_CPS,
        maturity=_MAT_SHORT,
        open_p=0.3,
        collateral=("L2B_OTHER",),
    ),
    _s(
        "REVERSE_REPO",
        "SL_OTHER",
        0.8,
        15e6,
        _SFT_CPS,
        maturity=_MAT_SHORT,
        open_p=0.3,
        collateral=("NONE",),
        collateral_null_p=0.4,
    ),
    _s(
        "LOAN",
        "INFLOW_TERM",
        8.0,
        300e3,
        [("RETAIL", 0.5), ("SME", 0.2), ("NFC", 0.2), ("BANK", 0.05), ("OTHER_FI", 0.05)],
        encumbered_p=0.1,
        maturity=_MAT_LONG,
        sigma=1.4,
        **_CP_RATING,
    ),
    _s(
        "LOAN",
        "IN_RETAIL",
        3.0,
        80e3,
        [("RETAIL", 0.6), ("SME", 0.4)],
        encumbered_p=0.05,
        maturity=_MAT_SHORT,
        open_p=0.1,
    ),
    _s(
        "LOAN",
        "IN_NFC",
        3.0,
        8e6,
        [("NFC", 0.85), ("SOVEREIGN", 0.15)],
        encumbered_p=0.05,
        maturity=_MAT_SHORT,
        open_p=0.1,
        **_CP_RATING,
    ),
    _s(
        "LOAN",
        "IN_FI",
        2.0,
        15e6,
        [("BANK", 0.6), ("OTHER_FI", 0.3), ("CENTRAL_BANK", 0.1)],
        maturity=_MAT_SHORT,
        open_p=0.2,
        **_CP_RATING,
    ),
)

# Scenarios every legal entity gets at least once (one per bucket and then some), so that each
# entity has amounts in L1, L2A, L2B, outflows and inflows whenever the data set is big enough.
_PER_ENTITY_CATEGORIES = ("L1", "L2A", "L2B_CORP", "L2B_EQUITY", "NFC_UNSECURED", "IN_NFC")


@dataclass(frozen=True)
class _Profile:
    """Target shape of one legal entity's liquidity position."""

    composition: tuple[float, float, float]  # L1, L2A, L2B shares of weighted HQLA before caps
    inflow_ratio: tuple[float, float]  # range of inflows / outflows (> 0.75 makes the cap bind)
    lcr: tuple[float, float]  # range of the target ratio
    # deal-count multipliers for L1, L2A, L2B, outflow, inflow, no-bucket scenarios
    deal_mix: tuple[float, float, float, float, float, float] = (1, 1, 1, 1, 1, 1)


_PROFILES: tuple[_Profile, ...] = (
    # L1-dominated, no cap binds
    _Profile((0.78, 0.14, 0.08), (0.35, 0.60), (1.30, 2.20)),
    # heavy L2B holdings: the 15% cap binds
    _Profile((0.55, 0.10, 0.35), (0.30, 0.55), (1.10, 1.60), (1, 1, 4, 1, 1, 1)),
    # heavy L2A and L2B holdings: the 15% and the 40% caps bind
    _Profile((0.35, 0.45, 0.20), (0.30, 0.50), (1.10, 1.60), (0.7, 3.5, 3, 1, 1, 1)),
    # lender: inflows above 75% of outflows, the inflow cap binds
    _Profile((0.70, 0.20, 0.10), (0.90, 1.20), (1.20, 2.00), (0.5, 0.5, 0.5, 1, 1.8, 1)),
)

# (country, entity name) per legal entity; cycled with a numeric suffix beyond the list.
_ENTITY_NAMES = (
    ("GB", "Regflow Group plc"),
    ("US", "Regflow Securities USA Inc."),
    ("DE", "Regflow Bank Deutschland AG"),
    ("JP", "Regflow Securities Japan K.K."),
    ("CH", "Regflow Bank (Switzerland) AG"),
    ("FR", "Regflow Bank France SA"),
    ("CA", "Regflow Capital Canada Ltd."),
    ("AU", "Regflow Australia Pty Ltd"),
    ("IE", "Regflow Europe DAC"),
    ("SG", "Regflow Asia Pte. Ltd."),
)


@dataclass(frozen=True)
class DemoDataSummary:
    """What :func:`generate_demo_data` wrote."""

    root: Path
    cob: date
    deals: int
    entities: int
    currencies: tuple[str, ...]
    files: tuple[Path, ...]


def generate_demo_data(
    root: Path,
    *,
    cob: date,
    deals: int = 10_000,
    entities: int = 5,
    seed: int = 42,
    progress: Callable[[str], None] | None = None,
) -> DemoDataSummary:
    """Write deterministic synthetic LCR input data for ``cob`` under ``root``.

    An existing partition of the same COB is replaced; other COBs are left alone.
    ``entities.parquet`` is rewritten.  Returns a summary listing every file written.
    """
    if deals < 1:
        raise ValueError(f"deals must be >= 1, got {deals}")
    if not 1 <= entities <= 999:
        raise ValueError(f"entities must be between 1 and 999, got {entities}")

    def report(message: str) -> None:
        if progress is not None:
            progress(message)

    root = Path(root)
    rng = np.random.default_rng(seed)
    cob_tag = f"cob={cob.isoformat()}"

    entity_ids = [f"LE{i + 1:03d}" for i in range(entities)]
    rates = _fx_rates(rng)
    fx_table = _fx_table(cob, rates)
    entities_table = _entities_table(entity_ids)
    report(f"generating {deals} deals for {entities} entities, cob {cob.isoformat()}")
    deals_table = _deals_table(rng, cob, deals, entity_ids, rates)

    files: list[Path] = []
    parts = [
        deals_table.slice(offset, MAX_ROWS_PER_PART)
        for offset in range(0, deals_table.num_rows, MAX_ROWS_PER_PART)
    ]
    written = 0

    def deal_written(rows: int) -> None:
        nonlocal written
        written += rows
        report(f"deals: {written}/{deals} rows written")

    files += _write_partition(root / "deals" / cob_tag, parts, on_part=deal_written)
    files += _write_partition(root / "fx_rates" / cob_tag, [fx_table])
    report(f"fx_rates: {fx_table.num_rows} rows written")
    entities_path = root / "entities.parquet"
    _write_file_atomic(entities_table, entities_path)
    files.append(entities_path)
    report(f"entities: {entities_table.num_rows} rows written")

    return DemoDataSummary(
        root=root,
        cob=cob,
        deals=deals,
        entities=entities,
        currencies=CURRENCIES,
        files=tuple(files),
    )


# ---------------------------------------------------------------------------------------------
# tables


def _fx_rates(rng: np.random.Generator) -> np.ndarray:
    """USD per unit for ``CURRENCIES`` (USD exactly 1), rounded to 8 decimals."""
    base = np.array([rate for rate, _ in _FX_BASE.values()])
    jitter = 1.0 + rng.normal(0.0, 0.01, size=base.size)
    rates: np.ndarray = np.round(base * jitter, 8)
    rates[CURRENCIES.index("USD")] = 1.0
    return rates


def _fx_table(cob: date, rates: np.ndarray) -> pa.Table:
    units = np.rint(rates * 1e8).astype(np.int64)
    n = len(CURRENCIES)
    return pa.Table.from_arrays(
        [
            _dates(np.full(n, _epoch_day(cob), dtype=np.int64)),
            pa.array(CURRENCIES, type=pa.string()),
            _decimals(units, pa.decimal128(18, 8)),
        ],
        schema=FX_RATES_SCHEMA,
    )


def _entities_table(entity_ids: list[str]) -> pa.Table:
    countries: list[str] = []
    names: list[str] = []
    for i in range(len(entity_ids)):
        country, name = _ENTITY_NAMES[i % len(_ENTITY_NAMES)]
        if i >= len(_ENTITY_NAMES):
            name = f"{name} {i // len(_ENTITY_NAMES) + 1}"
        countries.append(country)
        names.append(name)
    parents = [None] + [entity_ids[0]] * (len(entity_ids) - 1)
    return pa.Table.from_arrays(
        [
            pa.array(entity_ids, type=pa.string()),
            pa.array(names, type=pa.string()),
            pa.array(countries, type=pa.string()),
            pa.array(parents, type=pa.string()),
        ],
        schema=ENTITIES_SCHEMA,
    )


def _deals_table(
    rng: np.random.Generator, cob: date, n: int, entity_ids: list[str], rates: np.ndarray
) -> pa.Table:
    k = len(entity_ids)
    n_scen = len(_SCENARIOS)
    cob_day = _epoch_day(cob)

    # ---- entity and scenario of every deal -------------------------------------------------
    entity_w = 1.0 / (np.arange(k) + 2.0)  # LE001 (the parent) is the largest
    entity = rng.choice(k, size=n, p=entity_w / entity_w.sum()).astype(np.int64)
    scen_w = np.array([s.weight for s in _SCENARIOS])
    scen_bucket = np.array([_BUCKET_INDEX[_CATEGORY_FACTORS[s.category][0]] for s in _SCENARIOS])
    scenario = np.empty(n, dtype=np.int64)
    profile_of_entity = np.arange(k) % len(_PROFILES)
    for p, profile in enumerate(_PROFILES):
        rows = np.flatnonzero(profile_of_entity[entity] == p)
        w = scen_w * np.array(profile.deal_mix)[scen_bucket]
        scenario[rows] = rng.choice(n_scen, size=rows.size, p=w / w.sum())

    # Guaranteed coverage: every entity gets the per-entity scenarios, then every scenario
    # occurs at least once; placed at random rows so that deal ids show no pattern.
    forced: list[tuple[int, int]] = []
    for e in range(k):
        for category in _PER_ENTITY_CATEGORIES:
            first = next(i for i, s in enumerate(_SCENARIOS) if s.category == category)
            forced.append((e, first))
    forced += [(i % k, i) for i in range(n_scen)]
    forced = forced[:n]
    if forced:
        rows = rng.permutation(n)[: len(forced)]
        entity[rows] = [e for e, _ in forced]
        scenario[rows] = [s for _, s in forced]

    currency = rng.choice(len(CURRENCIES), size=n, p=[w for _, w in _FX_BASE.values()])

    # ---- scenario-driven attributes ---------------------------------------------------------
    product = np.empty(n, dtype=np.int64)
    cp_type = np.empty(n, dtype=np.int64)
    rating = np.full(n, -1, dtype=np.int64)
    insured = np.zeros(n, dtype=bool)
    encumbered = np.zeros(n, dtype=bool)
    maturity = np.full(n, -1, dtype=np.int64)  # days after cob, -1 = null
    collateral = np.full(n, -1, dtype=np.int64)
    amount_usd = np.empty(n, dtype=np.float64)
    bucket = np.empty(n, dtype=np.int64)
    factor = np.empty(n, dtype=np.float64)

    order = np.argsort(scenario, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(scenario, minlength=n_scen))])
    for j, sc in enumerate(_SCENARIOS):
        idx = order[bounds[j] : bounds[j + 1]]
        m = idx.size
        if m == 0:
            continue
        product[idx] = _PRODUCT_INDEX[sc.product]
        cps = [_CP_INDEX[name] for name, _ in sc.counterparties]
        cp_p = np.array([p for _, p in sc.counterparties])
        cp_type[idx] = rng.choice(cps, size=m, p=cp_p / cp_p.sum())
        if sc.ratings:
            r = rng.choice([_RATING_INDEX[x] for x in sc.ratings], size=m)
            rating[idx] = np.where(rng.random(m) < sc.rating_null_p, -1, r)
        insured[idx] = rng.random(m) < sc.insured_p
        encumbered[idx] = rng.random(m) < sc.encumbered_p
        maturity[idx] = _maturities(rng, sc, m)
        if sc.collateral:
            c = rng.choice([_COLLATERAL_INDEX[x] for x in sc.collateral], size=m)
            collateral[idx] = np.where(rng.random(m) < sc.collateral_null_p, -1, c)
        amount_usd[idx] = np.clip(
            rng.lognormal(math.log(sc.median_usd), sc.sigma, size=m), 1_000.0, 500e6
        )
        bucket_name, fac = _CATEGORY_FACTORS[sc.category]
        bucket[idx] = _BUCKET_INDEX[bucket_name]
        factor[idx] = fac

    # ---- calibrate amounts per entity (LCR level, HQLA composition, inflow ratio) ----------
    weighted = np.bincount(entity * 6 + bucket, weights=amount_usd * factor, minlength=k * 6)
    scale = _calibration(rng, weighted.reshape(k, 6))
    amount_usd *= scale[entity, bucket]

    rate = rates[currency]
    cents = np.maximum(np.rint(amount_usd / rate * 100.0), 100_000).astype(np.int64)

    # ---- counterparties: the id encodes the type, so a counterparty always has one type -----
    pool = max(50, min(999_999, n // 10))
    cp_number = cp_type * 1_000_000 + rng.integers(1, pool + 1, size=n)

    # ---- build Arrow columns ----------------------------------------------------------------
    deal_ids = pc.binary_join_element_wise(
        f"D{cob:%Y%m%d}-", _zero_padded(np.arange(1, n + 1), 8), ""
    )
    cp_ids = pc.binary_join_element_wise("CP", _zero_padded(cp_number, 7), "")
    columns = [
        deal_ids,
        _dates(np.full(n, cob_day, dtype=np.int64)),
        _labels(entity_ids, entity),
        cp_ids,
        _labels(_COUNTERPARTY_TYPES, cp_type),
        _labels(_PRODUCTS, product),
        _labels(_RATINGS, rating),
        _labels(CURRENCIES, currency),
        _decimals(cents, pa.decimal128(20, 2)),
        _dates(cob_day + maturity, null=maturity < 0),
        pa.array(insured, type=pa.bool_()),
        pa.array(encumbered, type=pa.bool_()),
        _labels(_COLLATERAL, collateral),
    ]
    return pa.Table.from_arrays(columns, schema=DEALS_SCHEMA)


def _maturities(rng: np.random.Generator, sc: _Scenario, m: int) -> np.ndarray:
    """Days after cob for ``m`` deals of scenario ``sc``; -1 means null (open / on demand)."""
    if sc.maturity == _MAT_OPEN:
        return np.full(m, -1, dtype=np.int64)
    if sc.maturity == _MAT_BOND:
        return rng.integers(1, _MAX_BOND_DAYS + 1, size=m)
    if sc.maturity == _MAT_LONG:
        days = rng.integers(_SHORT_DAYS + 1, _MAX_TERM_DAYS + 1, size=m)
        # make the first day beyond the horizon common, to exercise the boundary
        return np.where(rng.random(m) < 0.05, _SHORT_DAYS + 1, days)
    if sc.maturity == _MAT_SHORT:
        days = rng.integers(0, _SHORT_DAYS + 1, size=m)
        days = np.where(rng.random(m) < 0.05, _SHORT_DAYS, days)  # the last day inside
    else:  # _MAT_ANY
        days = rng.integers(0, _MAX_TERM_DAYS + 1, size=m)
    result: np.ndarray = np.where(rng.random(m) < sc.open_p, -1, days)
    return result


def _calibration(rng: np.random.Generator, weighted: np.ndarray) -> np.ndarray:
    """Per (entity, bucket) amount multipliers giving each entity its profile's shape.

    ``weighted`` holds the weighted USD sums per entity (rows) and bucket (columns).  Outflows
    stay as drawn; inflows are scaled to the profile's inflow ratio and the three HQLA buckets
    to its composition and to a target LCR (all formulas are homogeneous of degree one).
    """
    k = weighted.shape[0]
    scale = np.ones((k, 6))
    for e in range(k):
        profile = _PROFILES[e % len(_PROFILES)]
        inflow_ratio = rng.uniform(*profile.inflow_ratio)
        target_lcr = rng.uniform(*profile.lcr)
        outflows, inflows = weighted[e, _OUT], weighted[e, _IN]
        if outflows <= 0:
            continue
        if inflows > 0:
            scale[e, _IN] = inflow_ratio * outflows / inflows
            net_outflows = outflows * (1.0 - min(inflow_ratio, 0.75))
        else:
            net_outflows = outflows
        hqla_buckets = (_L1, _L2A, _L2B)
        present = np.array([weighted[e, b] > 0 for b in hqla_buckets])
        comp = np.array(profile.composition) * present
        if comp[0] <= 0:
            continue
        comp /= comp.sum()
        hqla_share = _hqla_after_caps(*comp)
        total = target_lcr * net_outflows / hqla_share
        for b, share in zip(hqla_buckets, comp, strict=True):
            if share > 0:
                scale[e, b] = share * total / weighted[e, b]
    return scale


def _hqla_after_caps(l1: float, l2a: float, l2b: float) -> float:
    adj_15 = max(l2b - 15 / 85 * (l1 + l2a), l2b - 15 / 60 * l1, 0.0)
    adj_40 = max(l2a + l2b - adj_15 - 2 / 3 * l1, 0.0)
    return l1 + l2a + l2b - adj_15 - adj_40


# ---------------------------------------------------------------------------------------------
# Arrow helpers


def _epoch_day(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def _dates(days: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    values = pa.array(days.astype(np.int32), type=pa.int32(), mask=null)
    return values.cast(pa.date32())


def _labels(labels: Sequence[str], codes: np.ndarray) -> pa.Array:
    """Strings ``labels[code]``; a negative code gives null."""
    null = codes < 0
    index = pa.array(np.where(null, 0, codes), type=pa.int32(), mask=null if null.any() else None)
    return pc.take(pa.array(list(labels), type=pa.string()), index)


def _zero_padded(numbers: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(numbers, type=pa.int64()), pa.string()), width, "0")


def _decimals(unscaled: np.ndarray, type_: pa.Decimal128Type) -> pa.Array:
    """Decimal array from unscaled integers (e.g. cents for scale 2), exactly and fast.

    A decimal128 value is a 16-byte little-endian two's-complement integer: the int64 value
    in the low word and its sign extension in the high word.
    """
    words = np.empty((unscaled.size, 2), dtype="<i8")
    words[:, 0] = unscaled
    words[:, 1] = np.where(unscaled < 0, -1, 0)
    return pa.Array.from_buffers(type_, unscaled.size, [None, pa.py_buffer(words.tobytes())])


# ---------------------------------------------------------------------------------------------
# writing


def _sibling(path: Path, kind: str) -> Path:
    """A hidden, unique, not yet existing path next to ``path`` (created later, with the umask)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.{kind}")


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")


def _write_file_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        _write_parquet(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_partition(
    target: Path, parts: Sequence[pa.Table], on_part: Callable[[int], None] | None = None
) -> list[Path]:
    """Write ``parts`` as ``target/part-NNNNN.parquet``, replacing ``target`` as a whole.

    The files are written to a hidden sibling directory which is then swapped in, so a
    previous, larger partition leaves no stale part files behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, "tmp")
    staging.mkdir()
    old: Path | None = None
    try:
        names = []
        for i, part in enumerate(parts):
            name = f"part-{i:05d}.parquet"
            _write_parquet(part, staging / name)
            names.append(name)
            if on_part is not None:
                on_part(part.num_rows)
        if target.exists():
            old = _sibling(target, "old")
            os.replace(target, old)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old, target)  # put the previous partition back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return [target / name for name in names]
