"""``regflow run``: one pipeline for one cob through Airflow, and the summary it prints."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from regflow import settings
from regflow.cli.common import (
    Subcommands,
    parse_cob,
    parse_params,
    resolve_spec,
    storage_root,
    use_warehouse,
)
from regflow.errors import ConfigError
from regflow.project import project_root
from regflow.storage.fs import Location


def add_run(sub: Subcommands) -> None:
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
        help=(
            "storage root: a local path or s3://bucket/prefix (default: $REGFLOW_STORAGE, else"
            " the project root's .regflow/storage)"
        ),
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
    r.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    use_warehouse(args.warehouse)
    if args.allow_empty_replace:  # the load tasks read the settings, like the warehouse
        settings.configure(allow_empty_replace=True)
    spec = resolve_spec(args.pipeline)
    result = run_pipeline(
        spec,
        parse_cob(args.cob),
        parse_params(args.param),
        storage_root(args.storage, project_root(spec)),  # a spec's own project, never the cwd's
        verbose=args.verbose,
        adjustments=Path(args.adjustments).resolve() if args.adjustments else None,
        recompute=args.recompute,
        allow_other_spec=args.allow_other_spec,
    )
    print_run_summary(result)
    return 0


def run_pipeline(
    spec: Path,
    cob: str,
    params: dict[str, str],
    storage: Location,
    verbose: bool = False,
    adjustments: Path | None = None,
    recompute: str = "changed",
    allow_other_spec: bool = False,
) -> Any:
    from regflow.cli.airflow_run import run_through_airflow
    from regflow.cli.spec_guard import check_spec_owner
    from regflow.plan.cache import load_plan
    from regflow.project import run_params, spec_identity

    if adjustments is not None and not adjustments.is_dir():
        raise ConfigError(f"--adjustments {adjustments} is not a folder")
    plan = load_plan(spec, adjustments=adjustments)
    merged = {k: str(v) for k, v in plan.params.items() if v is not None}
    merged.update(params)
    # unknown names refused; relative paths against the project root, as the task does
    merged = run_params(
        merged,
        declared=plan.params,
        source_paths=[s.path for s in plan.sources],
        root=project_root(spec),
        pipeline=plan.pipeline,
    )
    check_spec_owner(storage, plan.pipeline, spec_identity(spec), allow=allow_other_spec)
    print(
        f"running {plan.pipeline} for cob {cob} through Airflow "
        f"({len(plan.stages)} stages) -> {storage}",
        flush=True,
    )
    n_rules = sum(len(n.params.get("rules", [])) for n in plan.adjustment_nodes())
    if n_rules:
        print(
            f"  with {n_rules} adjustment rule(s) from {plan.adjustments_dir} "
            f"(set {plan.adjustment_set_hash})",
            flush=True,
        )
    return run_through_airflow(
        spec,
        cob=cob,
        params={**merged, "recompute": recompute},
        storage_root=storage,
        verbose=verbose,
        adjustments=adjustments,
    )


def print_run_summary(result: Any) -> None:
    print(f"\nrun {result.run_id}: {result.state} in {result.seconds:.1f}s")
    print(f"  {'stage':<20} {'output':<26} {'rows':>12} {'seconds':>8}")
    for st in result.stages:
        for o in st["outputs"]:
            print(f"  {st['stage']:<20} {o['name']:<26} {o['rows']:>12,} {o['seconds']:>8.1f}")
        total = "(reused, unchanged)" if st.get("reused_from") else "(stage total)"
        print(f"  {st['stage']:<20} {total:<26} {'':>12} {st['seconds']:>8.1f}")
    reused = [st["reused_from"] for st in result.stages if st.get("reused_from")]
    if reused:  # (all from one run: the cob's latest successful one)
        print(
            f"  {len(reused)} stage(s) unchanged since run {reused[0]}: took its "
            "outputs (--recompute all recomputes them)"
        )
    adjustments = [a for st in result.stages for a in st.get("adjustments", [])]
    if adjustments:
        print("  adjustments:")
        for a in adjustments:
            what = (
                f"{a['rows_matched']:,} rows matched"
                if a["status"] == "applied"
                else f"skipped, {a['reason']}"
            )
            print(f"    {a['rule_id']:<16} {a['position']} {a['at']:<16} {what}")
    joins = [j for st in result.stages for j in st.get("joins", {}).values()]
    if joins:
        print("  partial joins (require_match: false):")
        for j in joins:
            fate = "dropped" if j["how"] == "inner" else "kept with null lookup columns"
            counted = (
                "not counted"
                if j["unmatched"] is None
                else f"{j['unmatched']:,} of {j['rows']:,} rows without a match in "
                f"'{j['lookup']}'" + (f" ({fate})" if j["unmatched"] else "")
            )
            print(f"    {j['join']:<16} {counted}")
    print(f"  Airflow log: {result.log_file}")
