"""``regflow warehouse info|reconcile|query|migrate``: the warehouse star schemas land in."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from regflow.cli.common import Subcommands, parse_cob, project_dir, resolve_spec, storage_root
from regflow.errors import ConfigError


def add_warehouse(sub: Subcommands) -> None:
    w = sub.add_parser("warehouse", help="the warehouse star schemas land in")
    wsub = w.add_subparsers(dest="warehouse_command", required=True, metavar="COMMAND")
    wi = wsub.add_parser("info", help="where the warehouse is, its star tables and last loads")
    wi.add_argument("--warehouse", metavar="URL")
    wi.add_argument("--storage", help="storage root to compare with (default: as for run)")
    wr = wsub.add_parser(
        "reconcile",
        help="bring the warehouse to the run storage serves (_LATEST), per cob",
    )
    wr.add_argument("pipeline", nargs="?", help="pipeline id (default: every pipeline)")
    wr.add_argument("--cob", help="only this cob")
    wr.add_argument("--warehouse", metavar="URL")
    wr.add_argument("--storage")
    wq = wsub.add_parser("query", help="run one read-only SQL query and print the rows")
    wq.add_argument("sql")
    wq.add_argument("--warehouse", metavar="URL")
    wm = wsub.add_parser(
        "migrate",
        help="add the columns a spec added to its star's tables (ALTER TABLE ... ADD COLUMN) "
        "and remake the views",
    )
    wm.add_argument("pipeline", help="pipeline id or spec path")
    wm.add_argument("--dry-run", action="store_true", help="print the DDL, change nothing")
    wm.add_argument("--warehouse", metavar="URL")
    w.set_defaults(handler=cmd_warehouse)


def query(
    sql: str, params: Any = None, url: str | None = None, *, check: bool = False
) -> tuple[str, list[str], list[Any]]:
    """Run ``sql`` read-only (see warehouse/readonly.py); ``check``: refuse anything but one
    query first (a user's text)."""
    from regflow.errors import RegflowError
    from regflow.warehouse.readonly import check_query, run_read_only
    from regflow.warehouse.targets import resolve_target

    target = resolve_target(url, project_dir=project_dir())
    if check:
        check_query(sql, target.dialect.name)
    try:
        columns, rows = run_read_only(target, sql, params)
    except RegflowError:
        raise
    except Exception as exc:
        from regflow.redaction import scrub

        raise ConfigError(scrub(f"query failed on the {target.display}: {exc}".strip())) from None
    return target.display, columns, rows


def _warehouse_migrate(args: argparse.Namespace) -> int:
    """Add the columns the spec added to the star's tables and remake the views."""
    from regflow.plan.cache import load_plan
    from regflow.warehouse.migrate import migrate
    from regflow.warehouse.model import star_model
    from regflow.warehouse.targets import resolve_target

    plan = load_plan(resolve_spec(args.pipeline))
    stars = plan.star_nodes()
    if not stars:
        raise ConfigError(f"pipeline '{plan.pipeline}' has no star_schema node: nothing to migrate")
    target = resolve_target(args.warehouse, project_dir=project_dir())
    print(f"warehouse: {target.display} ({target.dialect.name})")
    for node in stars:
        conn = target.connect()
        try:
            migrate(target.dialect, conn, star_model(plan, node), dry_run=args.dry_run)
        finally:
            conn.close()
    return 0


def cmd_warehouse(args: argparse.Namespace) -> int:
    if args.warehouse_command == "migrate":
        return _warehouse_migrate(args)
    if args.warehouse_command == "query":
        where, columns, rows = query(args.sql, url=args.warehouse, check=True)
        widths = [
            max(len(str(c)), *(len(_cell(r[i])) for r in rows)) if rows else len(str(c))
            for i, c in enumerate(columns)
        ]
        print("  ".join(f"{c:<{w}}" for c, w in zip(columns, widths, strict=True)))
        for r in rows:
            print("  ".join(f"{_cell(v):<{w}}" for v, w in zip(r, widths, strict=True)))
        print(f"({len(rows)} rows, {where})", file=sys.stderr)
        return 0
    from regflow.warehouse.targets import resolve_target

    target = resolve_target(args.warehouse, project_dir=project_dir())
    if args.warehouse_command == "reconcile":
        from regflow.cli.reconcile import reconcile

        cob = parse_cob(args.cob) if args.cob else None
        return reconcile(project_dir(), storage_root(args.storage), target, args.pipeline, cob)
    print(f"warehouse: {target.display} ({target.dialect.name})")
    if target.keep is not None:
        from regflow.redaction import redact

        uri = redact(target.keep.get_uri())
        print(f"  connect: psql '{uri}'  (while a regflow process runs it)")
    _, _, rows = query(
        "SELECT table_schema, table_name, table_type FROM information_schema.tables "
        "WHERE table_name LIKE 'dim\\_%' OR table_name LIKE 'fact\\_%' "
        "OR table_name LIKE 'rpt\\_%' OR table_name = 'regflow_loads' "
        "ORDER BY 1, 2",
        url=args.warehouse,
    )
    for schema, name, kind in rows:
        print(f"  {schema}.{name}  ({'view' if 'VIEW' in kind else 'table'})")
    for schema in sorted({r[0] for r in rows if r[1] == "regflow_loads"}):
        _, _, loads = query(
            f'SELECT pipeline, cob, run_id, method, rows_loaded, loaded_at FROM "{schema}".'
            "regflow_loads ORDER BY loaded_at DESC LIMIT 5",
            url=args.warehouse,
        )
        print(f"  last loads in {schema}:")
        for row in loads:
            print("    " + "  ".join(_cell(v) for v in row))
    from regflow.cli.reconcile import print_agreement

    print_agreement(project_dir(), storage_root(args.storage), target)
    return 0


def _cell(v: Any) -> str:
    return "" if v is None else str(v)
