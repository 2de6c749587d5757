"""``executor: kubernetes``: one kubeflow spark-operator ``SparkApplication`` per stage.

Pure data: a plan stage plus the deployment's :class:`KubernetesSettings` in, a manifest
dict (``sparkoperator.k8s.io/v1beta2``) out. Nothing here talks to a cluster or imports
airflow or pyspark; ``regflow plan PIPELINE --executor kubernetes`` prints these very dicts.

The driver pod runs the same stage entrypoint as the local executor's Airflow task
(:mod:`regflow.render.stage_main`, which calls :func:`regflow.render.tasks.run_stage_task`).

Resources are a deployment choice, not a spec one (the executor is chosen per deployment):
project defaults and per-node overrides live in a deployment file (``REGFLOW_K8S_CONFIG``,
else ``deploy/kubernetes.yaml`` under the project root, else built-in defaults), so sizing a
cluster never touches a spec, its data hash or its metadata hash.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from regflow.errors import ConfigError
from regflow.plan.model import Plan, Stage
from regflow.runtime.s3a import s3a_conf
from regflow.runtime.session import DEFAULT_JAVA_OPTIONS, SESSION_CONF

API_VERSION = "sparkoperator.k8s.io/v1beta2"
K8S_CONFIG_ENV = "REGFLOW_K8S_CONFIG"
# where the image keeps the project (pipelines/, operators/, adjustments/) and the launcher
PROJECT_IN_IMAGE = "/opt/regflow/project"
MAIN_FILE = "local:///opt/regflow/stage_main.py"

# S3A as in production, from the one source the local session uses too
# (regflow.runtime.s3a): the magic committer through Spark's PathOutputCommitProtocol (no
# rename on S3), credentials from the SDK's default chain (IRSA's web identity token in
# EKS). No endpoint or region: on EKS the SDK finds them (AWS_REGION from the pod's env).
S3A_CONF = {"spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem", **s3a_conf({})}

_LABEL_OK = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PodSize(_Strict):
    cores: int | None = Field(default=None, ge=1)
    memory: str | None = Field(default=None, pattern=r"^[1-9][0-9]*[kmgt]$")
    instances: int | None = Field(default=None, ge=1)  # executors only


class NodeOverride(_Strict):
    driver: PodSize = PodSize()
    executor: PodSize = PodSize()


class KubernetesSettings(_Strict):
    """One deployment's settings (the Helm chart's ConfigMap holds the same file)."""

    image: str = "regflow:0.1.0"
    image_pull_policy: str = Field(default="IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    namespace: str = "regflow-jobs"
    service_account: str = "regflow-spark"  # annotated with the IRSA role
    storage: str = "s3://regflow-data/storage"  # REGFLOW_STORAGE of the driver and executors
    aws_region: str = "eu-west-1"
    warehouse_secret: str = "regflow-warehouse"  # a Kubernetes Secret: key `url`
    warehouse_secret_key: str = "url"
    spark_version: str = ""  # default: the installed pyspark's, which the image matches
    shuffle_partitions: int = Field(default=200, ge=1)  # REGFLOW_SHUFFLE_PARTITIONS (local: 8)
    driver: PodSize = PodSize(cores=1, memory="2g")
    executor: PodSize = PodSize(cores=2, memory="4g", instances=2)
    # {pipeline: {node id: {driver: {...}, executor: {...}}}}: a stage takes the override
    # of the node it is named after, else of any one of its nodes that has one
    overrides: dict[str, dict[str, NodeOverride]] = {}


def load_settings(
    path: str | Path | None = None, project: Path | None = None
) -> KubernetesSettings:
    """``path``, else ``$REGFLOW_K8S_CONFIG``, else ``<project>/deploy/kubernetes.yaml`` if it
    exists, else the defaults. An unknown key or a bad value is a ConfigError naming it."""
    import yaml

    from regflow.settings import current

    chosen = path or current().k8s_config
    if chosen is None and project is not None and (project / "deploy/kubernetes.yaml").is_file():
        chosen = project / "deploy" / "kubernetes.yaml"
    if chosen is None:
        return KubernetesSettings()
    file = Path(chosen)
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{file}: cannot read the Kubernetes settings: {exc}") from exc
    try:
        return KubernetesSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(
            f"{file}: invalid Kubernetes settings: {problems} "
            "(see docs/deploy.md#kubernetes-settings for the keys)"
        ) from exc


def label_value(text: str) -> str:
    """``text`` as a Kubernetes label value: ``[-A-Za-z0-9_.]``, alphanumeric at both ends,
    at most 63 characters (a shortened value keeps a hash of the whole, so stays unique)."""
    value = re.sub(r"[^-A-Za-z0-9_.]", "_", text).strip("-_.")
    if len(value) > 63:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        value = f"{value[:54].rstrip('-_.')}-{digest}"
    assert _LABEL_OK.match(value), value
    return value


def _dns_name(*parts: str, limit: int = 52) -> str:
    """A DNS-1123 name, short enough for the operator's ``-driver`` pod and its service."""
    name = re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if len(name) > limit:
        name = name[:limit].rstrip("-")
    return name


def _size(settings: KubernetesSettings, plan: Plan, stage: Stage, role: str) -> PodSize:
    base: PodSize = getattr(settings, role)
    overrides = settings.overrides.get(plan.pipeline, {})
    unknown = sorted(set(overrides) - {n.id for n in plan.nodes})
    if unknown:
        raise ConfigError(
            f"Kubernetes settings: overrides for pipeline {plan.pipeline!r} name unknown "
            f"node(s) {', '.join(unknown)}; use node ids of `regflow plan {plan.pipeline}`"
        )
    named = [n for n in (stage.id, *reversed(stage.nodes)) if n in overrides]
    if not named:
        return base
    override: PodSize = getattr(overrides[named[0]], role)
    return base.model_copy(update=override.model_dump(exclude_none=True))


