"""``regflow demo-data`` and ``regflow demo``: synthetic LCR inputs, and the whole story on
them (generate, run through Airflow, read the LCR back from the warehouse)."""

from __future__ import annotations

import argparse
from pathlib import Path

from regflow.cli.common import (
    Subcommands,
    parse_cob,
    project_dir,
    resolve_spec,
    storage_root,
    use_warehouse,
)
from regflow.errors import ConfigError
from regflow.plan.cob import parse_cob as cob_date


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cob", default="2026-03-31")
    p.add_argument("--deals", type=int, default=10_000)
    p.add_argument("--entities", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)


def add_demo_data(sub: Subcommands) -> None:
    d = sub.add_parser("demo-data", help="generate synthetic LCR inputs")
    d.add_argument("dir")
    _add_data_options(d)
    d.set_defaults(handler=cmd_demo_data)


def add_demo(sub: Subcommands) -> None:
    dm = sub.add_parser("demo", help="generate data, run the LCR pipeline, print the LCR table")
    _add_data_options(dm)
    dm.add_argument("--storage")
    dm.add_argument("--warehouse", metavar="URL", help="as for `regflow run`")
    dm.set_defaults(handler=cmd_demo)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from regflow.demo.data import generate_demo_data

    cob = cob_date(args.cob, "--cob")
    if args.deals < 1 or args.entities < 1:
        raise ConfigError("--deals and --entities must be positive")
    summary = generate_demo_data(
        Path(args.dir),
        cob=cob,
        deals=args.deals,
        entities=args.entities,
        seed=args.seed,
        progress=lambda m: print(f"  {m}", flush=True),
    )
    print(
        f"wrote {summary.deals:,} deals for {summary.entities} entities, cob {cob}, "
        f"into {summary.root}"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from regflow.cli.export import format_lcr_table
    from regflow.cli.run import print_run_summary, run_pipeline
    from regflow.cli.warehouse import query
    from regflow.demo.data import generate_demo_data
    from regflow.storage import latest_run

    cob = parse_cob(args.cob)
    data_root = (project_dir() / ".regflow" / "demo-data").resolve()
    print(
        f"1/3 generating {args.deals:,} synthetic deals for {args.entities} entities "
        f"into {data_root}"
    )
    generate_demo_data(
        data_root,
        cob=cob_date(cob),
        deals=args.deals,
        entities=args.entities,
        seed=args.seed,
    )
    print("2/3 running the LCR pipeline through Airflow, landing the star in the warehouse")
    use_warehouse(args.warehouse)
    storage = storage_root(args.storage)
    result = run_pipeline(resolve_spec("lcr"), cob, {"data_root": str(data_root)}, storage)
    print_run_summary(result)
    run = latest_run(storage, "lcr", cob)
    target, columns, rows = query(
        "SELECT * FROM lcr.rpt_lcr_entity WHERE cob_date = %s", (cob_date(cob),)
    )
    import pyarrow as pa

    table = pa.Table.from_pylist([dict(zip(columns, r, strict=True)) for r in rows])
    print(
        f"\n3/3 Liquidity Coverage Ratio, cob {cob} (run {run.run_id}), queried from "
        f"lcr.rpt_lcr_entity in the {target}\n"
    )
    print(format_lcr_table(table))
    print(
        f"\nDrill down: regflow lineage trace lcr entity_lcr --cob {cob} --where "
        "legal_entity=LE001 --measure outflows\n"
        "Query the star: regflow warehouse query 'SELECT * FROM lcr_bi.\"LCR Entity\"'"
    )
    return 0
