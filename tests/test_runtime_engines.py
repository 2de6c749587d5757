"""Which engine ran each step, and why: reported and logged; the writer's ``on_written``
hook sees every write before it is promoted, and a failure there loses nothing."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import unmarked_attempts
from runtime_helpers import COB

from regflow.plan.compiler import compile_file
from regflow.runtime.executor import run_stage
from regflow.runtime.persist import Written
from regflow.runtime.policy import ExecutionPolicy
from regflow.storage import RunRef

SPEC = """\
pipeline: eng
params: {data_root: .}
sources:
  items:
    path: "{data_root}/items"
    primary_key: [item_id]
    schema: {item_id: string, grp: string, v: "decimal(12,2)"}
nodes:
  - id: doubled
    op: calc
    inputs: [items]
    columns: {w: "v * 2"}
  - id: total
    op: aggregate
    inputs: [doubled]
    group_by: [grp]
    measures: {v: {sum: v}, w: {sum: w}}
"""
ROWS = [("a", "g1", "1.25"), ("b", "g1", "2.50"), ("c", "g2", "4.00"), ("d", "g2", "0.75")]


def _project(tmp_path: Path, rows=ROWS) -> Path:
    (tmp_path / "pipelines").mkdir(exist_ok=True)
    spec = tmp_path / "pipelines" / "eng.yaml"
    spec.write_text(SPEC)
    (tmp_path / "items").mkdir(exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "item_id": [r[0] for r in rows],
                "grp": [r[1] for r in rows],
                "v": pa.array([Decimal(r[2]) for r in rows], pa.decimal128(12, 2)),
            }
        ),
        tmp_path / "items" / "part-0.parquet",
    )
    return spec


def _run(tmp_path: Path, spark, policy, run_id: str = "r1", **kw):
    plan = compile_file(tmp_path / "pipelines" / "eng.yaml")
    logged: list[str] = []
    reports = []
    for s in plan.stages:
        report = run_stage(
            plan, s.id, cob=COB, run_id=run_id, root=tmp_path / "storage", spark=spark,
            params={"data_root": str(tmp_path)}, log=logged.append, policy=policy, **kw,
        )  # fmt: skip
        reports.append(report)
    return reports, logged


def _totals(tmp_path: Path, run_id: str) -> dict[str, tuple[Decimal, Decimal]]:
    run = RunRef(tmp_path / "storage", "eng", COB, run_id)
    return {r["grp"]: (r["v"], r["w"]) for r in pq.read_table(run.node_dir("total")).to_pylist()}


def _expected(rows=ROWS) -> dict[str, tuple[Decimal, Decimal]]:
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for _, grp, v in rows:
        sums[grp] += Decimal(v)
    return {g: (s, 2 * s) for g, s in sums.items()}


def test_each_step_reports_its_engine_and_a_declined_one_says_why(tmp_path, spark, engine):
    _project(tmp_path)
    reports, logged = _run(tmp_path, spark, engine)
    assert _totals(tmp_path, "r1") == _expected()
    steps = {e["step"]: e for r in reports for e in r.engines}
    for step in ("cluster total.lineage", "aggregate total", "check the ids of total"):
        assert steps[step]["engine"] == engine.mode, steps
    if engine.mode == "spark":
        assert steps["cluster total.lineage"]["why"] == "engine mode 'spark'"
        assert not [m for m in logged if "by Spark" in m]  # (no news in mode spark)
    else:
        assert "why" not in steps["cluster total.lineage"]
    # auto, with a checkpoint one row over the limit: Spark clusters it, and says why
    tight = dataclasses.replace(ExecutionPolicy(), cluster_max_rows=len(ROWS) - 1)
    reports, logged = _run(tmp_path, spark, tight, run_id="r2")
    assert _totals(tmp_path, "r2") == _expected()
    steps = {e["step"]: e for r in reports for e in r.engines}
    why = f"{len(ROWS)} rows > cluster_max_rows {len(ROWS) - 1}"
    assert steps["cluster total.lineage"] == {
        "step": "cluster total.lineage",
        "engine": "spark",
        "why": why,
    }
    assert f"  cluster total.lineage: by Spark ({why})" in logged
    assert steps["check the ids of total"]["engine"] == "driver"  # (its own limit)


def test_on_written_sees_every_write_before_it_is_promoted(tmp_path, spark, engine):
    _project(tmp_path)
    seen: list[tuple[str, bool, bool]] = []

    def look(w: Written) -> None:  # in an attempt of its own, not yet committed
        run = RunRef(tmp_path / "storage", "eng", COB, "r1")
        attempt = w.folder.parent == run.node_root(w.name) and w.folder.is_dir()
        seen.append((w.name, attempt, run.is_complete(w.name)))

    _run(tmp_path, spark, engine, on_written=[look])
    assert sorted(seen) == [("total", True, False), ("total.lineage", True, False)]


def test_a_failed_write_leaves_the_previous_good_output(tmp_path, spark, engine):
    """A failure while a rerun writes (injected through the on_written hook) fails the run
    and leaves the earlier run's output, and no temporary folder, behind. (A rerun is a new
    run: a retry of the same run does not recompute a completed stage, test_stage_retry.)"""
    _project(tmp_path)
    _run(tmp_path, spark, engine)
    good = _totals(tmp_path, "r1")

    def broken(w: Written) -> None:
        if w.name == "total":
            raise OSError("disk full")

    changed = [(i, g, str(Decimal(v) + 1)) for i, g, v in ROWS]
    _project(tmp_path, changed)
    with pytest.raises(Exception, match="disk full"):
        _run(tmp_path, spark, engine, run_id="r2", on_written=[broken])
    assert _totals(tmp_path, "r1") == good == _expected()
    failed = RunRef(tmp_path / "storage", "eng", COB, "r2")
    assert not failed.is_complete("total")
    for run_dir in (RunRef(tmp_path / "storage", "eng", COB, "r1").run_dir, failed.run_dir):
        assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
        assert unmarked_attempts(run_dir) == []
