"""Storage on S3 against local storage: the LCR on 1M deals, the same runtime, two roots.

Both sides run in one process on the same SparkSession (``local[*]``), every stage of
``pipelines/lcr.yaml`` (its warehouse star included, without the warehouse load) with
``regflow.runtime.executor.run_stage``:

* ``local``: storage a local folder (``benchmarks/.work/s3_storage/storage``);
* ``s3``: storage ``s3://<bucket>/storage`` on a moto S3 server started by this script as
  its own process on 127.0.0.1 (``python -m moto.server``), reached as production reaches
  S3: Spark through ``s3a://`` with the S3A magic committer, regflow's own reads and writes
  through the storage layer (pyarrow's S3 filesystem, conditional puts by boto3), credentials
  and endpoint from the standard AWS variables.

The sources stay on local disk for both sides (what is compared is the storage). Each side
is warmed up once, then the sides alternate for ``--reps`` repetitions, each into a new run
id; the figure is the median wall time and the ratio s3 / local. Both results must be
identical (every stored output of the run, row for row). The stage reports then say where
the time goes: seconds per stage and per written output on each side.

moto keeps objects in memory and is a single Python process: it is not S3 (no network
latency, no throughput limit, but a GIL-bound server). The ratio measures what the protocol
and the S3 API round trips cost through the real clients, not what AWS would.

Run: ``.venv/bin/python benchmarks/s3_storage.py`` (about 10 minutes on 2 cores).
Writes ``benchmarks/results/s3_storage.json``.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import date
from typing import Any

from _common import (
    PROJECT_DIR,
    fresh_dir,
    machine,
    print_table,
    run_all_stages,
    summary,
    write_result,
)

COB = date(2026, 3, 31)
DEALS = 1_000_000
ENTITIES = 10
SEED = 7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"moto did not start on {endpoint}")


def digest(root: Any, plan: Any, run_id: str, names: list[str]) -> dict[str, Any]:
    """Every stored output of the run (outputs, checkpoints, audits) as a digest of its rows
    in a canonical order: what a reader of it gets."""
    import hashlib

    from regflow.storage import RunRef, read_node

    run = RunRef(root, plan.pipeline, COB.isoformat(), run_id)
    out = {}
    for name in names:
        table = read_node(run, name)
        rows = sorted(map(repr, table.to_pylist()))
        h = hashlib.sha256(repr(table.schema).encode())
        for r in rows:
            h.update(r.encode())
        out[name] = (table.num_rows, h.hexdigest()[:16])
    return out


def breakdown(reports: list[Any]) -> dict[str, Any]:
    stages = {r.stage: round(r.seconds, 3) for r in reports}
    outputs: dict[str, float] = defaultdict(float)
    for r in reports:
        for o in r.outputs:
            outputs[o.kind] += o.seconds
    return {"stages": stages, "writes_by_kind": {k: round(v, 3) for k, v in outputs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--deals", type=int, default=DEALS)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    moto, endpoint = start_moto()
    try:
        # the standard AWS chain, set before the JVM starts (S3A reads it at launch)
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL_S3": endpoint,
            }
        )
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            os.environ.pop(k, None)
        import boto3

        bucket = f"regflow-bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=bucket
        )
        _bench(args, bucket)
    finally:
        moto.terminate()
        moto.wait(timeout=30)


def _bench(args: Any, bucket: str) -> None:
    from regflow.demo.data import generate_demo_data
    from regflow.plan.compiler import compile_file
    from regflow.runtime.session import get_spark
    from regflow.storage import resolve_root

    work = fresh_dir("s3_storage")
    plan = compile_file(PROJECT_DIR / "pipelines" / "lcr.yaml")
    data_root = work / "data"
    t0 = time.perf_counter()
    generate_demo_data(data_root, cob=COB, deals=args.deals, entities=ENTITIES, seed=SEED)
    print(f"generated {args.deals:,} deals in {time.perf_counter() - t0:.1f}s", flush=True)
    spark = get_spark()
    roots = {
        "local": resolve_root(str(work / "storage")),
        "s3": resolve_root(f"s3://{bucket}/storage"),
    }

    def one(side: str, run_id: str) -> tuple[float, list[Any], str]:
        """One run of every stage into ``run_id`` (the same id on both sides: the star's rows
        carry the run's identity, and the two roots are separate)."""
        gc.collect()
        spark.sparkContext._jvm.java.lang.System.gc()
        t0 = time.perf_counter()
        reports = run_all_stages(plan, roots[side], run_id, spark, data_root, COB.isoformat())
        return time.perf_counter() - t0, reports, run_id

    warm = {side: one(side, "warm") for side in ("local", "s3")}
    names = [o.name for r in warm["local"][1] for o in r.outputs]
    a = digest(roots["local"], plan, warm["local"][2], names)
    b = digest(roots["s3"], plan, warm["s3"][2], names)
    if a != b or not a:
        raise SystemExit(f"the S3 run differs from the local run: {a} != {b}")
    print(
        f"warm-up: local {warm['local'][0]:.1f}s, s3 {warm['s3'][0]:.1f}s; "
        f"{len(a)} stored outputs identical",
        flush=True,
    )

    times: dict[str, list[float]] = {"local": [], "s3": []}
    last: dict[str, list[Any]] = {}
    load_before = os.getloadavg()
    for rep in range(args.reps):
        order = ("local", "s3") if rep % 2 == 0 else ("s3", "local")
        for side in order:
            seconds, reports, _ = one(side, f"rep{rep + 1}")
            times[side].append(seconds)
            last[side] = reports
            print(f"rep {rep + 1}: {side} {seconds:.1f}s", flush=True)
    ratio = statistics.median(times["s3"]) / statistics.median(times["local"])
    paired = statistics.median(a / b for a, b in zip(times["s3"], times["local"], strict=True))
    parts = {side: breakdown(last[side]) for side in last}
    print_table(
        ["stage", "local s", "s3 s", "ratio"],
        [
            [st, parts["local"]["stages"][st], parts["s3"]["stages"][st],
             parts["s3"]["stages"][st] / max(parts["local"]["stages"][st], 1e-9)]
            for st in parts["local"]["stages"]
        ],
    )  # fmt: skip
    print(f"\nLCR {args.deals:,} deals: s3 / local = {ratio:.2f}x (paired {paired:.2f}x)")
    # the default size keeps the name docs/benchmarks.md quotes; another size its own file
    name = "s3_storage" if args.deals == DEALS else f"s3_storage_{args.deals // 1_000_000}m"
    write_result(
        name,
        {
            "setup": {"deals": args.deals, "entities": ENTITIES, "reps": args.reps},
            "machine": machine(),
            "load_average_before": [round(x, 2) for x in load_before],
            "seconds": {k: summary(v) for k, v in times.items()},
            "ratio_s3_vs_local": round(ratio, 3),
            "paired_ratio_s3_vs_local": round(paired, 3),
            "where_the_time_goes": parts,
            "identical_outputs": len(a),
        },
    )


if __name__ == "__main__":
    main()
