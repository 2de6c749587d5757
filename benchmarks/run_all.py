"""Run every benchmark, each in its own process, and print a one-screen summary.

``make bench`` runs ``.venv/bin/python benchmarks/run_all.py`` (about 35 minutes on 2 cores,
plus 25-40 for ``engines``, whose 10M-deal runs take minutes each).
Results: ``benchmarks/results/<name>.json``; method and figures: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from _common import BENCH_DIR, RESULTS_DIR

BENCHMARKS = (
    "dag_parse",
    "dag_processor",
    "lineage_overhead",
    "adjustments_overhead",
    "incremental",
    "warehouse_load",
    "decimal_exactness",
    "s3_storage",
    "engines",
)
ARGS = {"adjustments_overhead": ["--with-star", "--reps", "9"]}  # (the shipped pipeline too)


def main() -> int:
    failed = []
    started = time.perf_counter()
    for name in BENCHMARKS:
        print(f"\n=== {name} " + "=" * (60 - len(name)), flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(BENCH_DIR / f"{name}.py"), *ARGS.get(name, [])])
        print(
            f"=== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in "
            f"{time.perf_counter() - t0:.0f}s",
            flush=True,
        )
        if rc != 0:
            failed.append(name)

    print(f"\n=== summary ({time.perf_counter() - started:.0f}s in all)")
    parse = _load("dag_parse")
    if parse and "dag_parse" not in failed:
        r, g = parse["ratios"], parse["goals"]
        print(
            f"DAG parse, 100 DAGs: regflow (warm cache) "
            f"{r['paired_regflow_warm_vs_handwritten']:.2f}x "
            f"hand-written [goal <= {g['regflow_warm_vs_handwritten_max']}x: "
            f"{'met' if g['met_vs_handwritten'] else 'NOT met'}], "
            f"{r['paired_regflow_warm_vs_dagfactory']:.2f}x dag-factory "
            f"[goal < 1x: {'met' if g['met_vs_dagfactory'] else 'NOT met'}]; "
            f"cold cache {r['paired_regflow_cold_vs_handwritten']:.2f}x hand-written"
        )
    lin = _load("lineage_overhead")
    if lin and "lineage_overhead" not in failed:
        s = lin["seconds"]
        print(
            f"LCR, {lin['setup']['deals']:,} deals: regflow {s['regflow']['median']:.1f}s vs "
            f"hand-written {s['handwritten']['median']:.1f}s = "
            f"{lin['ratio_regflow_vs_handwritten']:.2f}x [goal <= {lin['goal']['max_ratio']}x: "
            f"{'met' if lin['goal']['met'] else 'NOT met'}]"
        )
    adj = _load("adjustments_overhead")
    if adj and "adjustments_overhead" not in failed:
        for line in _adjustment_lines(adj):
            print(line)
    inc = _load("incremental")
    if inc and "incremental" not in failed:
        s = inc["seconds"]
        print(
            f"Rerun after a rule change, {inc['setup']['deals']:,} deals: incremental "
            f"{s['incremental']['median']:.1f}s vs full {s['full']['median']:.1f}s = "
            f"{inc['ratio_incremental_vs_full']:.2f}x ({inc['setup']['stages_reused']} of "
            f"{len(inc['setup']['stages'])} stages reused, identical figures)"
        )
    wh = _load("warehouse_load")
    if wh and "warehouse_load" not in failed:
        c, u, th = wh["copy"], wh["upsert"], wh["threshold"]
        cross = th["copy_faster_from_rows"]
        r, g = c["ratio_raw_vs_regflow"], c["goal"]
        print(
            f"Warehouse (PostgreSQL): COPY load of {c['rows']:,} rows, raw COPY / regflow = "
            f"{r['new_cob']:.2f}x new cob, {r['rerun']:.2f}x rerun [goal >= {g['min_ratio']}x: "
            f"{'met' if g['met_new_cob'] else 'NOT met'} / "
            f"{'met' if g['met_rerun'] else 'NOT met'}]; upsert of {u['rows']:,} rows "
            f"{u['seconds']['median']:.1f}s [goal < {u['goal']['max_seconds']:.0f}s: "
            f"{'met' if u['goal']['met'] else 'NOT met'}]; COPY faster than upsert from "
            f"{f'{cross:,} rows' if cross else 'none of the sizes measured'}"
        )
    dec = _load("decimal_exactness")
    if dec and "decimal_exactness" not in failed:
        for engine in ("default", "spark", "driver"):
            if engine in dec:
                d = dec[engine]["max_difference"]
                caps = max(float(d["GROUP"][c]) for c in ("adj_15", "adj_40", "hqla"))
                print(
                    f"Decimal exactness, {dec['setup']['deals']:,} deals ({engine} engine, "
                    f"aggregate on {dec[engine]['entity_aggregate_on']}): per-deal amounts "
                    f"and all sums exact (max |diff| 0); caps within {caps:.1e} on GROUP"
                )
    eng = _load("engines")
    if eng and "engines" not in failed:
        for size in eng["sizes"]:
            s = size["seconds"]
            print(
                f"Engines, {size['deals']:,} deals, whole LCR: spark {s['spark']['median']:.1f}s "
                f"vs auto {s['auto']['median']:.1f}s, paired spark/auto "
                f"{size['paired_ratio_spark_vs_auto']:.2f}x (CPU "
                f"{size['paired_cpu_ratio_spark_vs_auto'] or float('nan'):.2f}x, "
                f"{size['pairs']} pair(s)), identical figures"
            )
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


def _adjustment_lines(adj: dict) -> list[str]:
    """The adjustment benchmark's summary: the goal's verdict on the plan it is judged on
    (the whole pipeline with the 20 selective rules, when measured), then every plan's
    ratio per pipeline (the calculation alone, the whole pipeline)."""
    r, a = adj["ratios"], adj["audit"]
    cpu = adj.get("cpu_ratios") or {}
    paired = adj.get("paired_ratios") or {}
    goal = adj["goal"]["max_ratio"]
    judged = adj["goal"].get("judged_on", "selective")

    def figure(plan: str) -> str:
        extra = [f"paired {paired[plan]:.2f}x"] if paired.get(plan) else []
        extra += [f"CPU {cpu[plan]:.2f}x"] if cpu.get(plan) else []
        return f"{plan.split('+')[0]} {r[plan]:.2f}x ({', '.join(extra)})"

    what = "whole pipeline" if judged.endswith("+star") else "calculation"
    lines = [
        f"Adjustments, {adj['setup']['deals']:,} deals, 20 rules: the {what} with the "
        f"selective rules {r[judged]:.2f}x unadjusted by the median [goal <= {goal}x: "
        f"{'met' if r[judged] <= goal else 'NOT met'}]"
    ]
    for suffix, name in (("+star", "whole pipeline"), ("", "calculation alone")):
        plans = [p + suffix for p in ("selective", "broad") if r.get(p + suffix)]
        if plans:
            lines.append(f"  {name}: " + ", ".join(figure(p) for p in plans))
    lines.append(
        f"  audit rows {a['selective']['audit_rows']:,} / {a['broad']['audit_rows']:,} = values "
        f"changed {a['selective']['rows_matched']:,} / {a['broad']['rows_matched']:,} "
        "(selective / broad)"
    )
    return lines


def _load(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
