"""Build one Airflow DAG from a plan: one task per stage, then ``publish``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param

from regflow.plan.cache import pin_plan
from regflow.plan.cob import describe as describe_cob_rule
from regflow.plan.model import Plan, task_id_of  # (task_id_of: re-exported)
from regflow.render.docs import dag_doc, load_doc, stage_display_name, stage_doc
from regflow.settings import current


def _param(default: Any) -> Param:
    if isinstance(default, bool):
        return Param(default, type="boolean")
    if isinstance(default, int):
        return Param(default, type="integer")
    if isinstance(default, float):
        return Param(default, type="number")
    return Param(None if default is None else str(default), type=["null", "string"])


def build_dag(plan: Plan) -> DAG:
    params: dict[str, Any] = {
        "cob": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Close-of-business date (YYYY-MM-DD); empty: "
            + describe_cob_rule(plan.cob_rule, plan.cob_holidays).replace("`", "")
            + ".",
        ),
    }
    params["recompute"] = Param(
        "changed",
        enum=["changed", "all"],
        description=(
            "changed: stages whose inputs, spec, rules and code are unchanged since the cob's "
            "latest successful run take its outputs; all: recompute every stage."
        ),
    )
    params.update({k: _param(v) for k, v in plan.params.items()})
    dag = DAG(
        dag_id=plan.pipeline,
        description=(plan.description.strip().splitlines() or [plan.pipeline])[0][:200],
        doc_md=dag_doc(plan),
        schedule=plan.schedule,
        start_date=dt.datetime.fromisoformat(plan.start_date).replace(tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=4,
        tags=["regflow", *plan.tags],
        params=params,
        default_args={"owner": plan.owner, "retries": 0},
    )
    # every task runs exactly this plan, or refuses (docs/architecture.md, "The plan pinned")
    key = pin_plan(plan)
    tasks = {}
    stage_ids = {s.id for s in plan.stages}
    for stage in plan.stages:
        tasks[stage.id] = _stage_operator(
            task_id=task_id_of(stage.id, stage_ids),
            dag=dag,
            kwargs={
                "spec_file": plan.file,
                "stage_id": stage.id,
                "adjustments_dir": plan.adjustments_dir,
                "plan_key": key,
            },
            doc_md=stage_doc(plan, stage),
            task_display_name=stage_display_name(plan, stage),
        )
    for stage in plan.stages:
        for up in stage.upstream:
            tasks[up] >> tasks[stage.id]
    for node in plan.star_nodes():
        load = PythonOperator(
            task_id=f"load_{node.id}",
            dag=dag,
            python_callable=_load_task,
            op_kwargs={
                "spec_file": plan.file,
                "node_id": node.id,
                "adjustments_dir": plan.adjustments_dir,
                "plan_key": key,
            },
            doc_md=load_doc(plan, node),
            task_display_name=f"load {node.id} → warehouse",
        )
        tasks[node.stage] >> load
        tasks[load.task_id] = load
    publish = PythonOperator(
        task_id="publish",
        dag=dag,
        python_callable=_publish_task,
        op_kwargs={
            "spec_file": plan.file,
            "adjustments_dir": plan.adjustments_dir,
            "plan_key": key,
        },
        doc_md="Marks the run complete and makes it the cob's latest good run.",
    )
    for t in tasks.values():
        if not t.downstream_list:
            t >> publish
    return dag


def _stage_operator(*, kwargs: dict[str, Any], **task: Any) -> Any:
    """A stage's task: in the Airflow worker (``REGFLOW_EXECUTOR=local``, the default), or a
    ``SparkApplication`` (``kubernetes``; the provider is imported only then)."""
    if current().executor == "kubernetes":
        from regflow.render.k8s_operator import StageSparkOperator

        return StageSparkOperator(**kwargs, **task)
    return PythonOperator(python_callable=_run_stage_task, op_kwargs=kwargs, **task)


def _run_stage_task(
    spec_file: str,
    stage_id: str,
    adjustments_dir: str | None = None,
    plan_key: str | None = None,
    **context: Any,
) -> dict[str, Any]:
    from regflow.render.tasks import run_stage_task

    return run_stage_task(spec_file, stage_id, context, adjustments_dir, plan_key)


def _publish_task(
    spec_file: str, adjustments_dir: str | None = None, plan_key: str | None = None, **context: Any
) -> dict[str, Any]:
    from regflow.render.tasks import publish_task

    return publish_task(spec_file, context, adjustments_dir, plan_key)


def _load_task(
    spec_file: str,
    node_id: str,
    adjustments_dir: str | None = None,
    plan_key: str | None = None,
    **context: Any,
) -> dict[str, Any]:
    from regflow.render.tasks import load_task

    return load_task(spec_file, node_id, context, adjustments_dir, plan_key)
