"""The stage entrypoint of a ``SparkApplication``'s driver (``executor: kubernetes``).

    python -m regflow.render.stage_main --spec pipelines/lcr.yaml --stage weigh \\
        --cob 2026-03-31 --run-id manual__2026-03-31T00:00:00+00:00 [--adjustments DIR] \\
        [--recompute changed|all] [--param k=v ...] [--plan-key KEY]

It calls :func:`regflow.render.tasks.run_stage_task`, the very function the local executor's
Airflow task calls, with the same context (params, run id): one code path for the claim
check, the reuse of unchanged stages, the stage run and the error record. It lives in
``render`` beside that function because the runtime may not import render (the layering).
It imports no airflow. The image's ``/opt/regflow/stage_main.py`` (``deploy/stage_main.py``)
is a two-line launcher for it, because spark-submit runs a Python file, not a module.

Exit status: 0 on success, 1 on a RegflowError (its message on stderr, as the task log shows
it), anything else is a crash with its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="regflow-stage", description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, help="the pipeline spec file")
    p.add_argument("--stage", required=True, help="the stage (task) id to run")
    p.add_argument("--cob", required=True, help="close-of-business date, YYYY-MM-DD")
    p.add_argument("--run-id", required=True, help="the Airflow run id")
    p.add_argument("--adjustments", metavar="DIR", help="rule folder (default: the project's)")
    p.add_argument("--recompute", choices=["changed", "all"], default="changed")
    p.add_argument("--param", action="append", default=[], metavar="K=V")
    p.add_argument(
        "--plan-key", help="the key of the plan the DAG was built from: refuse any other plan"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from regflow.errors import ConfigError, RegflowError
    from regflow.render.tasks import run_stage_task

    args = _parser().parse_args(argv)
    params: dict[str, str] = {}
    try:
        for item in args.param:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--param {item!r}: expected K=V, e.g. data_root=/data")
            params[key] = value
        context = {
            "params": {**params, "cob": args.cob, "recompute": args.recompute},
            "run_id": args.run_id,
        }
        report = run_stage_task(args.spec, args.stage, context, args.adjustments, args.plan_key)
    except RegflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from regflow.runtime.session import get_spark

    # the driver log says where the stage ran (k8s://... in a SparkApplication)
    print(f"spark master: {get_spark().sparkContext.master}", file=sys.stderr)
    print(json.dumps(report, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
