"""The plan pinned: a task runs exactly the plan its DAG was built from.

A rule file changes between the DAG's parse and a task's start: the task runs the DAG's
plan from the plan cache, or, when the cache no longer holds it, refuses with a clear
PlanChangedError. And every task of one run runs the plan the run's first task ran.
Real Airflow DAG objects, their task callables, local Spark, real files.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regflow.errors import PlanChangedError

COB = "2026-03-31"
ITEMS = [("a", "g1", "1.00"), ("b", "g1", "2.00"), ("c", "g2", "3.00")]

SPEC = """\
pipeline: pinned
params: {data_root: .}
sources:
  items:
    path: "{data_root}/items"
    primary_key: [item_id]
    cob_column: cob_date
    schema: {item_id: string, cob_date: date, grp: string, v: "decimal(20,2)"}
nodes:
  - {id: prep, op: calc, inputs: [items], columns: {w: "v * 2"}}
  - id: total
    op: aggregate
    inputs: [prep]
    group_by: [grp]
    measures: {v: {sum: v}}
"""

RULE = """\
rule_id: R-01
pipeline: pinned
stage: prep
position: after
conditions:
  - {{field: grp, operator: "=", value: g1}}
adjustments:
  - {{field: v, operation: add, value: {add}}}
effective_date: 2026-01-01
approval: {{requested_by: a.analyst, approved_by: b.checker, timestamp: 2026-01-02T09:00:00Z}}
reason: plan pinning test
"""


@pytest.fixture()
def pinned_project(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "proj"
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "pinned.yaml").write_text(SPEC)
    (root / "data" / "items").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "item_id": [i for i, _, _ in ITEMS],
                "cob_date": pa.array([dt.date(2026, 3, 31)] * len(ITEMS)),
                "grp": [g for _, g, _ in ITEMS],
                "v": pa.array([Decimal(v) for _, _, v in ITEMS], pa.decimal128(20, 2)),
            }
        ),
        root / "data" / "items" / "part-0.parquet",
    )
    set_rule(root, 10)
    monkeypatch.setenv("REGFLOW_PROJECT", str(root))
    monkeypatch.setenv("REGFLOW_STORAGE", str(tmp_path / "storage"))
    return root


def set_rule(root: Path, add: int) -> None:
    folder = root / "adjustments" / "pinned"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "R-01.yaml").write_text(RULE.format(add=add))


def build(root: Path):
    from regflow.plan.cache import load_plan
    from regflow.render.airflow_dag import build_dag

    return build_dag(load_plan(root / "pipelines" / "pinned.yaml"))


def task_order(dag) -> list[str]:
    """The DAG's task ids, upstream first (the order a run executes them)."""
    order: list[str] = []
    while len(order) < len(dag.task_ids):
        for t in dag.tasks:
            if t.task_id not in order and all(u in order for u in t.upstream_task_ids):
                order.append(t.task_id)
    return order


def call(dag, task_id: str, root: Path, run_id: str = "r1"):
    """Run one task's callable as Airflow does: its op_kwargs plus the run's context."""
    task = dag.get_task(task_id)
    params = {"cob": COB, "data_root": str(root / "data")}
    return task.python_callable(**task.op_kwargs, params=params, run_id=run_id)


def totals(storage: Path, run_id: str = "r1") -> dict[str, Decimal]:
    folder = storage / "pinned" / f"cob={COB}" / f"run={run_id}" / "total"
    rows = pq.read_table(folder).to_pylist()
    return {r["grp"]: r["v"] for r in rows}


