"""Run a pipeline through real Airflow: ``dag.test()`` on a local metadata database.

Airflow is configured before it is imported: ``AIRFLOW_HOME`` defaults to the project
root's ``.regflow/airflow`` (SQLite), and the database is migrated on first use. Airflow's
own log goes to a file under that home. ``dag.test`` needs the DAG serialized from a DAGs
folder: a generated one-file folder under that home builds exactly the DAG being run, so a
project needs no ``dags/`` copy (and the DAG tested is the one of the spec given).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regflow import settings
from regflow.cli.airflow_setup import (
    configure_airflow,
    dag_folder_for,
    ensure_db,
    new_log_file,
    redirect_fds,
)
from regflow.errors import RegflowError, RunError
from regflow.storage.fs import Location


@dataclass
class RunResult:
    pipeline: str
    cob: str
    run_id: str
    state: str
    seconds: float
    stages: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    log_file: str = ""


def run_through_airflow(
    spec_path: Path,
    *,
    cob: str,
    params: dict[str, Any],
    storage_root: Location,
    verbose: bool = False,
    adjustments: Path | None = None,
) -> RunResult:
    from regflow.project import project_root

    project = project_root(spec_path)  # the tasks derive the same root from the spec
    home = configure_airflow(project)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(dag_folder_for(home, spec_path, adjustments))
    # the tasks run in this process (dag.test): its death frees the cob's claim at once
    settings.configure(storage=str(storage_root), run_pid=os.getpid())
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = new_log_file(logs)
    with open(log_path, "a") as log:
        ensure_db(home, log)
        from regflow.plan.cache import load_plan
        from regflow.runtime import progress

        plan = load_plan(spec_path, adjustments=adjustments)
        t0 = time.perf_counter()
        redirect = contextlib.nullcontext(sys.stdout) if verbose else redirect_fds(log)
        with redirect as real_stdout:
            progress.set_sink(real_stdout)
            from regflow.render import tasks as task_module

            task_module.RECORDED.clear()
            try:
                from airflow.settings import configure_orm

                with contextlib.suppress(Exception):
                    configure_orm()
                from regflow.cli.local_runs import driver, fail_dead_runs

                for note in fail_dead_runs(home):
                    print(note, file=real_stdout, flush=True)
                from regflow.render.airflow_dag import build_dag

                dag = build_dag(plan)
                with driver(home, plan.pipeline):
                    dag_run = dag.test(run_conf={"cob": cob, **params})
            finally:
                progress.set_sink(None)
                from regflow.runtime.session import stop_spark

                stop_spark()  # inside the redirect, so the JVM's goodbye lands in the log
        seconds = time.perf_counter() - t0
    import logging

    logging.getLogger("py4j").setLevel(logging.WARNING)  # no JVM goodbye on the terminal
    state = str(getattr(dag_run.state, "value", dag_run.state))
    from regflow.storage import RunRef, safe_run_id

    run = RunRef(storage_root, plan.pipeline, cob, safe_run_id(dag_run.run_id))
    result = RunResult(plan.pipeline, cob, run.run_id, state, seconds, log_file=str(log_path))
    for task_id in [*plan.task_ids(), "publish"]:
        rep = run.stage_report(task_id)
        err = rep.with_name(f"{task_id}.error.json")
        if rep.exists():
            report = json.loads(rep.read_text())
            if task_id in {s.id for s in plan.stages}:  # one name: the Airflow task id
                report["stage"] = plan.task_id(task_id)
            result.stages.append(report)
        if err.exists():
            result.errors.append(json.loads(err.read_text()))
    # what the tasks could not write down (the storage itself failing) they kept in memory
    result.errors += [e for e in task_module.RECORDED if e not in result.errors]
    if state != "success":
        detail = "; ".join(_describe(e) for e in result.errors) or (
            f"the DAG run ended in state '{state}' before any task recorded why "
            f"(see the Airflow log)"
        )
        message = f"{detail}\n(Airflow log: {log_path}; {_after_failure(plan, storage_root, cob)})"
        if result.errors and all(e["message"].startswith("[") for e in result.errors):
            # the stages' own errors name pipeline, node and cob already: not a second prefix
            exc = RunError(message)
            exc.pipeline, exc.cob = plan.pipeline, cob
            raise exc
        raise RunError(message, pipeline=plan.pipeline, cob=cob)
    return result


def _describe(error: dict[str, Any]) -> str:
    """A task's recorded failure: where (task, node), why, and what to do."""
    where = f"task {error.get('stage')}"
    node = error.get("node")
    if node and node != error.get("stage"):
        where += f", node {node}"
    return f"{where}: {error['message']}"


def _after_failure(plan: Any, root: Location, cob: str) -> str:
    """What a failed run left: say "untouched" only when storage and warehouse agree."""
    from regflow.storage import latest_run

    try:
        served = f"run {latest_run(root, plan.pipeline, cob).run_id}"
    except RegflowError:
        served = "no successful run"
    if not plan.star_nodes():
        return f"previous successful outputs are untouched: storage serves {served}"
    try:
        from regflow.spec.loader import project_dir_of
        from regflow.warehouse.reconcile import status
        from regflow.warehouse.targets import resolve_target

        target = resolve_target(project_dir=project_dir_of(Path(plan.file)))
        states = status(plan, root, target, cob=cob)
    except Exception as exc:
        return (
            f"storage serves {served}; could not check the warehouse ({exc}); "
            f"`regflow warehouse info` compares them"
        )
    bad = [s for s in states if not s.agree]
    if not bad and served == "no successful run":
        return "nothing is published for this cob: storage and the warehouse hold no run of it"
    if not bad:
        return (
            f"previous successful outputs are untouched: storage and the warehouse both "
            f"hold {served}"
        )
    return (
        "; ".join(s.describe() for s in bad)
        + f"; run `regflow warehouse reconcile {plan.pipeline} --cob {cob}`"
    )
