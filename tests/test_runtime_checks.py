"""The runtime's cheap checks and layouts, against independent computations.

The runtime checks written data with pyarrow instead of Spark jobs, clusters lineage
checkpoints on the driver, evaluates classify rules once per row, checks small join lookups
on the driver and reads Parquet schemas from the footers. Each case here makes sure the
guarantee behind it still holds: a duplicate id is caught wherever it is checked, a data
check still fails naming the node, and the layouts and schemas are the ones Spark gives.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random
import textwrap
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import unmarked_attempts
from runtime_helpers import COB, ctx, run_all_stages

from regflow.errors import DataError, LineageError
from regflow.ops.builtin import ClassifyParams, JoinParams
from regflow.plan.compiler import compile_file
from regflow.runtime import builtin_ops
from regflow.runtime.driver.checks import stored_duplicate_ids
from regflow.runtime.driver.cluster import cluster_parquet
from regflow.runtime.policy import Declined
from regflow.spec.models import LINEAGE_COLUMN as LID
from regflow.storage import RunRef

# ----------------------------------------------------------------------------- classify
RULES = [
    {"id": "R1", "when": "rating in ('AAA', 'AA')", "value": "HIGH"},
    {"id": "R2", "when": "rating is not null", "value": "LOW"},
    {"when": "insured = false", "value": "UNINSURED"},  # no id: '#3'
]


def expected_classes(rows, default):
    """The decision table evaluated in Python: first match wins."""
    out = {}
    for r in rows:
        rating, insured = r["rating"], r["insured"]
        if rating in ("AAA", "AA"):
            out[r[LID]] = ("HIGH", "R1")
        elif rating is not None:
            out[r[LID]] = ("LOW", "R2")
        elif insured is False:
            out[r[LID]] = ("UNINSURED", "#3")
        else:
            out[r[LID]] = (default, None)
    return out


@pytest.mark.parametrize("on_no_match", ["default", "error"])
def test_classify_values_and_rule_ids_match_a_python_decision_table(deals, on_no_match):
    p = ClassifyParams.model_validate(
        {
            "output": "grade",
            "rule_column": "rule",
            "default": "OTHER",
            "on_no_match": on_no_match,
            "rules": RULES,
        }
    )
    out = builtin_ops.classify([deals], p, ctx(node="cls"))
    assert out.columns == [*deals.columns, "grade", "rule"]
    got = {r[LID]: (r["grade"], r["rule"]) for r in out.collect()}
    assert got == expected_classes([r.asDict() for r in deals.collect()], "OTHER")


def test_classify_replaces_an_existing_output_column_in_place(deals):
    p = ClassifyParams.model_validate(
        {"output": "rating", "rules": [{"when": "amount > 150", "value": "BIG"}]}
    )
    out = builtin_ops.classify([deals], p, ctx())
    assert out.columns == deals.columns
    assert sorted((r[LID], r["rating"]) for r in out.collect()) == [
        (1, None),
        (2, "BIG"),
        (3, "BIG"),
        (4, None),  # amount null: no rule matches, default null
    ]


def test_classify_on_no_match_error_names_node_and_row_and_evaluates_rules_once(deals):
    p = ClassifyParams.model_validate(
        {
            "output": "grade",
            "rule_column": "rule",
            "on_no_match": "error",
            "rules": [
                {"id": "R1", "when": "rating = 'AAA'", "value": "X"},
                {"id": "R2", "when": "rating = 'BBB'", "value": "Y"},
                {"id": "R3", "when": "rating = 'A'", "value": "Z"},
            ],
        }
    )
    out = builtin_ops.classify([deals], p, ctx(node="classify"))
    plan = out._jdf.queryExecution().executedPlan().toString()
    assert plan.count("CASE WHEN") == 1, plan  # the conditions are in the plan once
    with pytest.raises(Exception) as exc:
        out.collect()
    text = str(exc.value)
    # deal 2 (rating null) is the only row no rule matches
    assert "[regflow:node=classify] no classify rule matches the row with lineage id 2;" in text
    ok = builtin_ops.classify([deals.where(f"{LID} != 2")], p, ctx(node="classify"))
    assert sorted((r[LID], r["grade"], r["rule"]) for r in ok.collect()) == [
        (1, "X", "R1"),
        (3, "Y", "R2"),
        (4, "Z", "R3"),
    ]


def test_classify_error_through_the_runner_is_a_data_error_naming_the_node(tmp_path, spark, engine):
    spec = _project(
        tmp_path,
        "clserr",
        """
  - id: grade
    op: classify
    inputs: [items]
    output: grade
    on_no_match: error
    rules:
      - {when: "v > 1", value: BIG}
  - id: total
    op: aggregate
    inputs: [grade]
    group_by: [grade]
    measures: {v: {sum: v}}
