"""Incremental recomputation: a rerun of a cob takes the unchanged stages' outputs from the
cob's latest successful run and recomputes the rest, with the same results as recomputing
everything; a rule change recomputes from its splice point on, a late correction of a
source from the stages reading it on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import COB

from regflow.plan.build import build_plan
from regflow.runtime.executor import run_stage, run_variables
from regflow.runtime.reuse import why_not_reuse
from regflow.storage import RunRef, publish_run, read_node

# the whole LCR pipeline, several runs: `make test-fast` skips them (docs/development.md)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "adjustments" / "lcr"


def rules_dir(tmp: Path, *names: str) -> Path:
    folder = tmp / f"rules-{'-'.join(names)}"
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(RULES / f"ADJ-2026-{n}.yaml", folder)
    return folder


def run(
    plan, root: Path, run_id: str, spark, params, base: RunRef | None, engine
) -> dict[str, dict]:
    """Every stage, as the Airflow tasks run them; then published like the DAG's last task.
    Returns each stage's report."""
    reports = {}
    for s in plan.stages:
        rep = run_stage(
            plan, s.id, cob=COB.isoformat(), run_id=run_id, root=root, params=params,
            spark=spark, log=lambda _m: None, reuse_from=base, policy=engine,
        )  # fmt: skip
        reports[s.id] = rep.to_dict()
    ref = RunRef(root, plan.pipeline, COB.isoformat(), run_id)
    publish_run(ref, {"params": params, "adjustment_set_hash": plan.adjustment_set_hash})
    return reports


def reused(reports: dict[str, dict]) -> dict[str, str | None]:
    return {s: r.get("reused_from") for s, r in reports.items()}


