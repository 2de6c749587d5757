"""``REGFLOW_EXECUTOR=kubernetes``: each stage task is the real cncf-kubernetes
``SparkKubernetesOperator``, run by ``airflow dags test`` / ``airflow tasks test`` against the
Kubernetes API stub of ``k8s_stub.py`` on loopback (an Airflow connection
``kubernetes_default`` with a kubeconfig pointing at it).

None of these tests proves anything about a real cluster: there is no real API server (the
stub validates strictly against the CRD, where the real one would prune unknown fields), no
spark-operator (the stub's "driver" is a function of the test: no executors, no
spark-submit, no image), and no pod runs.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_stub import KubeStub

from regflow.render.dagfile import write_dag_files
from regflow.render.k8s_operator import conform_to_crd

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW = Path(sys.executable).parent / "airflow"
PIPELINE = "linear"  # one stage (`classified`), then publish
STAGE = "classified"
COB = "2026-03-31"
SETTINGS = {
    "image": "regflow-spark:test",
    "namespace": "regflow-jobs",
    "service_account": "regflow-spark",
    "driver": {"cores": 1, "memory": "3g"},
    "executor": {"cores": 2, "memory": "7g", "instances": 3},
}
# what the provider adds to the manifest it is given, by design (render/k8s_operator.py)
PROVIDER_LABELS = {"dag_id", "task_id", "run_id", "try_number", "spark_kubernetes_operator"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict[str, Any]:
    """A project with one pipeline and its DAG file, Kubernetes settings, a migrated Airflow
    home."""
    base = tmp_path_factory.mktemp("k8s")
    project = base / "project"
    (project / "pipelines").mkdir(parents=True)
    shutil.copy(ROOT / "tests/fixtures/golden/linear.yaml", project / "pipelines/linear.yaml")
    write_dag_files(project)
    (project / "deploy").mkdir()
    settings = {**SETTINGS, "storage": str(base / "storage")}
    (project / "deploy/kubernetes.yaml").write_text(yaml.safe_dump(settings))
    home = base / "airflow"
    env = _env(project, home, base / "kubeconfig")
    proc = subprocess.run(
        [str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"base": base, "project": project, "home": home, "kubeconfig": base / "kubeconfig"}


def _env(project: Path, home: Path, kubeconfig: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "REGFLOW_"))}
    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}
    return {
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(conn),
        "REGFLOW_EXECUTOR": "kubernetes",
        "REGFLOW_PROJECT": str(project),
        "REGFLOW_CACHE_DIR": str(project.parent / "cache"),
        # the workers' storage is the pods' (the chart sets both from one value)
        "REGFLOW_STORAGE": str(project.parent / "storage"),
    }


def _airflow(project: dict[str, Any], *args: str, timeout: float = 600) -> subprocess.Popen:
    env = _env(project["project"], project["home"], project["kubeconfig"])
    return subprocess.Popen(
        [str(AIRFLOW), *args],
        env=env,
        cwd=project["project"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    """The process's output, ending with how it exited: a failure message then tells a task
    that failed from a process killed from outside (a negative code: the OOM killer on an
    overloaded machine ends `dags test` mid-task, its task left "queued")."""
    out, _ = proc.communicate(timeout=timeout)
    code = proc.returncode
    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    return f"{out}\n[airflow dags test: {how}]"


def _dags_test(project: dict[str, Any], **conf: str) -> subprocess.Popen:
    conf = {"cob": COB, **conf}
    return _airflow(project, "dags", "test", PIPELINE, COB, "-c", json.dumps(conf))


def _task_states(project: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The latest run of the pipeline and its task states, from Airflow's database."""
    with sqlite3.connect(project["home"] / "airflow.db") as db:
        (run_id,) = db.execute(
            "select run_id from dag_run where dag_id = ? order by id desc limit 1", (PIPELINE,)
        ).fetchone()
        states = dict(
            db.execute(
                "select task_id, state from task_instance where dag_id = ? and run_id = ?",
                (PIPELINE, run_id),
            ).fetchall()
        )
    return run_id, states


