"""The demo's three tables, drawn from the scenarios and calibrated per legal entity.

Every deal is drawn from a *scenario* (``demo/scenarios.csv``): a product together with the
attribute values that lead to one branch of the classification rules (e.g. "short, insured
retail deposit" or "encumbered government bond").  Every scenario is guaranteed to occur once
the data set is large enough, so every LCR category and every classification branch is
exercised.  Asset and inflow amounts are then scaled per legal entity so that each entity lands
on a plausible LCR (roughly 110%-230%) with its profile's HQLA composition
(``demo/tables.yaml``); some profiles are chosen so that the 15% (Level 2B) and 40% (Level 2)
caps and the 75% inflow cap bind.  The calibration weighs amounts with the BCBS 238 factors of
``reference/lcr_categories.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from regflow.demo.arrow_io import dates, decimals, epoch_day, labels, zero_padded
from regflow.demo.tables import (
    BUCKETS,
    MAT_BOND,
    MAT_LONG,
    MAT_OPEN,
    MAT_SHORT,
    DemoTables,
    Profile,
    Scenario,
)

__all__ = ["DEALS_SCHEMA", "ENTITIES_SCHEMA", "FX_RATES_SCHEMA"]

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


# LCR buckets used to calibrate amounts (index into the per-entity bucket sums).
_L1, _L2A, _L2B, _OUT, _IN, _NONE = range(len(BUCKETS))
_BUCKET_INDEX = {name: i for i, name in enumerate(BUCKETS)}

_SHORT_DAYS = 30
_MAX_TERM_DAYS = 5 * 365
_MAX_BOND_DAYS = 30 * 365


def fx_rates(t: DemoTables, rng: np.random.Generator) -> np.ndarray:
    """USD per unit of every currency (USD exactly 1), rounded to 8 decimals."""
    base = np.array([rate for rate, _ in t.fx_base.values()])
    jitter = 1.0 + rng.normal(0.0, 0.01, size=base.size)
    rates: np.ndarray = np.round(base * jitter, 8)
    rates[t.currencies.index("USD")] = 1.0
    return rates


def fx_table(t: DemoTables, cob: date, rates: np.ndarray) -> pa.Table:
    units = np.rint(rates * 1e8).astype(np.int64)
    n = len(t.currencies)
    return pa.Table.from_arrays(
        [
            dates(np.full(n, epoch_day(cob), dtype=np.int64)),
            pa.array(t.currencies, type=pa.string()),
            decimals(units, pa.decimal128(18, 8)),
        ],
        schema=FX_RATES_SCHEMA,
    )


def entities_table(t: DemoTables, entity_ids: list[str]) -> pa.Table:
    countries: list[str] = []
    names: list[str] = []
    for i in range(len(entity_ids)):
        country, name = t.entity_names[i % len(t.entity_names)]
        if i >= len(t.entity_names):
            name = f"{name} {i // len(t.entity_names) + 1}"
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


def deals_table(
    t: DemoTables,
    rng: np.random.Generator,
    cob: date,
    n: int,
    entity_ids: list[str],
    rates: np.ndarray,
) -> pa.Table:
    """``n`` deals drawn from the scenarios, amounts calibrated per entity (see the module)."""
    product_index = {name: i for i, name in enumerate(t.products)}
    cp_index = {name: i for i, name in enumerate(t.counterparty_types)}
    rating_index = {name: i for i, name in enumerate(t.ratings)}
    collateral_index = {name: i for i, name in enumerate(t.collateral_levels)}
    k = len(entity_ids)
    n_scen = len(t.scenarios)
    cob_day = epoch_day(cob)

    # ---- entity and scenario of every deal -------------------------------------------------
    entity_w = 1.0 / (np.arange(k) + 2.0)  # LE001 (the parent) is the largest
    entity = rng.choice(k, size=n, p=entity_w / entity_w.sum()).astype(np.int64)
    scen_w = np.array([s.weight for s in t.scenarios])
    scen_bucket = np.array([_BUCKET_INDEX[t.category_factors[s.category][0]] for s in t.scenarios])
    scenario = np.empty(n, dtype=np.int64)
    profile_of_entity = np.arange(k) % len(t.profiles)
    for p, profile in enumerate(t.profiles):
        rows = np.flatnonzero(profile_of_entity[entity] == p)
        w = scen_w * np.array(profile.deal_mix)[scen_bucket]
        scenario[rows] = rng.choice(n_scen, size=rows.size, p=w / w.sum())

    # Guaranteed coverage: every entity gets the per-entity scenarios, then every scenario
    # occurs at least once; placed at random rows so that deal ids show no pattern.
    forced: list[tuple[int, int]] = []
    for e in range(k):
        for category in t.per_entity_categories:
            first = next(i for i, s in enumerate(t.scenarios) if s.category == category)
            forced.append((e, first))
    forced += [(i % k, i) for i in range(n_scen)]
    forced = forced[:n]
    if forced:
        rows = rng.permutation(n)[: len(forced)]
        entity[rows] = [e for e, _ in forced]
        scenario[rows] = [s for _, s in forced]

    currency = rng.choice(len(t.currencies), size=n, p=[w for _, w in t.fx_base.values()])

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
    for j, sc in enumerate(t.scenarios):
        idx = order[bounds[j] : bounds[j + 1]]
        m = idx.size
        if m == 0:
            continue
        product[idx] = product_index[sc.product]
        cps = [cp_index[name] for name, _ in sc.counterparties]
        cp_p = np.array([p for _, p in sc.counterparties])
        cp_type[idx] = rng.choice(cps, size=m, p=cp_p / cp_p.sum())
        if sc.ratings:
            r = rng.choice([rating_index[x] for x in sc.ratings], size=m)
            rating[idx] = np.where(rng.random(m) < sc.rating_null_p, -1, r)
        insured[idx] = rng.random(m) < sc.insured_p
        encumbered[idx] = rng.random(m) < sc.encumbered_p
        maturity[idx] = _maturities(rng, sc, m)
        if sc.collateral:
            c = rng.choice([collateral_index[x] for x in sc.collateral], size=m)
            collateral[idx] = np.where(rng.random(m) < sc.collateral_null_p, -1, c)
        amount_usd[idx] = np.clip(
            rng.lognormal(math.log(sc.median_usd), sc.sigma, size=m), 1_000.0, 500e6
        )
        bucket_name, fac = t.category_factors[sc.category]
        bucket[idx] = _BUCKET_INDEX[bucket_name]
        factor[idx] = fac

    # ---- calibrate amounts per entity (LCR level, HQLA composition, inflow ratio) ----------
    weighted = np.bincount(entity * 6 + bucket, weights=amount_usd * factor, minlength=k * 6)
    scale = _calibration(t.profiles, rng, weighted.reshape(k, 6))
    amount_usd *= scale[entity, bucket]

    rate = rates[currency]
    cents = np.maximum(np.rint(amount_usd / rate * 100.0), 100_000).astype(np.int64)

    # ---- counterparties: the id encodes the type, so a counterparty always has one type -----
    pool = max(50, min(999_999, n // 10))
    cp_number = cp_type * 1_000_000 + rng.integers(1, pool + 1, size=n)

    # ---- build Arrow columns ----------------------------------------------------------------
    deal_ids = pc.binary_join_element_wise(
        f"D{cob:%Y%m%d}-", zero_padded(np.arange(1, n + 1), 8), ""
    )
    cp_ids = pc.binary_join_element_wise("CP", zero_padded(cp_number, 7), "")
    columns = [
        deal_ids,
        dates(np.full(n, cob_day, dtype=np.int64)),
        labels(entity_ids, entity),
        cp_ids,
        labels(t.counterparty_types, cp_type),
        labels(t.products, product),
        labels(t.ratings, rating),
        labels(t.currencies, currency),
        decimals(cents, pa.decimal128(20, 2)),
        dates(cob_day + maturity, null=maturity < 0),
        pa.array(insured, type=pa.bool_()),
        pa.array(encumbered, type=pa.bool_()),
        labels(t.collateral_levels, collateral),
    ]
    return pa.Table.from_arrays(columns, schema=DEALS_SCHEMA)


def _maturities(rng: np.random.Generator, sc: Scenario, m: int) -> np.ndarray:
    """Days after cob for ``m`` deals of scenario ``sc``; -1 means null (open / on demand)."""
    if sc.maturity == MAT_OPEN:
        return np.full(m, -1, dtype=np.int64)
    if sc.maturity == MAT_BOND:
        return rng.integers(1, _MAX_BOND_DAYS + 1, size=m)
    if sc.maturity == MAT_LONG:
        days = rng.integers(_SHORT_DAYS + 1, _MAX_TERM_DAYS + 1, size=m)
        # make the first day beyond the horizon common, to exercise the boundary
        return np.where(rng.random(m) < 0.05, _SHORT_DAYS + 1, days)
    if sc.maturity == MAT_SHORT:
        days = rng.integers(0, _SHORT_DAYS + 1, size=m)
        days = np.where(rng.random(m) < 0.05, _SHORT_DAYS, days)  # the last day inside
    else:  # MAT_ANY
        days = rng.integers(0, _MAX_TERM_DAYS + 1, size=m)
    result: np.ndarray = np.where(rng.random(m) < sc.open_p, -1, days)
    return result


def _calibration(
    profiles: Sequence[Profile], rng: np.random.Generator, weighted: np.ndarray
) -> np.ndarray:
    """Per (entity, bucket) amount multipliers giving each entity its profile's shape.

    ``weighted`` holds the weighted USD sums per entity (rows) and bucket (columns).  Outflows
    stay as drawn; inflows are scaled to the profile's inflow ratio and the three HQLA buckets
    to its composition and to a target LCR (all formulas are homogeneous of degree one).
    """
    k = weighted.shape[0]
    scale = np.ones((k, 6))
    for e in range(k):
        profile = profiles[e % len(profiles)]
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
