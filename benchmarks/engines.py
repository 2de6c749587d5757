"""The execution policy's engines: the LCR at 1M and 10M deals, ``spark`` against ``auto``.

The runtime has two engines (``regflow.runtime.policy``): Spark, and the driver engine, which
takes a few steps (clustering a lineage checkpoint, finishing an aggregate, lineage-id
checks, a lookup's key check, the star's adjusted flags) on the driver with pyarrow when the
data is under the policy's thresholds. This benchmark measures, per data size, what that
buys and where it stops:

* every stage of ``pipelines/lcr.yaml`` (its warehouse star included: all stages, local
  storage) in order with ``regflow.runtime.executor.run_stage`` on ``--deals`` generated
  deals (``regflow demo-data``'s generator), once with ``ExecutionPolicy.for_mode("spark")``
  (the driver engine never runs) and once with ``for_mode("auto")`` (the shipped
  thresholds), in one process on one SparkSession;
* the two sides are paired: a warm-up of each, then they alternate (``--reps`` pairs, the
  side that goes first alternating too), so both see the same machine load;
* per side: wall time, CPU time (JVM and Python), per-stage seconds, and for each step the
  driver engine could take, which engine ran it (the stage reports' ``engines``);
* both sides must produce the same ``entity_lcr`` figures (exactly: both sum decimals
  exactly), or the run fails.

A size whose first run of a side takes longer than ``--max-side-minutes`` is recorded as
measured once (no warm-up, no repetitions) and said so in the result.

Run: ``.venv/bin/python benchmarks/engines.py [--deals 1000000,10000000] [--reps 3,0]``
(at 10M deals each side runs once by default: a run takes minutes).
Writes ``benchmarks/results/engines.json``.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from _common import (
    PROJECT_DIR,
    cpu_seconds,
    fresh_dir,
    lcr_calculation_spec,
    print_table,
    run_all_stages,
    summary,
    write_result,
)

COB = date(2026, 3, 31)
DEALS = (1_000_000, 10_000_000)
ENTITIES = 10
SEED = 7
MODES = ("spark", "auto")
FIGURES: tuple[str, ...] = ("cob_date", "legal_entity", "l1", "l2a", "l2b", "adj_15", "adj_40")
FIGURES += ("hqla", "outflows", "inflows", "capped_inflows", "net_outflows", "lcr")


class Side:
    """One engine mode: runs every stage of the plan into a fresh storage folder."""

    def __init__(self, mode: str, plan: Any, data_root: Path, work: Path, spark: Any):
        from regflow.runtime.policy import ExecutionPolicy

        self.mode, self.plan, self.data_root, self.spark = mode, plan, data_root, spark
        self.policy = ExecutionPolicy.for_mode(mode)
        self.storage = work / f"storage-{mode}"
        self.runs = 0

    def run(self) -> dict[str, Any]:
        from regflow.storage import RunRef

        self.runs += 1
        run_id = f"{self.mode}{self.runs:02d}"
        shutil.rmtree(self.storage, ignore_errors=True)
        gc.collect()
        self.spark.sparkContext._jvm.java.lang.System.gc()
        c0, t0 = cpu_seconds(self.spark), time.perf_counter()
        reports = run_all_stages(
            self.plan, self.storage, run_id, self.spark, self.data_root, COB.isoformat(),
            self.policy,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        c1 = cpu_seconds(self.spark)
        run = RunRef(self.storage, self.plan.pipeline, COB.isoformat(), run_id)
        return {
            "seconds": seconds,
            "cpu": None if c0 is None or c1 is None else c1 - c0,
            "stages": {r.stage: r.seconds for r in reports},
            "engines": {r.stage: list(r.engines) for r in reports},
            "figures": read_figures(run.node_dir("entity_lcr")),
        }


def read_figures(path: Path) -> list[tuple]:
    import pyarrow.parquet as pq

    table = pq.ParquetDataset(
        sorted(str(p) for p in path.glob("*.parquet")), partitioning=None
    ).read(columns=list(FIGURES))
    return sorted(tuple(str(r[c]) for c in FIGURES) for r in table.to_pylist())


def measure(
    deals: int,
    reps: int,
    max_side_minutes: float,
    work: Path,
    spec: Path,
    spark: Any,
    order: tuple[str, ...] = MODES,
) -> dict[str, Any]:
    from regflow.demo.data import generate_demo_data
    from regflow.plan.build import build_plan

    data_root = work / f"data-{deals}"
    t0 = time.perf_counter()
    generate_demo_data(data_root, cob=COB, deals=deals, entities=ENTITIES, seed=SEED)
    generated = time.perf_counter() - t0
    print(f"{deals:,} deals generated in {generated:.0f}s", flush=True)
    (work / "no-rules").mkdir(exist_ok=True)
    plan = build_plan(spec, work / "no-rules")
    sides = {m: Side(m, plan, data_root, work / f"run-{deals}", spark) for m in MODES}

    # the first run of each side: a warm-up where there is time for repetitions, else the
    # only measurement
    first = {m: sides[m].run() for m in order}
    for m in MODES:
        print(f"  {m}: first run {first[m]['seconds']:.1f}s", flush=True)
    if first["spark"]["figures"] != first["auto"]["figures"]:
        raise SystemExit(f"{deals:,} deals: spark and auto give different entity_lcr figures")
    too_long = max(r["seconds"] for r in first.values()) > max_side_minutes * 60
    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    if too_long or reps == 0:
        for m in MODES:
            samples[m].append(first[m])
    else:
        for i in range(reps):
            for m in order if i % 2 == 0 else order[::-1]:
                samples[m].append(sides[m].run())
                if samples[m][-1]["figures"] != first[m]["figures"]:
                    raise SystemExit(f"{deals:,} deals: {m} changed its figures on a rerun")
            times = ", ".join(f"{m} {samples[m][-1]['seconds']:.1f}s" for m in MODES)
            print(f"  pair {i + 1}: {times}", flush=True)
    shutil.rmtree(work / f"run-{deals}", ignore_errors=True)
    shutil.rmtree(data_root, ignore_errors=True)
    return report(deals, generated, samples, too_long, max_side_minutes)


def report(
    deals: int,
    generated: float,
    samples: dict[str, list[dict[str, Any]]],
    too_long: bool,
    max_side_minutes: float,
) -> dict[str, Any]:
    pairs = len(samples["spark"])
    ratios = [samples["spark"][i]["seconds"] / samples["auto"][i]["seconds"] for i in range(pairs)]
    cpu_ratios = [
        samples["spark"][i]["cpu"] / samples["auto"][i]["cpu"]
        for i in range(pairs)
        if samples["spark"][i]["cpu"] and samples["auto"][i]["cpu"]
    ]
    stages = list(samples["spark"][0]["stages"])
    per_stage = {
        m: {s: round(statistics.median(r["stages"][s] for r in samples[m]), 2) for s in stages}
        for m in MODES
    }
    # which engine ran each step (from the last run of each side; the same on every run)
    steps: dict[str, dict[str, dict[str, str]]] = {}
    for m in MODES:
        for stage, entries in samples[m][-1]["engines"].items():
            for e in entries:
                row = steps.setdefault(stage, {}).setdefault(e["step"], {})
                row[m] = e["engine"] + (f" ({e['why']})" if e.get("why") else "")
    out = {
        "deals": deals,
        "generated_seconds": round(generated, 1),
        "pairs": pairs,
        "repetitions_skipped": too_long,
        "max_side_minutes": max_side_minutes,
        "seconds": {m: summary([r["seconds"] for r in samples[m]]) for m in MODES},
        "cpu_seconds": {
            m: summary([r["cpu"] for r in samples[m]]) if samples[m][0]["cpu"] else None
            for m in MODES
        },
        "paired_ratio_spark_vs_auto": round(statistics.median(ratios), 3),
        "paired_cpu_ratio_spark_vs_auto": round(statistics.median(cpu_ratios), 3)
        if cpu_ratios
        else None,
        "stage_seconds_median": per_stage,
        "steps": steps,
        "identical_figures": True,
    }
    print(
        f"{deals:,} deals: spark {out['seconds']['spark']['median']:.1f}s, auto "
        f"{out['seconds']['auto']['median']:.1f}s, paired spark/auto "
        f"{out['paired_ratio_spark_vs_auto']:.2f}x ({pairs} pair(s))"
    )
    print_table(
        ["stage", "spark s", "auto s"],
        [[s, per_stage["spark"][s], per_stage["auto"][s]] for s in stages],
    )
    print_table(
        ["stage", "step", "spark", "auto"],
        [
            [stage, step, engines.get("spark", "-"), engines.get("auto", "-")]
            for stage, rows in steps.items()
            for step, engines in rows.items()
        ],
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", default=",".join(str(d) for d in DEALS))
    parser.add_argument(
        "--reps",
        default="3,0",
        help="timed pairs after the warm-up, per size (0: the first run of each side only)",
    )
    parser.add_argument("--max-side-minutes", type=float, default=25.0)
    parser.add_argument("--first", choices=MODES, default="spark", help="the side run first")
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    from regflow.runtime.session import get_spark

    work = fresh_dir("engines")
    spec = lcr_calculation_spec(work, star=True)  # the whole pipeline: every stage
    spark = get_spark()
    load_before = [round(x, 2) for x in os.getloadavg()]
    results = []
    sizes = [int(d) for d in args.deals.split(",")]
    reps = [int(r) for r in args.reps.split(",")]
    reps += [reps[-1]] * (len(sizes) - len(reps))
    for deals, n in zip(sizes, reps, strict=False):
        order = (args.first, *(m for m in MODES if m != args.first))
        results.append(measure(deals, n, args.max_side_minutes, work, spec, spark, order))
        # write after each size, so a long 10M run leaves the 1M figures behind
        path = write_result(
            "engines",
            {
                "setup": {"entities": ENTITIES, "seed": SEED, "reps": reps},
                "load_average_at_start": load_before,
                "sizes": results,
            },
        )
    print(f"wrote {path.relative_to(PROJECT_DIR)}")


if __name__ == "__main__":
    main()