""",
    )
    with pytest.raises(DataError) as exc:
        run_all_stages(
            compile_file(spec), tmp_path / "storage", "r1", spark, {"data_root": str(tmp_path)},
            policy=engine,
        )  # fmt: skip
    assert exc.value.node == "grade"
    assert "no classify rule matches the row with lineage id" in str(exc.value)


# ----------------------------------------------------------------------------- join lookups
def _fx_with_a_duplicate(spark):
    return spark.createDataFrame(
        [(10, "EUR", Decimal("1")), (11, "EUR", Decimal("1.1")), (12, "USD", Decimal("1"))],
        f"{LID} bigint, currency string, usd_rate decimal(18,8)",
    )


# deals (conftest) joined with the fx rates without the duplicate: (lineage id, usd_rate)
JOINED_UNIQUE_FX = [
    (1, Decimal("1.00000000")),
    (2, Decimal("1.00000000")),
    (3, None),
    (4, Decimal("1.00000000")),
]


def test_join_lookup_duplicates_are_found_on_the_driver_and_by_spark(spark, deals, engine):
    """The lookup's size unknown: its keys are checked up front, on the driver (collected)
    or by a Spark aggregation (engine spark)."""
    fx = _fx_with_a_duplicate(spark)
    at = ctx(inputs=("d", "fx"), policy=engine)
    with pytest.raises(DataError, match=r"duplicate keys \(currency=EUR\)"):
        builtin_ops.join([deals, fx], JoinParams(on=["currency"]), at)
    unique = fx.where(f"{LID} != 11")
    out = builtin_ops.join([deals, unique], JoinParams(on=["currency"], require_match=False), at)
    assert [e["engine"] for e in at.engines] == [engine.mode] * 2  # (each join's key check)
    assert sorted((r[LID], r["usd_rate"]) for r in out.collect()) == JOINED_UNIQUE_FX


def test_join_lookup_counts_nan_keys_as_equal_like_spark(spark, engine):
    left = spark.createDataFrame([(1, 1.0)], f"{LID} bigint, k double")
    right = spark.createDataFrame(
        [(10, float("nan"), "a"), (11, float("nan"), "b")], f"{LID} bigint, k double, v string"
    )
    assert right.groupBy("k").count().first()["count"] == 2  # Spark: one key
    with pytest.raises(DataError, match="duplicate keys"):
        builtin_ops.join([left, right], JoinParams(on=["k"]), ctx(inputs=("l", "r"), policy=engine))


def _job_count(spark) -> int:
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(None))


def test_join_small_lookup_is_checked_inside_the_broadcast_job(spark, deals):
    """A lookup known to be small (ctx.input_rows) runs no job of its own: the broadcast
    fails on a repeated key, with the message of the up-front check."""
    small = ctx(inputs=("d", "fx"), input_rows=(4, 3))
    fx = _fx_with_a_duplicate(spark)
    jobs = _job_count(spark)
    out = builtin_ops.join([deals, fx], JoinParams(on=["currency"], require_match=False), small)
    assert _job_count(spark) == jobs  # no lookup-key job
    plan = out._jdf.queryExecution().executedPlan().toString()
    assert "BroadcastExchange" in plan
    with pytest.raises(Exception) as exc:
        out.collect()
    assert (
        "[regflow:node=n] join lookup 'fx' has duplicate keys (currency=EUR); each left row "
        "must match at most one lookup row"
    ) in str(exc.value)
    unique = fx.where(f"{LID} != 11")
    out = builtin_ops.join([deals, unique], JoinParams(on=["currency"], require_match=False), small)
    up_front = builtin_ops.join(
        [deals, unique], JoinParams(on=["currency"], require_match=False), ctx(inputs=("d", "fx"))
    )
    assert sorted(out.collect()) == sorted(up_front.collect())
    assert sorted((r[LID], r["usd_rate"]) for r in out.collect()) == JOINED_UNIQUE_FX


def test_join_small_lookup_counts_nan_keys_as_equal_like_spark(spark):
    left = spark.createDataFrame([(1, float("nan"))], f"{LID} bigint, k double")
    right = spark.createDataFrame(
        [(10, float("nan"), "a"), (11, float("nan"), "b")], f"{LID} bigint, k double, v string"
    )
    small = ctx(inputs=("l", "r"), input_rows=(1, 2))
    out = builtin_ops.join([left, right], JoinParams(on=["k"]), small)
    with pytest.raises(Exception, match=r"join lookup 'r' has duplicate keys \(k=NaN\)"):
        out.collect()


JOIN_NODES = """
  - id: priced
    op: join
    inputs: [items, prices]
    on: [item_id]
    columns: [price]
    require_match: true
  - id: total
    op: aggregate
    inputs: [priced]
    group_by: [item_id]
    measures: {v: {sum: v}}
