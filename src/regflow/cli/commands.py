"""The CLI's commands. Each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from regflow.errors import ConfigError
from regflow.project import project_root


def project_dir() -> Path:
    """The project root without a spec: ``$REGFLOW_PROJECT``, else the nearest folder from
    the current one upwards with a ``pipelines/`` folder (see :mod:`regflow.project`)."""
    return project_root()


def resolve_spec(pipeline: str) -> Path:
    """A pipeline id (``lcr`` -> ``pipelines/lcr.yaml``) or a path to a spec."""
    path = Path(pipeline)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"no spec file at {path}")
        return path.resolve()
    for ext in (".yaml", ".yml"):
        cand = project_dir() / "pipelines" / f"{pipeline}{ext}"
        if cand.is_file():
            return cand
    folder = project_dir() / "pipelines"
    known = sorted(p.stem for p in folder.glob("*.y*ml")) if folder.is_dir() else []
    raise ConfigError(
        f"no pipeline '{pipeline}' in {folder}"
        + (f"; known pipelines: {', '.join(known)}" if known else "")
    )


def parse_cob(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise ConfigError(f"--cob '{text}' is not a date; use YYYY-MM-DD") from None


def parse_params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param '{pair}' must look like key=value")
        out[key.strip()] = value
    return out


# ---------------------------------------------------------------------------- validate
def _spec_paths(paths: list[str]) -> list[Path]:
    if not paths:
        paths = [str(project_dir() / "pipelines")]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
        elif p.exists():
            out.append(p)
        else:
            raise ConfigError(f"no such file or folder: {p}")
    return out


def cmd_validate(args: argparse.Namespace) -> int:
    from regflow.cli.adjustments import validate_rules
    from regflow.plan.compiler import check_file

    rule_paths = [Path(p) for p in args.paths if _is_rule_path(Path(p))]
    files = _spec_paths([p for p in args.paths if Path(p) not in rule_paths] if args.paths else [])
    if not files:
        print("no pipeline specs found", file=sys.stderr)
        return 1
    n_err = 0
    for path in files:
        plan, problems = check_file(path)
        errors = [p for p in problems if p.severity == "error"]
        n_err += len(errors)
        for p in problems:
            print(p.format(), file=sys.stderr)
        if plan is not None:
            print(f"ok  {path}  ({len(plan.nodes)} nodes, {len(plan.stages)} stages)")
        else:
            print(f"FAIL {path}  ({len(errors)} error{'s' if len(errors) != 1 else ''})")
    from regflow.ops import registry

    for why in registry.import_failures(project_dir() / "operators").values():
        print(f"FAIL {why}", file=sys.stderr)
        n_err += 1
    if not args.paths and (project_dir() / "dags").is_dir():
        # a project deployed to Airflow (it has dags/) needs a DAG file per spec; `regflow run`
        # needs none (it generates the DAG file it tests)
        from regflow.render.dagfile import dag_file_name, missing_dag_files

        for spec in missing_dag_files(project_dir()):
            print(
                f"FAIL {spec}: no DAG file dags/{dag_file_name(spec)}; run `regflow dags`",
                file=sys.stderr,
            )
            n_err += 1
    if not args.paths or rule_paths:
        check = validate_rules(project_dir(), rule_paths or None)
        for p in check.problems:
            print(p.format(), file=sys.stderr)
        n_err += len(check.errors)
        state = "FAIL" if check.errors else "ok "
        print(f"{state} adjustments: {len(check.rules)} rule(s), {len(check.errors)} error(s)")
    return 1 if n_err else 0


def _is_rule_path(path: Path) -> bool:
    """Rule files live under adjustments/; a YAML file with a rule_id is one too."""
    if "adjustments" in path.resolve().parts:
        return True
    if path.is_file():
        head = path.read_text(encoding="utf-8", errors="replace")[:4000]
        return any(line.startswith("rule_id:") for line in head.splitlines())
    return False


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


def cmd_schema(args: argparse.Namespace) -> int:
    from regflow.ops import registry
    from regflow.spec.jsonschema import spec_json_schema

    registry.load_entry_points()
    registry.load_operator_files(project_dir() / "operators")
    print(json.dumps(spec_json_schema(), indent=2))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from regflow.plan.cache import load_plan
    from regflow.plan.explain import explain

    # the plan a run executes: the spec with its adjustment rules (data hash, stages, tasks)
    adjustments = Path(args.adjustments).resolve() if args.adjustments else None
    if adjustments is not None and not adjustments.is_dir():
        raise ConfigError(f"--adjustments {adjustments} is not a folder")
    plan = load_plan(resolve_spec(args.pipeline), adjustments=adjustments)
    if getattr(args, "executor", "local") == "kubernetes":
        from regflow.cli.k8s import print_manifests

        return print_manifests(plan, args)
    if args.json:
        print(plan.to_json())
        return 0
    from regflow.runtime.policy import policy_from_env

    policy = policy_from_env()  # (a bad $REGFLOW_ENGINE fails before anything is shown)
    print(explain(plan))
    print("\n".join(["", *policy.describe()]))
    return 0


# ---------------------------------------------------------------------------- run
def _storage(url: str | None, project: Path | None = None) -> Path:
    """``--storage``, ``$REGFLOW_STORAGE``, else ``project``'s (default: the current
    project's) ``.regflow/storage``."""
    from regflow.storage import resolve_root

    return resolve_root(url, project=project)


