"""A retried stage task of the same run: a stage an earlier attempt completed is not
recomputed; a stage left half done is, and keeps its first commits.

Does not prove: Airflow's retry scheduling (the retry is a second ``run_stage`` call with
the same run id, as the retried task makes).
"""

from __future__ import annotations

import json

import pytest
from conftest import COB
from runtime_helpers import run_all_stages

from regflow.plan.compiler import compile_file
from regflow.runtime.executor import run_stage
from regflow.storage import RunRef, read_node


def _attempts(run: RunRef) -> dict[str, list[str]]:
    return {
        p.name: sorted(a.name for a in p.iterdir() if a.name.startswith("attempt="))
        for p in run.run_dir.iterdir()
        if p.is_dir() and p.name[0] != "_"
    }


@pytest.mark.slow
def test_a_retried_stage_of_the_same_run_is_not_recomputed(spark, project, lcr_data, tmp_path):
    plan = compile_file(project / "pipelines" / "lcr.yaml")
    params = {"data_root": str(lcr_data)}
    run = RunRef(tmp_path / "storage", "lcr", COB.isoformat(), "r1")
    first = run_all_stages(plan, run.root, "r1", spark, params)
    before = _attempts(run)
    rows = sorted(read_node(run, "entity_lcr").to_pylist(), key=repr)

    def again(stage: str, log: list[str]):
        return run_stage(
            plan, stage, cob=COB.isoformat(), run_id="r1", root=run.root, params=params,
            spark=spark, log=log.append,
        )  # fmt: skip

    # every stage completed: a retry returns its report at once, writes nothing
    for i, stage in enumerate(plan.stages):
        log: list[str] = []
        report = again(stage.id, log)
        assert report.to_dict() == first[i].to_dict()
        assert any("already complete in run r1" in m for m in log), log
    assert _attempts(run) == before

    # entity_lcr's attempt died after its commits, before its report: recomputed, and the
    # first commits stand (the retry's attempts are discarded)
    run.stage_report("entity_lcr").unlink()
    log = []
    again("entity_lcr", log)
    assert not any("already complete" in m for m in log), log
    assert _attempts(run) == before
    assert sorted(read_node(run, "entity_lcr").to_pylist(), key=repr) == rows
    assert json.loads(run.stage_report("entity_lcr").read_text())["run_id"] == "r1"

    # another run's report (copied in) or a missing marker never counts as complete
    other = RunRef(run.root, "lcr", COB.isoformat(), "r2")
    other.stage_report("weigh").parent.mkdir(parents=True)
    other.stage_report("weigh").write_text(run.stage_report("weigh").read_text())
    from regflow.runtime.reuse import completed_report

    assert completed_report(plan, plan.stage("weigh"), other) is None
    (run.node_root("entity_buckets.lineage") / "_SUCCESS").unlink()
    assert completed_report(plan, plan.stage("entity_buckets"), run) is None
    assert completed_report(plan, plan.stage("weigh"), run) is not None
