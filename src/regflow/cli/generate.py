"""``regflow schema``, ``regflow sql`` and ``regflow dags``: the files regflow generates from
the project (the spec's JSON Schema, the warehouse SQL, the Airflow DAG files)."""

from __future__ import annotations

import argparse
import json
import sys

from regflow.cli.common import Subcommands, project_dir


def add_schema(sub: Subcommands) -> None:
    s = sub.add_parser("schema", help="print the JSON Schema of a pipeline spec")
    s.set_defaults(handler=cmd_schema)


def add_sql(sub: Subcommands) -> None:
    sq = sub.add_parser(
        "sql", help="regenerate sql/: Redshift and PostgreSQL DDL, views, the PowerBI model"
    )
    sq.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    sq.set_defaults(handler=cmd_sql)


def add_dags(sub: Subcommands) -> None:
    dg = sub.add_parser(
        "dags", help="write dags/: one Airflow DAG file per pipeline spec (and remove stale ones)"
    )
    dg.add_argument("--check", action="store_true", help="only report what is missing (exit 1)")
    dg.set_defaults(handler=cmd_dags)


def cmd_schema(args: argparse.Namespace) -> int:
    from regflow.ops import registry
    from regflow.spec.jsonschema import spec_json_schema

    registry.load_entry_points()
    registry.load_operator_files(project_dir() / "operators")
    print(json.dumps(spec_json_schema(), indent=2))
    return 0


def cmd_dags(args: argparse.Namespace) -> int:
    """One Airflow DAG file per spec, so a broken pipeline is an import error of its own."""
    from regflow.render.dagfile import dag_file_name, missing_dag_files, write_dag_files

    if args.check:
        missing = missing_dag_files(project_dir())
        for spec in missing:
            print(f"missing dags/{dag_file_name(spec)} for {spec}", file=sys.stderr)
        return 1 if missing else 0
    written, deleted = write_dag_files(project_dir())
    for path in written:
        print(f"wrote   {path}")
    for path in deleted:
        print(f"deleted {path} (its spec is gone)")
    if not written and not deleted:
        print("dags/ is up to date")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from regflow.warehouse.generate import write_generated

    changed = write_generated(project_dir(), check=args.check)
    if args.check:
        for f in changed:
            print(f"stale: {f}")
        if changed:
            print("regflow: sql/ is out of date; run `regflow sql`", file=sys.stderr)
            return 1
        print("sql/ is up to date")
        return 0
    for f in changed:
        print(f"wrote {f}")
    return 0
