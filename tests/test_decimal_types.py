"""Decimal typing (regflow.ops.decimals): the type Spark gives each expression, the scale its
exact value needs, and the roundings ``regflow validate`` reports or ``regflow plan`` shows.

The expected types below are Spark's rules worked by hand; ``test_the_types_are_sparks``
checks every one of them against Spark itself (``typeof``) in regflow's session.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from regflow.ops.decimals import analyze
from regflow.plan.compiler import compile_file
from regflow.plan.explain import explain
from regflow.plan.rule_rounding import adjustment_rounding
from regflow.spec.types import Schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Schema.of(
    {
        "a": "decimal(20,2)",  # an amount
        "r": "decimal(18,8)",  # an FX rate
        "f": "decimal(5,2)",  # an LCR factor
        "u": "decimal(38,10)",  # amount_usd
        "w": "decimal(38,12)",
        "p": "decimal(9,8)",
        "i": "int",
        "b": "bigint",
        "d": "double",
    }
)

# expression -> (Spark's type, decimals of the exact value or None for a quotient,
#                the kinds of rounding found)
CASES: dict[str, tuple[str, int | None, list[str]]] = {
    "a * r": ("decimal(38,10)", 10, []),  # 20+18+1 digits capped at 38; scale kept
    "u * f": ("decimal(38,12)", 12, []),
    "a * r * f": ("decimal(38,12)", 12, []),
    "w * 15": ("decimal(38,12)", 12, []),  # a literal counts its own digits: decimal(2,0)
    "w * 15 / 85": ("decimal(38,13)", None, ["division"]),
    "(w + w) * 15 / 85": ("decimal(38,13)", None, ["division"]),
    "w * 2 / 3": ("decimal(38,12)", None, ["division"]),
    "a / r": ("decimal(38,16)", None, ["division"]),
    "w / w": ("decimal(38,18)", None, ["division"]),
    "a / i": ("decimal(31,13)", None, ["division"]),
    "round(w, 2)": ("decimal(29,2)", 2, ["round"]),
    "round(a * r, 4)": ("decimal(33,4)", 4, ["round"]),
    "round(a, 4)": ("decimal(21,2)", 2, []),  # nothing to round (one more integer digit)
    "cast(a * r as decimal(38,9))": ("decimal(38,9)", 9, ["cast"]),
    "cast(a as decimal(30,4))": ("decimal(30,4)", 2, []),  # widening: no rounding
    "a + 0.5": ("decimal(21,2)", 2, []),
    "a - r": ("decimal(27,8)", 8, []),
    "a * 0.75": ("decimal(23,4)", 4, []),
    "w * 1.05": ("decimal(38,14)", 14, []),
    "a * i": ("decimal(31,2)", 2, []),  # int: decimal(10,0)
    "a * b": ("decimal(38,2)", 2, []),  # bigint: decimal(20,0)
    "a * 12345678901": ("decimal(32,2)", 2, []),  # a bigint literal: its 11 digits
    "a % r": ("decimal(18,8)", 8, []),
    "-a": ("decimal(20,2)", 2, []),
    "abs(a * r)": ("decimal(38,10)", 10, []),
    "greatest(w, a)": ("decimal(38,12)", 12, []),
    "least(w * 2, a)": ("decimal(38,12)", 12, []),
    "coalesce(a, r)": ("decimal(26,8)", 8, []),
    "case when i > 0 then a else r end": ("decimal(26,8)", 8, []),
    "if(i > 0, a, u)": ("decimal(38,10)", 10, []),
    "p * p * p * p * p": ("decimal(38,38)", 38, ["cut"]),  # 40 decimals: Spark keeps 38
    "a * d": ("double", None, ["double"]),
    "1.5e0 * a": ("double", None, ["double"]),
    "d * 0.5": ("double", None, []),  # no decimal data: nothing exact to lose
    "i / i": ("double", None, []),
    "i + 1": ("int", None, []),
}


@pytest.mark.parametrize("expr", list(CASES))
def test_decimal_rules(expr: str) -> None:
    typ, exact, kinds = CASES[expr]
    typed = analyze(expr, SCHEMA)
    assert typed is not None
    assert typed.type == typ
    if typ.startswith("decimal"):
        assert typed.exact == exact
    assert [r.kind for r in typed.roundings] == kinds


def test_the_types_are_sparks(spark) -> None:
    """Every expected type above is the one Spark gives, in regflow's session (precision
    loss disallowed): the compiler's types are the runtime's."""
    assert spark.conf.get("spark.sql.decimalOperations.allowPrecisionLoss") == "false"
    cols = ", ".join(f"CAST(NULL AS {t}) AS {n}" for n, t in SCHEMA.to_dict().items())
    spark.sql(f"SELECT {cols}").createOrReplaceTempView("decimal_types")
    exprs = list(CASES)
    row = spark.sql(
        "SELECT "
        + ", ".join(f"typeof({e}) AS c{k}" for k, e in enumerate(exprs))
        + " FROM decimal_types"
    ).first()
    got = {e: row[f"c{k}"] for k, e in enumerate(exprs)}
    assert got == {e: CASES[e][0] for e in exprs}


def test_sum_types_are_sparks(spark) -> None:
    from regflow.ops.decimals import sum_type

    df = spark.sql("SELECT CAST(1 AS decimal(20,2)) a, CAST(1 AS decimal(38,14)) w, 1 i")
    got = df.selectExpr("typeof(sum(a))", "typeof(sum(w))", "typeof(sum(i))").first()
    assert list(got) == [sum_type("decimal(20,2)"), sum_type("decimal(38,14)"), sum_type("int")]
    assert list(got) == ["decimal(30,2)", "decimal(38,14)", "bigint"]


def test_spark_fails_rather_than_round_or_overflow(spark) -> None:
    """The runtime's guard: an exact product is kept to its last digit, and a result whose
    integer part does not fit its type fails the query (ANSI) instead of being rounded."""
    from pyspark.errors import ArithmeticException

    exact = spark.sql(
        "SELECT CAST('123456789012345678.91' AS decimal(20,2)) "
        "* CAST('1.23456789' AS decimal(18,8)) * CAST('0.85' AS decimal(5,2)) AS x"
    ).first()["x"]
    from decimal import Decimal, localcontext

    with localcontext(prec=60):
        want = Decimal("123456789012345678.91") * Decimal("1.23456789") * Decimal("0.85")
    assert exact == want  # all 12 decimals: no rounding to 6
    with pytest.raises(ArithmeticException, match="NUMERIC_VALUE_OUT_OF_RANGE"):
        spark.sql(
            "SELECT CAST('99999999999999999999999999' AS decimal(38,12)) * 100000 AS x"
        ).collect()


# ------------------------------------------------------------------ plan and validate
def test_plan_shows_types_and_the_roundings_the_spec_asks_for(tmp_path: Path) -> None:
    spec = tmp_path / "credit.yaml"
    spec.write_text(
        """pipeline: credit
