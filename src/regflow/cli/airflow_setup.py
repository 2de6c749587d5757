"""Airflow for ``regflow run`` (see ``airflow_run.py``): its home and metadata database, the
generated one-file DAGs folder, a log file per run, and Airflow's output sent to it.

Airflow is configured before it is imported: ``AIRFLOW_HOME`` defaults to the project
root's ``.regflow/airflow`` (SQLite), and the database is migrated on first use.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from regflow import settings
from regflow.errors import ConfigError


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
def redirect_fds(target: TextIO) -> Iterator[TextIO]:
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
