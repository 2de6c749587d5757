"""Read stored node outputs with pyarrow (no Spark needed) and write them out."""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Any

from regflow.errors import StorageError
from regflow.storage import RUN_SUCCESS_FILE, RunRef, latest_run, read_node
from regflow.storage.fs import Location


def export_node(
    root: Location,
    pipeline: str,
    node: str,
    cob: str,
    *,
    fmt: str = "csv",
    out: str | None = None,
    run_id: str | None = None,
    allow_unpublished: bool = False,
) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    run = RunRef(root, pipeline, cob, run_id) if run_id else latest_run(root, pipeline, cob)
    if not (run.run_dir / RUN_SUCCESS_FILE).exists():
        if not allow_unpublished:
            raise StorageError(
                f"run {run.run_id} of {pipeline} for cob {cob} was never published (it failed, "
                f"was killed or is still running: no {RUN_SUCCESS_FILE} in {run.run_dir}); its "
                "outputs may be incomplete or wrong. Leave out --run for the cob's latest "
                "successful run, or pass --allow-unpublished to export it anyway"
            )
        print(
            f"regflow: warning: run {run.run_id} was never published; exporting its output "
            f"'{node}' anyway (--allow-unpublished): it may be incomplete or wrong",
            file=sys.stderr,
        )
    table = read_node(run, node)
    if fmt == "parquet":
        if out is None and sys.stdout.isatty():
            raise StorageError("refusing to write Parquet to a terminal; use --out FILE")
        pq.write_table(table, out or sys.stdout.buffer)
    else:
        pacsv.write_csv(table, out or sys.stdout.buffer)
    if out:
        print(
            f"wrote {table.num_rows:,} rows of {pipeline}.{node} (cob {cob}, run {run.run_id}) "
            f"to {out}",
            file=sys.stderr,
        )


def _money(v: Any) -> str:
    if v is None:
        return "-"
    return f"{Decimal(v) / Decimal(1_000_000):,.1f}"


def format_lcr_table(table: Any) -> str:
    rows = sorted(
        table.to_pylist(), key=lambda r: (r["legal_entity"] == "GROUP", r["legal_entity"])
    )
    cols = ["l1", "l2a", "l2b", "adj_15", "adj_40", "hqla", "outflows", "inflows", "net_outflows"]
    head = f"{'entity':<8}" + "".join(f"{c:>14}" for c in cols) + f"{'LCR':>9}"
    lines = [head + "   (amounts in USD millions)", "-" * len(head)]
    for r in rows:
        lcr = "n/a" if r["lcr"] is None else f"{r['lcr'] * 100:.1f}%"
        lines.append(
            f"{r['legal_entity']:<8}" + "".join(f"{_money(r[c]):>14}" for c in cols) + f"{lcr:>9}"
        )
    return "\n".join(lines)