"""


def _prices(tmp_path: Path, fmt: str, rows: list[tuple[str, int]]) -> None:
    """A ``prices`` lookup source (item_id, price) in ``fmt``, declared in the spec."""
    if fmt == "csv":
        lines = ["item_id,price", *[f"{i},{p}" for i, p in rows]]
        (tmp_path / "prices.csv").write_text("\n".join(lines) + "\n")
    else:
        (tmp_path / "prices").mkdir(exist_ok=True)
        pq.write_table(
            pa.table(
                {
                    "item_id": [i for i, _ in rows],
                    "price": pa.array([p for _, p in rows], pa.int64()),
                }
            ),
            tmp_path / "prices" / "part-0.parquet",
        )


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("in_broadcast", [True, False])
def test_duplicate_lookup_keys_fail_the_run_with_the_same_message(
    tmp_path, spark, engine, fmt, in_broadcast
):
    policy = engine
    if not in_broadcast:  # the lookup's size large: checked by a job (or the driver) first
        policy = dataclasses.replace(engine, broadcast_max_keys=1)
    name = f"lookup_{fmt}_{str(in_broadcast).lower()}"
    spec = _project(tmp_path, name, JOIN_NODES)
    path = "prices.csv" if fmt == "csv" else "prices"
    text = spec.read_text().replace(
        "nodes:",
        f"""  prices:
    format: {fmt}
    path: "{{data_root}}/{path}"
    primary_key: [item_id, price]
    schema: {{item_id: string, price: bigint}}
