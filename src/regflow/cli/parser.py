"""The ``regflow`` argument parser: the top-level options, then one subcommand per verb, in
the order ``regflow --help`` lists them.

Each verb module's ``add_<verb>(sub)`` adds its subcommand, with the function that runs it as
the ``handler`` default. The verb modules import only what building the parser needs; what a
command needs (the plan, Airflow, Spark, the warehouse) it imports when it runs.
"""

from __future__ import annotations

import argparse

from regflow import __version__
from regflow.cli import adjustments, demo, generate, outputs, plan, run, validate, warehouse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="regflow",
        description="YAML pipeline specs compiled into Airflow 3 DAGs of lineage-preserving "
        "PySpark operators.",
    )
    p.add_argument("--version", action="version", version=f"regflow {__version__}")
    p.add_argument(
        "--debug",
        action="store_true",
        help="on an unexpected error, print its full traceback (also: REGFLOW_DEBUG=1)",
    )
    p.add_argument(
        "--project",
        metavar="DIR",
        help="the project root every default derives from (default: $REGFLOW_PROJECT, else "
        "a spec path's own project, else the nearest folder upwards with pipelines/)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate.add_validate(sub)
    generate.add_schema(sub)
    plan.add_plan(sub)
    run.add_run(sub)
    outputs.add_export(sub)
    outputs.add_lineage(sub)
    adjustments.add_adjustments(sub)
    outputs.add_gc(sub)
    demo.add_demo_data(sub)
    demo.add_demo(sub)
    generate.add_sql(sub)
    generate.add_dags(sub)
    warehouse.add_warehouse(sub)
    return p
