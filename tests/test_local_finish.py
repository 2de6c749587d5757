"""Aggregates and audits finished on the driver from a checkpoint in memory
(regflow.runtime.driver) give exactly what the Spark jobs give; and where they could not,
they decline with a reason (the runner then uses Spark)."""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import unmarked_attempts
from pyspark.sql import functions as F
from runtime_helpers import COB, rule, run_all_stages

from regflow.ops.builtin import AggregateParams
from regflow.plan.build import build_plan
from regflow.runtime import builtin_ops
from regflow.runtime.adjust_ops import tag_changes, tag_writes
from regflow.runtime.audit_rows import audit_rows
from regflow.runtime.driver.aggregate import GROUP_ID_COLUMN, finish_aggregate
from regflow.runtime.driver.audit import audit_table, matched_rows, rules_by_row
from regflow.runtime.driver.cluster import cluster_parquet
from regflow.runtime.driver.copy import collect_arrow
from regflow.runtime.persist import Written
from regflow.runtime.policy import Declined, ExecutionPolicy
from regflow.spec.models import LINEAGE_COLUMN as LID
from regflow.storage import RunRef, read_node

ROOT = Path(__file__).resolve().parent.parent

MEASURES = {
    "big": {"sum": "big"},  # decimal(38,6): overflow checked
    "small": {"sum": "small"},  # decimal(12,2): cannot overflow
    "n": {"count": "small"},
    "qty": {"sum": "qty"},  # bigint: overflow checked
    "lo": {"min": "qty32"},
    "hi": {"max": "small"},
    "first_day": {"min": "day"},
}
FUNCS = {m: next(iter(s)) for m, s in MEASURES.items()}


def _checkpoint(spark, tmp_path: Path, rows: list[tuple], node: str = "agg"):
    """The clustered lineage checkpoint of ``rows`` as the runner writes it, and its params."""
    schema = (
        f"g string, h int, {LID} bigint, big decimal(38,6), small decimal(12,2), "
        "qty bigint, qty32 int, day date"
    )
    df = spark.createDataFrame(rows, schema)
    params = AggregateParams.model_validate({"group_by": ["g", "h"], "measures": MEASURES})
    contrib = builtin_ops.aggregate_contributions(df, params, node=node)
    folder = tmp_path / "ckpt"
    contrib.write.parquet(str(folder))
    table = cluster_parquet(folder, ["g", "h"])
    assert not isinstance(table, Declined)
    stored = spark.read.schema(contrib.schema).parquet(str(folder))
    return table, stored, params


def _rows(n: int, seed: int) -> list[tuple]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        g = rnd.choice(["LE1", "LE2", "Zürich", None])
        h = rnd.choice([1, 2, None])
        big = None if rnd.random() < 0.1 else Decimal(rnd.randrange(-(10**20), 10**20)) / 10**6
        small = None if rnd.random() < 0.2 else Decimal(rnd.randrange(-(10**9), 10**9)) / 100
        qty = None if rnd.random() < 0.1 else rnd.randrange(-(2**40), 2**40)
        qty32 = None if rnd.random() < 0.1 else rnd.randrange(-(2**31), 2**31)
        day = None if rnd.random() < 0.1 else dt.date(2026, 1, 1) + dt.timedelta(rnd.randrange(90))
        out.append((g, h, i, big, small, qty, qty32, day))
    out.append(("ALLNULL", 9, n, None, None, None, None, None))  # a group with no values
    return out


def test_finish_aggregate_is_exactly_sparks_aggregate(spark, tmp_path):
    table, stored, params = _checkpoint(spark, tmp_path, _rows(5_000, 3))
    want_df = builtin_ops.aggregate_finish(stored, params, "agg")
    types = {f.name: f.dataType.simpleString() for f in want_df.schema.fields}
    got = finish_aggregate(table, ["g", "h"], FUNCS, types)
    assert not isinstance(got, Declined)
    assert got.column_names == want_df.columns
    for f in want_df.schema.fields:  # the types Spark would have stored
        assert got.schema.field(f.name).type == executor_type(f.dataType.simpleString()), f
    key = lambda r: (r["g"] or "", r["h"] or 0)  # noqa: E731
    want = sorted((r.asDict() for r in want_df.collect()), key=key)
    assert sorted(got.to_pylist(), key=key) == want
    allnull = next(r for r in want if r["g"] == "ALLNULL")
    assert allnull["big"] == 0 and allnull["n"] == 0 and allnull["lo"] is None


