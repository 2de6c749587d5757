"""``executor: kubernetes``: a stage task is the cncf-kubernetes provider's
``SparkKubernetesOperator``, submitting the stage's ``SparkApplication``
(:mod:`regflow.render.k8s`).

Imported only by a DAG built with ``REGFLOW_EXECUTOR=kubernetes`` (the provider and the
kubernetes client are not imported by a local deployment's DAG parse).

The manifest is the one ``regflow plan PIPELINE --executor kubernetes --cob C --run-id R``
prints. It is passed as ``template_spec`` when the task executes, because the cob and the run
id are only known then. The provider then adds exactly three things, by design: a random
suffix to ``metadata.name`` (``random_name_suffix``), its task labels (dag_id, task_id,
run_id, try_number, spark_kubernetes_operator) on the driver and executor pods (which is how
``reattach_on_restart`` finds a running driver again), and the ``SPARK_APPLICATION_NAME`` env.

The provider's quirks, and how they are countered here:

- ``reattach_on_restart`` also writes its labels to ``spec.labels``, a field the
  ``SparkApplication`` CRD does not define (the API server would prune it): they are moved to
  ``metadata.labels`` just before the submission (:func:`conform_to_crd`), so the object the
  API server receives validates against the CRD and is itself findable by those labels.
- ``container_resources`` divides memory by 1.4: not used; the memory is in
  ``spec.driver.memory`` / ``spec.executor.memory`` as the plan's settings say.
- a ``kubernetes:`` section of the body replaces env, mounts, affinity...: never given.
- an application that fails before the provider's first status poll sees it running raises
  in the provider's submission step, which then leaves it behind: it is deleted here.

Operator settings: ``get_logs`` (the driver log in the task log), ``reattach_on_restart``,
``delete_on_termination`` and ``random_name_suffix``. ``restartPolicy: Never`` is in the
manifest, so Airflow owns retries.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.spark_kubernetes import SparkKubernetesOperator


def conform_to_crd(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` (the ``SparkApplication`` about to be created) without ``spec.labels``, which
    the CRD does not define: its labels go to ``metadata.labels`` (the pods already carry
    them through ``spec.driver.labels`` and ``spec.executor.labels``). In place; returned."""
    labels = body.get("spec", {}).pop("labels", None) or {}
    if labels:
        meta = body.setdefault("metadata", {})
        meta["labels"] = {**labels, **(meta.get("labels") or {})}
    return body


def stage_manifest(
    spec_file: str,
    stage_id: str,
    context: dict[str, Any],
    adjustments_dir: str | None,
    plan_key: str | None,
) -> dict[str, Any]:
    """The ``SparkApplication`` of ``stage_id`` for the run of ``context``: the DAG's pinned
    plan, the run's cob (its ``cob`` param, else the cob rule, as a local task), the raw
    Airflow run id, the run's params (those that differ from the spec's defaults), the
    deployment's Kubernetes settings."""
    from regflow.plan.cache import load_pinned
    from regflow.project import project_root
    from regflow.render.k8s import load_settings, spark_application
    from regflow.render.tasks import _cob

    plan = load_pinned(spec_file, adjustments=adjustments_dir, pin=plan_key)
    project = project_root(plan.file)
    settings = load_settings(project=project)
    require_one_storage(settings.storage, project)
    return spark_application(
        plan,
        stage_id,
        settings,
        cob=_cob(context, plan).isoformat(),
        run_id=str(context["run_id"]),
        plan_key=plan_key,
        params=dict(context.get("params") or {}),
    )


def require_one_storage(pods: str, project: Any) -> None:
    """The Spark pods write where the Airflow workers read: the claim, the warehouse load and
    the publish run on the workers (``REGFLOW_STORAGE``) and take the stages' outputs from
    the storage the pods were given (``storage`` of the Kubernetes settings). Two values
    would make a run fail at its load, or publish another storage's outputs; a
    :class:`ConfigError` before any submission instead (the chart sets both from one value)."""
    from regflow.errors import ConfigError
    from regflow.settings import current
    from regflow.storage import resolve_root

    workers = resolve_root(None, project)
    if str(resolve_root(pods, project)) != str(workers):
        where = "REGFLOW_STORAGE" if current().storage else "the default: REGFLOW_STORAGE unset"
        raise ConfigError(
            f"the Airflow workers' storage is {workers} ({where}) but the Spark pods' is "
            f"{pods} (storage in the Kubernetes settings, deploy/kubernetes.yaml or "
            "$REGFLOW_K8S_CONFIG): the workers claim, load and publish what the pods write, "
            "so set both from one value (the Helm chart's `storage` sets both)"
        )


class StageSparkOperator(SparkKubernetesOperator):
    """One stage of a regflow DAG as a ``SparkApplication`` (see the module docstring)."""

    def __init__(
        self,
        *,
        spec_file: str,
        stage_id: str,
        adjustments_dir: str | None = None,
        plan_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            get_logs=True,
            reattach_on_restart=True,
            delete_on_termination=True,
            random_name_suffix=True,
            **kwargs,
        )
        self.spec_file = spec_file
        self.stage_id = stage_id
        self.adjustments_dir = adjustments_dir
        self.plan_key = plan_key

    def execute(self, context: Any) -> Any:
        manifest = stage_manifest(
            self.spec_file, self.stage_id, context, self.adjustments_dir, self.plan_key
        )
        self.template_spec = manifest
        self.namespace = manifest["metadata"]["namespace"]
        return super().execute(context)

    def get_or_create_spark_crd(self, launcher: Any, context: Any) -> Any:
        conform_to_crd(launcher.body)  # what start_spark_job posts
        try:
            return super().get_or_create_spark_crd(launcher, context)
        except Exception:
            # the provider raises here when the application failed before its first status
            # poll saw it running, and then never deletes it: do, as delete_on_termination says
            if self.delete_on_termination and launcher.spark_obj_spec:
                launcher.delete_spark_job()
            raise
