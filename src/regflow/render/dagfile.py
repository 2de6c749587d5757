"""Build every pipeline's DAG for a project; used by ``dags/regflow_dags.py``.

A broken spec must not hide the others. Airflow records an import error per *file*, and our
one DAG file builds all pipelines, so a broken pipeline becomes a placeholder DAG whose
``validate()`` raises the spec's error: Airflow's DagBag then records it as an import error
carrying the spec's file:line message, and keeps bagging the other pipelines' DAGs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import DAG

from regflow.errors import RegflowError
from regflow.spec.loader import pipeline_files


class BrokenPipelineDAG(DAG):
    """Stands for a pipeline whose spec does not compile; refuses to be bagged."""

    def validate(self) -> None:
        raise RegflowError(self.doc_md or "broken pipeline spec")


def dags_for_project(project_dir: Path | str) -> dict[str, DAG]:
    """One DAG per spec in ``<project>/pipelines``, keyed by a module-level variable name."""
    from regflow.plan.cache import load_plan
    from regflow.render.airflow_dag import build_dag

    project_dir = Path(project_dir)
    out: dict[str, DAG] = {}
    for path in pipeline_files(project_dir):
        try:
            dag = build_dag(load_plan(path))
        except RegflowError as exc:
            dag = _broken(path, exc)
        except Exception as exc:  # a bug must still not hide the other pipelines
            dag = _broken(path, exc)
        out[f"regflow_{dag.dag_id}"] = dag
    return out


def _broken(path: Path, exc: BaseException) -> DAG:
    import re

    dag_id = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "pipeline"
    message = f"pipeline spec {path} is invalid:\n{exc}"
    dag: Any = BrokenPipelineDAG(dag_id=dag_id, doc_md=message, schedule=None)
    return dag