def _plan_manifest(project: dict[str, Any], run_id: str) -> dict[str, Any]:
    """What `regflow plan --executor kubernetes` prints for the stage and run."""
    env = _env(project["project"], project["home"], project["kubeconfig"])
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "regflow"), "plan", PIPELINE, "--executor",
         "kubernetes", "--cob", COB, "--run-id", run_id],
        env=env, cwd=project["project"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (doc,) = list(yaml.safe_load_all(proc.stdout))
    return doc


def _without_provider_additions(sent: dict[str, Any]) -> dict[str, Any]:
    """``sent`` minus what the provider adds by design: the name's random suffix, its task
    labels, the ``SPARK_APPLICATION_NAME`` env."""
    out = copy.deepcopy(sent)
    name = out["metadata"]["name"]
    out["metadata"]["name"] = name.rsplit("-", 1)[0]
    for labels in (out["metadata"]["labels"], out["spec"]["driver"]["labels"],
                   out["spec"]["executor"]["labels"]):  # fmt: skip
        for key in PROVIDER_LABELS:
            labels.pop(key, None)
    for role in ("driver", "executor"):
        env = out["spec"][role]["env"]
        assert env[-1] == {"name": "SPARK_APPLICATION_NAME", "value": name}
        out["spec"][role]["env"] = env[:-1]
    return out


def _ok(app: dict[str, Any], emit) -> int:
    emit("driver: stage classified done")
    return 0


def test_stage_succeeds_and_the_submitted_manifest_is_the_plans(project, tmp_path):
    """The stage task succeeds; the stub received exactly one SparkApplication, valid against
    the strict CRD (so no ``spec.labels``), equal to what `regflow plan --executor
    kubernetes` prints for that cob and run once the provider's documented additions are
    removed; memory is the settings' (not divided by 1.4), env and labels survive, and the
    application is deleted at the end (delete_on_termination).

    Does not prove: that Spark runs the stage (the stub's driver only logs a line, so the
    run's publish, which needs the stage's outputs, is not asserted here).
    """
    with KubeStub(driver=_ok) as stub:
        stub.kubeconfig(project["kubeconfig"])
        out = _finish(_dags_test(project))
        run_id, states = _task_states(project)
        assert states[STAGE] == "success", out[-5000:]
        assert stub.invalid == []
        (sent,) = stub.received
        assert stub.states[sent["metadata"]["name"]] == ["SUBMITTED", "RUNNING", "COMPLETED"]
        assert stub.deleted == [sent["metadata"]["name"]]
    assert "driver: stage classified done" in out
    plan = _plan_manifest(project, run_id)
    assert _without_provider_additions(sent) == plan
    spec = sent["spec"]
    assert "labels" not in spec
    assert (spec["driver"]["memory"], spec["executor"]["memory"]) == ("3g", "7g")
    assert (spec["executor"]["instances"], spec["driver"]["cores"]) == (3, 1)
    assert spec["arguments"][spec["arguments"].index("--run-id") + 1] == run_id
    assert "--plan-key" in spec["arguments"]
    env = {e["name"]: e for e in spec["driver"]["env"]}
    assert env["REGFLOW_STORAGE"]["value"] == str(project["base"] / "storage")
    assert env["REGFLOW_WAREHOUSE"]["valueFrom"]["secretKeyRef"]["name"] == "regflow-warehouse"
    labels = sent["metadata"]["labels"]
    assert labels["regflow.io/stage"] == STAGE and labels["regflow.io/cob"] == COB
    assert labels["dag_id"] == PIPELINE and labels["task_id"] == STAGE
    assert sent["metadata"]["namespace"] == "regflow-jobs"
    assert spec["restartPolicy"] == {"type": "Never"}


def test_conform_to_crd_moves_the_provider_labels() -> None:
    """The provider's ``spec.labels`` go to ``metadata.labels``; regflow's own keep theirs."""
    body = {"metadata": {"labels": {"regflow.io/stage": "s"}}, "spec": {"labels": {"a": "b"}}}
    assert conform_to_crd(body) == {
        "metadata": {"labels": {"a": "b", "regflow.io/stage": "s"}},
        "spec": {},
    }


@pytest.mark.parametrize("when", ["while_followed", "before_first_poll"])
def test_driver_failure_fails_the_task_with_the_driver_log(project, when):
    """A driver exiting 1 fails the stage task; the driver's log, served by the stub, is in
    the task log; the failed application is deleted (delete_on_termination); the trigger's
    params (``data_root``, ``recompute``) are on the driver's command line. Two timings:
    the driver fails while the operator follows its log (the usual case), or before the
    operator's first status poll (the provider then raises in its submission step, and left
    the application behind before regflow's operator deleted it).

    Does not prove: what a real driver prints (see test_stage_main.py for the entrypoint's
    own error output).
    """
    with KubeStub() as stub:

        def fail(app: dict[str, Any], emit) -> int:
            if when == "while_followed":
                pod = f"{app['metadata']['name']}-driver"
                stub.wait_for(lambda: stub.log_follows.get(pod, 0) >= 1, timeout=600)
            emit("Traceback (most recent call last):")
            emit("regflow-driver-marker: error: source deals: no parquet files under /data/deals")
            return 1

        stub.driver = fail
        stub.kubeconfig(project["kubeconfig"])
        out = _finish(_dags_test(project, data_root="/mnt/deals", recompute="all"))
        _, states = _task_states(project)
        assert len(stub.received) == 1, out[-5000:]
        (sent,) = stub.received
        name = sent["metadata"]["name"]
        assert stub.states[name] == ["SUBMITTED", "RUNNING", "FAILED"]
        assert stub.deleted == [name]
    # the trigger's params reach the driver, as a local task sees them
    args = sent["spec"]["arguments"]
    assert args[args.index("--run-id") + 2 :] == [
        "--recompute", "all", "--param", "data_root=/mnt/deals", "--plan-key", args[-1]
    ]  # fmt: skip
    assert states[STAGE] == "failed"
    assert states.get("publish") in ("upstream_failed", None)
    assert "regflow-driver-marker: error: source deals: no parquet files" in out


def test_reattach_after_a_worker_restart_submits_once(project):
    """The worker running the stage task dies (SIGKILL) while the driver runs; a second
    execution of the task for the same run finds the running driver by its labels, follows
    it to the end and succeeds, and the stub received ONE SparkApplication.

    Does not prove: the scheduler's handling of the dead worker (the second execution is
    `airflow tasks test` on the same run), nor a reattach after the driver pod itself died.
    """
    release = {"second_follow": False}

    with KubeStub() as stub:

        def hold(app: dict[str, Any], emit) -> int:
            if len(stub.received) > 1:  # a second submission: the test fails below, quickly
                return 0
            emit("driver: started")
            pod = f"{app['metadata']['name']}-driver"
            stub.wait_for(lambda: stub.log_follows.get(pod, 0) >= 2, timeout=600)
            release["second_follow"] = True
            emit("driver: finished after the reattach")
            return 0

        stub.driver = hold
        stub.kubeconfig(project["kubeconfig"])
        first = _dags_test(project)
        stub.wait_for(lambda: sum(stub.log_follows.values()) >= 1, timeout=600)
        os.killpg(first.pid, signal.SIGKILL)  # the worker dies; the driver keeps running
        first.communicate(timeout=60)
        run_id, states = _task_states(project)
        assert states.get(STAGE) != "success"
        assert len(stub.received) == 1 and stub.deleted == []
        second = _airflow(project, "tasks", "test", PIPELINE, STAGE, run_id)
        out = _finish(second)
        assert second.returncode == 0, out[-5000:]
        assert release["second_follow"]
        (sent,) = stub.received  # no second submission
        assert [m for m, p in stub.requests if m == "POST"] == ["POST"]
        assert stub.deleted == [sent["metadata"]["name"]]
    assert "driver: finished after the reattach" in out
    assert "Reattaching" in out or "Found matching driver pod" in out


def _deals(folder: Path) -> list[dict[str, Any]]:
    """Four deals of the ``linear`` pipeline's source (two of them BIG_BOND, one negative)."""
    import datetime as dt
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        ("d1", "1500000.00", "1.10000000", "BOND"),
        ("d2", "10.00", "1.10000000", "BOND"),
        ("d3", "2000000.00", "0.90000000", "LOAN"),
        ("d4", "-5.00", "1.00000000", "BOND"),
    ]
    schema = pa.schema(
        [
            ("deal_id", pa.string()),
            ("cob_date", pa.date32()),
            ("amount", pa.decimal128(20, 2)),
            ("usd_rate", pa.decimal128(18, 8)),
            ("product_type", pa.string()),
        ]
    )
    cob = dt.date.fromisoformat(COB)
    table = pa.Table.from_pylist(
        [
            {"deal_id": d, "cob_date": cob, "amount": Decimal(a), "usd_rate": Decimal(r),
             "product_type": p}
            for d, a, r, p in rows
        ],
        schema=schema,
    )  # fmt: skip
    (folder / "deals").mkdir(parents=True)
    pq.write_table(table, folder / "deals" / "part-0.parquet")
    return table.to_pylist()