nodes:""",
    )
    spec.write_text(text)
    _prices(tmp_path, fmt, [("a", 1), ("b", 2), ("b", 3), ("c", 4)])
    plan = compile_file(spec)
    with pytest.raises(DataError) as exc:
        run_all_stages(
            plan, tmp_path / "storage", "r1", spark, {"data_root": str(tmp_path)}, policy=policy
        )
    assert exc.value.node == "priced"
    assert str(exc.value).endswith(
        "] join lookup 'prices' has duplicate keys (item_id=b); each left row must match at "
        "most one lookup row"
    )
    run = RunRef(tmp_path / "storage", name, COB, "r1")
    assert not run.is_complete("total")
    # unique keys: the run goes through, every item priced
    _prices(tmp_path, fmt, [("a", 1), ("b", 2), ("c", 4)])
    reports = run_all_stages(
        compile_file(spec), tmp_path / "storage", "r2", spark, {"data_root": str(tmp_path)},
        policy=policy,
    )  # fmt: skip
    assert reports[0].sources["prices"]["rows_at_most"] >= 3
    done = RunRef(tmp_path / "storage", name, COB, "r2")
    sums = {r["item_id"]: r["v"] for r in pq.read_table(done.node_dir("total")).to_pylist()}
    assert sums == {"a": 3, "b": 3, "c": 4}


# ----------------------------------------------------------------------------- written data
def test_stored_duplicate_ids_agree_with_counting(tmp_path):
    rnd = random.Random(3)
    ids = [rnd.randrange(-(2**63), 2**63) for _ in range(5000)]
    ids += [*ids[:3], None, None]  # three repeated ids and a repeated null
    rnd.shuffle(ids)
    files = []
    for i in range(3):
        f = tmp_path / f"part-{i}.parquet"
        pq.write_table(pa.table({LID: pa.array(ids[i::3], pa.int64())}), f)
        files.append(f)
    counts = Counter(ids)
    expected = {k for k, n in counts.items() if n > 1}
    assert set(stored_duplicate_ids(files, limit=10)) == expected
    assert len(stored_duplicate_ids(files, limit=2)) == 2
    pq.write_table(pa.table({LID: pa.array([1, 2, 3], pa.int64())}), files[0])
    pq.write_table(pa.table({LID: pa.array([4], pa.int64())}), files[1])
    pq.write_table(pa.table({LID: pa.array([None], pa.int64())}), files[2])
    assert stored_duplicate_ids(files) == []


@pytest.mark.slow
def test_cluster_parquet_orders_like_spark_and_keeps_groups_in_one_file(tmp_path, spark):
    rnd = random.Random(5)
    n = 300_000  # a file per core (of at least 250k rows): two with two cores
    names = ["LE1", "LE2", "le1", "Zürich", "Zurich", "ÉCU", "", None]
    days = [dt.date(2026, 3, 31), dt.date(2025, 12, 31), None]
    table = pa.table(
        {
            "day": pa.array([rnd.choice(days) for _ in range(n)], pa.date32()),
            "name": pa.array([rnd.choice(names) for _ in range(n)], pa.string()),
            LID: pa.array(rnd.sample(range(-(2**40), 2**40), n), pa.int64()),
            "v": pa.array(
                [Decimal(rnd.randrange(10**6)) / 100 for _ in range(n)], pa.decimal128(38, 6)
            ),
        }
    )
    folder = tmp_path / "ckpt"
    folder.mkdir()
    pq.write_table(table.slice(0, n // 2), folder / "part-a.parquet")
    pq.write_table(table.slice(n // 2), folder / "part-b.parquet")
    assert cluster_parquet(folder, ["day", "name"]) is not None
    files = sorted(folder.glob("*.parquet"))
    assert len(files) == min(2, os.cpu_count() or 1)
    # independently: Spark's own order of the same rows
    df = spark.read.parquet(str(folder))
    spark_order = [r[LID] for r in df.orderBy("day", "name", LID).select(LID).toLocalIterator()]
    ours, seen = [], set()
    for f in files:
        t = pq.read_table(f)
        ours += t.column(LID).to_pylist()
        groups = set(zip(t.column("day").to_pylist(), t.column("name").to_pylist(), strict=True))
        assert not groups & seen, "a group is split across files"
        seen |= groups
    assert ours == spark_order
    assert sorted(r["v"] for r in df.collect()) == sorted(table.column("v").to_pylist())


def test_cluster_parquet_declines_float_keys(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    pq.write_table(
        pa.table({"k": [0.0, -0.0], LID: pa.array([2, 1], pa.int64())}), folder / "p.parquet"
    )
    declined = cluster_parquet(folder, ["k"])
    assert isinstance(declined, Declined) and "key 'k' of type double" in declined.reason
    assert [f.name for f in folder.glob("*.parquet")] == ["p.parquet"]  # untouched


# ----------------------------------------------------------------------------- the runner
OPS = """
from regflow import OpParams, operator


