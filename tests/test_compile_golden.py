"""Golden tests of the compiler: each ``fixtures/golden/<name>.yaml`` compiles to the plan
that ``regflow plan`` prints, stored next to it as ``<name>.plan.txt``.

Regenerate the expected files after an intended change with::

    REGFLOW_UPDATE_GOLDEN=1 pytest tests/test_compile_golden.py

and review the diff: the stage boundaries must fall at aggregations, ``checkpoint: true``,
fan-out and sinks, with maximal chains in between (also asserted below, independently of
the text).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from regflow.plan.compiler import compile_file
from regflow.plan.explain import explain
from regflow.plan.model import Plan

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "golden"
SPECS = sorted(GOLDEN.glob("*.yaml"))
UPDATE = os.environ.get("REGFLOW_UPDATE_GOLDEN") == "1"


def _explained(path: Path) -> str:
    plan = compile_file(path)
    return explain(plan).replace(plan.file, path.name) + "\n"


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_golden_plan(spec: Path) -> None:
    expected_file = spec.with_suffix(".plan.txt")
    actual = _explained(spec)
    if UPDATE:
        expected_file.write_text(actual, encoding="utf-8")
    assert expected_file.exists(), f"run with REGFLOW_UPDATE_GOLDEN=1 to create {expected_file}"
    assert actual == expected_file.read_text(encoding="utf-8")


def test_every_golden_plan_has_a_spec() -> None:
    assert len(SPECS) >= 6
    for txt in GOLDEN.glob("*.plan.txt"):
        assert txt.with_name(txt.name.removesuffix(".plan.txt") + ".yaml").exists(), txt


# ------------------------------------------------------------------ stage boundaries
# stage id -> (its nodes in order, why it ends, the stages it waits for)
EXPECTED_STAGES = {
    "linear": {
        "classified": (["usd", "positive", "classified"], "sink", []),
    },
    "fan_out": {
        "shared": (["base", "shared"], "fan-out", []),
        "bonds": (["bonds"], "sink", ["shared"]),
        "loans_doubled": (["loans", "loans_doubled"], "sink", ["shared"]),
    },
    "aggregate_chain": {
        "per_entity": (["weighted", "per_entity"], "aggregate", []),
        "reported": (["shares", "reported"], "sink", ["per_entity"]),
    },
    "join_branches": {
        "enriched": (["enriched"], "fan-out", []),
        "totals": (["totals"], "aggregate", ["enriched"]),
        "shares": (["flagged", "joined", "shares"], "sink", ["enriched", "totals"]),
    },
    "join_sources": {
        "usd": (["positive", "fx_emea", "with_fx", "usd"], "sink", []),
    },
    "checkpoint": {
        "expensive": (["cleaned", "expensive"], "checkpoint", []),
        "labelled": (["scored", "labelled"], "sink", ["expensive"]),
    },
    "union": {
        "per_kind": (
            [
                "loans_aligned",
                "bonds_aligned",
                "loans_narrow",
                "bonds_narrow",
                "positions",
                "per_kind",
            ],
            "aggregate",
            [],
        ),
        "report": (["report"], "sink", ["per_kind"]),
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED_STAGES))
def test_stage_boundaries(name: str) -> None:
    plan = compile_file(GOLDEN / f"{name}.yaml")
    got = {s.id: (list(s.nodes), s.boundary, list(s.upstream)) for s in plan.stages}
    assert got == EXPECTED_STAGES[name]
    assert [s.id for s in plan.stages] == list(EXPECTED_STAGES[name])
    # every node runs in exactly one stage, and only a stage's last node is persisted
    assert sorted(n for s in plan.stages for n in s.nodes) == sorted(n.id for n in plan.nodes)
    for stage in plan.stages:
        assert stage.outputs == (stage.id,)
        for nid in stage.nodes:
            assert plan.node(nid).stage == stage.id
            assert plan.node(nid).persisted == (nid == stage.id)


def test_aggregate_writes_a_lineage_checkpoint() -> None:
    plan = compile_file(GOLDEN / "aggregate_chain.yaml")
    assert plan.stage("per_entity").checkpoints == ("per_entity.lineage",)
    assert plan.stage("reported").checkpoints == ()
    assert plan.node("per_entity").schema.to_dict() == {
        "entity": "string",
        "_lineage_id": "bigint",
        "total": "decimal(30,2)",  # Spark: sum(decimal(20,2)) is decimal(30,2)
        "l1": "decimal(32,3)",  # decimal(20,2) * 0.5 is decimal(22,3); its sum 10 more
        "n": "bigint",
        "units": "bigint",
        "largest": "decimal(20,2)",
    }


def test_join_stage_reads_both_branches() -> None:
    plan = compile_file(GOLDEN / "join_branches.yaml")
    assert plan.stage("shares").inputs == ("enriched", "totals")
    assert plan.stage("shares").sources == ()
    sources = compile_file(GOLDEN / "join_sources.yaml").stage("usd").sources
    assert sources == ("deals", "fx")


# ------------------------------------------------------------------ the LCR contract
def test_lcr_plan_stages_and_contract_node_ids() -> None:
    plan = compile_file(ROOT / "pipelines" / "lcr.yaml")
    assert [s.id for s in plan.stages] == ["weigh", "entity_buckets", "entity_lcr", "lcr_star"]
    # weigh and entity_lcr end stages because the star reads them from storage
    assert [s.boundary for s in plan.stages] == ["warehouse", "aggregate", "warehouse", "sink"]
    assert plan.stage("entity_lcr").upstream == ("entity_buckets",)
    assert plan.stage("lcr_star").upstream == ("entity_lcr", "weigh")
    assert plan.stage("lcr_star").nodes == ("lcr_star",)
    node_ids = {n.id for n in plan.nodes}
    assert {"classify", "weigh", "entity_buckets", "entity_lcr"} <= node_ids
    assert {"deals", "fx_rates", "entities"} <= {s.name for s in plan.sources}
    assert plan.stage("entity_buckets").nodes == ("entity_buckets",)
    assert {"classify", "weigh"} <= set(plan.stage("weigh").nodes)
    assert plan.stage("entity_lcr").nodes == ("entity_lcr",)
    assert plan.stage("entity_buckets").checkpoints == ("entity_buckets.lineage",)
    assert {"amount_usd", "lcr_category"} <= set(plan.node("classify").schema.names)
    assert {"bucket", "factor", "weighted_amount"} <= set(plan.node("weigh").schema.names)
    assert set(plan.node("entity_buckets").schema.names) >= {
        "l1",
        "l2a",
        "l2b",
        "outflows",
        "inflows",
    }


# ------------------------------------------------------------------ hashes
BASE = """\
pipeline: hashed
description: the base
owner: team_a
tags: [a]
params:
  data_root: /data
