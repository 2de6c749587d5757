"""Errors that point at the right place (issue 18, item 7).

Each case runs small crafted data through the real runtime (Spark, real Parquet and CSV
files) or the real validator, and checks that the error names the source, the column, the
key values, the node whose expression failed or the file, and never passes on Spark's advice
to turn ANSI mode off.
"""

from __future__ import annotations

import shutil
import textwrap
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from runtime_helpers import COB, run_all_stages

from regflow.adjust.loader import load_rules
from regflow.errors import DataError, SpecError
from regflow.plan.compiler import compile_file
from regflow.storage import RunRef

ROOT = Path(__file__).resolve().parents[1]

SPEC = """
pipeline: {name}
params: {{data_root: .}}
sources:
  deals:
    path: "{{data_root}}/deals"
    format: {fmt}
    primary_key: [deal_id]
    schema: {{deal_id: string, amount: "decimal(18,2)", sector: string}}
{options}nodes:
  - id: weigh
    op: calc
    inputs: [deals]
    columns:
      w: amount * 2
  - id: more
    op: calc
    inputs: [weigh]
    columns:
      w2: {w2}
  - id: tot
    op: aggregate
    inputs: [more]
    group_by: [sector]
    measures: {{w2: {{sum: w2}}}}
"""


def _deals(tmp_path: Path, name: str, data: pa.Table | bytes | str, **kw: str) -> Path:
    """A project with the ``deals`` source holding ``data`` (a table, raw bytes, CSV text)."""
    fmt = "csv" if isinstance(data, str) else "parquet"
    (tmp_path / "pipelines").mkdir(parents=True, exist_ok=True)
    (tmp_path / "deals").mkdir(exist_ok=True)
    spec = tmp_path / "pipelines" / f"{name}.yaml"
    spec.write_text(
        SPEC.format(name=name, fmt=fmt, w2=kw.get("w2", "w + 1"), options=kw.get("options", ""))
    )
    target = tmp_path / "deals" / f"part-0.{fmt}"
    if isinstance(data, str):
        target.write_text(data)
    elif isinstance(data, bytes):
        target.write_bytes(data)
    else:
        pq.write_table(data, target)
    return spec


def _run(tmp_path: Path, spec: Path, spark, policy) -> None:
    run_all_stages(
        compile_file(spec), tmp_path / "storage", "r1", spark, {"data_root": str(tmp_path)},
        policy=policy,
    )  # fmt: skip


def _no_spark_advice(text: str) -> None:
    assert "spark.sql.ansi.enabled" not in text
    assert "try_cast" not in text


def _table(amounts: list, amount_type: pa.DataType) -> pa.Table:
    n = len(amounts)
    return pa.table(
        {
            "deal_id": [f"d{i + 1}" for i in range(n)],
            "amount": pa.array(amounts, amount_type),
            "sector": ["a", "b", "a", "b"][:n],
        }
    )


# ---------------------------------------------------------------- bad values in a source
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_garbage_amount_is_blamed_on_the_source_column_and_row(tmp_path, spark, engine, fmt):
    if fmt == "csv":  # Spark's CSV reader turned 'abc' into null without a word
        data: pa.Table | str = "deal_id,amount,sector\nd1,1.50,a\nd2,abc,b\nd3,2.00,a\n"
    else:
        data = _table(["1.50", "abc", "2.00"], pa.string())
    spec = _deals(tmp_path, f"garbage_{fmt}", data)
    with pytest.raises(DataError) as exc:
        _run(tmp_path, spec, spark, engine)
    text = str(exc.value)
    assert exc.value.node == "deals"
    assert "source 'deals', column 'amount': value 'abc'" in text
    assert "cannot be read as decimal(18,2): it is no number" in text
    assert "deal_id=d2" in text
    _no_spark_advice(text)
    run = RunRef(tmp_path / "storage", f"garbage_{fmt}", COB, "r1")
    assert not run.is_complete("more") and not run.is_complete("tot")