def test_a_changed_rule_file_is_refused_when_the_dags_plan_is_gone(pinned_project):
    dag = build(pinned_project)
    first = task_order(dag)[0]
    set_rule(pinned_project, 1000)  # the rule changes after the DAG was parsed
    # ... and the DAG's plan is not in this worker's plan cache (another machine, a cleanup)
    shutil.rmtree(pinned_project / ".regflow" / "cache" / "plans" / "pinned", ignore_errors=True)
    with pytest.raises(PlanChangedError) as exc:
        call(dag, first, pinned_project)
    message = str(exc.value)
    assert message.startswith("[pinned] a rule file changed after the DAG was parsed")
    assert "refuses to run a plan the DAG does not show" in message
    assert "wait for Airflow to re-parse the DAG, then trigger the run again" in message
    # said where `regflow run` and operators look, without running a thing
    storage = Path(pinned_project.parent / "storage")
    run_dir = storage / "pinned" / f"cob={COB}" / "run=r1"
    record = json.loads((run_dir / "_stages" / f"{first}.error.json").read_text())
    assert record["error"] == "PlanChangedError"
    assert not (run_dir / "prep").exists() and not (run_dir / "total").exists()


def test_the_task_runs_the_dags_plan_not_the_changed_rule(pinned_project, spark):
    dag = build(pinned_project)  # rule: g1 + 10 per row
    set_rule(pinned_project, 1000)  # changed after the parse
    for task_id in task_order(dag):
        call(dag, task_id, pinned_project)
    storage = pinned_project.parent / "storage"
    # independent: g1 = 1.00 + 2.00 + 2 rows x 10; g2 = 3.00 (untouched)
    assert totals(storage) == {"g1": Decimal("23.00"), "g2": Decimal("3.00")}

    # a run triggered after the re-parse runs the new rule
    fresh = build(pinned_project)
    for task_id in task_order(fresh):
        call(fresh, task_id, pinned_project, run_id="r2")
    assert totals(storage, "r2") == {"g1": Decimal("2003.00"), "g2": Decimal("3.00")}


def test_every_task_of_a_run_runs_the_plan_its_first_task_ran(pinned_project, spark):
    """The scheduler re-parses between two tasks of one run (a retry, a slow run): the later
    task runs the run's plan, never a mix of two rule sets in one published run."""
    from regflow.plan.cache import load_plan

    old = build(pinned_project)
    stages = [t for t in task_order(old) if t != "publish"]
    call(old, stages[0], pinned_project)  # the run starts on rule +10
    set_rule(pinned_project, 1000)
    new = build(pinned_project)  # re-parsed: its tasks carry the new plan's key
    for task_id in stages[1:]:
        call(new, task_id, pinned_project)
    call(new, "publish", pinned_project)
    storage = pinned_project.parent / "storage"
    assert totals(storage) == {"g1": Decimal("23.00"), "g2": Decimal("3.00")}
    summary = json.loads(
        (storage / "pinned" / f"cob={COB}" / "run=r1" / "_RUN_SUCCESS").read_text()
    )
    changed = load_plan(pinned_project / "pipelines" / "pinned.yaml")
    assert summary["adjustment_set_hash"] != changed.adjustment_set_hash
    assert [r["adjustments"][0]["value"] for r in summary["rules"]] in ([10], ["10"])


def test_a_cached_plan_brings_its_pin_so_a_dag_parse_does_not_serialise_the_plan(
    pinned_project, monkeypatch
):
    """The pin is computed once per compiled plan and kept beside it in the plan cache: a
    DAG parse with a warm cache reads it (serialising a plan to hash it cost ~40% of a
    parse). The kept pin is the one the plan gives when computed afresh."""
    from regflow.plan import cache
    from regflow.plan.model import Plan

    spec = pinned_project / "pipelines" / "pinned.yaml"
    first = cache.load_plan(spec)  # compiles, keeps the plan and its pin
    fresh = cache.plan_pin(Plan.from_json(first.to_json()))  # computed from the plan itself
    assert cache.plan_pin(first) == fresh
    build(pinned_project)  # the first parse keeps the pinned plan for the tasks

    def no_serialising(self):
        raise AssertionError("a warm-cache parse serialised the plan")

    monkeypatch.setattr(Plan, "to_json", no_serialising)
    warm = cache.load_plan(spec)  # from the cache, as every later DAG parse
    assert warm is not first
    assert cache.plan_pin(warm) == fresh
    assert build(pinned_project) is not None  # a later parse: no serialising either
