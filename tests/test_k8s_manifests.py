"""``executor: kubernetes``: the SparkApplication manifests generated from the plan.

Every manifest is validated against the vendored kubeflow spark-operator CRD
(``fixtures/k8s``), made strict: the API server prunes fields a structural schema does not
declare, so an unknown field would be silently dropped there; here it is an error.

Regenerate the golden manifests after an intended change with
``REGFLOW_UPDATE_GOLDEN=1 pytest tests/test_k8s_manifests.py`` and review the diff.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from regflow.cli.main import main
from regflow.errors import ConfigError
from regflow.plan.compiler import compile_file
from regflow.render.k8s import (
    S3A_CONF,
    KubernetesSettings,
    label_value,
    load_settings,
    manifests_yaml,
    spark_application,
    spark_applications,
)
from regflow.runtime.session import EXACT_DECIMALS, SESSION_CONF

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CRD = FIXTURES / "k8s" / "sparkoperator.k8s.io_sparkapplications.yaml"
GOLDEN = FIXTURES / "golden" / "k8s"
UPDATE = os.environ.get("REGFLOW_UPDATE_GOLDEN") == "1"
LABEL = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RUN_ID = "scheduled__2026-03-31T18:00:00+00:00"


def _strict(schema: Any) -> Any:
    """The CRD's schema with ``additionalProperties: false`` on every object that declares
    its properties and does not already say what to do with others (a map such as
    ``sparkConf`` keeps its ``additionalProperties``; ``x-kubernetes-preserve-unknown-fields``
    objects keep unknown fields, as the API server does). The CRD itself relies on the API
    server's pruning instead, which drops unknown fields silently: for a generator, that
    is a bug we want to see."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    docs = [d for d in yaml.safe_load_all(CRD.read_text()) if d]
    (version,) = [v for v in docs[0]["spec"]["versions"] if v["name"] == "v1beta2"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def _errors(validator: jsonschema.Draft7Validator, manifest: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(manifest)
    ]


def _settings() -> KubernetesSettings:
    return load_settings(GOLDEN / "settings.yaml")


SPECS = sorted((ROOT / "pipelines").glob("*.yaml")) + sorted((FIXTURES / "golden").glob("*.yaml"))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_manifest_is_valid_against_the_crd(spec: Path, validator) -> None:
    """Every stage of every repository and golden pipeline gives a manifest the strict CRD
    schema accepts, with label values and names Kubernetes accepts.

    Does not prove: that the spark-operator runs it (no cluster here), that the image holds
    the spec at the path the arguments name, or that the resources fit any node group.
    """
    plan = compile_file(spec)
    manifests = spark_applications(plan, KubernetesSettings(), cob="2026-03-31", run_id=RUN_ID)
    assert [m["spec"]["arguments"][3] for m in manifests] == [s.id for s in plan.stages]
    for m in manifests:
        assert _errors(validator, m) == []
        name = m["metadata"]["name"]
        assert DNS_1123.match(name) and len(name) <= 52, name
        for labels in (m["metadata"]["labels"], m["spec"]["driver"]["labels"]):
            for value in labels.values():
                assert LABEL.match(value) and len(value) <= 63, value
        assert m["spec"]["restartPolicy"] == {"type": "Never"}


def test_the_strict_schema_rejects_what_the_api_server_would_drop(validator) -> None:
    """The validator can fail: a field the CRD does not define (``spec.labels``, which the
    cncf-kubernetes operator's ``reattach_on_restart`` adds), a misspelt driver key, and a
    bad value are all errors.

    Does not prove: how the real API server reports them (it prunes unknown fields rather
    than refusing the object).
    """
    plan = compile_file(ROOT / "pipelines" / "lcr.yaml")
    good = spark_application(plan, "weigh", _settings(), cob="2026-03-31", run_id=RUN_ID)
    assert _errors(validator, good) == []
    bad = copy.deepcopy(good)
    bad["spec"]["labels"] = {"x": "y"}
    assert any("'labels' was unexpected" in e for e in _errors(validator, bad))
    bad = copy.deepcopy(good)
    bad["spec"]["driver"]["memoryy"] = "1g"
    assert any("'memoryy' was unexpected" in e for e in _errors(validator, bad))
    bad = copy.deepcopy(good)
    bad["spec"]["restartPolicy"] = {"type": "Sometimes"}
    assert any(e.startswith("spec.restartPolicy.type") for e in _errors(validator, bad))


def test_lcr_manifests_golden() -> None:
    """The LCR's four manifests, byte for byte, with per-node overrides from a settings file
    (``classify`` sizes the ``weigh`` stage it belongs to; ``entity_lcr`` its own).

    Does not prove: that these sizes suit 50 million deals; that is a benchmark question.
    """
    plan = compile_file(ROOT / "pipelines" / "lcr.yaml")
    text = manifests_yaml(spark_applications(plan, _settings(), cob="2026-03-31", run_id=RUN_ID))
    expected = GOLDEN / "lcr.manifests.yaml"
    if UPDATE:
        expected.write_text(text)
    assert text == expected.read_text()
    by_stage = {m["metadata"]["labels"]["regflow.io/stage"]: m for m in yaml.safe_load_all(text)}
    assert set(by_stage) == {"weigh", "entity_buckets", "entity_lcr", "lcr_star"}
    weigh, buckets, lcr = by_stage["weigh"], by_stage["entity_buckets"], by_stage["entity_lcr"]
    assert weigh["spec"]["executor"] == {
        **weigh["spec"]["executor"],
        "instances": 8,
        "memory": "8g",
        "cores": 2,
    }
    assert (buckets["spec"]["executor"]["instances"], buckets["spec"]["driver"]["memory"]) == (
        2,
        "2g",
    )
    assert (lcr["spec"]["executor"]["instances"], lcr["spec"]["driver"]["memory"]) == (1, "1g")
    assert weigh["metadata"]["labels"]["regflow.io/run-id"] == (
        "scheduled__2026-03-31T18_00_00_00_00"
    )


def test_spark_conf_comes_from_the_runtime_and_s3a_as_in_production() -> None:
    """The manifest's sparkConf holds the runtime's own session settings (the very dict
    ``get_spark`` applies: exact decimals, ANSI) and the S3A magic committer settings.

    Does not prove: that the committer classes are on the image's classpath (see
    docs/deploy.md: the image build checks for them).
    """
    plan = compile_file(ROOT / "pipelines" / "lcr.yaml")
    conf = spark_application(plan, "weigh", _settings(), cob="2026-03-31", run_id="r")["spec"][
        "sparkConf"
    ]
    assert conf["spark.sql.decimalOperations.allowPrecisionLoss"] == "false"
    assert conf["spark.sql.ansi.enabled"] == "true"
    assert EXACT_DECIMALS.items() <= SESSION_CONF.items() <= conf.items()
    assert conf["spark.hadoop.fs.s3a.committer.name"] == "magic"
    assert conf["spark.sql.sources.commitProtocolClass"] == (
        "org.apache.spark.internal.io.cloud.PathOutputCommitProtocol"
    )
    assert conf["spark.sql.parquet.output.committer.class"] == (
        "org.apache.spark.internal.io.cloud.BindingParquetOutputCommitter"
    )
    assert S3A_CONF.items() <= conf.items()
    # the local session's committer and credential chain, from the one source (runtime.s3a)
    from regflow.runtime.s3a import COMMITTER_CONF, CREDENTIALS_CONF

    assert {**COMMITTER_CONF, **CREDENTIALS_CONF}.items() <= conf.items()
    assert all(isinstance(v, str) for v in conf.values())  # the CRD's map of strings


def test_no_secret_in_the_manifest(monkeypatch) -> None:
    """The warehouse URL (with its password) never appears: the pods read it from a
    Kubernetes Secret by reference; AWS credentials come from IRSA, never from env.

    Does not prove: that the Secret exists in the cluster (deploy/smoke_test.sh checks).
    """
    monkeypatch.setenv("REGFLOW_WAREHOUSE", "redshift://etl:s3cr3t-pw@cluster:5439/risk")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "AKIA-s3cr3t-key")
    plan = compile_file(ROOT / "pipelines" / "lcr.yaml")
    text = manifests_yaml(spark_applications(plan, _settings(), cob="2026-03-31", run_id="r"))
    assert "s3cr3t" not in text
    env = yaml.safe_load_all(text).__next__()["spec"]["driver"]["env"]
    (warehouse,) = [e for e in env if e["name"] == "REGFLOW_WAREHOUSE"]
    assert warehouse == {
        "name": "REGFLOW_WAREHOUSE",
        "valueFrom": {"secretKeyRef": {"name": "regflow-warehouse", "key": "url"}},
    }
    assert not any(e["name"].startswith("AWS_SECRET") for e in env)