@operator("{name}_dup")
def dup(df, params, ctx):
    return df.unionByName(df)


@operator("{name}_newid")
def newid(df, params, ctx):
    from pyspark.sql import functions as F
    return df.withColumn("_lineage_id", F.col("_lineage_id") + 1)


@operator("{name}_same")
def same(df, params, ctx):
    return df.withColumn("w", df["v"] * 2)


class TotalParams(OpParams):
    rollup_by: list[str] = ["item_id"]


@operator("{name}_total", params=TotalParams, lineage="rollup")
def total(df, params, ctx):
    from regflow.runtime.lineage import add_rollup
    return add_rollup(df, node=ctx.node, by=params.rollup_by, labels={{}}, sums=["v"])


@operator("{name}_badtotal", params=TotalParams, lineage="rollup")
def badtotal(df, params, ctx):
    from pyspark.sql import functions as F
    from regflow.runtime.lineage import add_rollup
    out = add_rollup(df, node=ctx.node, by=params.rollup_by, labels={{}}, sums=["v"])
    # a total row whose id is the total of another group
    first = df.select("item_id").orderBy("item_id").first()["item_id"]
    wrong = out.where(F.col("_lineage_id") == F.xxhash64(F.lit(ctx.node + "/rollup"), F.lit(first)))
    return out.unionByName(wrong.withColumn("item_id", F.lit("zz")))
"""

HEAD = """
pipeline: {name}
params: {{data_root: .}}
sources:
  items:
    path: "{{data_root}}/items"
    primary_key: [item_id, n]
    schema: {{item_id: string, n: bigint, v: bigint}}
nodes:
"""


def _project(tmp_path: Path, name: str, nodes: str, rows=None) -> Path:
    (tmp_path / "pipelines").mkdir(parents=True, exist_ok=True)
    (tmp_path / "operators").mkdir(exist_ok=True)
    (tmp_path / "operators" / "custom.py").write_text(textwrap.dedent(OPS.format(name=name)))
    spec = tmp_path / "pipelines" / f"{name}.yaml"
    spec.write_text(HEAD.format(name=name) + textwrap.dedent(nodes).strip("\n") + "\n")
    (tmp_path / "items").mkdir(exist_ok=True)
    rows = rows or [("a", 1, 1), ("a", 2, 2), ("b", 1, 3), ("c", 1, 4)]
    pq.write_table(
        pa.table(
            {
                "item_id": [r[0] for r in rows],
                "n": pa.array([r[1] for r in rows], pa.int64()),
                "v": pa.array([r[2] for r in rows], pa.int64()),
            }
        ),
        tmp_path / "items" / "part-0.parquet",
    )
    return spec


# An aggregate (persisted, a stage boundary), then a custom op on its stored output: the
# op's lineage is verified on the written files, before they are promoted.
AFTER_AGG = """
  - id: sums
    op: aggregate
    inputs: [items]
    group_by: [item_id]
    measures: {{v: {{sum: v}}}}
  - id: step
    op: {op}
    inputs: [sums]
