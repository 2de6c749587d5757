"""The LCR stages with ``s3://`` storage: Spark writes through ``s3a://`` (the fetched S3A
jars, against the real moto server of the ``s3_server`` fixture), regflow's checks,
clustering, audits, export and lineage trace read through the S3 API (pyarrow, boto3). The
outputs equal a local-storage run's, and a fault between an output's data and its marker
(a SIGKILL) leaves nothing a reader takes as committed.

Does not prove: AWS S3 itself (moto stands in), a cluster's executors (local mode), the
warehouse load from S3 (covered for local storage; the staged files are copied server-side).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from conftest import COB
from runtime_helpers import run_all_stages

from regflow.cli.main import main
from regflow.errors import StorageError
from regflow.plan.compiler import compile_file
from regflow.runtime import s3a
from regflow.storage import RunRef, fs, publish_run, read_node
from regflow.storage.fs import S3Path

NODES = ("entity_buckets", "entity_buckets.lineage", "entity_lcr", "entity_lcr.lineage")


@pytest.fixture()
def s3_spark(s3_server, spark):
    """The session, with the S3A connector and the server's AWS environment (requested
    after ``s3_server``: the JVM reads its credentials from the environment at launch)."""
    s3a.require_jars()  # never skip: fail with the command that fetches them
    from regflow.runtime.session import get_spark

    session = get_spark()
    jvm_key = session._jvm.java.lang.System.getenv("AWS_ACCESS_KEY_ID")
    assert jvm_key == os.environ["AWS_ACCESS_KEY_ID"], "the JVM started without the AWS env"
    return session


def _rows(run: RunRef, name: str) -> list:
    return sorted(read_node(run, name).to_pylist(), key=repr)


def _cli(project, *args: str) -> str:
    out = io.StringIO()
    os.environ["REGFLOW_PROJECT"] = str(project)
    try:
        with redirect_stdout(out):
            assert main(list(args)) == 0
    finally:
        del os.environ["REGFLOW_PROJECT"]
    return out.getvalue()


@pytest.mark.slow
def test_lcr_on_s3_equals_local_and_reads_through_the_s3_api(
    s3_server, s3_spark, project, lcr_data, tmp_path
):
    plan = compile_file(project / "pipelines" / "lcr.yaml")
    params = {"data_root": str(lcr_data)}
    local = RunRef(tmp_path / "storage", "lcr", COB.isoformat(), "r1")
    bucket = s3_server.new_bucket("lcr")
    remote = RunRef(S3Path(bucket, "regflow"), "lcr", COB.isoformat(), "r1")
    run_all_stages(plan, local.root, "r1", s3_spark, params)
    run_all_stages(plan, remote.root, "r1", s3_spark, params)

    names = sorted(p.name for p in local.run_dir.iterdir() if p.name[0] != "_")
    assert set(NODES) <= set(names)
    assert names == sorted(p.name for p in remote.run_dir.iterdir() if p.name[0] != "_")
    for name in names:  # every output, checkpoint and audit: the same rows
        assert _rows(remote, name) == _rows(local, name), name
        for key in ("rows", "schema", "node_hash", "input_hashes"):
            assert remote.metadata(name)[key] == local.metadata(name)[key], (name, key)
    # Spark wrote the data straight into the attempt prefix; the marker names it
    keys = s3_server.keys(bucket, "regflow/lcr/")
    marker = json.loads((remote.node_root("entity_lcr") / "_SUCCESS").read_bytes())
    data = f"regflow/{marker['data']}/"
    assert [k for k in keys if k.startswith(data) and k.endswith(".parquet")]
    assert not [k for k in keys if ".tmp-" in k]

    # export and lineage trace on the s3:// root (pyarrow through the S3 API)
    publish_run(local, {"run_id": "r1", "params": params})
    publish_run(remote, {"run_id": "r1", "params": params})
    cob = COB.isoformat()
    exported = []
    for i, r in enumerate((local, remote)):
        out = tmp_path / f"export-{i}.csv"
        args = ("--cob", cob, "--storage", str(r.root), "--out", str(out))
        _cli(project, "export", "lcr", "entity_lcr", *args)
        exported.append(out.read_text())
    assert exported[0] == exported[1] and exported[0].count("\n") == 7  # header, 5 entities, GROUP
    where = ("--where", "legal_entity=LE001")
    trace = ("lineage", "trace", "lcr", "entity_lcr", "--cob", cob, *where, "--storage")
    traced = [_cli(project, *trace, str(r.root)) for r in (local, remote)]
    assert traced[0] == traced[1] and "LE001" in traced[0]


_KILLED_RUN = """
import sys
from runtime_helpers import run_all_stages
from regflow.plan.compiler import compile_file
from regflow.runtime.session import get_spark
from regflow.storage import resolve_root