def stage_args(
    plan: Plan,
    stage_id: str,
    cob: str,
    run_id: str,
    spec_in_image: str | None = None,
    plan_key: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> list[str]:
    """The command line of :mod:`regflow.render.stage_main` for one stage; with the DAG's
    ``plan_key`` (:func:`regflow.plan.cache.plan_pin`) the stage refuses any other plan.

    ``params`` are the run's DAG params (a trigger's conf): ``recompute`` other than
    ``changed`` and every other param whose value differs from the spec's default are passed
    on (``--recompute``, ``--param K=V``), so the driver runs with the params a local task
    would see; an unknown name reaches the driver, which refuses it as a local task does."""
    spec = spec_in_image or f"{PROJECT_IN_IMAGE}/pipelines/{Path(plan.file).name}"
    args = ["--spec", spec, "--stage", stage_id, "--cob", cob, "--run-id", run_id]
    given = dict(params or {})
    given.pop("cob", None)
    recompute = given.pop("recompute", None) or "changed"
    if recompute != "changed":
        args += ["--recompute", str(recompute)]
    for name in sorted(given):
        value = given[name]
        if value is None or (name in plan.params and value == plan.params[name]):
            continue
        args += ["--param", f"{name}={value}"]
    return [*args, *(["--plan-key", plan_key] if plan_key else [])]


@dataclass(frozen=True)
class RunLabels:
    pipeline: str
    stage: str
    cob: str
    run_id: str

    @property
    def as_dict(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "regflow",
            "app.kubernetes.io/component": "stage",
            "regflow.io/pipeline": label_value(self.pipeline),
            "regflow.io/stage": label_value(self.stage),
            "regflow.io/cob": label_value(self.cob),
            "regflow.io/run-id": label_value(self.run_id),
        }


def spark_application(
    plan: Plan,
    stage_id: str,
    settings: KubernetesSettings,
    *,
    cob: str,
    run_id: str,
    plan_key: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``SparkApplication`` that runs ``stage_id`` of ``plan`` for one run (with the
    run's DAG ``params``, see :func:`stage_args`).

    ``cob`` and ``run_id`` are filled at submit time (the raw Airflow run id: the entrypoint
    makes it storage-safe as the local task does; labels carry a label-safe form). The name
    carries a hash of (cob, run id), so two runs never collide and a resubmission of the same
    run finds its own application. No secret is in it: the warehouse URL comes from a
    Kubernetes Secret by reference, AWS credentials from IRSA.
    """
    stage = next((s for s in plan.stages if s.id == stage_id), None)
    if stage is None:
        raise ConfigError(
            f"pipeline {plan.pipeline!r} has no stage {stage_id!r} "
            f"(stages: {', '.join(s.id for s in plan.stages)})"
        )
    labels = RunLabels(plan.pipeline, stage_id, cob, run_id).as_dict
    run_hash = hashlib.sha256(f"{cob}\0{run_id}".encode()).hexdigest()[:8]
    env = [
        {"name": "REGFLOW_PROJECT", "value": PROJECT_IN_IMAGE},
        {"name": "REGFLOW_STORAGE", "value": settings.storage},
        {"name": "AWS_REGION", "value": settings.aws_region},
        {"name": "REGFLOW_SHUFFLE_PARTITIONS", "value": str(settings.shuffle_partitions)},
        {
            "name": "REGFLOW_WAREHOUSE",
            "valueFrom": {
                "secretKeyRef": {
                    "name": settings.warehouse_secret,
                    "key": settings.warehouse_secret_key,
                }
            },
        },
    ]
    driver = _size(settings, plan, stage, "driver")
    executor = _size(settings, plan, stage, "executor")
    return {
        "apiVersion": API_VERSION,
        "kind": "SparkApplication",
        "metadata": {
            "name": _dns_name("regflow", plan.pipeline, stage_id, run_hash),
            "namespace": settings.namespace,
            "labels": labels,
        },
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "image": settings.image,
            "imagePullPolicy": settings.image_pull_policy,
            "sparkVersion": settings.spark_version or metadata.version("pyspark"),
            "mainApplicationFile": MAIN_FILE,
            "arguments": stage_args(plan, stage_id, cob, run_id, plan_key=plan_key, params=params),
            "sparkConf": {**SESSION_CONF, **S3A_CONF},
            # Airflow owns retries (a retried task resubmits); the operator never restarts
            "restartPolicy": {"type": "Never"},
            "driver": {
                "cores": driver.cores,
                "memory": driver.memory,
                "serviceAccount": settings.service_account,
                "labels": dict(labels),
                "env": copy.deepcopy(env),
                "javaOptions": DEFAULT_JAVA_OPTIONS,
            },
            "executor": {
                "cores": executor.cores,
                "memory": executor.memory,
                "instances": executor.instances,
                "serviceAccount": settings.service_account,
                "labels": dict(labels),
                "env": copy.deepcopy(env),
                "javaOptions": DEFAULT_JAVA_OPTIONS,
            },
        },
    }


def spark_applications(
    plan: Plan,
    settings: KubernetesSettings,
    *,
    cob: str,
    run_id: str,
    plan_key: str | None = None,
) -> list[dict[str, Any]]:
    """One manifest per stage, in the plan's stage order. Loads and publish are not here:
    they stay light Airflow tasks."""
    return [
        spark_application(plan, s.id, settings, cob=cob, run_id=run_id, plan_key=plan_key)
        for s in plan.stages
    ]


def manifests_yaml(manifests: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump_all(manifests, sort_keys=False, default_flow_style=False)