sources:
  loans:
    path: /data/loans
    primary_key: [loan_id]
    schema: {loan_id: string, segment: string, exposure: "decimal(20,2)",
             usd_rate: "decimal(18,8)", pd: "decimal(9,8)", lgd: "decimal(5,4)"}
nodes:
  - id: usd
    op: calc
    inputs: [loans]
    columns:
      exposure_usd: "exposure * usd_rate"
      expected_loss: "exposure_usd * pd * lgd"
      el_rate: "round(expected_loss / exposure_usd, 10)"
      el_cents: "cast(expected_loss as decimal(38,2))"
  - id: per_segment
    op: aggregate
    inputs: [usd]
    group_by: [segment]
    measures:
      el: {sum: expected_loss}
""",
        encoding="utf-8",
    )
    text = explain(compile_file(spec))
    assert (
        "exposure_usd:decimal(38,10), expected_loss:decimal(38,22), "
        "el_rate:decimal(25,10), el_cents:decimal(38,2)" in text
    )
    assert "segment:string, el:decimal(38,22)" in text
    assert (
        "rounds el_rate: expected_loss / exposure_usd: the quotient is rounded half-up to "
        "24 decimals" in text
    )
    assert (
        "rounds el_rate: ROUND(expected_loss / exposure_usd, 10): explicitly rounded half-up "
        "to 10 decimals" in text
    )
    assert (
        "rounds el_cents: CAST(expected_loss AS DECIMAL(38, 2)): explicitly rounded half-up "
        "to 2 decimals" in text
    )


def test_validate_names_the_types_and_the_fix(tmp_path: Path, capsys) -> None:
    from regflow.cli.main import main

    bad = ROOT / "tests" / "fixtures" / "invalid" / "decimal_rounding.yaml"
    spec = tmp_path / "credit.yaml"
    shutil.copy(bad, spec)
    assert main(["validate", str(spec)]) != 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert f"{spec}:26:57: error: declared type decimal(38,6) rounds 'exposure * usd_rate'" in text
    assert "its exact value needs 10 (Spark computes decimal(38,10))" in text
    assert (
        "hint: declare decimal(38,10) (a narrower precision is fine: too large a value fails "
        "the run), or write round(exposure * usd_rate, 6) to round on purpose" in text
    )
    assert "hint: write round(expected_loss / exposure_usd, 10) to round on purpose" in text
    assert "hint: cast the floating point operand to a decimal" in text


def test_the_lcr_pipeline_is_exact_by_its_types() -> None:
    """amount_usd keeps every digit of decimal(20,2) x decimal(18,8), weighted_amount of
    that times decimal(5,2) (with two spare decimals for adjustments), and the entity
    measures and caps keep the sums' scale."""
    plan = compile_file(ROOT / "pipelines" / "lcr.yaml")
    weigh = plan.node("weigh").schema
    assert weigh.type_of("amount_usd") == "decimal(38,10)"
    assert weigh.type_of("weighted_amount") == "decimal(38,14)"
    buckets = plan.node("entity_buckets").schema
    assert {buckets.type_of(m) for m in ("l1", "l2a", "l2b", "outflows", "inflows")} == {
        "decimal(38,14)"
    }
    lcr = plan.node("entity_lcr").schema
    assert {lcr.type_of(c) for c in lcr.names if c not in ("cob_date", "legal_entity")} == {
        "decimal(38,14)",
        "double",
        "bigint",
    }
    assert lcr.type_of("hqla") == "decimal(38,14)"
    # the caps' divisions, the only roundings, are shown by `regflow plan`
    assert "rounds adj_15, adj_40 (and hqla), capped_inflows: each quotient" in explain(plan)