def run_pipeline(
    spec: Path,
    cob: str,
    params: dict[str, str],
    storage: Path,
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


def cmd_adjustments(args: argparse.Namespace) -> int:
    from regflow.cli.adjustments import as_json, markdown, preview, validate_rules

    files = [Path(f) for f in args.files] or None
    for f in files or []:
        if not f.exists():
            raise ConfigError(f"no such rule file: {f}")
    check = validate_rules(
        project_dir(), files, pipeline=args.pipeline, author=args.author, review=_review(args)
    )
    previews = []
    if check.errors:
        previews.append({"skipped": True, "reason": "the rules are invalid"})
    else:
        from regflow.storage import latest_cob

        storage = _storage(args.storage)
        for name in sorted({r.rule.pipeline for r in check.rules}):
            rules = [r for r in check.rules if r.rule.pipeline == name]
            # Without --cob: the figures last reported, the latest cob with a good run.
            cob = parse_cob(args.cob) if args.cob else latest_cob(storage, name)
            if cob is None:
                previews.append(
                    {
                        "skipped": True,
                        "reason": f"no successful run of '{name}' under {storage}: nothing to "
                        "compare with (run the pipeline first, or set REGFLOW_STORAGE to where "
                        "its runs are published)",
                    }
                )
                continue
            which = "" if args.cob else " (its latest cob with a successful run; --cob to choose)"
            print(
                f"previewing {len(rules)} rule(s) on {name}, cob {cob}{which} ...",
                file=sys.stderr,
            )
            previews.append(
                preview(
                    resolve_spec(name),
                    project_dir(),
                    rules,
                    cob,
                    storage,
                    log=lambda m: print(m, file=sys.stderr),
                )
            )
    report = as_json(check, previews) if args.json else markdown(check, previews)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 1 if check.errors else 0


def _review(args: argparse.Namespace) -> Any:
    """The pull request's review as the code host records it (--approvers-from github)."""
    if args.reviews_json:
        from regflow.adjust.review import load_review_json

        return load_review_json(Path(args.reviews_json))
    if args.approvers_from == "github":
        from regflow.adjust.github import review_from_environment

        return review_from_environment(args.pr, args.repo, log=lambda m: print(m, file=sys.stderr))
    if args.pr is not None or args.repo is not None:
        raise ConfigError("--pr and --repo go with --approvers-from github")
    return None


def cmd_lineage(args: argparse.Namespace) -> int:
    from regflow.cli.lineage import print_trace
    from regflow.plan.cache import load_plan
    from regflow.runtime.trace import trace
    from regflow.storage import RUN_SUCCESS_FILE, RunRef, latest_run

    spec = resolve_spec(args.pipeline)
    cob = parse_cob(args.cob)
    root = _storage(args.storage, project_root(spec))
    pipeline = _pipeline_id(args.pipeline)
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


def _use_warehouse(url: str | None) -> None:
    """`--warehouse` wins over $REGFLOW_WAREHOUSE; the Airflow tasks read the environment."""
    if url:
        os.environ["REGFLOW_WAREHOUSE"] = url


def cmd_run(args: argparse.Namespace) -> int:
    _use_warehouse(args.warehouse)
    if args.allow_empty_replace:  # the load tasks read the environment, like the warehouse
        os.environ["REGFLOW_ALLOW_EMPTY_REPLACE"] = "1"
    spec = resolve_spec(args.pipeline)
    result = run_pipeline(
        spec,
        parse_cob(args.cob),
        parse_params(args.param),
        _storage(args.storage, project_root(spec)),  # a spec's own project, never the cwd's
        verbose=args.verbose,
        adjustments=Path(args.adjustments).resolve() if args.adjustments else None,
        recompute=args.recompute,
        allow_other_spec=args.allow_other_spec,
    )
    print_run_summary(result)
    return 0


# ---------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    from regflow.cli.export import export_node

    export_node(
        _storage(args.storage, project_root(resolve_spec(args.pipeline))),
        _pipeline_id(args.pipeline),
        args.node,
        parse_cob(args.cob),
        fmt=args.format,
        out=args.out,
        run_id=args.run,
        allow_unpublished=args.allow_unpublished,
    )
    return 0


# ---------------------------------------------------------------------------- gc
def cmd_gc(args: argparse.Namespace) -> int:
    from regflow.storage.gc import collect, human_bytes, parse_age, plan_gc

    if args.keep_runs < 0 or (args.keep_cobs is not None and args.keep_cobs < 0):
        raise ConfigError("--keep-runs and --keep-cobs must be 0 or more")
    root = _storage(args.storage)
    if not root.is_dir():
        raise ConfigError(f"no storage folder at {root}; pass --storage or set REGFLOW_STORAGE")
    pipeline = args.pipeline
    if pipeline and not (root / pipeline).is_dir():  # a spec path, or an id of no runs
        pipeline = _pipeline_id(pipeline)
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


def _pipeline_id(arg: str) -> str:
    """The pipeline id a spec declares (parsing only: stored outputs need no compile)."""
    from regflow.spec.loader import load_spec

    return load_spec(resolve_spec(arg)).spec.pipeline


# ---------------------------------------------------------------------------- demo
def cmd_demo_data(args: argparse.Namespace) -> int:
    from regflow.demo.data import generate_demo_data

    cob = dt.date.fromisoformat(parse_cob(args.cob))
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
        cob=dt.date.fromisoformat(cob),
        deals=args.deals,
        entities=args.entities,
        seed=args.seed,
    )
    print("2/3 running the LCR pipeline through Airflow, landing the star in the warehouse")
    _use_warehouse(args.warehouse)
    storage = _storage(args.storage)
    result = run_pipeline(resolve_spec("lcr"), cob, {"data_root": str(data_root)}, storage)
    print_run_summary(result)
    run = latest_run(storage, "lcr", cob)
    target, columns, rows = _query(
        "SELECT * FROM lcr.rpt_lcr_entity WHERE cob_date = %s", (dt.date.fromisoformat(cob),)
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


# ---------------------------------------------------------------------------- warehouse
def _query(
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
    stars = [n for n in plan.nodes if n.op == "star_schema"]
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
        where, columns, rows = _query(args.sql, url=args.warehouse, check=True)
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
        return reconcile(project_dir(), _storage(args.storage), target, args.pipeline, cob)
    print(f"warehouse: {target.display} ({target.dialect.name})")
    if target.keep is not None:
        from regflow.redaction import redact

        uri = redact(target.keep.get_uri())
        print(f"  connect: psql '{uri}'  (while a regflow process runs it)")
    _, _, rows = _query(
        "SELECT table_schema, table_name, table_type FROM information_schema.tables "
        "WHERE table_name LIKE 'dim\\_%' OR table_name LIKE 'fact\\_%' "
        "OR table_name LIKE 'rpt\\_%' OR table_name = 'regflow_loads' "
        "ORDER BY 1, 2",
        url=args.warehouse,
    )
    for schema, name, kind in rows:
        print(f"  {schema}.{name}  ({'view' if 'VIEW' in kind else 'table'})")
    for schema in sorted({r[0] for r in rows if r[1] == "regflow_loads"}):
        _, _, loads = _query(
            f'SELECT pipeline, cob, run_id, method, rows_loaded, loaded_at FROM "{schema}".'
            "regflow_loads ORDER BY loaded_at DESC LIMIT 5",
            url=args.warehouse,
        )
        print(f"  last loads in {schema}:")
        for row in loads:
            print("    " + "  ".join(_cell(v) for v in row))
    from regflow.cli.reconcile import print_agreement

    print_agreement(project_dir(), _storage(args.storage), target)
    return 0


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


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
