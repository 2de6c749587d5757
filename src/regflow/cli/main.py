"""The ``regflow`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from regflow import __version__, settings
from regflow.errors import RegflowError


def _parser() -> argparse.ArgumentParser:
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

    v = sub.add_parser("validate", help="validate pipeline specs; report every error at once")
    v.add_argument("paths", nargs="*", help="spec files or folders (default: pipelines/)")

    sub.add_parser("schema", help="print the JSON Schema of a pipeline spec")

    pl = sub.add_parser("plan", help="show what would run, stage by stage")
    pl.add_argument("pipeline", help="pipeline id or spec path")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")
    pl.add_argument(
        "--executor",
        choices=["local", "kubernetes"],
        default="local",
        help="kubernetes: print each stage's SparkApplication manifest (YAML) instead",
    )
    pl.add_argument("--cob", help="kubernetes: the cob the manifests run (default: today's)")
    pl.add_argument("--run-id", default="manual__preview", help="kubernetes: the run id")
    pl.add_argument(
        "--k8s-config",
        metavar="FILE",
        help="kubernetes settings (default: $REGFLOW_K8S_CONFIG, else deploy/kubernetes.yaml)",
    )
    pl.add_argument(
        "--adjustments",
        metavar="DIR",
        help="with the rules in DIR instead of adjustments/<pipeline>/ (an empty folder: "
        "none), as for `regflow run`",
    )

    r = sub.add_parser("run", help="run a pipeline for one cob through Airflow (dag.test)")
    r.add_argument("pipeline", help="pipeline id or spec path")
    r.add_argument("--cob", required=True, help="close-of-business date, YYYY-MM-DD")
    r.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="override a spec param (repeatable)",
    )
    r.add_argument(
        "--storage",
        help="storage root (default: $REGFLOW_STORAGE, else the project root's .regflow/storage)",
    )
    r.add_argument(
        "--adjustments",
        metavar="DIR",
        help="apply the rules in DIR instead of adjustments/<pipeline>/ (an empty folder: none)",
    )
    r.add_argument(
        "--warehouse",
        metavar="URL",
        help="where star schemas land: embedded (default), postgresql://..., "
        "redshift://...?iam_role=...&staging=s3://..., airflow://<conn_id> "
        "(default: $REGFLOW_WAREHOUSE)",
    )
    r.add_argument(
        "--recompute",
        choices=["changed", "all"],
        default="changed",
        help="changed (default): stages unchanged since the cob's latest successful run "
        "(spec, rules, params, source files, code) take its outputs; all: recompute everything",
    )
    r.add_argument(
        "--allow-empty-replace",
        action="store_true",
        help="let a star load whose fact batch is empty replace a cob that holds rows "
        "(refused by default: an empty batch is usually a missing source)",
    )
    r.add_argument(
        "--allow-other-spec",
        action="store_true",
        help="run even though the pipeline id has runs in this storage from another spec file",
    )
    r.add_argument("-v", "--verbose", action="store_true", help="show Airflow's own log")

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

    a = sub.add_parser("adjustments", help="adjustment rules")
    asub = a.add_subparsers(dest="adjustments_command", required=True, metavar="COMMAND")
    ac = asub.add_parser("check", help="validate rules and preview their impact (for PR CI)")
    ac.add_argument("files", nargs="*", help="rule files to check (default: every rule)")
    ac.add_argument("--pipeline", help="only rules of this pipeline")
    ac.add_argument(
        "--cob",
        help="preview on this cob's latest successful run (default: the latest cob with one)",
    )
    ac.add_argument("--storage")
    ac.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    ac.add_argument("--author", help="the pull request's author: may not approve the rule")
    ac.add_argument(
        "--approvers-from",
        choices=["github"],
        help="check every rule file the pull request changes against its reviews: approved_by "
        "must have approved the head commit and written none of it (GITHUB_TOKEN, "
        "GITHUB_REPOSITORY, and the PR of GITHUB_EVENT_PATH or --pr)",
    )
    ac.add_argument("--pr", type=int, help="the pull request number (with --approvers-from)")
    ac.add_argument("--repo", help="owner/name (with --approvers-from; default $GITHUB_REPOSITORY)")
    ac.add_argument(
        "--reviews-json",
        metavar="FILE",
        help="the pull request's GitHub documents (pull, reviews, files, commits) from a file "
        "instead of the API (implies --approvers-from github)",
    )
    ac.add_argument("--out", help="also write the report to this file (e.g. a PR comment)")

    g = sub.add_parser(
        "gc",
        help="remove failed and superseded runs and leftover temporary writes from storage",
        description="Remove what runs leave in storage, by a retention policy. Never removed: "
        "the run a cob's _LATEST names and the run holding its claim (_ACTIVE). See "
        "docs/operations.md.",
    )
    g.add_argument("pipeline", nargs="?", help="only this pipeline id (default: every one)")
    g.add_argument("--storage")
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

    d = sub.add_parser("demo-data", help="generate synthetic LCR inputs")
    d.add_argument("dir")
    d.add_argument("--cob", default="2026-03-31")
    d.add_argument("--deals", type=int, default=10_000)
    d.add_argument("--entities", type=int, default=5)
    d.add_argument("--seed", type=int, default=42)

    dm = sub.add_parser("demo", help="generate data, run the LCR pipeline, print the LCR table")
    dm.add_argument("--cob", default="2026-03-31")
    dm.add_argument("--deals", type=int, default=10_000)
    dm.add_argument("--entities", type=int, default=5)
    dm.add_argument("--seed", type=int, default=42)
    dm.add_argument("--storage")
    dm.add_argument("--warehouse", metavar="URL", help="as for `regflow run`")

    sq = sub.add_parser(
        "sql", help="regenerate sql/: Redshift and PostgreSQL DDL, views, the PowerBI model"
    )
    sq.add_argument("--check", action="store_true", help="only report stale files (exit 1)")

    dg = sub.add_parser(
        "dags", help="write dags/: one Airflow DAG file per pipeline spec (and remove stale ones)"
    )
    dg.add_argument("--check", action="store_true", help="only report what is missing (exit 1)")

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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from regflow.cli import commands

    handler = getattr(commands, f"cmd_{args.command.replace('-', '_')}")
    try:  # --project before anything resolves a default (a bad REGFLOW_* is said here)
        settings.configure(project=args.project)
        return int(handler(args) or 0)
    except RegflowError as exc:
        print(f"regflow: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `regflow export ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("regflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # never a raw traceback: the cause, the fix, where the rest is
        if args.debug or getattr(args, "verbose", False) or settings.current().debug:
            raise
        return _unexpected(exc, args)


DEBUG_ENV = "REGFLOW_DEBUG"


def _unexpected(exc: Exception, args: argparse.Namespace) -> int:
    """Say an unexpected error's cause and fix in a few lines, and write its traceback to a
    log file (the project's ``.regflow/logs``, else the temp folder)."""
    import datetime as dt
    import os
    import tempfile
    import traceback
    from pathlib import Path

    from regflow.failures import explain

    why = explain(exc)
    text = "".join(traceback.format_exception(exc))
    stamp = f"{dt.datetime.now():%Y%m%dT%H%M%S}-{os.getpid()}"
    where = None
    candidates = []
    try:
        from regflow.project import project_root

        candidates.append(project_root() / ".regflow" / "logs")
    except Exception:  # (no project: the temp folder will do)
        pass
    candidates.append(Path(tempfile.gettempdir()))
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"regflow-error-{stamp}.log"
            path.write_text(f"regflow {' '.join(sys.argv[1:])}\n\n{text}")
            where = path
            break
        except OSError:
            continue
    sub = getattr(args, f"{args.command.replace('-', '_')}_command", None)
    command = f"{args.command} {sub}" if sub else args.command
    print(f"regflow: {command} failed: {why.cause}", file=sys.stderr)
    print(f"  to fix: {why.fix}", file=sys.stderr)
    if where is not None:
        print(f"  traceback: {where} (or rerun with --debug)", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
