"""The SparkApplication's entrypoint (``deploy/stage_main.py`` ->
:mod:`regflow.render.stage_main`) run the way the spark-operator's driver runs it: by
``spark-submit`` (pyspark's own), as a separate process, on a small LCR."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from regflow.demo.data import generate_demo_data
from regflow.plan.compiler import compile_file
from regflow.runtime.executor import run_stage
from regflow.storage import RunRef, safe_run_id

ROOT = Path(__file__).resolve().parent.parent
COB = "2026-03-31"
RAW_RUN_ID = "manual__2026-03-31T18:00:00+00:00"


def _spark_submit() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-submit"


def _table(run: RunRef, node: str):
    return pq.read_table(run.node_dir(node)).sort_by("_lineage_id")


@pytest.mark.slow
def test_spark_submit_runs_the_same_stage_as_the_task(project, tmp_path, spark, engine):
    """``spark-submit --master local[2] deploy/stage_main.py ...`` runs the LCR's ``weigh``
    stage; its stored output equals the in-process ``run_stage`` of the same stage, row for
    row, and Spark ran on the master spark-submit gave (the session does not replace it by
    ``local[*]``, which in a SparkApplication would keep all work in the driver pod).

    Does not prove: that executors on other machines see the storage (a Spark standalone
    cluster test would), nor anything about the Kubernetes driver pod itself.
    """
    data = tmp_path / "data"
    generate_demo_data(data, cob=dt.date.fromisoformat(COB), deals=1500, entities=3, seed=7)
    spec = project / "pipelines" / "lcr.yaml"
    params = {"data_root": str(data)}

    local = RunRef(tmp_path / "in-process", "lcr", COB, safe_run_id(RAW_RUN_ID))
    plan = compile_file(spec)
    run_stage(
        plan,
        "weigh",
        cob=COB,
        run_id=local.run_id,
        root=local.root,
        params=params,
        spark=spark,
        log=lambda _m: None,
        policy=engine,
    )

    submitted = RunRef(tmp_path / "submitted", "lcr", COB, safe_run_id(RAW_RUN_ID))
    env = {
        **os.environ,
        "REGFLOW_STORAGE": str(submitted.root),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("REGFLOW_SPARK_MASTER", None)
    proc = subprocess.run(
        [
            str(_spark_submit()),
            "--master",
            "local[2]",
            "--conf",
            "spark.ui.enabled=false",
            str(ROOT / "deploy" / "stage_main.py"),
            "--spec",
            str(spec),
            "--stage",
            "weigh",
            "--cob",
            COB,
            "--run-id",
            RAW_RUN_ID,
            "--param",
            f"data_root={data}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # spark-submit's PythonRunner merges the driver's stderr into its stdout
    lines = proc.stdout.splitlines()
    assert [x for x in lines if x.startswith("spark master:")] == ["spark master: local[2]"]
    report = json.loads([x for x in lines if x.startswith("{")][-1])
    assert report["stage"] == "weigh"
    assert submitted.is_complete("weigh") and local.is_complete("weigh")
    a, b = _table(submitted, "weigh"), _table(local, "weigh")
    assert a.num_rows == 1500
    assert a.schema == b.schema
    assert a.equals(b)
    assert submitted.metadata("weigh")["rows"] == local.metadata("weigh")["rows"] == 1500


def test_bad_arguments_are_clear(project, capsys):
    """A malformed ``--param`` ends with exit status 1 and a message (no traceback), as the
    driver log would show it. Does not prove: the messages of errors inside the stage run
    (those are run_stage_task's own, tested with the local executor)."""
    from regflow.render.stage_main import main

    spec = str(project / "pipelines" / "lcr.yaml")
    base = ["--spec", spec, "--cob", COB, "--run-id", "r"]
    assert main([*base, "--stage", "weigh", "--param", "data_root"]) == 1
    assert "expected K=V" in capsys.readouterr().err


def test_a_plan_key_the_files_no_longer_give_is_refused(project, capsys):
    """The SparkApplication carries the DAG's plan key: a driver whose image (or project)
    compiles another plan and has not kept the DAG's one refuses before it runs a thing."""
    from regflow.plan.cache import load_plan, plan_pin
    from regflow.render.stage_main import main

    spec = project / "pipelines" / "lcr.yaml"
    key = plan_pin(load_plan(spec))
    rules, sep, whole = key.partition("-")
    other = f"{rules}{sep}{'0' * len(whole)}"  # the same rules, another spec
    base = ["--spec", str(spec), "--cob", COB, "--run-id", "r", "--stage", "weigh"]
    assert main([*base, "--plan-key", other]) == 1
    err = capsys.readouterr().err
    assert "\nerror: [lcr] the spec (or the regflow or operator code it compiles with)" in err
    assert "trigger the run again" in err