sources:
  deals:
    description: deals
    path: "{data_root}/deals"
    primary_key: [deal_id]
    schema: {deal_id: string, amount: double, ccy: string}
nodes:
  - id: usd
    description: to usd
    op: calc
    inputs: [deals]
    columns: {amount_usd: "amount * 1.1"}
  - id: big
    op: filter
    inputs: [usd]
    where: "amount_usd > 100"
"""


def _plan(text: str, tmp_path: Path, name: str = "hashed.yaml") -> Plan:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return compile_file(path)


def _node_hashes(plan: Plan) -> dict[str, str]:
    return {n.id: n.data_hash for n in plan.nodes}


def test_metadata_changes_keep_the_data_hash(tmp_path: Path) -> None:
    base = _plan(BASE, tmp_path)
    edited = (
        BASE.replace("description: the base", "description: reworded")
        .replace("owner: team_a", "owner: team_b")
        .replace("tags: [a]", "tags: [a, b]")
        .replace("description: to usd", "description: converted")
        .replace("description: deals", "description: all deals")
    )
    assert edited != BASE
    other = _plan(edited, tmp_path, "other.yaml")
    assert other.data_hash == base.data_hash
    assert _node_hashes(other) == _node_hashes(base)
    assert [s.data_hash for s in other.sources] == [s.data_hash for s in base.sources]
    assert other.metadata_hash != base.metadata_hash


@pytest.mark.parametrize(
    "old,new",
    [
        ("data_root: /data", "data_root: /data2"),  # a param default
        ("amount * 1.1", "amount * 1.2"),  # an expression
        ("amount_usd > 100", "amount_usd >= 100"),
        ("ccy: string}", "ccy: string, extra: int}"),  # a source schema
    ],
)
def test_data_changes_change_the_data_hash(tmp_path: Path, old: str, new: str) -> None:
    assert old in BASE
    base = _plan(BASE, tmp_path)
    other = _plan(BASE.replace(old, new), tmp_path, "other.yaml")
    assert other.data_hash != base.data_hash
    assert other.metadata_hash == base.metadata_hash


def test_an_expression_change_invalidates_the_node_and_its_consumers_only(tmp_path: Path) -> None:
    base = _node_hashes(_plan(BASE, tmp_path))
    where = _node_hashes(
        _plan(BASE.replace("amount_usd > 100", "amount_usd > 1"), tmp_path, "b.yaml")
    )
    assert where["usd"] == base["usd"]
    assert where["big"] != base["big"]
    calc = _node_hashes(_plan(BASE.replace("amount * 1.1", "amount * 2"), tmp_path, "c.yaml"))
    assert calc["usd"] != base["usd"]
    assert calc["big"] != base["big"]  # its input changed


def test_an_op_setting_equal_to_its_default_keeps_the_hash(tmp_path: Path) -> None:
    spec = (GOLDEN / "join_branches.yaml").read_text(encoding="utf-8")
    base = _plan(spec, tmp_path, "a.yaml")
    explicit = _plan(
        spec.replace("require_match: true", "require_match: true\n    how: left"),
        tmp_path,
        "b.yaml",
    )
    inner = _plan(
        spec.replace("require_match: true", "require_match: true\n    how: inner"),
        tmp_path,
        "c.yaml",
    )
    assert explicit.data_hash == base.data_hash
    assert inner.data_hash != base.data_hash


FORWARD = """\
pipeline: forward
sources:
  a: {path: /a, primary_key: [k], schema: {k: string}}
  b: {path: /b, primary_key: [k], schema: {k: string}}
