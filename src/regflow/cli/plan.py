"""``regflow plan``: what would run, stage by stage (or each stage's Kubernetes manifest)."""

from __future__ import annotations

import argparse
from pathlib import Path

from regflow.cli.common import Subcommands, resolve_spec
from regflow.errors import ConfigError


def add_plan(sub: Subcommands) -> None:
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
    pl.set_defaults(handler=cmd_plan)


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
    from regflow.runtime.policy import deployment_policy

    policy = deployment_policy()  # (a bad $REGFLOW_ENGINE fails before anything is shown)
    print(explain(plan))
    print("\n".join(["", *policy.describe()]))
    return 0
