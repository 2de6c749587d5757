"""Row-level lineage through the runtime: stable ids, checkpoints, and loud failures."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import unmarked_attempts
from runtime_helpers import COB, run_all_stages

from regflow.errors import DataError, LineageError, UserCodeError
from regflow.plan.compiler import compile_file
from regflow.spec.models import LINEAGE_COLUMN as LID
from regflow.storage import META_FILE, SUCCESS_FILE, RunRef


def read(path: Path):
    files = sorted(str(p) for p in path.glob("*.parquet"))
    return pq.ParquetDataset(files, partitioning=None).read()


@pytest.mark.slow
def test_lcr_rerun_gives_identical_lineage_ids(project, lcr_data, tmp_path, spark, engine):
    plan = compile_file(project / "pipelines" / "lcr.yaml")
    root = tmp_path / "storage"
    run_all_stages(plan, root, "first", spark, {"data_root": str(lcr_data)}, policy=engine)
    run_all_stages(plan, root, "second", spark, {"data_root": str(lcr_data)}, policy=engine)
    a = read(RunRef(root, "lcr", COB, "first").node_dir("entity_buckets.lineage"))
    b = read(RunRef(root, "lcr", COB, "second").node_dir("entity_buckets.lineage"))
    assert a.num_rows == b.num_rows == 10_000
    ids_a = a.column(LID).to_pylist()
    assert len(set(ids_a)) == 10_000  # one row per deal, unique
    assert sorted(ids_a) == sorted(b.column(LID).to_pylist())
    # each file holds whole groups, sorted by group key (then lineage id)
    seen: set = set()
    for f in sorted(
        RunRef(root, "lcr", COB, "first").node_dir("entity_buckets.lineage").glob("*.parquet")
    ):
        t = pq.read_table(f)
        keys = list(
            zip(
                t.column("cob_date").to_pylist(),
                t.column("legal_entity").to_pylist(),
                t.column(LID).to_pylist(),
                strict=True,
            )
        )
        assert keys == sorted(keys)
        groups = {k[:2] for k in keys}
        assert not groups & seen, "a group is split across files"
        seen |= groups
    # the aggregate's figures are exactly the sums of its checkpointed members
    out = {
        r["legal_entity"]: r
        for r in read(RunRef(root, "lcr", COB, "first").node_dir("entity_buckets")).to_pylist()
    }
    for entity in out:
        members = [r for r in a.to_pylist() if r["legal_entity"] == entity]
        assert sum((r["l1"] for r in members if r["l1"] is not None), 0) == out[entity]["l1"]


@pytest.mark.slow
def test_outputs_carry_metadata_and_success_marker(project, lcr_data, tmp_path, spark, engine):
    plan = compile_file(project / "pipelines" / "lcr.yaml")
    root = tmp_path / "storage"
    run_all_stages(plan, root, "r1", spark, {"data_root": str(lcr_data)}, policy=engine)
    run = RunRef(root, "lcr", COB, "r1")
    for name in ("entity_buckets", "entity_buckets.lineage", "entity_lcr", "entity_lcr.lineage"):
        d = run.node_dir(name)  # the attempt the node's marker (written last) names
        marker = json.loads((run.node_root(name) / SUCCESS_FILE).read_text())
        assert d.parent == run.node_root(name) and marker["attempt"] == d.name
        meta = json.loads((d / META_FILE).read_text())
        assert meta["rows"] == read(d).num_rows
        assert meta["spec_hash"] == plan.data_hash
        assert meta["run_id"] == "r1" and meta["cob"] == COB and meta["pipeline"] == "lcr"
        assert meta["code_version"].startswith("regflow ")
        assert meta["schema"] and meta["key_columns"]
    meta = json.loads((run.node_dir("entity_buckets") / META_FILE).read_text())
    assert set(meta["input_hashes"]) == {"weigh"}
    # no temporary folders are left behind
    assert not [p for p in run.run_dir.iterdir() if p.name.startswith(".")]
    assert unmarked_attempts(run.run_dir) == []


@pytest.mark.slow
def test_missing_fx_rate_fails_naming_node_and_currency(project, lcr_data, tmp_path, spark, engine):
    data = tmp_path / "data"
    import shutil

    shutil.copytree(lcr_data, data)
    fx_dir = data / "fx_rates" / f"cob={COB}"
    fx = read(fx_dir)
    kept = fx.filter(pa.compute.not_equal(fx.column("currency"), "GBP"))
    for f in fx_dir.glob("*.parquet"):
        f.unlink()
    pq.write_table(kept, fx_dir / "part-00000.parquet")
    plan = compile_file(project / "pipelines" / "lcr.yaml")
    with pytest.raises(DataError) as exc:
        run_all_stages(
            plan, tmp_path / "storage", "r1", spark, {"data_root": str(data)}, policy=engine
        )
    assert exc.value.node == "deals_fx"
    assert "no match in 'fx_rates'" in str(exc.value) and "currency=GBP" in str(exc.value)
    assert "cob=2026-03-31" in str(exc.value) and "pipeline=lcr" in str(exc.value)
    # nothing half-written looks complete
    run = RunRef(tmp_path / "storage", "lcr", COB, "r1")
    assert not run.is_complete("entity_buckets.lineage")


# ----------------------------------------------------------------- custom-op projects
OPS = """
from regflow import OpParams, operator