def test_csv_numbers_are_read_exactly_as_declared(tmp_path, spark, engine):
    """Reading CSV numbers as text and casting them keeps their values."""
    spec = _deals(tmp_path, "csv_ok", "deal_id,amount,sector\nd1,1.5,a\nd2,-20.25,b\nd3,,a\n")
    _run(tmp_path, spec, spark, engine)
    run = RunRef(tmp_path / "storage", "csv_ok", COB, "r1")
    got = {r["sector"]: r["w2"] for r in pq.read_table(run.node_dir("tot")).to_pylist()}
    # (1.5 * 2 + 1) for a (d3's null amount adds nothing); (-20.25 * 2 + 1) for b
    assert got == {"a": Decimal("4.00"), "b": Decimal("-39.50")}


def test_overflowing_amount_is_blamed_on_the_source_column_and_row(tmp_path, spark, engine):
    amounts = [Decimal("1.50"), Decimal("2.00"), Decimal("123456789012345678901234.00")]
    spec = _deals(tmp_path, "overflow", _table(amounts, pa.decimal128(38, 2)))
    with pytest.raises(DataError) as exc:
        _run(tmp_path, spec, spark, engine)
    text = str(exc.value)
    assert exc.value.node == "deals"
    assert "column 'amount': value '123456789012345678901234.00' (decimal(38,2))" in text
    assert "cannot be read as decimal(18,2): it is too large" in text
    assert "deal_id=d3" in text
    _no_spark_advice(text)


def test_an_expression_that_overflows_names_its_node_not_the_stages_last(tmp_path, spark, engine):
    amounts = [Decimal("1.50"), Decimal("9999999999999999.00")]
    spec = _deals(tmp_path, "calc_overflow", _table(amounts, pa.decimal128(18, 2)), w2="w * w * w")
    plan = compile_file(spec)
    assert plan.stages[-1].nodes[-1] == "tot"  # the job runs at tot's write
    with pytest.raises(DataError) as exc:
        _run(tmp_path, spec, spark, engine)
    text = str(exc.value)
    assert exc.value.node == "more"
    assert "expression 'w * w * w' failed: [NUMERIC_VALUE_OUT_OF_RANGE" in text
    assert "CAST(operand AS decimal(38,2))" in text  # regflow's fix instead of Spark's advice
    _no_spark_advice(text)


def test_arithmetic_on_text_that_validate_cannot_see_names_its_node(tmp_path, spark, engine):
    """Without a declared schema validate cannot know 'sector' is text: the run fails at the
    calc whose expression casts it, not at the aggregate whose write runs the job."""
    data = _table([Decimal("1.50"), Decimal("2.00")], pa.decimal128(18, 2))
    spec = _deals(tmp_path, "text_math", data, w2="w * sector")
    text = spec.read_text().replace(
        '    schema: {deal_id: string, amount: "decimal(18,2)", sector: string}\n', ""
    )
    spec.write_text(text)
    assert not compile_file(spec).source("deals").schema.known
    with pytest.raises(DataError) as exc:
        _run(tmp_path, spec, spark, engine)
    assert exc.value.node == "more"
    assert "expression 'w * sector' failed: [CAST_INVALID_INPUT] The value 'a'" in str(exc.value)
    assert "declare the column's type in the source schema" in str(exc.value)
    _no_spark_advice(str(exc.value))


def test_a_division_by_zero_names_its_node_and_a_fix(tmp_path, spark, engine):
    amounts = [Decimal("1.50"), Decimal("2.00")]
    spec = _deals(tmp_path, "div_zero", _table(amounts, pa.decimal128(18, 2)), w2="w / (w - w)")
    with pytest.raises(DataError) as exc:
        _run(tmp_path, spec, spark, engine)
    assert exc.value.node == "more"
    assert "expression 'w / (w - w)' failed: [DIVIDE_BY_ZERO]" in str(exc.value)
    assert "nullif" in str(exc.value)
    _no_spark_advice(str(exc.value))