def test_label_values() -> None:
    """Airflow run ids become label values: invalid characters replaced, ends alphanumeric,
    a long id shortened with a hash so two long ids stay distinct."""
    assert label_value("manual__2026-11-21T22:43:13.120847+00:00") == (
        "manual__2026-11-21T22_43_13.120847_00_00"
    )
    assert label_value("-x-") == "x"
    long_a, long_b = "a" * 80 + "1", "a" * 80 + "2"
    assert len(label_value(long_a)) <= 63 and LABEL.match(label_value(long_a))
    assert label_value(long_a) != label_value(long_b)


def test_bad_settings_are_clear_errors(tmp_path) -> None:
    """A misspelt key, a bad memory size and an override of an unknown node each name the
    file (or the pipeline) and the fix."""
    bad = tmp_path / "k8s.yaml"
    bad.write_text("imagee: x\ndriver: {memory: 2GB}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(bad)
    assert str(bad) in str(err.value) and "imagee" in str(err.value)
    assert "driver.memory" in str(err.value)
    unknown = tmp_path / "u.yaml"
    unknown.write_text("overrides: {lcr: {clasify: {driver: {cores: 2}}}}\n")
    plan = compile_file(ROOT / "pipelines" / "lcr.yaml")
    with pytest.raises(ConfigError, match=r"unknown node.*clasify"):
        spark_application(plan, "weigh", load_settings(unknown), cob="2026-03-31", run_id="r")


def test_plan_cli_prints_the_manifests(capsys, monkeypatch) -> None:
    """``regflow plan lcr --executor kubernetes`` prints one YAML document per stage, with
    the plan key the DAG pins (``--plan-key``), as the DAG's operator submits them."""
    from regflow.plan.cache import load_plan, plan_pin

    monkeypatch.setenv("REGFLOW_PROJECT", str(ROOT))
    monkeypatch.setenv("REGFLOW_K8S_CONFIG", str(GOLDEN / "settings.yaml"))
    assert main(["plan", "lcr", "--executor", "kubernetes", "--cob", "2026-03-31"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["SparkApplication"] * 4
    assert docs[0]["spec"]["arguments"][-6:] == [
        "--cob",
        "2026-03-31",
        "--run-id",
        "manual__preview",
        "--plan-key",
        plan_pin(load_plan(ROOT / "pipelines" / "lcr.yaml")),
    ]


def test_the_runs_params_reach_the_driver() -> None:
    """A trigger's params that differ from the spec's defaults, and ``recompute: all``, are on
    the driver's command line (stage_main's ``--param`` / ``--recompute``); defaults and the
    cob (its own flag) are not repeated, so a default run's manifest is the golden one."""
    plan = compile_file(ROOT / "pipelines" / "lcr.yaml")
    default = dict(plan.params)
    args = spark_application(
        plan, "weigh", _settings(), cob="2026-03-31", run_id="r",
        params={"cob": "2026-03-31", "recompute": "changed", **default},
    )["spec"]["arguments"]  # fmt: skip
    assert args == ["--spec", "/opt/regflow/project/pipelines/lcr.yaml", "--stage", "weigh",
                    "--cob", "2026-03-31", "--run-id", "r"]  # fmt: skip
    args = spark_application(
        plan, "weigh", _settings(), cob="2026-03-31", run_id="r", plan_key="k",
        params={"recompute": "all", "data_root": "/mnt/deals", "typo_root": "/x"},
    )["spec"]["arguments"]  # fmt: skip
    assert args[args.index("r") + 1 :] == [
        "--recompute", "all", "--param", "data_root=/mnt/deals", "--param", "typo_root=/x",
        "--plan-key", "k",
    ]  # fmt: skip


def test_the_workers_storage_must_be_the_pods(monkeypatch, tmp_path):
    """A stage task refuses to submit when the Airflow workers (claim, load, publish) and
    the Spark pods (the Kubernetes settings' ``storage``) were given two storages: the run
    would otherwise fail at its load or publish another storage's outputs."""
    from regflow import settings
    from regflow.render.k8s_operator import require_one_storage

    monkeypatch.setenv("REGFLOW_STORAGE", "s3://bank-data/regflow")
    settings.reset()
    require_one_storage("s3://bank-data/regflow/", tmp_path)  # the same prefix: accepted
    with pytest.raises(ConfigError) as info:
        require_one_storage("s3://bank-data/other", tmp_path)
    message = str(info.value)
    assert "workers' storage is s3://bank-data/regflow (REGFLOW_STORAGE)" in message
    assert "the Spark pods' is s3://bank-data/other" in message and "one value" in message
    monkeypatch.delenv("REGFLOW_STORAGE")
    settings.reset()
    with pytest.raises(ConfigError, match="REGFLOW_STORAGE unset"):
        require_one_storage("s3://bank-data/regflow", tmp_path)