def test_the_generated_warehouse_ddl_keeps_the_digits() -> None:
    ddl = (ROOT / "sql" / "postgresql" / "lcr.sql").read_text(encoding="utf-8")
    assert '"amount_usd" NUMERIC(38,10)' in ddl
    assert '"weighted_amount" NUMERIC(38,14)' in ddl
    for m in ("l1", "hqla", "net_outflows"):
        assert f'"{m}" NUMERIC(38,14)' in ddl
    assert "NUMERIC(38,6)" not in ddl


# ------------------------------------------------------------------ adjustments
@pytest.mark.parametrize(
    ("operation", "value", "field_type", "used", "rounds"),
    [
        ("multiply", 1.05, "decimal(38,14)", 12, False),  # the LCR's sample rule
        ("multiply", 1.005, "decimal(38,14)", 12, True),
        ("multiply", 2, "decimal(20,2)", 2, False),
        ("multiply", 0.5, "decimal(20,2)", 2, True),
        ("multiply", 0.5, "decimal(20,2)", None, True),  # unknown use: the full scale
        ("add", 0.005, "decimal(20,2)", 2, True),
        ("add", 0.05, "decimal(20,2)", 2, False),
        ("set", 1.125, "decimal(20,2)", 2, True),
        ("set", 1.1, "decimal(20,2)", 2, False),
        ("multiply", 1.5, "double", None, False),
    ],
)
def test_adjustment_rounding(operation, value, field_type, used, rounds) -> None:
    found = adjustment_rounding(operation, value, "x", field_type, used)
    assert (found is not None) is rounds


def test_adjustments_check_reports_a_rounding_multiply(tmp_path: Path) -> None:
    from regflow.adjust.loader import load_rule_file
    from regflow.plan.rule_checks import check_rule

    plan = compile_file(ROOT / "pipelines" / "lcr.yaml")
    src = (ROOT / "adjustments" / "lcr" / "ADJ-2026-0002.yaml").read_text(encoding="utf-8")
    path = tmp_path / "ADJ-2026-0099.yaml"
    path.write_text(
        src.replace("ADJ-2026-0002", "ADJ-2026-0099").replace("value: 1.05", "value: 1.005"),
        encoding="utf-8",
    )
    rule, load_problems = load_rule_file(path)
    assert rule is not None and load_problems == []
    problems = check_rule(plan, rule)
    assert [p.message for p in problems] == [
        "'multiply' by 1.005 would round field 'weighted_amount' (decimal(38,14)): its values "
        "use 12 decimals, their product with 1.005 needs 15"
    ]
    assert "decimal(38,15)" in problems[0].hint
    assert problems[0].location is not None and problems[0].location.line == 9
    sample, _ = load_rule_file(ROOT / "adjustments" / "lcr" / "ADJ-2026-0002.yaml")
    assert sample is not None and check_rule(plan, sample) == []