def executor_type(spark_type: str):
    from regflow.runtime.driver.aggregate import arrow_type

    return arrow_type(spark_type)


def test_finish_aggregate_declines_when_a_partial_sum_could_overflow(spark, tmp_path):
    """The total is 1, but Spark overflows on the way (and fails): the driver must not
    answer 1."""
    nines, minus = Decimal("9" * 32), Decimal("-" + "9" * 32)  # decimal(38,6) at its limit
    rows = [("A", 1, i, nines if i < 3 else minus, None, None, None, None) for i in range(6)]
    rows.append(("A", 1, 6, Decimal(1), None, None, None, None))
    table, stored, params = _checkpoint(spark, tmp_path, rows)
    want = builtin_ops.aggregate_finish(stored, params, "agg")
    types = {f.name: f.dataType.simpleString() for f in want.schema.fields}
    declined = finish_aggregate(table, ["g", "h"], FUNCS, types)
    assert isinstance(declined, Declined) and "overflow" in declined.reason
    with pytest.raises(Exception, match=r"(?i)overflow"):
        want.collect()


@pytest.mark.parametrize(
    ("column", "value"),
    [("big", Decimal("9" * 32)), ("qty", 2**62)],  # sums past decimal(38,6) / bigint
)
def test_finish_aggregate_declines_sums_that_could_overflow(spark, tmp_path, column, value):
    base = {"big": None, "qty": None}
    rows = []
    for i in range(4):
        vals = {**base, column: value}
        rows.append(("A", 1, i, vals["big"], None, vals["qty"], None, None))
    table, stored, params = _checkpoint(spark, tmp_path, rows)
    types = {
        f.name: f.dataType.simpleString()
        for f in builtin_ops.aggregate_finish(stored, params, "agg").schema.fields
    }
    measures = FUNCS
    assert isinstance(finish_aggregate(table, ["g", "h"], measures, types), Declined)


def test_finish_aggregate_declines_what_it_cannot_do_exactly():
    t = pa.table(
        {
            "g": ["a"],
            GROUP_ID_COLUMN: pa.array([1], pa.int64()),
            "x": [float("nan")],
            "s": ["text"],
        }
    )
    declined = (
        finish_aggregate(t, ["g"], {"x": "min"}, {"x": "double"}),  # NaN order
        finish_aggregate(t, ["g"], {"s": "max"}, {"s": "string"}),
        finish_aggregate(t.drop_columns([GROUP_ID_COLUMN]), ["g"], {"x": "sum"}, {}),
    )
    assert all(isinstance(d, Declined) and d.reason for d in declined), declined
    assert not isinstance(finish_aggregate(t, ["g"], {"x": "sum"}, {"x": "double"}), Declined)


def test_audit_table_is_the_audit_spark_explodes(spark, deals):
    rules = [
        rule(
            "R2",
            [{"field": "legal_entity", "operator": "=", "value": "LE1"}],
            [
                {"field": "amount", "operation": "multiply", "value": 2},
                {"field": "rating", "operation": "set", "value": "X"},
            ],
        ),
        rule(  # before R2 on D2: the audit's value between the two is the value set
            "R1",
            [{"field": "currency", "operator": "=", "value": "EUR"}],
            [{"field": "amount", "operation": "set", "value": 7.5}],
        ),
        rule(  # matches nothing
            "R3",
            [{"field": "deal_id", "operator": "=", "value": "none"}],
            [{"field": "rating", "operation": "set", "value": "Y"}],
        ),
        rule(  # after R2 on the same rows: only sets write rating
            "R4",
            [{"field": "legal_entity", "operator": "=", "value": "LE1"}],
            [{"field": "rating", "operation": "set", "value": "Z"}],
        ),
    ]
    tagged = tag_changes(deals, rules, "_tag")
    # amount's value after the rules is in the tag; rating's is the last set's constant
    assert tagged.schema["_tag"].dataType.fieldNames() == ["m0", "o0", "n0", "o1"]
    want = sorted(tuple(r) for r in audit_rows(tagged, "_tag", rules).collect())
    local = pa.Table.from_pandas(tagged.toPandas(), preserve_index=False)
    got = audit_table(local, "_tag", tag_writes(rules), {"stage": ("s", "string")})
    assert got.column("stage").to_pylist() == ["s"] * len(want)
    rows = got.drop_columns(["stage"]).to_pylist()
    assert sorted(tuple(r.values()) for r in rows) == want
    assert [(r["rule_id"], r[LID]) for r in rows] == sorted((r[0], r[2]) for r in want)
    assert matched_rows(got) == {"R1": 2, "R2": 2, "R4": 2}
    rating = [(r["rule_id"], r["new_value"]) for r in rows if r["field"] == "rating"]
    assert sorted(set(rating)) == [("R2", "X"), ("R4", "Z")]  # the sets' constants
    assert {r["old_value"] for r in rows if r["rule_id"] == "R4"} == {"X"}  # R2's value


