"""Incremental recomputation: rerunning a cob after a rule change, against recomputing it.

The whole LCR pipeline (warehouse star included) on 1M deals, one process and one
SparkSession. A base run with the sample rules at ``classify`` and ``weigh`` is published;
then an entity-level rule is added after ``entity_buckets`` (an add-on to one entity's
outflows, as an analyst would submit it) and the cob is rerun two ways, alternating:

* **incremental**: every stage offered the base run (``run_stage(..., reuse_from=base)``,
  what the Airflow tasks do by default): ``weigh`` and ``entity_buckets`` take its outputs,
  ``entity_lcr`` and the star are recomputed;
* **full**: every stage recomputed (``regflow run --recompute all``).

Both reruns must give identical ``entity_lcr`` figures (checked every repetition, or the
script fails). Figures: median wall and CPU time of each, and the ratio incremental / full.

Run: ``.venv/bin/python benchmarks/incremental.py [--reps 5] [--deals 1000000]``. Writes
``benchmarks/results/incremental.json``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from datetime import date
from typing import Any

from _common import (
    PROJECT_DIR,
    cpu_seconds,
    fresh_dir,
    lcr_calculation_spec,
    print_table,
    summary,
    write_result,
)

COB = date(2026, 3, 31)
SEED = 7
ENTITIES = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--deals", type=int, default=1_000_000)
    args = parser.parse_args()

    from regflow.demo.data import generate_demo_data
    from regflow.plan.build import build_plan
    from regflow.runtime.executor import run_stage
    from regflow.runtime.session import get_spark
    from regflow.storage import RunRef, publish_run, read_node

    work = fresh_dir("incremental")
    data = work / "data"
    print(f"generating {args.deals:,} deals ...", flush=True)
    generate_demo_data(data, cob=COB, deals=args.deals, entities=ENTITIES, seed=SEED)
    spec = lcr_calculation_spec(work, star=True)
    samples = PROJECT_DIR / "adjustments" / "lcr"
    before, after = work / "rules-before", work / "rules-after"
    for folder, names in ((before, ("0001", "0002")), (after, ("0001", "0002", "0003"))):
        folder.mkdir()
        for n in names:
            shutil.copy(samples / f"ADJ-2026-{n}.yaml", folder)
    plan_before, plan_after = build_plan(spec, before), build_plan(spec, after)
    spark = get_spark()
    storage, params = work / "storage", {"data_root": str(data)}
    cob = COB.isoformat()

    def run(plan: Any, run_id: str, base: RunRef | None) -> tuple[float, float | None, int]:
        cpu0, t0 = cpu_seconds(spark), time.perf_counter()
        reused = 0
        for stage in plan.stages:
            report = run_stage(
                plan, stage.id, cob=cob, run_id=run_id, root=storage, params=params,
                spark=spark, log=lambda _m: None, reuse_from=base,
            )  # fmt: skip
            reused += report.reused_from is not None
        seconds, cpu1 = time.perf_counter() - t0, cpu_seconds(spark)
        ref = RunRef(storage, plan.pipeline, cob, run_id)
        publish_run(ref, {"params": params, "adjustment_set_hash": plan.adjustment_set_hash})
        return seconds, (None if cpu0 is None or cpu1 is None else cpu1 - cpu0), reused

    print("base run (full) ...", flush=True)
    run(plan_before, "base", None)
    base = RunRef(storage, "lcr", cob, "base")
    run(plan_after, "warmup-full", None)  # (the JIT warms up on the new plan too)
    times: dict[str, list[float]] = {"incremental": [], "full": []}
    cpus: dict[str, list[float]] = {"incremental": [], "full": []}
    reused_stages = 0
    for rep in range(args.reps):
        for name in ("incremental", "full"):
            run_id = f"{name}-{rep}"
            seconds, cpu, reused = run(plan_after, run_id, base if name == "incremental" else None)
            if name == "incremental":
                reused_stages = reused
            times[name].append(seconds)
            if cpu is not None:
                cpus[name].append(cpu)
            print(f"rep {rep + 1} {name}: {seconds:.1f}s ({reused} stage(s) reused)", flush=True)
        a = read_node(RunRef(storage, "lcr", cob, f"incremental-{rep}"), "entity_lcr")
        b = read_node(RunRef(storage, "lcr", cob, f"full-{rep}"), "entity_lcr")
        if not a.sort_by("legal_entity").equals(b.sort_by("legal_entity")):
            raise SystemExit("the incremental rerun's entity_lcr differs from the full one")
    ratio = statistics.median(times["incremental"]) / statistics.median(times["full"])
    cpu_ratio = (
        statistics.median(cpus["incremental"]) / statistics.median(cpus["full"])
        if cpus["incremental"] and cpus["full"]
        else None
    )
    print()
    print_table(
        ["rerun", "median s", "median CPU s", "stages reused"],
        [
            [n, statistics.median(t), statistics.median(cpus[n]) if cpus[n] else "-", r]
            for n, t, r in (
                ("incremental", times["incremental"], reused_stages),
                ("full", times["full"], 0),
            )
        ],
    )
    print(f"\nincremental / full: {ratio:.2f}x wall, {cpu_ratio or float('nan'):.2f}x CPU")
    result = {
        "setup": {
            "deals": args.deals,
            "entities": ENTITIES,
            "seed": SEED,
            "reps": args.reps,
            "change": "rule ADJ-2026-0003 added after entity_buckets",
            "stages": [s.id for s in plan_after.stages],
            "stages_reused": reused_stages,
        },
        "seconds": {n: summary(t) for n, t in times.items()},
        "cpu_seconds": {n: summary(t) for n, t in cpus.items() if t},
        "ratio_incremental_vs_full": round(ratio, 3),
        "cpu_ratio_incremental_vs_full": None if cpu_ratio is None else round(cpu_ratio, 3),
        "identical_figures": True,
    }
    print(f"wrote {write_result('incremental', result)}")


if __name__ == "__main__":
    main()
