"""`regflow plan` shows the plan a run executes (issue 18, item 8): with the project's
adjustment rules, the data hash the DAG docs and the run summary record, and each stage under
one name, its Airflow task id, in the plan, the run's output and Airflow."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import COB
from test_failure_reports import regflow

# real Airflow runs of the LCR pipeline: `make test-fast` skips them (docs/development.md)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from regflow.demo.data import generate_demo_data

    base = tmp_path_factory.mktemp("plan-run")
    for name in ("pipelines", "operators", "adjustments"):
        shutil.copytree(ROOT / name, base / "project" / name)
    generate_demo_data(base / "data", cob=COB, deals=300, entities=2, seed=11)
    return base


def _plan_hash_and_stages(out: str) -> tuple[str, list[str]]:
    data_hash = re.findall(r"^  data hash (\w+)", out, flags=re.M)[0]
    return data_hash, re.findall(r"^stage \d+: (\S+)", out, flags=re.M)


def test_plan_has_the_rules_and_names_stages_by_task_id(base, tmp_path):
    from regflow.plan.cache import load_plan
    from regflow.render.airflow_dag import build_dag

    spec = base / "project" / "pipelines" / "lcr.yaml"
    proc = regflow(base, "plan", "lcr")
    assert proc.returncode == 0, proc.stderr
    data_hash, stages = _plan_hash_and_stages(proc.stdout)
    assert "classify__adjusted" in proc.stdout  # the adjustment nodes are in it
    assert "3 rule(s) from" in proc.stdout
    dag = build_dag(load_plan(spec))
    assert f"**Data hash:** `{data_hash}`" in (dag.doc_md or "")
    tasks = {t.task_id for t in dag.tasks}
    assert set(stages) <= tasks and "weigh" in stages
    assert not any(
        s.endswith("__adjusted") and s.removesuffix("__adjusted") not in stages for s in stages
    )
    # --adjustments: an empty folder means no rules, and another hash
    empty = tmp_path / "no-rules"
    empty.mkdir()
    bare = regflow(base, "plan", "lcr", "--adjustments", str(empty))
    assert bare.returncode == 0, bare.stderr
    bare_hash, _ = _plan_hash_and_stages(bare.stdout)
    assert bare_hash != data_hash and "__adjusted" not in bare.stdout
    assert f"**Data hash:** `{bare_hash}`" in (
        build_dag(load_plan(spec, adjustments=empty)).doc_md or ""
    )


def test_the_plans_hash_and_names_are_the_runs(base, tmp_path):
    from regflow.plan.cache import load_plan
    from regflow.render.airflow_dag import build_dag

    storage = tmp_path / "storage"
    plan_out = regflow(base, "plan", "lcr").stdout
    data_hash, stages = _plan_hash_and_stages(plan_out)
    run = regflow(
        base,
        *("run", "lcr", "--cob", str(COB), "--param", f"data_root={base / 'data'}"),
        *("--storage", str(storage)),
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    (marker,) = storage.glob(f"lcr/cob={COB}/run=*/_RUN_SUCCESS")
    summary = json.loads(marker.read_text())
    assert summary["spec_hash"] == data_hash
    # the run's own summary table and its progress lines: the same stage names
    ran = re.findall(r"^  (\S+)\s+\(stage total\)", run.stdout, flags=re.M)
    assert ran == [*stages, "load_lcr_star"]  # (the plan's "then: load_lcr_star")
    assert "then: load_lcr_star" in plan_out
    progress = re.findall(r"^stage (\S+): nodes", run.stdout, flags=re.M)
    assert progress == stages
    dag = build_dag(load_plan(base / "project" / "pipelines" / "lcr.yaml"))
    assert set(ran) == {t.task_id for t in dag.tasks} - {"publish"}
