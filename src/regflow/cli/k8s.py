"""``regflow plan PIPELINE --executor kubernetes``: each stage's SparkApplication, as YAML."""

from __future__ import annotations

import argparse
import datetime as dt

from regflow.plan.cob import cob_of_run, parse_cob
from regflow.plan.model import Plan
from regflow.project import project_root


def print_manifests(plan: Plan, args: argparse.Namespace) -> int:
    from regflow.plan.cache import plan_pin
    from regflow.render.k8s import load_settings, manifests_yaml, spark_applications

    if args.cob:
        cob = parse_cob(args.cob, "--cob").isoformat()
    else:
        today = dt.datetime.now(dt.UTC).date()
        cob = cob_of_run(today, plan.cob_rule, plan.cob_holidays).isoformat()
    settings = load_settings(args.k8s_config, project=project_root(plan.file))
    # with the DAG's plan key, as the DAG's SparkKubernetesOperator submits them
    manifests = spark_applications(
        plan, settings, cob=cob, run_id=args.run_id, plan_key=plan_pin(plan)
    )
    print(manifests_yaml(manifests), end="")
    return 0