@operator("{name}_drop", schema=None)
def drop(df, params, ctx):
    return df.drop("_lineage_id")


@operator("{name}_dup")
def dup(df, params, ctx):
    return df.unionByName(df)


@operator("{name}_boom")
def boom(df, params, ctx):
    raise ZeroDivisionError("user bug")


@operator("{name}_newid")
def newid(df, params, ctx):
    from pyspark.sql import functions as F
    return df.withColumn("_lineage_id", F.col("_lineage_id") + 1)
"""

SPEC = """
pipeline: {name}
params: {{data_root: .}}
sources:
  items:
    path: "{{data_root}}/items"
    primary_key: [item_id]
    schema: {{item_id: string, v: bigint}}
nodes:
  - id: step
    op: {op}
    inputs: [items]
  - id: total
    op: aggregate
    inputs: [step]
    group_by: [item_id]
    measures: {{v: {{sum: v}}}}
"""


def make_project(tmp_path: Path, name: str, op_suffix: str, rows=None) -> Path:
    (tmp_path / "pipelines").mkdir(parents=True, exist_ok=True)
    (tmp_path / "operators").mkdir(exist_ok=True)
    (tmp_path / "operators" / "custom.py").write_text(textwrap.dedent(OPS.format(name=name)))
    spec = tmp_path / "pipelines" / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, op=f"{name}_{op_suffix}"))
    items = tmp_path / "items"
    items.mkdir(exist_ok=True)
    rows = rows or [("a", 1), ("b", 2), ("c", 3)]
    pq.write_table(
        pa.table({"item_id": [r[0] for r in rows], "v": [r[1] for r in rows]}),
        items / "part-0.parquet",
    )
    return spec


@pytest.mark.parametrize(
    ("suffix", "error", "text"),
    [
        ("drop", LineageError, "dropped the lineage id"),
        ("dup", LineageError, "duplicated rows"),
        ("newid", LineageError, "not in its input"),
        ("boom", UserCodeError, "operator failed: ZeroDivisionError: user bug"),
    ],
)
def test_custom_operator_breaking_lineage_is_caught(tmp_path, spark, suffix, error, text, engine):
    name = f"lin_{suffix}"
    spec = make_project(tmp_path, name, suffix)
    plan = compile_file(spec)
    with pytest.raises(error) as exc:
        run_all_stages(
            plan, tmp_path / "storage", "r1", spark, {"data_root": str(tmp_path)}, policy=engine
        )
    assert text in str(exc.value)
    assert exc.value.node == "step" and exc.value.pipeline == name and exc.value.cob == COB
    if suffix == "boom":
        assert isinstance(exc.value.__cause__, ZeroDivisionError)  # original cause kept


def test_duplicate_primary_keys_in_a_source_are_reported(tmp_path, spark, engine):
    spec = make_project(tmp_path, "dupkeys", "drop", rows=[("a", 1), ("a", 2)])
    spec.write_text(
        spec.read_text().replace("op: dupkeys_drop", "op: calc\n    columns: {w: 'v * 2'}")
    )
    plan = compile_file(spec)
    with pytest.raises(DataError, match="source 'items' has duplicate primary keys"):
        run_all_stages(
            plan, tmp_path / "storage", "r1", spark, {"data_root": str(tmp_path)}, policy=engine
        )


def test_duplicate_operator_names_are_refused(tmp_path):
    from regflow.errors import OperatorError
    from regflow.ops.registry import load_operator_files

    make_project(tmp_path / "a", "dupname", "drop")
    load_operator_files(tmp_path / "a" / "operators")
    other = tmp_path / "b" / "operators"
    other.mkdir(parents=True)
    changed = OPS.format(name="dupname").replace('df.drop("_lineage_id")', "df")
    (other / "again.py").write_text(textwrap.dedent(changed))
    with pytest.raises(OperatorError, match="already registered"):
        load_operator_files(other)


def test_operators_from_entry_points_are_registered(tmp_path, monkeypatch):
    """Third-party packages register ops through the `regflow.operators` entry-point group."""
    import sys

    from regflow.ops import registry

    dist = tmp_path / "acme_ops-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-ops\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[regflow.operators]\nacme = acme_ops_mod\n")
    (tmp_path / "acme_ops_mod.py").write_text(
        textwrap.dedent("""
        from regflow import operator

        @operator("acme_identity")
        def identity(df, params, ctx):
            return df
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.load_entry_points(again=True)
    assert "acme_identity" in registry.names()
    assert registry.get("acme_identity").origin.endswith("acme_ops_mod.py:identity")
    sys.modules.pop("acme_ops_mod", None)


