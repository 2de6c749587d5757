"""``regflow export``, ``regflow lineage trace`` and ``regflow gc``: the stored outputs of
runs, read back, traced to their source rows, and tidied up."""

from __future__ import annotations

import argparse
import json

from regflow.cli.common import (
    Subcommands,
    parse_cob,
    parse_params,
    pipeline_id,
    resolve_spec,
    storage_root,
)
from regflow.errors import ConfigError
from regflow.project import project_root


def add_export(sub: Subcommands) -> None:
    e = sub.add_parser("export", help="write a node's latest successful output for a cob")
    e.add_argument("pipeline")
    e.add_argument("node", help="node id, or '<node>.lineage' for a lineage checkpoint")
    e.add_argument("--cob", required=True)
    e.add_argument("--format", choices=["csv", "parquet"], default="csv")
    e.add_argument("--storage")
    e.add_argument("--run", help="a specific run id instead of the latest successful one")
    e.add_argument("--out", help="output file (default: stdout)")
    e.add_argument(
        "--allow-unpublished",
        action="store_true",
        help="let --run name a run that was never published (failed or still running): its "
        "outputs may be incomplete or wrong",
    )
    e.set_defaults(handler=cmd_export)


def add_lineage(sub: Subcommands) -> None:
    lin = sub.add_parser("lineage", help="row-level lineage")
    lsub = lin.add_subparsers(dest="lineage_command", required=True, metavar="COMMAND")
    lt = lsub.add_parser("trace", help="from a reported figure down to its deals")
    lt.add_argument("pipeline")
    lt.add_argument("node", help="a persisted node, e.g. entity_lcr")
    lt.add_argument("--cob", required=True)
    lt.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COL=VALUE",
        help="select the reported row, e.g. legal_entity=LE003 (repeatable)",
    )
    lt.add_argument("--measure", help="keep the rows contributing to this measure")
    lt.add_argument("--run", help="a specific run id instead of the latest successful one")
    lt.add_argument("--storage")
    lt.add_argument("--out", help="write every source row (with contributions) to a CSV file")
    lin.set_defaults(handler=cmd_lineage)


def add_gc(sub: Subcommands) -> None:
    g = sub.add_parser(
        "gc",
        help="remove failed and superseded runs and leftover temporary writes from storage",
        description="Remove what runs leave in storage (a local folder or s3://bucket/prefix), "
        "by a retention policy. Never removed: the run a cob's _LATEST names, the run holding "
        "its claim (_ACTIVE), and data a kept run refers to. On S3 it also aborts incomplete "
        "multipart uploads older than --grace. See docs/operations.md and docs/storage.md.",
    )
    g.add_argument("pipeline", nargs="?", help="only this pipeline id (default: every one)")
    g.add_argument(
        "--storage",
        help=(
            "storage root: a local path or s3://bucket/prefix (default: $REGFLOW_STORAGE, else"
            " the project root's .regflow/storage)"
        ),
    )
    g.add_argument(
        "--keep-runs",
        type=int,
        default=1,
        metavar="N",
        help="superseded published runs kept per cob besides _LATEST's (default: 1)",
    )
    g.add_argument(
        "--keep-cobs",
        type=int,
        metavar="N",
        help="only the N newest cobs with a published run keep superseded runs; older cobs "
        "keep their _LATEST run only (default: every cob)",
    )
    g.add_argument(
        "--grace",
        default="24h",
        metavar="AGE",
        help="unpublished (failed, killed) runs and temporary writes younger than this are "
        "kept: a run may still be writing them (default: 24h; e.g. 30m, 7d)",
    )
    g.add_argument("--dry-run", action="store_true", help="list what would be removed and its size")
    g.set_defaults(handler=cmd_gc)


def cmd_export(args: argparse.Namespace) -> int:
    from regflow.cli.export import export_node

    export_node(
        storage_root(args.storage, project_root(resolve_spec(args.pipeline))),
        pipeline_id(args.pipeline),
        args.node,
        parse_cob(args.cob),
        fmt=args.format,
        out=args.out,
        run_id=args.run,
        allow_unpublished=args.allow_unpublished,
    )
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from regflow.cli.lineage import print_trace
    from regflow.plan.cache import load_plan
    from regflow.runtime.trace import trace
    from regflow.storage import RUN_SUCCESS_FILE, RunRef, latest_run

    spec = resolve_spec(args.pipeline)
    cob = parse_cob(args.cob)
    root = storage_root(args.storage, project_root(spec))
    pipeline = pipeline_id(args.pipeline)
    run = RunRef(root, pipeline, cob, args.run) if args.run else latest_run(root, pipeline, cob)
    if not (run.run_dir / RUN_SUCCESS_FILE).exists():
        from regflow.errors import StorageError

        state = "has no folder" if not run.run_dir.is_dir() else "was never published"
        raise StorageError(
            f"run {run.run_id} of {pipeline} for cob {cob} {state} ({run.run_dir}): lineage "
            "is traced on published runs only; leave out --run for the cob's latest "
            f"successful run, or pick one listed under {run.cob_dir} with a {RUN_SUCCESS_FILE}"
        )
    summary = json.loads((run.run_dir / RUN_SUCCESS_FILE).read_text())
    # the plan the run used: its adjustments folder decides which adjust nodes exist
    plan = load_plan(spec, adjustments=summary.get("adjustments_dir"))
    where = parse_params(args.where)
    result = trace(plan, run, args.node, where, measure=args.measure)
    print(f"lineage of {pipeline}.{args.node} (cob {cob}, run {run.run_id})")
    keys = tuple(k for s in plan.sources for k in s.primary_key)
    print_trace(result, args.node, args.measure, args.out, keys=keys)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from regflow.storage.fs import S3Path
    from regflow.storage.gc import collect, human_bytes, parse_age, plan_gc

    if args.keep_runs < 0 or (args.keep_cobs is not None and args.keep_cobs < 0):
        raise ConfigError("--keep-runs and --keep-cobs must be 0 or more")
    root = storage_root(args.storage)
    if not root.is_dir():  # (on S3, a missing bucket is a StorageError saying so)
        what = "nothing stored under" if isinstance(root, S3Path) else "no storage folder at"
        raise ConfigError(f"{what} {root}; pass --storage or set REGFLOW_STORAGE")
    pipeline = args.pipeline
    if pipeline and not (root / pipeline).is_dir():  # a spec path, or an id of no runs
        pipeline = pipeline_id(pipeline)
    report = plan_gc(
        root,
        pipeline=pipeline,
        keep_runs=args.keep_runs,
        keep_cobs=args.keep_cobs,
        grace_seconds=parse_age(args.grace),
    )
    verb = "would remove" if args.dry_run else "remove"
    for r in report.removals:
        print(f"{verb} {r.path}  ({r.reason}; {human_bytes(r.bytes)})")
    if not args.dry_run:
        collect(report)
    n = len(report.removals)
    done = "would free" if args.dry_run else "freed"
    print(
        f"{'dry run: ' if args.dry_run else ''}{n} item(s), {done} {human_bytes(report.bytes)} "
        f"under {root}; kept {len(report.kept)} run(s)"
    )
    return 0