def test_the_driver_runs_the_stage_entrypoint_and_the_run_publishes(project):
    """The stub's driver runs what the manifest says the driver pod runs: ``stage_main``
    with the manifest's arguments and env (the image's project folder mapped to the test's,
    the warehouse Secret resolved by the stub), as a local process. The stage computes its
    output into the storage the manifest names, the local ``publish`` task publishes the run,
    the whole DAG run succeeds, and the stage's rows are the ones the spec's rules give
    (computed here by hand).

    Does not prove: anything about the image or spark-submit in a pod (the driver here is
    ``python -m regflow.render.stage_main`` with local Spark; test_stage_main.py runs it under
    spark-submit), nor that executors elsewhere see the storage.
    """
    import pyarrow.parquet as pq

    from regflow.render.k8s import PROJECT_IN_IMAGE
    from regflow.storage import safe_run_id

    data = project["base"] / "data"
    if not data.exists():
        _deals(data)
    secrets = {("regflow-warehouse", "url"): "postgresql://unused@127.0.0.1:1/none"}

    def stage_main(app: dict[str, Any], emit) -> int:
        spec = app["spec"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "REGFLOW_"))}
        for var in spec["driver"]["env"]:
            if "value" in var:
                env[var["name"]] = var["value"].replace(PROJECT_IN_IMAGE, str(project["project"]))
            else:
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = secrets[(ref["name"], ref["key"])]
        env["REGFLOW_SHUFFLE_PARTITIONS"] = "2"
        args = [a.replace(PROJECT_IN_IMAGE, str(project["project"])) for a in spec["arguments"]]
        proc = subprocess.Popen(
            [sys.executable, "-m", "regflow.render.stage_main", *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            emit(line.rstrip("\n"))
        return proc.wait()

    with KubeStub(driver=stage_main) as stub:
        stub.kubeconfig(project["kubeconfig"])
        out = _finish(_dags_test(project, data_root=str(data)))
        run_id, states = _task_states(project)
        assert states == {STAGE: "success", "publish": "success"}, out[-6000:]
        (sent,) = stub.received
        assert stub.invalid == [] and stub.deleted == [sent["metadata"]["name"]]
    storage = project["base"] / "storage"
    # the Airflow run's own id (the module's other tests leave runs of their own)
    run_dir = storage / PIPELINE / f"cob={COB}" / f"run={safe_run_id(run_id)}"
    rows = pq.read_table(run_dir / STAGE, partitioning=None).to_pylist()
    got = sorted((r["deal_id"], r["category"], r["rule"]) for r in rows)
    # amount * usd_rate > 0 keeps d1..d3; BIG_BOND: a BOND over 1,000,000 USD
    assert got == [("d1", "BIG_BOND", "B"), ("d2", "OTHER", "O"), ("d3", "OTHER", "O")]
    assert "published run" in out


PARSE_PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags["linear"]
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "tasks": {t.task_id: [c.__name__ for c in type(t).__mro__] for t in dag.tasks},
    "provider": "airflow.providers.cncf.kubernetes.operators.spark_kubernetes" in sys.modules,
    "heavy": sorted(m for m in ("pyspark", "pandas") if m in sys.modules),
}))
"""


@pytest.mark.parametrize("executor", ["local", "kubernetes"])
def test_the_executor_is_a_deployment_setting_read_at_parse(project, executor):
    """The same DAG file gives SparkKubernetesOperator stage tasks with
    ``REGFLOW_EXECUTOR=kubernetes`` and PythonOperators by default; loads and publish stay
    PythonOperators; the provider is imported only for ``kubernetes``; neither parse imports
    pyspark or pandas.

    Does not prove: how long the parse takes (benchmarks/dag_parse.py measures it).
    """
    env = _env(project["project"], project["home"], project["kubeconfig"])
    env["REGFLOW_EXECUTOR"] = executor
    proc = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(project["project"] / "dags")],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["errors"] == {} and got["heavy"] == []
    kinds = {t: ("SparkKubernetesOperator" in m, m[0]) for t, m in got["tasks"].items()}
    if executor == "kubernetes":
        assert kinds[STAGE] == (True, "StageSparkOperator")
    else:
        assert kinds[STAGE] == (False, "PythonOperator")
    assert kinds["publish"] == (False, "PythonOperator")
    assert got["provider"] is (executor == "kubernetes")
