"""What Airflow's dag-processor imports once, before it forks a child per DAG file parse.

Airflow 3 parses every DAG file in a fresh fork of its dag-processor, every
``min_file_process_interval`` (30 s by default): whatever a regflow DAG file imports that
the dag-processor has not imported yet is imported again by every parse of every file. A
deployment imports this module from its ``airflow_local_settings.py`` (the Helm chart does:
``airflow.airflowLocalSettings``), which every Airflow process imports at start, so each
parse inherits regflow's DAG building and, with ``REGFLOW_EXECUTOR=kubernetes``, the
provider's ``SparkKubernetesOperator`` and the kubernetes client (~0.7 s per parse
otherwise). A local deployment does not import the provider here either.

Nothing runs at import beyond the imports (no settings are frozen: the executor is read
again at each parse).
"""

from __future__ import annotations


def preload() -> list[str]:
    """Import what a regflow DAG file's parse needs; returns the modules imported. Never
    raises for a bad setting: Airflow would not start; the parse reports it instead."""
    import importlib

    from regflow.errors import RegflowError
    from regflow.settings import current

    names = ["regflow.render.dagfile", "regflow.render.airflow_dag", "regflow.plan.cache"]
    try:
        kubernetes = current().executor == "kubernetes"
    except RegflowError:  # (a bad REGFLOW_* value: each parse's import error names it)
        kubernetes = False
    if kubernetes:
        names.append("regflow.render.k8s_operator")
    for name in names:
        importlib.import_module(name)
    return names


preload()