# ---------------------------------------------------------------- a corrupt Parquet file
@pytest.mark.parametrize("reader", ["footers", "spark"])
def test_a_corrupt_parquet_file_is_named(tmp_path, spark, engine, reader):
    # with reader options, the footers are not read on the driver: Spark meets the file
    options = '    options: {mergeSchema: "false"}\n' if reader == "spark" else ""
    spec = _deals(tmp_path, f"corrupt_{reader}", b"PAR1 not parquet at all PAR1", options=options)
    with pytest.raises(DataError) as exc:
        _run(tmp_path, spec, spark, engine)
    bad = tmp_path / "deals" / "part-0.parquet"
    assert exc.value.node == "deals"
    assert f"source 'deals': file {bad} is not a readable Parquet file" in str(exc.value)


# ---------------------------------------------------------------- source keys
OPS = """
from regflow import operator


@operator("pd_floor")
def pd_floor(df, params, ctx):
    from pyspark.sql import functions as F
    return df.withColumn("v", F.greatest(F.col("v"), F.lit(0)))
"""

KEYED = """
pipeline: {name}
params: {{data_root: .}}
sources:
  items:
    path: "{{data_root}}/items"
    primary_key: [item_id, n]
    schema: {{item_id: string, n: bigint, v: bigint}}
nodes:
  - id: floored
    op: pd_floor
    inputs: [items]
  - id: sums
    op: aggregate
    inputs: [floored]
    group_by: [item_id]
    measures: {{v: {{sum: v}}}}
"""


def _items(tmp_path: Path, name: str, rows: list[tuple]) -> Path:
    (tmp_path / "pipelines").mkdir(parents=True, exist_ok=True)
    (tmp_path / "operators").mkdir(exist_ok=True)
    (tmp_path / "operators" / "custom.py").write_text(OPS)
    spec = tmp_path / "pipelines" / f"{name}.yaml"
    spec.write_text(KEYED.format(name=name))
    (tmp_path / "items").mkdir(exist_ok=True)
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


def test_duplicate_source_keys_before_a_custom_op_are_blamed_on_the_source(tmp_path, spark, engine):
    rows = [("a", 1, 1), ("a", 1, 2), ("b", 1, 3), ("c", 2, 4), ("c", 2, 5), ("c", 2, 6)]
    spec = _items(tmp_path, "dup_keys", rows)
    with pytest.raises(DataError) as exc:
        _run(tmp_path, spec, spark, engine)
    text = str(exc.value)
    assert exc.value.node == "items"
    assert "pd_floor" not in text
    assert "source 'items' has duplicate primary keys (item_id, n)" in text
    assert "item_id=a, n=1 (2 rows); item_id=c, n=2 (3 rows)" in text


def test_duplicate_source_keys_found_in_written_data_name_the_keys(tmp_path, spark, engine):
    """Without a custom op, the duplicates are found in the aggregate's written checkpoint:
    with pyarrow on the driver, or by Spark for data above the driver-side limit."""
    rows = [("b", 7, 1), ("b", 7, 2), ("a", 1, 3)]
    spec = _items(tmp_path, f"dup_written_{engine.mode}", rows)
    spec.write_text(spec.read_text().replace("op: pd_floor", "op: calc\n    columns: {w: v}"))
    with pytest.raises(DataError) as exc:
        _run(tmp_path, spec, spark, engine)
    assert exc.value.node == "items"
    assert "duplicate primary keys (item_id, n): item_id=b, n=7 (2 rows)." in str(exc.value)


def test_null_source_keys_are_not_called_duplicates(tmp_path, spark, engine):
    rows = [("a", 1, 1), ("a", None, 2), ("a", None, 3), ("b", 1, 4)]
    spec = _items(tmp_path, "null_keys", rows)
    with pytest.raises(DataError) as exc:
        _run(tmp_path, spec, spark, engine)
    text = str(exc.value)
    assert exc.value.node == "items"
    assert "duplicate" not in text and "pd_floor" not in text
    assert "source 'items' has a row with a null primary key (item_id, n): item_id=a, n=null" in (
        text
    )