"""


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        ("dup", "duplicated rows: lineage id"),
        ("newid", "not in its input"),
        ("badtotal", "not in its input"),
    ],
)
def test_custom_op_on_stored_input_is_verified_on_its_written_output(
    tmp_path, spark, engine, suffix, text
):
    name = f"chk_{suffix}"
    spec = _project(tmp_path, name, AFTER_AGG.format(op=f"{name}_{suffix}"))
    plan = compile_file(spec)
    assert plan.node("sums").persisted and plan.node("step").persisted
    with pytest.raises(LineageError) as exc:
        run_all_stages(
            plan, tmp_path / "storage", "r1", spark, {"data_root": str(tmp_path)}, policy=engine
        )
    assert text in str(exc.value)
    assert exc.value.node == "step"
    run = RunRef(tmp_path / "storage", name, COB, "r1")
    assert run.is_complete("sums") and not run.is_complete("step")
    assert not [p for p in run.run_dir.iterdir() if p.name.startswith(".")]  # no leftovers
    assert unmarked_attempts(run.run_dir) == []


@pytest.mark.parametrize("suffix", ["same", "total"])
def test_custom_op_on_stored_input_that_keeps_lineage_passes(tmp_path, spark, engine, suffix):
    name = f"ok_{suffix}"
    spec = _project(tmp_path, name, AFTER_AGG.format(op=f"{name}_{suffix}"))
    run_all_stages(
        compile_file(spec), tmp_path / "storage", "r1", spark, {"data_root": str(tmp_path)},
        policy=engine,
    )  # fmt: skip
    run = RunRef(tmp_path / "storage", name, COB, "r1")
    out = pq.read_table(run.node_dir("step")).to_pylist()
    sums = {r["item_id"]: r["v"] for r in pq.read_table(run.node_dir("sums")).to_pylist()}
    assert sums == {"a": 3, "b": 3, "c": 4}
    if suffix == "total":  # each item's own row plus its total row
        assert sorted((r["item_id"], r["v"]) for r in out) == sorted([*sums.items(), *sums.items()])
        assert len({r[LID] for r in out}) == 6


def test_duplicate_source_keys_are_caught_by_both_checks(tmp_path, spark, engine):
    spec = _project(
        tmp_path,
        f"dups_{engine.mode}",
        """
  - id: sums
    op: aggregate
    inputs: [items]
    group_by: [item_id]
    measures: {v: {sum: v}}
