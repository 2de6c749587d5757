"""The local Airflow database's runs of ``regflow run`` whose process died.

``regflow run`` runs a DAG in its own process (``dag.test``). Killed (SIGKILL, a closed
laptop, an out-of-memory kill), it leaves its DAG run and task instances ``running`` in the
local metadata database forever. So each ``regflow run`` leaves a *driver file*,
``<AIRFLOW_HOME>/regflow-drivers/<pid>.json`` (pid, host, DAG, start time), for as long as
its DAG runs; the next ``regflow run`` finds the files of processes that are gone (on this
host) and marks their DAG's runs that were still ``running`` and started after the dead
process did as ``failed``, with their unfinished task instances.

Only runs with a dead driver file are touched: a real Airflow deployment's database (an
``AIRFLOW_HOME`` pointing at one) has no such files, so its runs are never changed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

DRIVERS = "regflow-drivers"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@contextlib.contextmanager
def driver(home: Path, dag_id: str) -> Iterator[Path]:
    """Mark this process as the driver of a run of ``dag_id`` while the block runs."""
    folder = home / DRIVERS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}.json"
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)  # (DB stamps: same clock)
    path.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "dag_id": dag_id,
                "started": started.isoformat(),
            }
        )
    )
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def fail_dead_runs(home: Path) -> list[str]:
    """Mark the runs of dead ``regflow run`` processes failed; one note per run marked."""
    folder = home / DRIVERS
    notes: list[str] = []
    if not folder.is_dir():
        return notes
    for path in sorted(folder.glob("*.json")):
        try:
            info = json.loads(path.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if info.get("host") != socket.gethostname() or _alive(pid):
            continue
        started = dt.datetime.fromisoformat(info["started"])
        for run_id in _fail_runs(str(info["dag_id"]), started):
            notes.append(
                f"marked run {run_id} of {info['dag_id']} failed in the local Airflow database "
                f"(its `regflow run` process {pid} died)"
            )
        path.unlink(missing_ok=True)
    return notes


def _fail_runs(dag_id: str, since: dt.datetime) -> list[str]:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    unfinished = [
        None,
        TaskInstanceState.RUNNING,
        TaskInstanceState.QUEUED,
        TaskInstanceState.SCHEDULED,
        TaskInstanceState.UP_FOR_RETRY,
        TaskInstanceState.DEFERRED,
    ]
    now = dt.datetime.now(dt.UTC)
    marked = []
    with create_session() as session:
        runs = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.state == DagRunState.RUNNING)
        ).all()
        for run in runs:
            start = run.start_date or run.run_after
            if start is not None and start < since:
                continue
            for ti in session.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id
                )
            ).all():
                if ti.state in unfinished:
                    ti.state = TaskInstanceState.FAILED
                    ti.end_date = now
            run.state = DagRunState.FAILED
            run.end_date = now
            marked.append(run.run_id)
    return marked
