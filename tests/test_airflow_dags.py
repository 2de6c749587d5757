"""The DAG file under real Airflow 3: DagBag loading, docs, params, broken specs, parse cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# real Airflow (DagBag in a subprocess): `make test-fast` skips them (docs/development.md)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent("""
    import json, sys, time
    from airflow.dag_processing.dagbag import DagBag
    t = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    seconds = time.perf_counter() - t
    out = {"seconds": seconds, "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
           "pyspark": "pyspark" in sys.modules, "pandas": "pandas" in sys.modules, "dags": {}}
    for dag_id, dag in bag.dags.items():
        out["dags"][dag_id] = {
            "tasks": sorted(t.task_id for t in dag.tasks),
            "edges": sorted([u.task_id, d.task_id] for u in dag.tasks for d in u.downstream_list),
            "doc_md": dag.doc_md, "tags": sorted(dag.tags), "owner": dag.owner,
            "params": sorted(dag.params.keys()), "schedule": str(dag.schedule),
            "task_docs": {t.task_id: t.doc_md for t in dag.tasks},
        }
    print(json.dumps(out))
""")


def dagbag(dags_folder: Path, tmp_path: Path) -> dict:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(dags_folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_pipeline_in_the_repository_loads(tmp_path):
    out = dagbag(ROOT / "dags", tmp_path)
    assert out["import_errors"] == {}
    specs = sorted(p.stem for p in (ROOT / "pipelines").glob("*.yaml"))
    assert sorted(out["dags"]) == specs
    # parsing stays light: no Spark, no pandas
    assert out["pyspark"] is False and out["pandas"] is False


def test_lcr_dag_shape_docs_params(tmp_path):
    lcr = dagbag(ROOT / "dags", tmp_path)["dags"]["lcr"]
    # the deal stage ends at weigh (after its adjustments: the star reads them; the task keeps
    # the name 'weigh' whether or not rules are spliced there), then the warehouse load
    assert lcr["tasks"] == [
        "entity_buckets", "entity_lcr", "lcr_star", "load_lcr_star", "publish", "weigh"
    ]  # fmt: skip
    assert lcr["edges"] == [
        ["entity_buckets", "entity_lcr"],
        ["entity_lcr", "lcr_star"],
        ["lcr_star", "load_lcr_star"],
        ["load_lcr_star", "publish"],
        ["weigh", "entity_buckets"],
        ["weigh", "lcr_star"],
    ]
    load_doc = lcr["task_docs"]["load_lcr_star"]
    assert "fact_lcr_deal" in load_doc and "rpt_lcr_entity" in load_doc
    assert {"lcr", "basel3", "regflow"} <= set(lcr["tags"])
    assert lcr["owner"] == "liquidity-risk"
    assert lcr["params"] == ["cob", "data_root", "recompute"]
    doc = lcr["doc_md"]
    assert "Basel III Liquidity Coverage Ratio" in doc
    for text in ("`entity_buckets`", "`entity_lcr`", "`entity_buckets.lineage`", "`classify`"):
        assert text in doc
    stage_doc = lcr["task_docs"]["weigh"]
    assert "`classify`" in stage_doc and "`weigh`" in stage_doc
    assert "entity_buckets.lineage" in lcr["task_docs"]["entity_buckets"]


def test_a_broken_spec_is_an_import_error_for_that_pipeline_only(project, tmp_path):
    (project / "pipelines" / "broken.yaml").write_text(
        textwrap.dedent("""\
        pipeline: broken
        sources:
          s: {path: x, primary_key: [id], schema: {id: string}}
        nodes:
          - id: a
            op: calc
            inputs: [s]
            colums: {x: "id"}
    """)
    )
    from regflow.render.dagfile import write_dag_files

    write_dag_files(project)  # each spec has its DAG file: its import errors are its own
    out = dagbag(project / "dags", tmp_path)
    assert "lcr" in out["dags"], "the good pipeline must still load"
    assert "broken" not in out["dags"]
    assert [Path(f).name for f in out["import_errors"]] == ["regflow_broken.py"]
    errors = "\n".join(out["import_errors"].values())
    assert "broken.yaml:8:5" in errors
    assert "unknown key 'colums'" in errors and "did you mean 'columns'" in errors


def test_plans_are_cached_by_content_hash(project, tmp_path):
    from regflow.plan.cache import cache_dir, load_plan, plan_key

    spec = project / "pipelines" / "lcr.yaml"
    first = load_plan(spec)
    cached = cache_dir(project) / f"{plan_key(spec)}.json"
    assert cached.exists()
    assert load_plan(spec) == first
    # editing the spec changes the key; editing metadata keeps the data hash
    spec.write_text(spec.read_text().replace("owner: liquidity-risk", "owner: someone-else"))
    second = load_plan(spec)
    assert plan_key(spec) != cached.stem
    assert second.data_hash == first.data_hash
    assert second.metadata_hash != first.metadata_hash