""",
        rows=[("a", 1, 1), ("a", 1, 2), ("b", 1, 3)],  # (a, 1) twice: one lineage id
    )
    with pytest.raises(DataError, match="source 'items' has duplicate primary keys"):
        run_all_stages(
            compile_file(spec), tmp_path / "storage", "r1", spark, {"data_root": str(tmp_path)},
            policy=engine,
        )  # fmt: skip


@pytest.mark.slow
def test_lcr_checkpoint_layout_is_the_same_on_the_driver_and_with_spark(
    project, lcr_data, tmp_path, spark, engine
):
    spec = project / "pipelines" / "lcr.yaml"
    text = spec.read_text()
    if "\n  - id: lcr_star" in text:  # the LCR itself, without the warehouse load
        spec.write_text(text[: text.index("\n  - id: lcr_star")] + "\n")
    plan = compile_file(spec)
    root = tmp_path / "storage"
    reports = run_all_stages(plan, root, "r1", spark, {"data_root": str(lcr_data)}, policy=engine)
    clustered = {e["step"]: e["engine"] for r in reports for e in r.engines}
    assert clustered["cluster entity_buckets.lineage"] == engine.mode  # (the engine asked for)
    run = RunRef(root, "lcr", COB, "r1")
    for name, keys in (("entity_buckets.lineage", 2), ("entity_lcr.lineage", 1)):
        seen: set = set()
        rows = 0
        for f in sorted(run.node_dir(name).glob("*.parquet")):
            t = pq.read_table(f)
            rows += t.num_rows
            cols = [t.column(c).to_pylist() for c in t.column_names[:keys]]
            lids = t.column(LID).to_pylist()
            order = list(zip(*cols, lids, strict=True))
            assert order == sorted(order)
            groups = {o[:keys] for o in order}
            assert not groups & seen
            seen |= groups
        assert rows == run.metadata(name)["rows"]
    assert run.metadata("entity_buckets.lineage")["rows"] == 10_000
    # the reported figures are the sums of the checkpointed contributions
    members = pq.read_table(run.node_dir("entity_buckets.lineage")).to_pylist()
    for r in pq.read_table(run.node_dir("entity_buckets")).to_pylist():
        mine = [m for m in members if m["legal_entity"] == r["legal_entity"]]
        for m in ("l1", "l2a", "l2b", "outflows", "inflows"):
            assert sum((x[m] for x in mine if x[m] is not None), Decimal(0)) == r[m]


# ----------------------------------------------------------------------------- sources
def test_parquet_source_schema_from_footers_is_what_spark_infers(tmp_path, spark):
    from regflow.runtime.sources.schema import parquet_schema
    from regflow.spec.types import Column, Schema

    data = pa.table(
        {
            "s": ["x", None],
            "i8": pa.array([1, 2], pa.int8()),
            "i": pa.array([1, None], pa.int32()),
            "n": pa.array([1, 2], pa.int64()),
            "d": pa.array([Decimal("1.25"), None], pa.decimal128(20, 2)),
            "day": pa.array([dt.date(2026, 3, 31), None], pa.date32()),
            "b": [True, None],
            "x": [1.5, None],
            "raw": pa.array([b"\x00", None], pa.binary()),
            "ts": pa.array([dt.datetime(2026, 3, 31), None], pa.timestamp("us")),
        }
    )
    f = tmp_path / "p.parquet"
    pq.write_table(data, f)
    plain = [c for c in data.column_names if c != "ts"]
    declared = Schema(tuple(Column(c, "string") for c in plain))
    ddl = parquet_schema([f], declared)
    assert ddl is not None
    ours = spark.read.schema(ddl).parquet(str(f)).schema
    inferred = spark.read.parquet(str(f)).select(*plain).schema
    assert [(x.name, x.dataType) for x in ours] == [(x.name, x.dataType) for x in inferred]
    # timestamps, a missing column or files that disagree: let Spark infer
    assert parquet_schema([f], Schema((Column("ts", "timestamp"),))) is None
    assert parquet_schema([f], Schema((Column("nope", "string"),))) is None
    g = tmp_path / "q.parquet"
    pq.write_table(data.set_column(2, "i", pa.array([1, 2], pa.int64())), g)
    assert parquet_schema([f, g], declared) is None


def test_cluster_parquet_shows_inspect_the_dropped_columns_and_writes_without_them(tmp_path):
    """``inspect`` sees every column, the dropped ones (read apart) lined up with their rows,
    while the job's files are still there; the rewritten files and the result leave the
    dropped columns out."""
    n = 1_000
    tag = pa.array(
        [{"m0": i % 7, "o0": f"old{i}"} if i % 3 == 0 else None for i in range(n)],
        pa.struct([("m0", pa.int64()), ("o0", pa.string())]),
    )
    table = pa.table(
        {"g": pa.array([f"E{i % 4}" for i in range(n)]), LID: pa.array(range(n), pa.int64())}
    ).append_column("_tag", tag)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for k, part in enumerate((table.slice(0, 400), table.slice(400))):
        pq.write_table(part, folder / f"part-{k}.parquet")
    seen: dict[str, object] = {}

    def inspect(t: pa.Table) -> None:
        seen["columns"] = t.column_names
        seen["rows"] = {r[LID]: r["_tag"] for r in t.select([LID, "_tag"]).to_pylist() if r["_tag"]}
        seen["job_files"] = sorted(f.name for f in folder.glob("*.parquet"))

    out = cluster_parquet(folder, ["g"], drop=["_tag"], inspect=inspect)
    assert out is not None
    assert seen["columns"] == ["g", LID, "_tag"]
    assert seen["rows"] == {i: {"m0": i % 7, "o0": f"old{i}"} for i in range(0, n, 3)}
    assert seen["job_files"] == ["part-0.parquet", "part-1.parquet"]  # not yet rewritten
    assert out.column_names == ["g", LID]
    files = sorted(folder.glob("*.parquet"))
    assert files and not {f.name for f in files} & {"part-0.parquet", "part-1.parquet"}
    for f in files:
        assert pq.read_schema(f).names == ["g", LID]
    assert sum(pq.read_metadata(f).num_rows for f in files) == n