@pytest.mark.slow
def test_trace_from_a_reported_figure_down_to_its_deals(project, lcr_data, tmp_path, spark, engine):
    """Drill-through: LE002's outflows are exactly the sum of its deals' contributions."""
    from decimal import Decimal

    import pyarrow.compute as pc

    from regflow.runtime.trace import trace
    from regflow.storage import publish_run

    plan = compile_file(project / "pipelines" / "lcr.yaml")
    root = tmp_path / "storage"
    run_all_stages(plan, root, "r1", spark, {"data_root": str(lcr_data)}, policy=engine)
    run = RunRef(root, "lcr", COB, "r1")
    publish_run(run, {"params": {"data_root": str(lcr_data)}})
    result = trace(plan, run, "entity_lcr", {"legal_entity": "LE002"}, measure="outflows")
    figure = result.figure[0]["outflows"]
    assert sum(m["outflows"] for m in result.contributions) == figure
    deals = result.sources["deals"]
    assert {d["legal_entity"] for d in deals} == {"LE002"}
    assert len(deals) == len(result.contributions) > 0
    # independently: the deals file has at least these LE002 deals
    raw = read(lcr_data / "deals" / f"cob={COB}")
    le002 = set(
        raw.filter(pc.equal(raw.column("legal_entity"), "LE002")).column("deal_id").to_pylist()
    )
    assert {d["deal_id"] for d in deals} <= le002
    # the GROUP row expands to every entity
    group = trace(
        plan, run, "entity_lcr", {"legal_entity": "GROUP"}, measure="l1", resolve_sources=False
    )
    assert sum(m["l1"] for m in group.contributions) == group.figure[0]["l1"]
    assert isinstance(figure, Decimal)
