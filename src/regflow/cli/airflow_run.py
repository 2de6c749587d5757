"""Run a pipeline through real Airflow: ``dag.test()`` on a local metadata database.

Airflow is configured before it is imported: ``AIRFLOW_HOME`` defaults to
``./.regflow/airflow`` (SQLite), the DAGs folder is the project's ``dags/``, and the
database is migrated on first use. Airflow's own log goes to a file under that home.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from regflow.errors import ConfigError, RunError


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
    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(project_dir / ".regflow" / "airflow")))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(project_dir / "dags")
    os.environ.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "120")
    home.mkdir(parents=True, exist_ok=True)
    return home


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
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
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
    from regflow.spec.loader import project_dir_of

    project = project_dir_of(spec_path)
    home = configure_airflow(project)
    os.environ["REGFLOW_STORAGE"] = str(storage_root)
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"regflow-run-{dt.datetime.now():%Y%m%dT%H%M%S}.log"
    with open(log_path, "a") as log:
        ensure_db(home, log)
        from regflow.plan.cache import load_plan
        from regflow.runtime import progress

        plan = load_plan(spec_path, adjustments=adjustments)
        t0 = time.perf_counter()
        redirect = contextlib.nullcontext(sys.stdout) if verbose else _redirect_fds(log)
        with redirect as real_stdout:
            progress.set_sink(real_stdout)
            try:
                from airflow.settings import configure_orm

                with contextlib.suppress(Exception):
                    configure_orm()
                from regflow.render.airflow_dag import build_dag

                dag = build_dag(plan)
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
    for task_id in plan.task_ids():
        rep = run.stage_report(task_id)
        err = rep.with_name(f"{task_id}.error.json")
        if rep.exists():
            result.stages.append(json.loads(rep.read_text()))
        if err.exists():
            result.errors.append(json.loads(err.read_text()))
    if state != "success":
        detail = "; ".join(e["message"] for e in result.errors) or (
            f"the DAG run ended in state '{state}'"
        )
        message = f"{detail}\n(Airflow log: {log_path}; previous successful outputs are untouched)"
        if result.errors and all(e["message"].startswith("[") for e in result.errors):
            # the stages' own errors name pipeline, node and cob already: not a second prefix
            exc = RunError(message)
            exc.pipeline, exc.cob = plan.pipeline, cob
            raise exc
        raise RunError(message, pipeline=plan.pipeline, cob=cob)
    return result
