"""The Helm chart in ``helm/``: linted, validated and rendered with Helm's own Go SDK
(helm-python-sdk, no helm binary), the rendered objects validated by kubernetes-validate.

The chart's two dependencies (the Apache Airflow chart, the kubeflow spark-operator chart)
are fetched by ``helm dependency update`` from their repositories, which this machine cannot
reach: so these tests render the chart's own templates with both conditions off, lint a copy
without the dependency list, and check that the missing dependencies are the real chart's
only lint error. Nothing here proves that the subcharts accept our values for them (their
own schemas are not here) or that the objects work in a cluster.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import helm_python as helm  # the test-k8s extra, installed by `make test`
import kubernetes_validate
import pytest
import yaml

from regflow.plan.compiler import compile_file
from regflow.render.k8s import KubernetesSettings, spark_applications

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm"
OFF = {"airflow": {"enabled": False}, "spark-operator": {"enabled": False}}
KUBE = "1.33.0"


def _render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    chart = helm.Chart.load(CHART)
    out = chart.render({**OFF, **(values or {})}, name="regflow", namespace="regflow")
    return [d for text in out.values() for d in yaml.safe_load_all(text) if d]


def _by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_lint_strict(tmp_path) -> None:
    """``helm lint --strict``: the chart's only error is its missing dependencies (no
    network to their repositories here); a copy without the dependency list lints with
    neither errors nor warnings.

    Does not prove: that the dependency versions resolve (``helm dependency update``).
    """
    report = helm.lint(CHART, OFF, strict=True, namespace="regflow", kube_version=KUBE)
    assert report["errors"] == [
        "chart directory is missing these dependencies: airflow,spark-operator"
    ]
    copy = tmp_path / "regflow"
    shutil.copytree(CHART, copy)
    meta = yaml.safe_load((copy / "Chart.yaml").read_text())
    assert {d["name"]: d["condition"] for d in meta.pop("dependencies")} == {
        "airflow": "airflow.enabled",
        "spark-operator": "spark-operator.enabled",
    }
    (copy / "Chart.yaml").write_text(yaml.safe_dump(meta))
    report = helm.lint(copy, OFF, strict=True, namespace="regflow", kube_version=KUBE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_values_schema_rejects_bad_values() -> None:
    """values.schema.json accepts the chart's defaults and rejects a misspelt key, a memory
    size Spark would not read, an IRSA account without its role and an unknown executor.

    Does not prove: that the subcharts' own schemas accept their sections.
    """
    chart = helm.Chart.load(CHART)
    chart.validate_schema(chart.merge_values(OFF))
    bad: list[dict[str, Any]] = [
        {"storrage": "s3://b/p"},
        {"execution": {"driver": {"memory": "2GB"}}},
        {"serviceAccounts": {"spark": {"create": True, "name": "x", "roleArn": ""}}},
        {"airflow": {"enabled": True, "executor": "SequentialExecutor"}},
        {"storage": "gs://bucket/x"},
    ]
    for values in bad:
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(chart.merge_values({**OFF, **values}))


def test_rendered_objects_are_valid_kubernetes() -> None:
    """The chart's own objects (ServiceAccounts with IRSA, the Role and RoleBinding, the
    ConfigMap) validate strictly against Kubernetes' schemas; the Role grants what the
    SparkKubernetesOperator needs, to the Airflow workers' account, in the job namespace.

    Does not prove: that these permissions suffice against a live API server.
    """
    docs = _render()
    for d in docs:
        kubernetes_validate.validate(d, KUBE, strict=True)
    objs = _by_kind(docs)
    assert set(objs) == {
        ("ServiceAccount", "regflow-spark"),
        ("ServiceAccount", "regflow-airflow-worker"),
        ("Role", "regflow-spark-submitter"),
        ("RoleBinding", "regflow-spark-submitter"),
        ("ConfigMap", "regflow-config"),
    }
    role = objs[("Role", "regflow-spark-submitter")]
    assert role["metadata"]["namespace"] == "regflow-jobs"
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules[(("sparkoperator.k8s.io",), ("sparkapplications",))] >= {
        "create",
        "get",
        "list",
        "watch",
        "delete",
    }
    assert rules[(("",), ("pods", "pods/log", "events"))] == {"get", "list", "watch"}
    binding = objs[("RoleBinding", "regflow-spark-submitter")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "regflow-airflow-worker", "namespace": "regflow"}
    ]
    spark_sa = objs[("ServiceAccount", "regflow-spark")]
    assert spark_sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(
        ":role/regflow-spark"
    )
    # an invalid object is caught: the validator is strict
    broken = dict(role, rules=[{"apiGroups": [""], "resource": ["pods"], "verbs": ["get"]}])
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE, strict=True)


def test_configmap_settings_drive_the_manifests() -> None:
    """The ConfigMap's ``kubernetes.yaml`` is a valid regflow Kubernetes settings file, and
    the manifests it yields run in the namespace the Role covers, under the IRSA account
    the chart creates, with the chart's image and per-node overrides; the Airflow values
    mount that very ConfigMap where REGFLOW_K8S_CONFIG points, and set
    REGFLOW_EXECUTOR=kubernetes (each stage a SparkKubernetesOperator reading it, see
    test_k8s_operator.py).

    Does not prove: that the Airflow chart passes ``airflow.env`` to every pod that parses or
    runs the DAGs (the dependency charts are not fetched here).
    """
    values = {
        "execution": {
            "shufflePartitions": 64,
            "driver": {"cores": 1, "memory": "2g"},
            "executor": {"cores": 2, "memory": "4g", "instances": 2},
            "overrides": {"lcr": {"classify": {"executor": {"instances": 6}}}},
        }
    }
    objs = _by_kind(_render(values))
    cm = objs[("ConfigMap", "regflow-config")]
    settings = KubernetesSettings.model_validate(yaml.safe_load(cm["data"]["kubernetes.yaml"]))
    plan = compile_file(ROOT / "pipelines" / "lcr.yaml")
    (weigh, *_) = spark_applications(plan, settings, cob="2026-03-31", run_id="r")
    assert (
        weigh["metadata"]["namespace"]
        == objs[("Role", "regflow-spark-submitter")]["metadata"]["namespace"]
    )
    assert weigh["spec"]["driver"]["serviceAccount"] == "regflow-spark"
    assert weigh["spec"]["executor"]["instances"] == 6
    env = {e["name"]: e.get("value") for e in weigh["spec"]["executor"]["env"]}
    assert env["REGFLOW_SHUFFLE_PARTITIONS"] == "64"
    assert weigh["spec"]["image"] == cm["data"]["REGFLOW_IMAGE"]
    airflow = yaml.safe_load((CHART / "values.yaml").read_text())["airflow"]
    (volume,) = [v for v in airflow["volumes"] if v["name"] == "regflow-config"]
    assert volume["configMap"]["name"] == "regflow-config"
    (mount,) = [m for m in airflow["volumeMounts"] if m["name"] == "regflow-config"]
    airflow_env = {e["name"]: e["value"] for e in airflow["env"]}
    assert airflow_env["REGFLOW_K8S_CONFIG"] == f"{mount['mountPath']}/kubernetes.yaml"
    assert cm["data"]["REGFLOW_K8S_CONFIG"] == airflow_env["REGFLOW_K8S_CONFIG"]
    assert airflow_env["REGFLOW_EXECUTOR"] == cm["data"]["REGFLOW_EXECUTOR"] == "kubernetes"
    assert airflow["executor"] == "KubernetesExecutor"