def table(ref: RunRef, node: str):
    return read_node(ref, node).sort_by("legal_entity")


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("reuse-project")
    for name in ("pipelines", "operators"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    return project / "pipelines" / "lcr.yaml"


def test_a_rule_change_recomputes_from_its_splice_point_only(
    spec, lcr_data, spark, tmp_path, engine
):
    root, params = tmp_path / "storage", {"data_root": str(lcr_data)}
    before = build_plan(spec, rules_dir(tmp_path, "0001"))
    run(before, root, "base", spark, params, None, engine)
    base = RunRef(root, "lcr", COB.isoformat(), "base")

    after = build_plan(spec, rules_dir(tmp_path, "0001", "0003"))  # + a rule at entity_buckets
    reports = run(after, root, "incr", spark, params, base, engine)
    assert reused(reports) == {
        "weigh": "base",
        "entity_buckets": "base",
        "entity_lcr": None,  # (the new rule splices in at its start)
        "lcr_star": None,  # a sink stamps the run's identity: always recomputed
    }
    incr = RunRef(root, "lcr", COB.isoformat(), "incr")
    # a reused stage's report is this run's: the base run's outputs (same names, kinds, rows),
    # taken into this run's folders, none of them computed; the recomputed stages' are new
    was = json.loads(base.stage_report("weigh").read_text())
    took = reports["weigh"]
    assert took["run_id"] == "incr" and was["run_id"] == "base"
    assert json.loads(incr.stage_report("weigh").read_text()) == took
    shape = lambda outs: [(o["name"], o["kind"], o["rows"]) for o in outs]  # noqa: E731
    assert shape(took["outputs"]) == shape(was["outputs"]) and took["outputs"]
    assert [o["path"] for o in took["outputs"]] == [
        str(incr.node_dir(o["name"])) for o in took["outputs"]
    ]
    assert all(o["seconds"] == 0.0 for o in took["outputs"])  # taken, not computed
    for stage in ("entity_lcr", "lcr_star"):
        assert all(o["path"] == str(incr.node_dir(o["name"])) for o in reports[stage]["outputs"])
    # the same figures as recomputing everything
    full = run(after, root, "full", spark, params, None, engine)
    assert not any(reused(full).values())
    whole = RunRef(root, "lcr", COB.isoformat(), "full")
    assert table(incr, "entity_lcr").equals(table(whole, "entity_lcr"))
    assert read_node(incr, "lcr_star.fact_lcr_deal").num_rows == 10_000
    # the rule changed LE003's outflows: the recomputed stage saw it
    le3 = lambda ref: [  # noqa: E731
        r["outflows"] for r in table(ref, "entity_lcr").to_pylist() if r["legal_entity"] == "LE003"
    ]
    assert le3(incr) != le3(base)

    # reused outputs refer to the base run's data (no copy, no link), with metadata naming
    # this run
    ckpt = "entity_buckets.lineage"
    meta = incr.metadata(ckpt)
    assert meta["run_id"] == "incr" and meta["reused_from"] == "base"
    assert meta["adjustment_set_hash"] == after.adjustment_set_hash
    assert base.metadata(ckpt)["run_id"] == "base"
    assert incr.node_dir(ckpt) == base.node_dir(ckpt) and incr.node_dir(ckpt).is_dir()
    assert not list(incr.node_root(ckpt).rglob("*.parquet"))  # nothing copied
    assert read_node(incr, ckpt).equals(read_node(base, ckpt))

    # a reused audit says which run it belongs to; the base run's says its own
    audit = read_node(incr, "classify__adjusted.audit")
    assert set(audit.column("run_id").to_pylist()) == {"incr"}
    assert set(audit.column("adjustment_set_hash").to_pylist()) == {after.adjustment_set_hash}
    old = read_node(base, "classify__adjusted.audit")
    assert set(old.column("run_id").to_pylist()) == {"base"}
    assert audit.drop_columns(["run_id", "adjustment_set_hash", "spec_hash"]).equals(
        old.drop_columns(["run_id", "adjustment_set_hash", "spec_hash"])
    )
    assert audit.num_rows > 0


def test_a_late_correction_recomputes_the_stages_reading_the_source(
    spec, lcr_data, spark, tmp_path, engine
):
    data = tmp_path / "data"
    shutil.copytree(lcr_data, data)
    root, params = tmp_path / "storage", {"data_root": str(data)}
    plan = build_plan(spec, tmp_path / "no-rules")
    run(plan, root, "base", spark, params, None, engine)
    base = RunRef(root, "lcr", COB.isoformat(), "base")

    same = run(plan, root, "again", spark, params, base, engine)  # nothing changed
    assert reused(same) == {s: (None if s == "lcr_star" else "base") for s in same}

    # a late correction: one deal's amount is restated in the cob's deals file
    folder = data / "deals" / f"cob={COB.isoformat()}"
    (f,) = sorted(folder.glob("*.parquet"))
    deals = pq.read_table(f)
    i = deals.schema.get_field_index("amount")
    amounts = deals.column(i).to_pylist()
    amounts[0] = (amounts[0] or 0) * 10 + 1_000_000
    fixed = pa.array(amounts, deals.schema.field(i).type)
    pq.write_table(deals.set_column(i, deals.schema.field(i), fixed), f)

    latest = RunRef(root, "lcr", COB.isoformat(), "again")
    corrected = run(plan, root, "corrected", spark, params, latest, engine)
    assert not any(reused(corrected).values())
    fix = RunRef(root, "lcr", COB.isoformat(), "corrected")
    assert not table(fix, "entity_lcr").equals(table(base, "entity_lcr"))
    assert not any(reused(run(plan, root, "full", spark, params, None, engine)).values())
    whole = RunRef(root, "lcr", COB.isoformat(), "full")
    assert table(fix, "entity_lcr").equals(table(whole, "entity_lcr"))


def test_why_a_stage_is_not_reused(spec, lcr_data, spark, tmp_path, engine):
    root, params = tmp_path / "storage", {"data_root": str(lcr_data)}
    plan = build_plan(spec, tmp_path / "no-rules")
    run(plan, root, "base", spark, params, None, engine)
    base = RunRef(root, "lcr", COB.isoformat(), "base")
    new = RunRef(root, "lcr", COB.isoformat(), "new")
    first, star = plan.stages[0], plan.stage("lcr_star")

    def why(stage, p=params):
        return why_not_reuse(plan, stage, new, base, run_variables(plan, COB.isoformat(), p), p)

    assert why(first) is None
    assert "warehouse" in why(star)
    other = {"data_root": str(lcr_data), "extra": "1"}
    assert "params differ" in why(first, other)
    assert "upstream stage" in why(plan.stage("entity_lcr"))  # ('entity_buckets' did not run)
    # a run that is not published is no base: the task layer only offers successful runs
    (base.run_dir / "_RUN_SUCCESS").unlink()
    assert "not a successful run" in why(first)
