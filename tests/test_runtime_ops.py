"""Built-in ops on real Spark: small golden cases, nulls and decimals, lineage kept."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from runtime_helpers import ctx

from regflow.errors import DataError
from regflow.ops.builtin import (
    AggregateParams,
    CalcParams,
    ClassifyParams,
    FilterParams,
    JoinParams,
    UnionParams,
)
from regflow.runtime import builtin_ops
from regflow.spec.models import LINEAGE_COLUMN as LID


def collect(df, *cols):
    return sorted(tuple(r[c] for c in cols) for r in df.collect())


def test_calc_adds_and_replaces_columns_in_order_with_types(deals):
    p = CalcParams.model_validate(
        {
            "columns": {
                "double_amount": {"expr": "amount * 2", "type": "decimal(22,2)"},
                "quad": "double_amount * 2",
                "currency": "lower(currency)",
            }
        }
    )
    out = builtin_ops.calc([deals], p, ctx())
    assert out.schema["double_amount"].dataType.simpleString() == "decimal(22,2)"
    got = collect(out, LID, "double_amount", "quad", "currency")
    assert got == [
        (1, Decimal("200.20"), Decimal("400.40"), "usd"),
        (2, Decimal("400.40"), Decimal("800.80"), "eur"),
        (3, Decimal("600.60"), Decimal("1201.20"), "gbp"),
        (4, None, None, "eur"),  # null stays null
    ]
    assert out.columns.index("currency") == deals.columns.index("currency")  # replaced in place


def test_filter_treats_null_as_false(deals):
    out = builtin_ops.filter_rows([deals], FilterParams(where="insured = false"), ctx())
    assert collect(out, LID) == [(2,), (4,)]  # row 3 has insured null: dropped


def test_join_enriches_keeps_left_lineage_and_left_rows(spark, deals):
    fx = spark.createDataFrame(
        [(10, "USD", Decimal("1")), (11, "EUR", Decimal("1.1")), (12, "JPY", Decimal("0.0067"))],
        f"{LID} bigint, currency string, usd_rate decimal(18,8)",
    )
    out = builtin_ops.join([deals, fx], JoinParams(on=["currency"], require_match=False), ctx())
    assert collect(out, LID, "usd_rate") == [
        (1, Decimal("1.00000000")),
        (2, Decimal("1.10000000")),
        (3, None),
        (4, Decimal("1.10000000")),
    ]
    inner = builtin_ops.join(
        [deals, fx], JoinParams(on=["currency"], how="inner", require_match=False), ctx()
    )
    assert collect(inner, LID) == [(1,), (2,), (4,)]


def test_join_require_match_fails_the_job_naming_the_key(spark, deals):
    fx = spark.createDataFrame(
        [(10, "USD", Decimal("1")), (11, "EUR", Decimal("1.1"))],
        f"{LID} bigint, currency string, usd_rate decimal(18,8)",
    )
    out = builtin_ops.join(
        [deals, fx],
        JoinParams(on=["currency"], require_match=True),
        ctx(node="deals_fx", inputs=("deals", "fx_rates")),
    )
    with pytest.raises(Exception) as exc:
        out.collect()
    text = str(exc.value)
    assert "[regflow:node=deals_fx]" in text
    assert "no match in 'fx_rates' for currency=GBP" in text


def test_join_refuses_duplicate_lookup_keys(spark, deals):
    fx = spark.createDataFrame(
        [(10, "EUR", Decimal("1")), (11, "EUR", Decimal("1.1"))],
        f"{LID} bigint, currency string, usd_rate decimal(18,8)",
    )
    with pytest.raises(DataError, match=r"duplicate keys .*currency=EUR"):
        builtin_ops.join([deals, fx], JoinParams(on=["currency"]), ctx(inputs=("d", "fx")))


def test_join_with_renamed_keys(spark, deals):
    ent = spark.createDataFrame(
        [(20, "LE1", "Bank One")], f"{LID} bigint, entity string, entity_name string"
    )
    out = builtin_ops.join(
        [deals, ent], JoinParams(on={"legal_entity": "entity"}, require_match=False), ctx()
    )
    assert collect(out, LID, "entity_name") == [
        (1, "Bank One"),
        (2, "Bank One"),
        (3, None),
        (4, None),
    ]
    assert "entity" not in out.columns


def test_classify_first_match_wins_with_rule_ids_and_nulls(deals):
    p = ClassifyParams.model_validate(
        {
            "output": "grade",
            "rule_column": "rule",
            "default": "OTHER",
            "rules": [
                {"id": "R1", "when": "rating in ('AAA', 'AA')", "value": "HIGH"},
                {"id": "R2", "when": "rating is not null", "value": "LOW"},
                {"id": "R3", "when": "rating = 'AAA'", "value": "NEVER"},  # shadowed by R1
            ],
        }
    )
    out = builtin_ops.classify([deals], p, ctx())
    assert collect(out, LID, "grade", "rule") == [
        (1, "HIGH", "R1"),
        (2, "OTHER", None),
        (3, "LOW", "R2"),
        (4, "LOW", "R2"),
    ]


def test_classify_on_no_match_error(deals):
    p = ClassifyParams.model_validate(
        {
            "output": "grade",
            "on_no_match": "error",
            "rules": [{"when": "rating is not null", "value": "X"}],
        }
    )
    out = builtin_ops.classify([deals], p, ctx(node="classify"))
    with pytest.raises(Exception, match=r"\[regflow:node=classify\] no classify rule matches"):
        out.collect()


def test_union_by_name(spark, deals):
    other = deals.select(*reversed(deals.columns)).withColumn(LID, deals[LID] + 100)
    out = builtin_ops.union([deals, other], UnionParams(), ctx())
    assert out.count() == 8
    assert out.columns == deals.columns


def test_aggregate_contributions_and_finish_are_exact(spark, deals):
    p = AggregateParams.model_validate(
        {
            "group_by": ["legal_entity"],
            "measures": {
                "eur": {"sum": "amount", "where": "currency = 'EUR'"},
                "total": {"sum": "amount"},
                "n": {"count": "amount"},
                "top": {"max": "amount"},
                "jpy": {"sum": "amount", "where": "currency = 'JPY'"},  # no rows: 0, not null
            },
        }
    )
    contrib = builtin_ops.aggregate_contributions(deals, p)
    assert contrib.columns == ["legal_entity", LID, "eur", "total", "n", "top", "jpy"]
    assert collect(contrib, LID, "eur", "n") == [
        (1, None, 1),
        (2, Decimal("200.20"), 1),
        (3, None, 1),
        (4, None, None),
    ]
    out = builtin_ops.aggregate_finish(contrib, p, "agg")
    got = {r["legal_entity"]: r for r in out.collect()}
    assert got["LE1"]["eur"] == Decimal("200.20")
    assert got["LE1"]["total"] == Decimal("300.30")
    assert got["LE2"]["total"] == Decimal("300.30")  # null amount ignored
    assert got["LE2"]["n"] == 1
    assert got["LE1"]["top"] == Decimal("200.20")
    assert got["LE1"]["jpy"] == Decimal("0") and got["LE2"]["eur"] == Decimal("0")
    # group lineage ids are stable functions of the group key
    ids = {r["legal_entity"]: r[LID] for r in out.collect()}
    again = {
        r["legal_entity"]: r[LID] for r in builtin_ops.aggregate_finish(contrib, p, "agg").collect()
    }
    assert ids == again and ids["LE1"] != ids["LE2"]


def test_decimal_arithmetic_keeps_cents_on_large_amounts(spark):
    """x * 15 / 85 keeps the cents; 15/85 * x would lose hundreds of dollars."""
    from pyspark.sql import functions as F

    df = spark.createDataFrame([(Decimal("1234567890123.45"),)], "x decimal(38,6)")
    good = df.select((F.col("x") * 15 / 85).alias("v")).first()["v"]
    exact = Decimal("1234567890123.45") * 15 / 85
    assert abs(good - exact) < Decimal("0.01")
    ratio = F.lit(Decimal(15)) / F.lit(Decimal(85))  # decimal division keeps 6 digits: 0.176471
    bad = df.select((ratio * F.col("x")).alias("v")).first()["v"]
    assert abs(bad - exact) > Decimal("100")  # why the order matters


def test_rollup_rows_sum_and_label(spark):
    from regflow.runtime.lineage import add_rollup

    df = spark.createDataFrame(
        [
            (dt.date(2026, 3, 31), "LE1", Decimal("1.5"), 1),
            (dt.date(2026, 3, 31), "LE2", Decimal("2.5"), 2),
        ],
        f"cob_date date, legal_entity string, v decimal(38,6), {LID} bigint",
    )
    out = add_rollup(df, node="x", by=["cob_date"], labels={"legal_entity": "GROUP"}, sums=["v"])
    rows = {r["legal_entity"]: r for r in out.collect()}
    assert rows["GROUP"]["v"] == Decimal("4.000000")
    assert rows["GROUP"][LID] not in (1, 2)