plan = compile_file(sys.argv[1])
run_all_stages(plan, resolve_root(sys.argv[2]), "r1", get_spark(), {"data_root": sys.argv[3]})
"""


@pytest.mark.slow
def test_a_kill_before_the_marker_on_s3_commits_nothing_and_the_retry_is_identical(
    s3_server, s3_spark, project, lcr_data, tmp_path
):
    spec = project / "pipelines" / "lcr.yaml"
    plan = compile_file(spec)
    params = {"data_root": str(lcr_data)}
    root = S3Path(s3_server.new_bucket("lcrkill"), "regflow")
    run = RunRef(root, "lcr", COB.isoformat(), "r1")
    # a run of its own (its own Spark) SIGKILLed after entity_lcr's data and metadata are
    # written to S3, before its marker
    env = {**os.environ, "REGFLOW_FAULT": "commit:entity_lcr@kill"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, str(spec), str(root), str(lcr_data)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert run.is_complete("entity_buckets")  # (the stages before it were committed)
    # the data and metadata are in an attempt prefix, but no reader takes them
    attempts = [p for p in run.node_root("entity_lcr").iterdir()]
    assert [p.name.split("=")[0] for p in attempts] == ["attempt"]
    assert fs.glob(attempts[0], "*.parquet") and (attempts[0] / "_regflow.json").is_file()
    assert not run.is_complete("entity_lcr")
    with pytest.raises(StorageError, match="no complete output 'entity_lcr'"):
        read_node(run, "entity_lcr")
    # the retry (same run: the stages before keep their committed outputs) gives the data
    # of an undisturbed run
    run_all_stages(plan, root, "r1", s3_spark, params)
    clean = RunRef(tmp_path / "storage", "lcr", COB.isoformat(), "clean")
    run_all_stages(plan, clean.root, "clean", s3_spark, params)
    for name in NODES:
        assert _rows(run, name) == _rows(clean, name), name
    assert run.node_dir("entity_lcr") != attempts[0]  # the retry's own attempt


@pytest.mark.slow
def test_regflow_run_through_airflow_on_s3_publishes_and_loads_the_warehouse(
    s3_server, project, lcr_data, tmp_path
):
    """`regflow run --storage s3://...`: the claim, the plan pin, every stage (Spark on
    s3a://), the warehouse load from the S3 files and the publish (``_RUN_SUCCESS``,
    ``_LATEST`` by compare-and-swap), all on S3; then `regflow export` from it."""
    import shutil
    import tempfile

    from regflow.storage import latest_run
    from regflow.warehouse.embedded import get_server

    s3a.require_jars()
    bucket = s3_server.new_bucket("run")
    url = f"s3://{bucket}/regflow"
    warehouse = Path(tempfile.mkdtemp(prefix="regflow-s3-wh-"))  # (see test_run_consistency)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")}
    env.update(REGFLOW_PROJECT=str(project), REGFLOW_WAREHOUSE_DIR=str(warehouse))
    env.pop("REGFLOW_WAREHOUSE", None)
    exe = Path(sys.executable).parent / "regflow"
    cob = COB.isoformat()
    try:
        proc = subprocess.run(
            [str(exe), "run", "lcr", "--cob", cob, "--param", f"data_root={lcr_data}",
             "--storage", url],
            cwd=project, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        root = S3Path(bucket, "regflow")
        run = latest_run(root, "lcr", cob)
        assert json.loads((run.cob_dir / "_LATEST").read_bytes())["run_id"] == run.run_id
        assert (run.run_dir / "_PLAN").is_file() and (run.run_dir / "_RUN_SUCCESS").is_file()
        assert not (run.cob_dir / "_ACTIVE").exists()  # released by publish
        assert read_node(run, "entity_lcr").num_rows == 6
        out = tmp_path / "entity_lcr.csv"
        exported = subprocess.run(
            [str(exe), "export", "lcr", "entity_lcr", "--cob", cob, "--storage", url,
             "--out", str(out)],
            cwd=project, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        assert out.read_text().count("\n") == 7
        query = subprocess.run(
            [str(exe), "warehouse", "query",
             "SELECT COUNT(*) FROM lcr.fact_lcr_entity WHERE cob_date = DATE '2026-03-31'"],
            cwd=project, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert query.returncode == 0, query.stderr
        assert "6" in query.stdout.split()
    finally:
        get_server(warehouse).release()
        shutil.rmtree(warehouse, ignore_errors=True)


@pytest.mark.slow
def test_incremental_reuse_on_s3_refers_to_the_base_runs_data(
    s3_server, s3_spark, project, lcr_data
):
    from regflow.runtime.executor import run_stage

    plan = compile_file(project / "pipelines" / "lcr.yaml")
    params = {"data_root": str(lcr_data)}
    root = S3Path(s3_server.new_bucket("reuse"), "regflow")
    cob = COB.isoformat()

    def run(run_id: str, base: RunRef | None) -> dict[str, str | None]:
        reports = [
            run_stage(
                plan, s.id, cob=cob, run_id=run_id, root=root, params=params,
                spark=s3_spark, log=lambda _m: None, reuse_from=base,
            ).to_dict()
            for s in plan.stages
        ]  # fmt: skip
        publish_run(RunRef(root, "lcr", cob, run_id), {"params": params})
        return {r["stage"]: r.get("reused_from") for r in reports}

    base = RunRef(root, "lcr", cob, "base")
    run("base", None)
    took = run("incr", base)
    incr = RunRef(root, "lcr", cob, "incr")
    reused = [s for s, b in took.items() if b == "base"]
    assert "entity_buckets" in reused and "lcr_star" not in reused  # (a sink: recomputed)
    for name in ("entity_buckets", "entity_buckets.lineage"):
        assert incr.node_dir(name) == base.node_dir(name)  # the base run's data itself
        assert not fs.glob(incr.node_root(name) / incr.marker(name)["attempt"], "*.parquet")
        assert incr.metadata(name)["reused_from"] == "base"
        assert _rows(incr, name) == _rows(base, name)
    assert _rows(incr, "entity_lcr") == _rows(base, "entity_lcr")
