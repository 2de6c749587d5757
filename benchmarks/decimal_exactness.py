"""Decimal exactness: the LCR on 5M generated deals against an exact computation, per column.

regflow computes every deal's ``amount_usd`` and ``weighted_amount`` to its last digit and
sums them exactly (issue 17; before, Spark rounded each weighted amount to 6 decimals and the
GROUP sums drifted by a cent per million deals or so). This benchmark measures it at scale:

* the LCR stages ``weigh``, ``entity_buckets`` and ``entity_lcr`` of ``pipelines/lcr.yaml``
  run through ``regflow.runtime.executor.run_stage`` on ``--deals`` generated deals
  (``regflow demo-data``'s generator), once per engine: ``default`` (the shipped size
  thresholds: at 5M deals the entity aggregate is finished by Spark, at 1M on the driver),
  ``spark`` (every driver-side path off) and, with ``--engines``, ``driver`` (the entity
  aggregate finished on the driver at any size);
* per deal, DuckDB computes ``amount * usd_rate`` and ``amount * usd_rate * factor`` exactly
  (DECIMAL(38,10) and DECIMAL(38,12), failing rather than rounding) and the benchmark reports
  the largest difference to regflow's values;
* per entity and for the GROUP row, the independent oracle ``tests/lcr_reference.py``
  (DuckDB decimal sums, then exact rational arithmetic from the reference README) gives the
  figures; the benchmark reports the largest difference per column;
* for comparison, what rounding every deal's weighted amount half-up to 6 decimals (the old
  behaviour) does to the GROUP sums, computed in DuckDB.

The sums must differ by exactly 0; the caps (divisions) by far less than a cent. Any amount
off by more than 0.01 fails the run. Not part of the tests (it takes minutes): ``make bench``.

Run: ``.venv/bin/python benchmarks/decimal_exactness.py [--deals N] [--engines a,b]``.
Writes ``benchmarks/results/decimal_exactness.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from _common import PROJECT_DIR, fresh_dir, lcr_calculation_spec, print_table, write_result

COB = date(2026, 3, 31)
DEALS = 5_000_000
ENTITIES = 20
SEED = 17
SUMS = ("l1", "l2a", "l2b", "outflows", "inflows")
AMOUNTS = (
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
)
STAGES = ("weigh", "entity_buckets", "entity_lcr")


def run_engine(engine: str, spec: Path, data_root: Path, work: Path, spark: Any) -> dict:
    """The three LCR stages with one engine; returns the run and which engine finished."""
    from regflow.plan.build import build_plan
    from regflow.runtime.executor import run_stage
    from regflow.runtime.policy import ExecutionPolicy
    from regflow.storage import RunRef

    # the engines as a deployment picks them (REGFLOW_ENGINE): "default" is mode auto
    policy = ExecutionPolicy.for_mode("auto" if engine == "default" else engine)
    storage = work / f"storage-{engine}"
    plan = build_plan(spec, work / "no-rules")
    t0 = time.perf_counter()
    reports = [
        run_stage(
            plan,
            stage,
            cob=COB.isoformat(),
            run_id="r1",
            root=storage,
            params={"data_root": str(data_root)},
            spark=spark,
            log=lambda _m: None,
            policy=policy,
        )
        for stage in STAGES
    ]
    # which engine finished the entity aggregate (the stage reports say, step by step)
    finished = [
        e["engine"] for r in reports for e in r.engines if e["step"] == "aggregate entity_buckets"
    ]
    return {
        "run": RunRef(storage, "lcr", COB.isoformat(), "r1"),
        "seconds": round(time.perf_counter() - t0, 1),
        "entity_aggregate_on": finished[-1] if finished else "spark",
    }


def deal_differences(run: Any, data_root: Path) -> dict[str, str]:
    """Largest |regflow - exact| per deal-level column, exact per deal in DuckDB."""
    import duckdb

    tag = f"cob={COB.isoformat()}"
    con = duckdb.connect()
    row = con.sql(
        f"""
        with deals as (select * from read_parquet('{data_root}/deals/{tag}/*.parquet')),
             fx as (select * from read_parquet('{data_root}/fx_rates/{tag}/*.parquet')),
             cats as (select lcr_category, cast(factor as decimal(5,2)) as factor
                      from read_csv('{PROJECT_DIR}/pipelines/reference/lcr_categories.csv')),
             rf as (select deal_id, lcr_category, amount_usd, weighted_amount
                    from read_parquet('{run.node_dir("weigh")}/*.parquet')),
             exact as (
                select rf.*, d.amount * f.usd_rate as usd_exact,
                       d.amount * f.usd_rate * c.factor as weighted_exact
                from rf join deals d using (deal_id)
                join fx f on f.currency = d.currency
                join cats c on c.lcr_category = rf.lcr_category)
        select count(*), max(abs(amount_usd - usd_exact)),
               max(abs(weighted_amount - weighted_exact))
        from exact
        """
    ).fetchall()[0]
    return {"deals": int(row[0]), "amount_usd": str(row[1]), "weighted_amount": str(row[2])}


def old_rounding_drift(run: Any) -> dict[str, str]:
    """GROUP sums of the weighted amounts rounded half-up to 6 decimals, minus the exact."""
    import duckdb

    con = duckdb.connect()
    rows = con.sql(
        f"""
        select bucket, sum(round(weighted_amount, 6)) - sum(weighted_amount)
        from read_parquet('{run.node_dir("weigh")}/*.parquet')
        where bucket <> 'NONE' group by bucket order by bucket
        """
    ).fetchall()
    return {str(b): str(d) for b, d in rows}


def entity_differences(run: Any, oracle: Any) -> dict[str, dict[str, str]]:
    """Largest |regflow - oracle| per column, over the entities and for the GROUP row."""
    import pyarrow.parquet as pq

    got = {
        r["legal_entity"]: r
        for r in pq.ParquetDataset(
            sorted(str(p) for p in run.node_dir("entity_lcr").glob("*.parquet")),
            partitioning=None,
        )
        .read()
        .to_pylist()
    }
    want = {r["legal_entity"]: r for r in oracle.to_dict("records")}
    if set(got) != set(want):
        raise SystemExit(f"rows differ: {sorted(got)} vs {sorted(want)}")
    out: dict[str, dict[str, str]] = {"entities": {}, "GROUP": {}}
    for col in AMOUNTS:
        for part, names in (("entities", [e for e in got if e != "GROUP"]), ("GROUP", ["GROUP"])):
            worst = max(abs(Fraction(got[e][col]) - Fraction(want[e][col])) for e in names)
            if worst > Fraction(1, 100):
                raise SystemExit(f"{col} is off by {float(worst)} (> 0.01) in {part}")
            out[part][col] = "0" if worst == 0 else f"{float(worst):.3e}"
    worst_lcr = max(
        abs(got[e]["lcr"] - want[e]["lcr"]) / abs(want[e]["lcr"])
        for e in got
        if want[e]["lcr"] is not None
    )
    out["GROUP"]["lcr (relative, all rows)"] = f"{worst_lcr:.3e}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=DEALS)
    parser.add_argument("--entities", type=int, default=ENTITIES)
    parser.add_argument("--engines", default="default,spark", help="default, spark, driver")
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    from regflow.demo.data import generate_demo_data
    from regflow.runtime.session import get_spark

    sys.path.insert(0, str(PROJECT_DIR / "tests"))
    from lcr_reference import compute_lcr_reference

    work = fresh_dir("decimal_exactness")
    (work / "no-rules").mkdir()
    spec = lcr_calculation_spec(work, star=True)  # the star makes weigh's deals a stored output
    data_root = work / "data"
    t0 = time.perf_counter()
    generate_demo_data(data_root, cob=COB, deals=args.deals, entities=args.entities, seed=SEED)
    print(f"generated {args.deals:,} deals in {time.perf_counter() - t0:.0f}s", flush=True)
    t0 = time.perf_counter()
    oracle = compute_lcr_reference(data_root, COB)
    print(f"exact oracle in {time.perf_counter() - t0:.0f}s", flush=True)
    spark = get_spark()

    results: dict[str, Any] = {}
    for engine in args.engines.split(","):
        run = run_engine(engine, spec, data_root, work, spark)
        deals = deal_differences(run["run"], data_root)
        entities = entity_differences(run["run"], oracle)
        results[engine] = {
            "seconds": run["seconds"],
            "entity_aggregate_on": run["entity_aggregate_on"],
            "max_difference": {"per_deal": deals, **entities},
        }
        if engine == args.engines.split(",")[0]:
            results["old_per_deal_rounding_drift_group"] = old_rounding_drift(run["run"])
        print(
            f"{engine}: {run['seconds']}s, entity aggregate finished on "
            f"{run['entity_aggregate_on']}",
            flush=True,
        )
        rows = [["amount_usd (per deal)", deals["amount_usd"], ""]]
        rows.append(["weighted_amount (per deal)", deals["weighted_amount"], ""])
        rows += [[c, entities["entities"][c], entities["GROUP"][c]] for c in AMOUNTS]
        print_table(["column", "max |diff| entities", "GROUP"], rows)
        sums = [entities["entities"][c] for c in SUMS] + [entities["GROUP"][c] for c in SUMS]
        if any(s != "0" for s in sums) or Decimal(deals["weighted_amount"]) != 0:
            raise SystemExit(f"{engine}: a sum or a deal amount is not exact")
    print("per-deal rounding to 6 decimals (the old behaviour) would move the GROUP sums by:")
    for bucket, drift in results["old_per_deal_rounding_drift_group"].items():
        print(f"  {bucket:<8} {drift}")
    path = write_result(
        "decimal_exactness",
        {"setup": {"deals": args.deals, "entities": args.entities, "seed": SEED}, **results},
    )
    print(f"wrote {path.relative_to(PROJECT_DIR)}")


if __name__ == "__main__":
    main()
