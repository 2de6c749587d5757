"""The demo generator's tables, read from data files packaged with regflow.

- ``demo/scenarios.csv``: the deal scenarios (one row per classification branch);
- ``demo/tables.yaml``: currencies, counterparty types, products, ratings, collateral levels,
  entity profiles and names;
- ``reference/lcr_categories.csv``: the BCBS 238 factor table (bucket and factor of every LCR
  category), the same file the LCR pipeline's factor table is checked against.

The files are read once, checked for consistency (a scenario naming an unknown product, say,
fails here and not as an index error deep in the generator) and returned as one frozen
:class:`DemoTables`.
"""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

# Maturity modes of a scenario (see the header of demo/scenarios.csv).
MAT_OPEN, MAT_BOND, MAT_SHORT, MAT_LONG, MAT_ANY = "open", "bond", "short", "long", "any"
MATURITIES = (MAT_OPEN, MAT_BOND, MAT_SHORT, MAT_LONG, MAT_ANY)

# The LCR buckets the generator calibrates amounts on, in the order of the calibration's
# columns and of a profile's ``deal_mix``.
BUCKETS = ("L1", "L2A", "L2B", "OUTFLOW", "INFLOW", "NONE")


@dataclass(frozen=True)
class Scenario:
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
    maturity: str = MAT_ANY
    open_p: float = 0.0  # share of null maturities for short / any
    collateral: tuple[str, ...] = ()  # uniform choice; empty means always null
    collateral_null_p: float = 0.0


@dataclass(frozen=True)
class Profile:
    """Target shape of one legal entity's liquidity position."""

    composition: tuple[float, ...]  # L1, L2A, L2B shares of weighted HQLA before caps
    inflow_ratio: tuple[float, float]  # range of inflows / outflows (> 0.75 makes the cap bind)
    lcr: tuple[float, float]  # range of the target ratio
    deal_mix: tuple[float, ...]  # deal-count multipliers per bucket (see BUCKETS)


@dataclass(frozen=True)
class DemoTables:
    """Everything the generator draws from."""

    fx_base: dict[str, tuple[float, float]]  # currency -> (USD per unit, share of deals)
    counterparty_types: tuple[str, ...]
    products: tuple[str, ...]
    ratings: tuple[str, ...]
    collateral_levels: tuple[str, ...]
    category_factors: dict[str, tuple[str, float]]  # lcr_category -> (bucket, factor)
    scenarios: tuple[Scenario, ...]
    per_entity_categories: tuple[str, ...]
    profiles: tuple[Profile, ...]
    entity_names: tuple[tuple[str, str], ...]  # (country, name)

    @property
    def currencies(self) -> tuple[str, ...]:
        return tuple(self.fx_base)


def _text(path: str) -> str:
    """A data file packaged with regflow (``path`` relative to the regflow package)."""
    return resources.files("regflow").joinpath(path).read_text(encoding="utf-8")


def _words(cell: str) -> tuple[str, ...]:
    return tuple(cell.split())


def _scenario(row: dict[str, str]) -> Scenario:
    counterparties = []
    for item in _words(row["counterparties"]):
        name, _, p = item.partition(":")
        counterparties.append((name, float(p)))
    return Scenario(
        product=row["product"],
        category=row["category"],
        weight=float(row["weight"]),
        median_usd=float(row["median_usd"]),
        sigma=float(row["sigma"]),
        counterparties=tuple(counterparties),
        ratings=_words(row["ratings"]),
        rating_null_p=float(row["rating_null_p"]),
        insured_p=float(row["insured_p"]),
        encumbered_p=float(row["encumbered_p"]),
        maturity=row["maturity"],
        open_p=float(row["open_p"]),
        collateral=_words(row["collateral"]),
        collateral_null_p=float(row["collateral_null_p"]),
    )


def read_csv(text: str) -> list[dict[str, str]]:
    """Rows of a CSV text whose lines starting with ``#`` are comments."""
    lines = [line for line in io.StringIO(text) if not line.lstrip().startswith("#")]
    return list(csv.DictReader(lines))


def category_factors() -> dict[str, tuple[str, float]]:
    """``lcr_category -> (bucket, factor)`` from the packaged BCBS 238 factor table."""
    rows = read_csv(_text("reference/lcr_categories.csv"))
    return {r["lcr_category"]: (r["bucket"], float(r["factor"])) for r in rows}


def check_tables(tables: DemoTables) -> None:
    """Every name a scenario or list uses is declared: a broken data file fails here."""
    problems: list[str] = []
    known = {
        "product": set(tables.products),
        "category": set(tables.category_factors),
        "counterparty type": set(tables.counterparty_types),
        "rating": set(tables.ratings),
        "collateral level": set(tables.collateral_levels),
        "maturity": set(MATURITIES),
    }

    def need(kind: str, value: str, where: str) -> None:
        if value not in known[kind]:
            problems.append(f"{where}: unknown {kind} {value!r}")

    for i, s in enumerate(tables.scenarios, start=1):
        where = f"demo/scenarios.csv scenario {i} ({s.product} -> {s.category})"
        need("product", s.product, where)
        need("category", s.category, where)
        need("maturity", s.maturity, where)
        for name, _ in s.counterparties:
            need("counterparty type", name, where)
        for rating in s.ratings:
            need("rating", rating, where)
        for level in s.collateral:
            need("collateral level", level, where)
    for category in tables.per_entity_categories:
        if not any(s.category == category for s in tables.scenarios):
            problems.append(f"demo/tables.yaml per_entity_categories: no scenario of {category}")
    for bucket, _ in tables.category_factors.values():
        if bucket not in BUCKETS:
            problems.append(f"reference/lcr_categories.csv: unknown bucket {bucket!r}")
    if problems:
        raise ValueError("inconsistent demo tables:\n  " + "\n  ".join(problems))


@functools.cache
def load_tables() -> DemoTables:
    """The demo tables, read and checked once per process."""
    meta: dict[str, Any] = yaml.safe_load(_text("demo/tables.yaml"))
    tables = DemoTables(
        fx_base={
            str(cur): (float(v["usd_rate"]), float(v["share"]))
            for cur, v in meta["currencies"].items()
        },
        counterparty_types=tuple(meta["counterparty_types"]),
        products=tuple(meta["products"]),
        ratings=tuple(meta["ratings"]),
        collateral_levels=tuple(meta["collateral_levels"]),
        category_factors=category_factors(),
        scenarios=tuple(_scenario(r) for r in read_csv(_text("demo/scenarios.csv"))),
        per_entity_categories=tuple(meta["per_entity_categories"]),
        profiles=tuple(
            Profile(
                composition=tuple(p["composition"]),
                inflow_ratio=(p["inflow_ratio"][0], p["inflow_ratio"][1]),
                lcr=(p["lcr"][0], p["lcr"][1]),
                deal_mix=tuple(p["deal_mix"]),
            )
            for p in meta["profiles"]
        ),
        entity_names=tuple((str(c), str(n)) for c, n in meta["entities"]),
    )
    check_tables(tables)
    return tables
