"""Run a pipeline through real Airflow: ``dag.test()`` on a local metadata database.

Airflow is configured before it is imported: ``AIRFLOW_HOME`` defaults to the project
root's ``.regflow/airflow`` (SQLite), and the database is migrated on first use. Airflow's
own log goes to a file under that home. ``dag.test`` needs the DAG serialized from a DAGs
folder: a generated one-file folder under that home builds exactly the DAG being run, so a
project needs no ``dags/`` copy (and the DAG tested is the one of the spec given).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from regflow import settings
from regflow.errors import ConfigError, RegflowError, RunError


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


def configure_airflow(project_dir: Path) -> Path:
    from regflow.project import default_airflow_home

    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(default_airflow_home(project_dir))))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "120")
    home.mkdir(parents=True, exist_ok=True)
    return home


_DAG_FILE = """\
# Written by `regflow run` for Airflow's dag.test: the DAG of one spec. Not for deployment
# (point a real Airflow at the project's dags/ folder).
from regflow.plan.cache import load_plan
from regflow.render.airflow_dag import build_dag

dag = build_dag(load_plan({spec!r}, adjustments={adjustments!r}))
"""


def dag_folder_for(home: Path, spec_path: Path, adjustments: Path | None) -> Path:
    """A DAGs folder holding one generated file that builds the DAG of ``spec_path`` (with the
    rules of ``adjustments``): one folder per spec and rule folder, so concurrent runs of
    different specs sharing one Airflow home do not overwrite each other's file."""
    spec = str(spec_path.resolve())
    adj = str(adjustments.resolve()) if adjustments is not None else None
    key = hashlib.sha256(f"{spec}\0{adj}".encode()).hexdigest()[:16]
    folder = home / "regflow-dags" / key
    folder.mkdir(parents=True, exist_ok=True)
    text = _DAG_FILE.format(spec=spec, adjustments=adj)
    target = folder / "regflow_run_dag.py"
    if not target.exists() or target.read_text() != text:
        tmp = folder / f".regflow_run_dag.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, target)
    return folder


def ensure_db(home: Path, log: TextIO) -> None:
    from importlib.metadata import version

    marker = home / ".regflow-db-migrated"
    want = version("apache-airflow")
    if marker.exists() and marker.read_text().strip() == want:
        return
    print(f"preparing the Airflow metadata database in {home} (first run) ...", flush=True)
    airflow = Path(sys.executable).parent / "airflow"
    cmd = (
        [str(airflow), "db", "migrate"]
        if airflow.exists()
        else [sys.executable, "-m", "airflow", "db", "migrate"]
    )
    env = {**os.environ, **settings.current().as_env()}  # a child gets the settings explicitly
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False, env=env)
    if proc.returncode != 0:
        raise ConfigError(f"`airflow db migrate` failed (exit {proc.returncode}); see {log.name}")
    marker.write_text(want)


@contextlib.contextmanager
def _redirect_fds(target: TextIO) -> Iterator[TextIO]:
    """Send fds 1 and 2 (Python, Airflow and the JVM) to ``target``; yield the real stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    real = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(target.fileno(), 1)
    os.dup2(target.fileno(), 2)
    try:
        yield real
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        real.close()


def run_through_airflow(
    spec_path: Path,
    *,
    cob: str,
    params: dict[str, Any],
    storage_root: Path,
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
        redirect = contextlib.nullcontext(sys.stdout) if verbose else _redirect_fds(log)
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


def new_log_file(logs: Path) -> Path:
    """A log file of its own for one run (created here, exclusively): runs started in the
    same second, in parallel or one after the other, never share one."""
    stamp = f"{dt.datetime.now():%Y%m%dT%H%M%S}-{os.getpid()}"
    for n in range(1000):
        path = logs / f"regflow-run-{stamp}{f'-{n}' if n else ''}.log"
        try:
            with open(path, "x"):
                return path
        except FileExistsError:
            continue
    raise ConfigError(f"cannot create a log file in {logs}: 1000 of this second exist")


def _describe(error: dict[str, Any]) -> str:
    """A task's recorded failure: where (task, node), why, and what to do."""
    where = f"task {error.get('stage')}"
    node = error.get("node")
    if node and node != error.get("stage"):
        where += f", node {node}"
    return f"{where}: {error['message']}"


def _after_failure(plan: Any, root: Path, cob: str) -> str:
    """What a failed run left: say "untouched" only when storage and warehouse agree."""
    from regflow.storage import latest_run

    try:
        served = f"run {latest_run(root, plan.pipeline, cob).run_id}"
    except RegflowError:
        served = "no successful run"
    if not any(n.op == "star_schema" for n in plan.nodes):
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