# ------------------------------------------------------------------ sources
def test_a_source_read_that_would_round_fails(tmp_path: Path, spark) -> None:
    """Files with more decimals than the spec declares are not rounded on read."""
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    from regflow.errors import DataError
    from regflow.plan.model import PlanSource
    from regflow.runtime.sources import read_source

    pq.write_table(
        pa.table(
            {
                "id": ["a", "b"],
                "amount": pa.array([Decimal("1.2345"), Decimal("2")], pa.decimal128(20, 4)),
            }
        ),
        tmp_path / "rates.parquet",
    )

    def source(amount_type: str) -> PlanSource:
        return PlanSource(
            name="rates",
            format="parquet",
            path=str(tmp_path / "rates.parquet"),
            primary_key=("id",),
            schema=Schema.of({"id": "string", "amount": amount_type}),
        )

    message = (
        r"column 'amount' is decimal\(20,4\) in the files but declared decimal\(20,2\); "
        r"reading it would round every value"
    )
    with pytest.raises(DataError, match=message):
        read_source(spark, source("decimal(20,2)"), {"cob": "2026-03-31"}, pipeline="p")
    df, _ = read_source(spark, source("decimal(22,6)"), {"cob": "2026-03-31"}, pipeline="p")
    assert sorted(r["amount"] for r in df.collect()) == [Decimal("1.2345"), Decimal("2")]


def test_a_star_measure_of_unknown_precision_is_an_error(tmp_path: Path) -> None:
    """The warehouse column of a bare ``decimal`` would be NUMERIC(38,10): it could round."""
    from regflow.errors import SpecError

    for name in ("pipelines", "operators"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    spec = tmp_path / "pipelines" / "lcr.yaml"
    text = spec.read_text(encoding="utf-8")
    text = text.replace(
        '      weighted_amount: {expr: "amount_usd * factor", type: "decimal(38,14)"}',
        '      weighted_amount: {expr: "amount_usd * factor", type: "decimal(38,14)"}\n'
        '      nonzero: "nullif(weighted_amount, 0)"',
    ).replace(
        "measures: [amount, amount_usd, factor, weighted_amount]",
        "measures: [amount, amount_usd, factor, weighted_amount, nonzero]",
    )
    spec.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        compile_file(spec)
    (problem,) = info.value.errors
    assert problem.message.startswith(
        "measure 'nonzero' is a decimal whose precision regflow cannot infer"
    )
    assert problem.key_path.endswith("facts.lcr_deal.measures[4]")
    assert 'type: "decimal(38,12)"' in problem.hint


def test_run_stage_sets_the_guard_on_a_session_it_is_given(tmp_path: Path, spark, engine) -> None:
    """A stage run on a session with Spark's default rule still keeps every digit: 123.4567891234
    x 0.85 has 12 decimals, which the default rule would cut to 6."""
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq
    from runtime_helpers import run_all_stages

    from regflow.storage import RunRef

    (tmp_path / "pipelines").mkdir()
    spec = tmp_path / "pipelines" / "tiny.yaml"
    spec.write_text(
        """pipeline: tiny
params: {data_root: .}
sources:
  items:
    path: "{data_root}/items.parquet"
    primary_key: [id]
    schema: {id: string, usd: "decimal(38,10)", factor: "decimal(5,2)"}
nodes:
  - id: weighed
    op: calc
    inputs: [items]
    columns: {w: "usd * factor"}
""",
        encoding="utf-8",
    )
    pq.write_table(
        pa.table(
            {
                "id": ["a"],
                "usd": pa.array([Decimal("123.4567891234")], pa.decimal128(38, 10)),
                "factor": pa.array([Decimal("0.85")], pa.decimal128(5, 2)),
            }
        ),
        tmp_path / "items.parquet",
    )
    key = "spark.sql.decimalOperations.allowPrecisionLoss"
    spark.conf.set(key, "true")
    try:
        plan = compile_file(spec)
        run_all_stages(
            plan, tmp_path / "storage", "r1", spark, {"data_root": str(tmp_path)}, policy=engine
        )
        assert spark.conf.get(key) == "false"
    finally:
        spark.conf.set(key, "false")
    run = RunRef(tmp_path / "storage", "tiny", "2026-03-31", "r1")
    (row,) = pq.read_table(run.node_dir("weighed")).to_pylist()
    assert row["w"] == Decimal("104.938270754890")  # 123.4567891234 x 0.85, every digit