def test_a_single_null_source_key_fails_the_run(tmp_path, spark, engine):
    """One null key collides with nothing, but gives its row no id of its own."""
    spec = _items(tmp_path, "one_null_key", [("a", 1, 1), (None, 2, 2)])
    with pytest.raises(DataError, match=r"null primary key \(item_id, n\): item_id=null, n=2"):
        _run(tmp_path, spec, spark, engine)


# ---------------------------------------------------------------- validate
def test_validate_reports_arithmetic_on_a_string_column_at_its_place(tmp_path):
    spec = _deals(tmp_path, "str_math", _table([Decimal(1)], pa.decimal128(18, 2)))
    spec.write_text(spec.read_text().replace("w: amount * 2", "w: amount * sector"))
    with pytest.raises(SpecError) as exc:
        compile_file(spec)
    (problem,) = exc.value.errors
    line = spec.read_text().splitlines().index("      w: amount * sector") + 1
    assert str(problem.location) == f"{spec}:{line}:10"
    assert "'amount * sector' does arithmetic on a string: 'sector' is a string" in problem.message
    assert "CAST(sector AS decimal(18,2))" in problem.hint


# ---------------------------------------------------------------- impossible dates
def test_impossible_dates_in_a_rule_are_located_and_every_other_error_listed(
    tmp_path, monkeypatch, capsys
):
    from regflow.cli.adjust_check import validate_rules
    from regflow.cli.main import main

    for name in ("pipelines", "operators", "adjustments"):
        shutil.copytree(ROOT / name, tmp_path / name)
    rule = tmp_path / "adjustments" / "lcr" / "ADJ-2026-0001.yaml"
    text = rule.read_text()
    text = text.replace("effective_date: 2026-01-01", "effective_date: 2026-31-01")
    text = text.replace("timestamp: 2026-01-02T09:00:00Z", "timestamp: 2026-13-02T09:00:00Z")
    text = text.replace("operation: set", "operation: sett")
    rule.write_text(text)
    lines = text.splitlines()
    errors = validate_rules(tmp_path, [rule]).errors
    where = {p.key_path: str(p.location) for p in errors}
    line = next(i for i, s in enumerate(lines, 1) if s.startswith("effective_date"))
    assert where["effective_date"] == f"{rule}:{line}:17"
    line = next(i for i, s in enumerate(lines, 1) if "timestamp:" in s)
    assert where["approval.timestamp"] == f"{rule}:{line}:14"
    assert any("sett" in p.message or "operation" in p.key_path for p in errors)
    _, problems = load_rules([rule])  # the loader behind run and the DAG: no ValueError either
    assert {p.key_path for p in problems} >= {"effective_date", "approval.timestamp"}
    # the commands: an exit code and the located errors, no traceback
    monkeypatch.setenv("REGFLOW_PROJECT", str(tmp_path))
    (tmp_path / "no-runs").mkdir()
    for argv in (
        ["adjustments", "check", str(rule), "--storage", str(tmp_path / "no-runs")],
        ["validate", str(rule)],
    ):
        assert main(argv) == 1
        out = capsys.readouterr()
        assert where["effective_date"] in out.out + out.err
        assert where["approval.timestamp"] in out.out + out.err
        assert "Traceback" not in out.out + out.err


def test_impossible_dates_in_a_spec_are_located_and_every_other_error_listed(tmp_path):
    spec = tmp_path / "pipelines" / "dates.yaml"
    spec.parent.mkdir()
    spec.write_text(
        textwrap.dedent(
            """\
            pipeline: dates
            cob: {rule: previous_business_day, holidays: [2026-31-01, 2026-12-25]}
            sources:
              s: {path: s, primary_key: [k], schema: {k: string}}
            nodes:
              - {id: n, op: calcc, inputs: [s]}
            """
        )
    )
    with pytest.raises(SpecError) as exc:
        compile_file(spec)
    where = {p.key_path: str(p.location) for p in exc.value.errors}
    assert where["cob.holidays[0]"] == f"{spec}:2:47"
    assert "nodes[0].op" in where  # the other error is still listed
