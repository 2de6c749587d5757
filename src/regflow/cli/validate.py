"""``regflow validate``: every spec, operator file, DAG file and rule; every error at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from regflow.cli.common import Subcommands, project_dir
from regflow.errors import ConfigError


def add_validate(sub: Subcommands) -> None:
    v = sub.add_parser("validate", help="validate pipeline specs; report every error at once")
    v.add_argument("paths", nargs="*", help="spec files or folders (default: pipelines/)")
    v.set_defaults(handler=cmd_validate)


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
    from regflow.cli.adjust_check import validate_rules
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