# ------------------------------------------------------------------ through the runner
def _run_lcr(
    tmp: Path,
    data: Path,
    spark,
    policy: ExecutionPolicy,
    *,
    star: bool = True,
    edit: Callable[[Path], None] | None = None,
    on_written: Callable[[Written], None] | None = None,
) -> RunRef:
    """The LCR with its sample rules, on the engine of ``policy``; ``star=False``: without
    its warehouse star (whose deal-level output makes ``weigh`` persist, and flushes the
    audits before it). ``edit``: changes the copied project (its folder) before the run.
    ``on_written``: sees each write before it is checked and promoted."""
    project = tmp / "project"
    for name in ("pipelines", "operators", "adjustments"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    spec = project / "pipelines" / "lcr.yaml"
    if not star:
        text = spec.read_text()
        spec.write_text(text[: text.index("\n  - id: lcr_star") + 1])
    if edit is not None:
        edit(project)
    plan = build_plan(spec, project / "adjustments" / "lcr")
    run_all_stages(
        plan, tmp / "storage", "r1", spark, {"data_root": str(data)},
        policy=policy, on_written=[on_written] if on_written else [],
    )  # fmt: skip
    return RunRef(tmp / "storage", "lcr", COB, "r1")


def _engines(run: RunRef, step: str) -> dict[str, str]:
    """Which engine did each step starting with ``step`` (the stage reports' ``engines``)."""
    return {
        e["step"]: e["engine"]
        for f in sorted((run.run_dir / "_stages").glob("*.json"))
        for e in json.loads(f.read_text()).get("engines", [])
        if e["step"].startswith(step)
    }


def _read(folder: Path) -> list[dict]:
    files = sorted(str(p) for p in folder.glob("*.parquet"))
    return pq.ParquetDataset(files, partitioning=None).read().to_pylist()


@pytest.mark.slow
def test_adjusted_lcr_is_identical_finished_on_the_driver_and_by_spark(tmp_path, lcr_data, spark):
    """The engines side by side: the same outputs, checkpoints and audits."""
    local = _run_lcr(tmp_path / "local", lcr_data, spark, ExecutionPolicy.for_mode("driver"))
    # weigh's output is stored (the star reads it): the deal-level audits are read from
    # what its job wrote, on the driver; none takes a Spark job of its own
    audits_by = _engines(local, "audit ")
    assert sorted(audits_by) == [
        "audit classify__adjusted",
        "audit entity_buckets__adjusted",
        "audit weigh__adjusted",
    ]
    assert set(audits_by.values()) == {"driver"}, audits_by
    assert local.metadata("weigh__adjusted")["rows"] > 0
    remote = _run_lcr(tmp_path / "spark", lcr_data, spark, ExecutionPolicy.for_mode("spark"))

    def stored(run: RunRef) -> list[str]:  # the outputs, checkpoints and audits
        return sorted(p.name for p in run.run_dir.iterdir() if p.is_dir() and p.name[0] != "_")

    names = stored(local)
    assert {"entity_buckets", "entity_lcr", "classify__adjusted.audit"} <= set(names)
    assert names == stored(remote)
    for name in names:
        a, b = _read(local.node_dir(name)), _read(remote.node_dir(name))
        if name.endswith(".audit"):  # the run ids are the same; both sorted by rule, id
            assert a == b, name
            assert local.metadata(name)["rules"] == remote.metadata(name)["rules"]
        else:
            assert sorted(a, key=repr) == sorted(b, key=repr), name
        assert local.metadata(name)["schema"] == remote.metadata(name)["schema"], name
    audits = [n for n in names if n.endswith(".audit")]
    assert len(audits) == 3 and all(_read(local.node_dir(n)) for n in audits)
    # (the Spark run: every audit, checkpoint and aggregate by Spark)
    assert set(_engines(remote, "")) >= set(audits_by)
    assert set(_engines(remote, "").values()) == {"spark"}
    for run in (local, remote):  # weigh's files keep its rows' audit columns, hidden
        for name in names:
            files = sorted(str(p) for p in run.node_dir(name).glob("*.parquet"))
            fields = pq.ParquetDataset(files, partitioning=None).schema.names
            tags = run.metadata(name).get("audit_tags", {})
            assert sorted(c for c in fields if c.startswith("_audit")) == sorted(tags), name
            assert not [c for c in read_node(run, name).column_names if c.startswith("_audit")]
            schema = [c for c, _ in run.metadata(name)["schema"]]
            assert not [c for c in schema if c.startswith("_audit")], name
        tags = run.metadata("weigh__adjusted")["audit_tags"]
        assert sorted(tags) == ["_audit__classify__adjusted", "_audit__weigh__adjusted"]
        for tag in tags.values():  # each mask's rules: those applied there, by rule id
            applied = run.metadata(f"{tag['node']}.audit")["rules"]
            assert tag["rules"] == [r["rule_id"] for r in applied if r["status"] == "applied"]
    # the checkpoint keeps its own columns; what the rules changed is in the audits
    for run in (local, remote):
        columns = [name for name, _ in run.metadata("entity_buckets.lineage")["schema"]]
        assert LID in columns and not [c for c in columns if c.startswith("_audit")]
        stored = pq.ParquetDataset(
            sorted(str(p) for p in run.node_dir("entity_buckets.lineage").glob("*.parquet")),
            partitioning=None,
        ).schema.names
        assert sorted(stored) == sorted(columns)


def test_a_failed_driver_audit_leaves_no_audit_and_no_temporary_folder(tmp_path, lcr_data, spark):
    """The audits of a stage's splice points are made side by side; when one fails, the
    run fails with it and none of them, finished or not, is left behind."""

    def failing(written: Written) -> None:  # an audit made on the driver, in its thread
        if written.name == "weigh__adjusted.audit" and written.table is not None:
            raise RuntimeError("disk full")

    driver = ExecutionPolicy.for_mode("driver")
    with pytest.raises(Exception, match="disk full"):
        _run_lcr(tmp_path, lcr_data, spark, driver, star=False, on_written=failing)
    run_dir = RunRef(tmp_path / "storage", "lcr", COB, "r1").run_dir
    left = sorted(p.name for p in run_dir.iterdir())
    assert not [n for n in left if ".tmp-" in n or n.endswith(".audit")], left
    assert unmarked_attempts(run_dir) == []


def test_rules_by_row_is_sparks_sorted_set_of_rule_ids(spark):
    rng = random.Random(3)
    rows = [(rng.choice(["R10", "R2", "ADJ-1", "R1"]), rng.randrange(-5, 40)) for _ in range(400)]
    audit = pa.table({"rule_id": [r for r, _ in rows], LID: pa.array([i for _, i in rows])})
    got = rules_by_row(audit)
    df = spark.createDataFrame(rows, f"rule_id string, {LID} bigint")
    want = (
        df.groupBy(LID)
        .agg(F.array_join(F.array_sort(F.collect_set("rule_id")), ",").alias("r"))
        .collect()
    )
    assert got.column("lineage_id").to_pylist() == sorted(r[0] for r in want)  # by id
    assert dict(zip(*got.to_pydict().values(), strict=True)) == {r[0]: r[1] for r in want}
    assert rules_by_row(audit.slice(0, 0)).num_rows == 0
    text_ids = audit.set_column(1, LID, pa.array([str(i) for _, i in rows]))
    assert isinstance(rules_by_row(text_ids), Declined)


@pytest.mark.slow
def test_the_star_flags_each_adjusted_deal_with_its_rules(tmp_path, lcr_data, spark, engine):
    """The deal fact's is_adjusted / adjustment_rules are the audits' rule ids per deal,
    grouped on the driver or by Spark."""
    run = _run_lcr(tmp_path, lcr_data, spark, engine)
    fact = _read(run.node_dir("lcr_star.fact_lcr_deal"))
    local = sorted((r["lineage_id"], r["is_adjusted"], r["adjustment_rules"]) for r in fact)
    audits = [
        r
        for n in ("classify__adjusted", "weigh__adjusted")
        for r in _read(run.node_dir(f"{n}.audit"))
    ]
    want: dict[int, set[str]] = {}
    for r in audits:
        want.setdefault(r[LID], set()).add(r["rule_id"])
    flagged = {lid: rules for lid, adjusted, rules in local if adjusted}
    assert flagged == {lid: ",".join(sorted(s)) for lid, s in want.items()}
    assert flagged and all(rules is None for _, adjusted, rules in local if not adjusted)
    # the entity fact: the rules that changed an entity's row (at entity_buckets). The
    # deal-level audits' ids are deals', never an entity row's: not read for it, and the
    # deal fact's come from the audit columns weigh's files keep: no audit joined there
    joined = _engines(run, "adjusted flags of ")  # the audits the star reads (and joins)
    assert joined == {"adjusted flags of lcr_star from entity_buckets__adjusted.audit": engine.mode}
    entity = _read(run.node_dir("lcr_star.fact_lcr_entity"))
    at_entity: dict[int, set[str]] = {}
    for r in _read(run.node_dir("entity_buckets__adjusted.audit")):
        at_entity.setdefault(r[LID], set()).add(r["rule_id"])
    got = {r["legal_entity"]: r["adjustment_rules"] for r in entity if r["is_adjusted"]}
    assert got == {"LE003": "ADJ-2026-0003"}
    assert {r["lineage_id"] for r in entity if r["is_adjusted"]} == set(at_entity)
    assert all(r["adjustment_rules"] is None for r in entity if not r["is_adjusted"])


def _fan_out_classify(project: Path) -> None:
    """A second reader of classify's adjusted output (it is then stored in a stage of its
    own, with its audit columns; weigh's stage reads it without them), and a rule at weigh
    that also matches deals the rule at classify changed."""
    spec = project / "pipelines" / "lcr.yaml"
    text = spec.read_text()
    reader = (
        "  - id: hqla_deals\n    op: filter\n    inputs: [classify]\n"
        "    where: \"lcr_category <> 'NON_HQLA'\"\n\n"
    )
    at = text.index("  - id: weigh_factors")
    spec.write_text(text[:at] + reader + text[at:])
    rule = (project / "adjustments" / "lcr" / "ADJ-2026-0002.yaml").read_text()
    rule = rule.replace("ADJ-2026-0002", "ADJ-TEST-0009").replace(
        '{field: legal_entity, operator: "=", value: LE002}\n  - {field: bucket, operator: "=", '
        "value: OUTFLOW}",
        '{field: product_type, operator: "=", value: CORP_BOND}',
    )
    assert "CORP_BOND" in rule
    (project / "adjustments" / "lcr" / "ADJ-TEST-0009.yaml").write_text(rule)


@pytest.mark.slow
def test_the_star_merges_flags_from_carried_audit_columns_and_stored_audits(
    tmp_path, lcr_data, spark, engine
):
    """The deal fact's flags come from the audit columns its source keeps (weigh's rules)
    and, for an adjusted output stored in an earlier stage (classify's, read by two
    nodes), from its audit joined by lineage id: merged into one sorted list per deal, on
    the driver and by Spark alike."""
    run = _run_lcr(tmp_path, lcr_data, spark, engine, edit=_fan_out_classify)
    assert list(run.metadata("weigh__adjusted")["audit_tags"]) == ["_audit__weigh__adjusted"]
    assert list(run.metadata("classify__adjusted")["audit_tags"]) == ["_audit__classify__adjusted"]
    fact = _read(run.node_dir("lcr_star.fact_lcr_deal"))
    local = sorted((r["lineage_id"], r["is_adjusted"], r["adjustment_rules"]) for r in fact)
    assert set(_engines(run, "adjusted flags of ").values()) == {engine.mode}
    want: dict[int, set[str]] = {}
    for n in ("classify__adjusted", "weigh__adjusted"):
        for r in _read(run.node_dir(f"{n}.audit")):
            want.setdefault(r[LID], set()).add(r["rule_id"])
    flagged = {lid: rules for lid, adjusted, rules in local if adjusted}
    assert flagged == {lid: ",".join(sorted(s)) for lid, s in want.items()}
    assert "ADJ-2026-0001,ADJ-TEST-0009" in flagged.values()  # from both sources
    assert {"ADJ-2026-0002", "ADJ-TEST-0009"} <= set(flagged.values())


def test_a_failed_promotion_of_a_driver_audit_leaves_no_temporary_folder(tmp_path, lcr_data, spark):
    """The audits are made side by side, then promoted one by one: when one promotion
    fails, the audits made but not yet promoted are removed with it."""

    def failing(written: Written) -> None:  # the promotion of an audit made on the driver
        if written.name == "weigh__adjusted.audit" and written.table is None:
            raise RuntimeError("lost the disk")

    driver = ExecutionPolicy.for_mode("driver")
    with pytest.raises(Exception, match="lost the disk"):
        _run_lcr(tmp_path, lcr_data, spark, driver, star=False, on_written=failing)
    run_dir = RunRef(tmp_path / "storage", "lcr", COB, "r1").run_dir
    left = sorted(p.name for p in run_dir.iterdir())
    assert not [n for n in left if ".tmp-" in n], left
    assert unmarked_attempts(run_dir) == []


def test_audit_table_declines_a_value_between_two_writes_that_needs_arithmetic(spark, deals):
    rules = [
        rule(  # D2 matches both: its amount between them is R1's sum, left to Spark
            "R1",
            [{"field": "currency", "operator": "=", "value": "EUR"}],
            [{"field": "amount", "operation": "add", "value": 1.5}],
        ),
        rule(
            "R2",
            [{"field": "legal_entity", "operator": "=", "value": "LE1"}],
            [{"field": "amount", "operation": "multiply", "value": 2}],
        ),
    ]
    tagged = tag_changes(deals, rules, "_tag")
    local = pa.Table.from_pandas(tagged.toPandas(), preserve_index=False)
    declined = audit_table(local, "_tag", tag_writes(rules), {})
    assert isinstance(declined, Declined) and "arithmetic" in declined.reason
    want = {(r[0], r[2], r[3], r[4]) for r in audit_rows(tagged, "_tag", rules).collect()}
    assert want == {  # the Spark replay: (200.20 + 1.5) * 2
        ("R1", 2, "200.20", "201.70"),
        ("R1", 4, None, None),
        ("R2", 1, "100.10", "200.20"),
        ("R2", 2, "201.70", "403.40"),
    }
    one = [rules[0]]  # with R1 alone there is nothing between writes: done on the driver
    tagged = tag_changes(deals, one, "_tag")
    local = pa.Table.from_pandas(tagged.toPandas(), preserve_index=False)
    got = audit_table(local, "_tag", tag_writes(one), {})
    assert {tuple(r.values()) for r in got.to_pylist()} == {
        ("R1", "amount", 2, "200.20", "201.70"),
        ("R1", "amount", 4, None, None),
    }


@pytest.mark.slow
def test_audit_table_reads_every_match_word_of_many_rules(spark, deals):
    """70 rules (two 62-rule match words) setting one field on LE1's rows, each after the
    one before: the driver's audit equals Spark's replay, rule by rule."""
    rules = [
        rule(
            f"R{k:03d}",
            [{"field": "legal_entity", "operator": "=", "value": "LE1"}],
            [{"field": "rating", "operation": "set", "value": f"V{k}"}],
        )
        for k in range(70)
    ]
    tagged = tag_changes(deals, rules, "_tag")
    want = sorted(tuple(r) for r in audit_rows(tagged, "_tag", rules).collect())
    local = pa.Table.from_pandas(tagged.toPandas(), preserve_index=False)
    got = audit_table(local, "_tag", tag_writes(rules), {})
    assert sorted(tuple(r.values()) for r in got.to_pylist()) == want
    assert len(want) == 140  # D1 and D2, 70 rules each
    last = [r for r in got.to_pylist() if r["rule_id"] == "R069"]
    assert {(r[LID], r["old_value"], r["new_value"]) for r in last} == {
        (1, "V68", "V69"),
        (2, "V68", "V69"),
    }


def test_matched_rows_counts_distinct_ids_per_rule_in_any_order():
    rows = [("R1", 5), ("R1", 5), ("R1", 9), ("R2", 1), ("R2", 5), ("R3", 2)]  # R1 writes twice
    stored = pa.table({"rule_id": [r for r, _ in rows], LID: [i for _, i in rows]})
    want = {"R1": 2, "R2": 2, "R3": 1}
    assert matched_rows(stored) == want  # in the stored order: counted in one pass
    for seed in range(5):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        table = pa.table({"rule_id": [r for r, _ in shuffled], LID: [i for _, i in shuffled]})
        assert matched_rows(table) == want


def test_audit_table_of_a_splice_point_with_no_rule_in_force_is_empty(spark, deals):
    tagged = tag_changes(deals, [], "_tag")  # every rule skipped on this cob
    local = pa.Table.from_pandas(tagged.toPandas(), preserve_index=False)
    got = audit_table(local, "_tag", [], {"stage": ("s", "string")})
    assert got.num_rows == 0
    assert got.column_names == ["stage", "rule_id", "field", LID, "old_value", "new_value"]
    assert matched_rows(got) == {}


def test_spark_text_is_sparks_cast_to_string_or_declines(spark):
    from regflow.runtime.driver.audit import spark_text

    cases = {
        "decimal(38,12)": ["1.01", "0", "-0.000001", "0.0000000001", "-5", None],
        "decimal(38,6)": ["12345678901234567890.123456", "0.000001", "0", "-1.5"],
        "decimal(10,0)": ["1", "-0", "9999999999"],
        "bigint": ["-9223372036854775808", "0", "42"],
        "boolean": ["true", "false", None],
        "date": ["2026-03-31", "1999-01-02"],
        "string": ["Zürich", "", "a'b"],
    }
    for spark_type, values in cases.items():
        df = spark.createDataFrame([(v,) for v in values], "v string").selectExpr(
            f"CAST(v AS {spark_type}) AS v"
        )
        want = [r[0] for r in df.selectExpr("CAST(v AS STRING)").collect()]
        got = spark_text(df.toArrow().column("v").combine_chunks())
        assert got is not None and got.to_pylist() == want, spark_type
    for declined in (pa.array([1.5]), pa.array([dt.datetime(2026, 1, 1)])):
        assert spark_text(declined) is None


# ------------------------------------------------------------------ an audit the driver declines
CHAIN = """\
pipeline: chain
params: {data_root: .}
sources:
  items:
    path: "{data_root}/items"
    primary_key: [item_id]
    schema: {item_id: string, grp: string, v: "decimal(38,6)", x: double}
nodes:
  - id: prep
    op: calc
    inputs: [items]
    columns: {w: "v * 2"}
  - id: total
    op: aggregate
    inputs: [prep]
    group_by: [grp]
    measures: {v: {sum: v}, x: {sum: x}}
"""


def _chain_rule(rule_id: str, items: list[str], field: str, operation: str, value: float) -> str:
    return (
        f"rule_id: {rule_id}\npipeline: chain\nstage: prep\n"
        f"conditions: [{{field: item_id, operator: in, value: {items}}}]\n"
        f"adjustments: [{{field: {field}, operation: {operation}, value: {value}}}]\n"
        "effective_date: 2026-01-01\n"
        "approval: {requested_by: a.analyst, approved_by: b.checker, "
        "timestamp: 2026-01-02T09:00:00Z}\nreason: chain test\n"
    )


def test_an_audit_the_driver_declines_is_replayed_by_spark_before_the_checkpoint_is_sorted(
    tmp_path, spark, engine
):
    """Item a is matched by an ``add`` and then a ``multiply`` of ``v`` (the value between
    them needs arithmetic) and ``x`` is a double (no exact text on the driver): Spark
    replays those audits from the files the checkpoint job wrote, before they are sorted
    (and the audit columns dropped)."""
    (tmp_path / "pipelines").mkdir()
    spec = tmp_path / "pipelines" / "chain.yaml"
    spec.write_text(CHAIN)
    (tmp_path / "items").mkdir()
    pq.write_table(
        pa.table(
            {
                "item_id": ["a", "b", "c"],
                "grp": ["g1", "g1", "g2"],
                "v": pa.array([Decimal(1), Decimal(2), Decimal(3)], pa.decimal128(38, 6)),
                "x": [0.5, 1.5, 2.5],
            }
        ),
        tmp_path / "items" / "part-0.parquet",
    )
    folder = tmp_path / "adjustments"
    folder.mkdir()
    (folder / "R-1.yaml").write_text(_chain_rule("R-1", ["a"], "v", "add", 100))
    (folder / "R-2.yaml").write_text(_chain_rule("R-2", ["a", "b"], "v", "multiply", 2))
    (folder / "R-3.yaml").write_text(_chain_rule("R-3", ["c"], "x", "multiply", 4))
    plan = build_plan(spec, folder)
    reports = run_all_stages(
        plan, tmp_path / "storage", "r1", spark, {"data_root": str(tmp_path)}, policy=engine
    )
    run = RunRef(tmp_path / "storage", "chain", COB, "r1")
    engines = {e["step"]: (e["engine"], e.get("why", "")) for r in reports for e in r.engines}
    assert engines["cluster total.lineage"][0] == engine.mode
    assert engines["audit prep__adjusted"][0] == "spark"  # declined by the driver, or never
    if engine.mode == "driver":  # (arithmetic between two writes; a double's text)
        assert engines["audit prep__adjusted"][1] in (
            "a value between two writes needs arithmetic",
            "a value's text is not made exactly as Spark makes it",
        )
    audit = {
        (r["rule_id"], r["field"], r["old_value"], r["new_value"])
        for r in _read(run.node_dir("prep__adjusted.audit"))
    }
    assert audit == {
        ("R-1", "v", "1.000000", "101.000000"),
        ("R-2", "v", "101.000000", "202.000000"),
        ("R-2", "v", "2.000000", "4.000000"),
        ("R-3", "x", "2.5", "10.0"),
    }
    totals = {r["grp"]: (r["v"], r["x"]) for r in _read(run.node_dir("total"))}
    assert totals == {"g1": (Decimal("206.000000"), 2.0), "g2": (Decimal("3.000000"), 10.0)}
    columns = [name for name, _ in run.metadata("total.lineage")["schema"]]
    assert not [c for c in columns if c.startswith("_audit")]


# ------------------------------------------------------------------ a few rows, on the driver
def test_collect_arrow_is_to_arrow_without_a_spark_job_over_driver_rows(spark):
    """An entity-level splice point collects its few tagged rows: the same table as
    ``toArrow`` gives, for every driver-copy type and the tag's struct, and no Spark job
    when the rows were created on the driver."""
    rows = [
        ("E1", 1, 7, Decimal("1.000001"), dt.date(2026, 3, 31), True, 0.1, 2.5),
        ("Zürich", None, -7, Decimal("-99999999999999999999999999999999.999999"), None, None,
         None, float("inf")),
    ]  # fmt: skip
    ddl = "s string, i int, b bigint, d decimal(38,6), dd date, f boolean, x double, y float"
    base = spark.createDataFrame(spark.createDataFrame(rows, ddl).toArrow(), ddl)
    tagged = base.selectExpr(
        "*",
        "CASE WHEN i IS NOT NULL"
        " THEN named_struct('m0', nullif(b, 0L), 'o0', d, 'n0', d * 2) END AS _t",
    )
    tracker = spark.sparkContext.statusTracker()
    before = set(tracker.getJobIdsForGroup(None))
    got = collect_arrow(tagged)
    assert set(tracker.getJobIdsForGroup(None)) == before  # evaluated while planned
    want = tagged.toArrow()
    assert got.schema == want.schema
    assert got.to_pylist() == want.to_pylist()
    assert got.column("_t").to_pylist()[0] == {
        "m0": 7,
        "o0": Decimal("1.000001"),
        "n0": Decimal("2.0000020"),
    }