nodes:
  - id: early
    op: union
    inputs: [x2, x1]
  - id: x1
    op: filter
    inputs: [a]
    where: "true"
  - id: x2
    op: filter
    inputs: [b]
    where: "true"
"""


@pytest.mark.slow
def test_hashes_do_not_depend_on_the_process(tmp_path: Path) -> None:
    """Set order varies with PYTHONHASHSEED; the plan's order and hashes must not.

    A node listed before its inputs used to get them in set order (seeds 1 and 4 differed).
    """
    spec = tmp_path / "forward.yaml"
    spec.write_text(FORWARD, encoding="utf-8")
    code = (
        "import sys; from regflow.plan.compiler import compile_file; "
        "p = compile_file(sys.argv[1]); "
        "print(p.data_hash, [n.id for n in p.nodes], [s.id for s in p.stages])"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code, str(spec)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3", "4")
    }
    assert len(outs) == 1, outs
    assert "['x1', 'x2', 'early']" in outs.pop()  # spec order where the graph allows


# ------------------------------------------------------------------ serialisation
@pytest.mark.parametrize("spec", [*SPECS, ROOT / "pipelines" / "lcr.yaml"], ids=lambda p: p.stem)
def test_plan_json_round_trip(spec: Path) -> None:
    plan = compile_file(spec)
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert again.to_json() == plan.to_json()


def test_plan_json_round_trip_with_date_params(tmp_path: Path) -> None:
    # YAML reads an unquoted 2024-01-31 as a date; the plan keeps it as ISO text
    plan = _plan(
        BASE.replace("data_root: /data", "data_root: /data\n  start: 2024-01-31"), tmp_path
    )
    assert plan.params["start"] == "2024-01-31"
    assert Plan.from_json(plan.to_json()) == plan
