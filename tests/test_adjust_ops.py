"""Adjustment rules on real Spark: every condition operator, every operation, ordering, audit.

Each case is a small golden table written from the rule-file contract (PRODUCT.md): conditions
are ANDed with SQL null semantics (null never matches ``=``, ``!=``, ``in``, ``not in``, ``>``
... and only ``is null`` matches it), ``between`` is inclusive, ``add``/``multiply`` keep the
column's type, rules at one splice point apply in ascending ``rule_id``, and a rule's
conditions are evaluated once, on the rows as they stand before that rule.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

import pytest
from runtime_helpers import rule

from regflow.runtime.adjust_ops import AUDIT_COLUMNS
from regflow.runtime.audit_rows import apply_rules
from regflow.spec.models import LINEAGE_COLUMN as LID

D = Decimal
SCALE = D("0.000001")  # decimal(38,6)
SCALE12 = D("1E-12")  # decimal(38,12)

# id, s (string), n (bigint), d (decimal(38,6)), day (date), flag (boolean), x (double)
ROWS: list[tuple[Any, ...]] = [
    (1, "CORP_BOND", 5, D("1234.5678"), dt.date(2026, 1, 1), True, 1.5),
    (2, "GOV_BOND", 10, D("0.123457"), dt.date(2026, 3, 31), False, 2.0),
    (3, "CASH", 11, D("12345678901234567890.123456"), dt.date(2026, 4, 1), True, -3.25),
    (4, None, None, None, None, None, None),
    (5, "CORP_BOND", 20, D("-2.5"), dt.date(2025, 12, 31), False, 0.0),
    (6, "EQUITY", 0, D("100"), dt.date(2026, 6, 30), None, None),
]
ALL = {1, 2, 3, 4, 5, 6}
COLUMNS = ("s", "n", "d", "day", "flag", "x")


def row_of(rid: int) -> dict[str, Any]:
    return dict(zip((LID, *COLUMNS), ROWS[rid - 1], strict=True))


def c(field: str, operator: str, value: Any = None) -> dict[str, Any]:
    return {"field": field, "operator": operator, "value": value}


def frame(spark, extra_flags: int = 0):
    from pyspark.sql import functions as F
    from pyspark.sql.types import (
        BooleanType,
        DateType,
        DecimalType,
        DoubleType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    schema = StructType(
        [
            StructField(LID, LongType(), False),
            StructField("s", StringType()),
            StructField("n", LongType()),
            StructField("d", DecimalType(38, 6)),
            StructField("day", DateType()),
            StructField("flag", BooleanType()),
            StructField("x", DoubleType()),
        ]
    )
    df = spark.createDataFrame(ROWS, schema).withColumn("tag", F.lit("-"))
    for k in range(extra_flags):
        df = df.withColumn(f"hit{k}", F.lit(False))
    return df


def rows_by_id(df) -> dict[int, dict[str, Any]]:
    return {r[LID]: r.asDict() for r in df.collect()}


def audit_rows(audit) -> list[dict[str, Any]]:
    return [r.asDict() for r in audit.collect()]


# --------------------------------------------------------------------------- conditions
# (case id, conditions, ids that must match): expectations from the contract, by hand.
CASES: list[tuple[str, list[dict], set[int]]] = [
    # strings; row 4 is null everywhere and matches only 'is null'
    ("s_eq", [c("s", "=", "CORP_BOND")], {1, 5}),
    ("s_ne", [c("s", "!=", "CORP_BOND")], {2, 3, 6}),
    ("s_in", [c("s", "in", ["GOV_BOND", "CASH"])], {2, 3}),
    ("s_not_in", [c("s", "not in", ["GOV_BOND", "CASH"])], {1, 5, 6}),
    ("s_is_null", [c("s", "is null")], {4}),
    ("s_is_not_null", [c("s", "is not null")], {1, 2, 3, 5, 6}),
    ("s_eq_nothing", [c("s", "=", "NOPE")], set()),
    # bigint
    ("n_gt", [c("n", ">", 10)], {3, 5}),
    ("n_ge", [c("n", ">=", 10)], {2, 3, 5}),
    ("n_lt", [c("n", "<", 10)], {1, 6}),
    ("n_le", [c("n", "<=", 10)], {1, 2, 6}),
    ("n_eq_zero", [c("n", "=", 0)], {6}),
    ("n_ne", [c("n", "!=", 10)], {1, 3, 5, 6}),
    ("n_between_inclusive", [c("n", "between", [5, 11])], {1, 2, 3}),
    ("n_in", [c("n", "in", [0, 20])], {5, 6}),
    ("n_not_in", [c("n", "not in", [0, 20])], {1, 2, 3}),
    ("n_is_null", [c("n", "is null")], {4}),
    # decimal(38,6), compared with ints and floats (no binary-float drift)
    ("d_gt", [c("d", ">", 1000)], {1, 3}),
    ("d_lt", [c("d", "<", 0)], {5}),
    ("d_between_inclusive", [c("d", "between", [-2.5, 100])], {2, 5, 6}),
    ("d_eq_float", [c("d", "=", 0.123457)], {2}),
    ("d_ge_big", [c("d", ">=", D("12345678901234567890.123456"))], {3}),
    ("d_gt_just_below_big", [c("d", ">", D("12345678901234567890.123455"))], {3}),
    ("d_is_not_null", [c("d", "is not null")], {1, 2, 3, 5, 6}),
    # dates
    (
        "day_between_inclusive",
        [c("day", "between", [dt.date(2026, 1, 1), dt.date(2026, 3, 31)])],
        {1, 2},
    ),
    ("day_gt", [c("day", ">", dt.date(2026, 3, 31))], {3, 6}),
    ("day_eq", [c("day", "=", dt.date(2026, 3, 31))], {2}),
    ("day_le", [c("day", "<=", dt.date(2025, 12, 31))], {5}),
    ("day_in", [c("day", "in", [dt.date(2026, 1, 1), dt.date(2026, 6, 30)])], {1, 6}),
    ("day_ne", [c("day", "!=", dt.date(2026, 3, 31))], {1, 3, 5, 6}),
    # booleans
    ("flag_true", [c("flag", "=", True)], {1, 3}),
    ("flag_false", [c("flag", "=", False)], {2, 5}),
    ("flag_ne_true", [c("flag", "!=", True)], {2, 5}),
    ("flag_is_null", [c("flag", "is null")], {4, 6}),
    ("flag_not_in", [c("flag", "not in", [True])], {2, 5}),
    # double
    ("x_ge", [c("x", ">=", 1.5)], {1, 2}),
    ("x_between_inclusive", [c("x", "between", [-3.25, 0])], {3, 5}),
    # AND of conditions; no condition at all matches every row
    ("and_two", [c("s", "=", "CORP_BOND"), c("n", ">", 10)], {5}),
    ("and_three", [c("s", "!=", "CASH"), c("flag", "=", True), c("x", ">", 0)], {1}),
    ("and_null_side", [c("s", "is null"), c("n", "is null"), c("flag", "is null")], {4}),
    ("no_conditions", [], ALL),
]


@pytest.fixture(scope="module")
def condition_results(spark):
    """All cases in one Spark job: case k sets its own flag column hit<k> on the rows it
    matches. Returns {case: (ids flagged in the output, audit rows of the case)}."""
    df = frame(spark, extra_flags=len(CASES))
    rules = [
        rule(f"C{k:03d}", conds, [{"field": f"hit{k}", "operation": "set", "value": True}])
        for k, (_, conds, _) in enumerate(CASES)
    ]
    out, audit = apply_rules(df, rules)
    rows = rows_by_id(out)
    audits = audit_rows(audit)
    result = {}
    for k, (name, _, _) in enumerate(CASES):
        flagged = {i for i, r in rows.items() if r[f"hit{k}"]}
        result[name] = (flagged, [a for a in audits if a["rule_id"] == f"C{k:03d}"])
    return result, rows


@pytest.mark.parametrize(
    ("name", "expected"), [(n, e) for n, _, e in CASES], ids=[n for n, _, _ in CASES]
)
def test_condition_operator(condition_results, name, expected):
    result, _ = condition_results
    flagged, audit = result[name]
    assert flagged == expected
    # the audit: exactly one row per matched row (one field adjusted), nothing for the rest
    assert sorted(a[LID] for a in audit) == sorted(expected)
    for a in audit:
        assert a["field"] == f"hit{[n for n, _, _ in CASES].index(name)}"
        assert (a["old_value"], a["new_value"]) == ("false", "true")


def test_conditions_leave_every_other_column_alone(condition_results):
    _, rows = condition_results
    assert sorted(rows) == sorted(ALL)  # same lineage ids, no row lost or added
    for rid, r in rows.items():
        assert {k: r[k] for k in (LID, *COLUMNS)} == row_of(rid)
        assert r["tag"] == "-"


# --------------------------------------------------------------------------- operations
def _q(value: Decimal) -> Decimal:
    return value.quantize(SCALE, rounding=ROUND_HALF_UP)


OPERATIONS: list[tuple[str, dict, dict[int, Any]]] = [
    # (column, adjustment, expected value per id for all rows; conditions: none)
    ("d", {"operation": "add", "value": 0.000001}, {
        1: D("1234.567801"), 2: D("0.123458"), 3: D("12345678901234567890.123457"),
        4: None, 5: D("-2.499999"), 6: D("100.000001"),
    }),
    ("d", {"operation": "add", "value": 250000000}, {
        1: D("250001234.5678"), 2: D("250000000.123457"),
        3: D("12345678901484567890.123456"), 4: None, 5: D("249999997.5"), 6: D("250000100"),
    }),
    ("d", {"operation": "multiply", "value": -3}, {
        1: D("-3703.7034"),
        2: D("-0.370371"),
        3: D("-37037036703703703670.370368"),  # 20 integer digits: no float on the way
        4: None, 5: D("7.5"), 6: D("-300"),
    }),
    ("d", {"operation": "set", "value": 1.1}, {i: D("1.1") for i in ALL}),
    ("n", {"operation": "add", "value": 5}, {1: 10, 2: 15, 3: 16, 4: None, 5: 25, 6: 5}),
    ("n", {"operation": "multiply", "value": 2}, {1: 10, 2: 20, 3: 22, 4: None, 5: 40, 6: 0}),
    ("n", {"operation": "set", "value": 7}, {i: 7 for i in ALL}),
    ("x", {"operation": "multiply", "value": 2}, {
        1: 3.0, 2: 4.0, 3: -6.5, 4: None, 5: 0.0, 6: None,
    }),
    ("x", {"operation": "add", "value": -0.25}, {
        1: 1.25, 2: 1.75, 3: -3.5, 4: None, 5: -0.25, 6: None,
    }),
    ("s", {"operation": "set", "value": "NON_HQLA"}, {i: "NON_HQLA" for i in ALL}),
    ("s", {"operation": "set", "value": None}, {i: None for i in ALL}),
    ("day", {"operation": "set", "value": dt.date(2026, 12, 31)}, {
        i: dt.date(2026, 12, 31) for i in ALL
    }),
    ("flag", {"operation": "set", "value": False}, {i: False for i in ALL}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("column", "adjustment", "expected"),
    OPERATIONS,
    ids=[f"{col}-{a['operation']}-{a['value']}" for col, a, _ in OPERATIONS],
)
def test_operation(spark, column, adjustment, expected):
    df = frame(spark)
    out, audit = apply_rules(df, [rule("OP", [], [{"field": column, **adjustment}])])
    assert out.schema == df.schema  # add/multiply keep the column's type (decimal(38,6) too)
    rows = rows_by_id(out)
    got = {i: rows[i][column] for i in ALL}
    assert got == expected
    for i in ALL:
        assert type(got[i]) is type(expected[i]), (i, got[i])
        if isinstance(expected[i], Decimal):  # to the column scale, digit for digit
            assert got[i].as_tuple().exponent == -6
    # one audit row per matched row (no condition: all rows), with old and new as strings
    entries = {a[LID]: a for a in audit_rows(audit)}
    assert sorted(entries) == sorted(ALL)
    for i in ALL:
        old, new = row_of(i)[column], expected[i]
        a = entries[i]
        assert (a["rule_id"], a["field"]) == ("OP", column)
        _assert_text(a["old_value"], old)
        _assert_text(a["new_value"], new)


def _assert_text(text: str | None, value: Any) -> None:
    """The audit's string form of a value: null stays null; numbers and dates read back."""
    if value is None:
        assert text is None
    elif isinstance(value, bool):
        assert text == str(value).lower()
    elif isinstance(value, Decimal):
        assert text == f"{_q(value):f}"
    elif isinstance(value, float):
        assert float(text) == value
    elif isinstance(value, int):
        assert text == str(value)
    elif isinstance(value, dt.date):
        assert text == value.isoformat()
    else:
        assert text == value


def test_multiply_by_a_fraction_is_exact_and_never_through_float(spark):
    # rows whose product with 1.05 fits the column's 6 decimals: exact, digit for digit
    factor = D("1.05")
    df = frame(spark)
    out, _ = apply_rules(
        df,
        [
            rule(
                "M",
                [c("s", "in", ["CORP_BOND", "EQUITY"])],  # ids 1, 5, 6
                [{"field": "d", "operation": "multiply", "value": 1.05}],
            )
        ],
    )
    got = rows_by_id(out)
    assert {i: got[i]["d"] for i in (1, 5, 6)} == {
        1: D("1296.29619"),
        5: D("-2.625"),
        6: D("105"),
    }
    for i in (1, 5, 6):
        assert got[i]["d"] == row_of(i)["d"] * factor


def test_multiply_that_would_round_fails_the_run_naming_the_rule(spark):
    """0.123457 x 1.05 = 0.12962985 has 8 decimals; the field keeps 6. The old behaviour
    rounded it to 0.129630 without a word; now the run fails (issue 17)."""
    df = frame(spark)
    rules = [
        rule("ADJ-R", [c("n", "=", 10)], [{"field": "d", "operation": "multiply", "value": 1.05}])
    ]
    out, _ = apply_rules(df, rules)
    with pytest.raises(Exception) as info:
        out.collect()
    text = str(info.value)
    assert "adjustment rule ADJ-R: multiply by 1.05 would round" in text
    assert "0.12962985" in text  # the exact product, for the analyst


# --------------------------------------------------------------------------- order
def test_rules_apply_in_ascending_rule_id_and_see_earlier_results(spark):
    df = frame(spark)
    a = rule(
        "ADJ-2026-0001",
        [c("s", "=", "CORP_BOND")],
        [{"field": "s", "operation": "set", "value": "WATCH"}],
    )
    b = rule(
        "ADJ-2026-0002", [c("s", "=", "WATCH")], [{"field": "n", "operation": "add", "value": 100}]
    )
    # a lower id than A: runs first, so it cannot see A's WATCH rows
    z = rule(
        "ADJ-2026-0000",
        [c("s", "=", "WATCH")],
        [{"field": "tag", "operation": "set", "value": "Z"}],
    )
    out, audit = apply_rules(df, [b, a, z])  # given out of order on purpose
    rows = rows_by_id(out)
    assert {i for i, r in rows.items() if r["s"] == "WATCH"} == {1, 5}
    assert {i: rows[i]["n"] for i in ALL} == {1: 105, 2: 10, 3: 11, 4: None, 5: 120, 6: 0}
    assert all(r["tag"] == "-" for r in rows.values())
    entries = sorted(
        (a["rule_id"], a[LID], a["field"], a["old_value"], a["new_value"])
        for a in audit_rows(audit)
    )
    assert entries == [
        ("ADJ-2026-0001", 1, "s", "CORP_BOND", "WATCH"),
        ("ADJ-2026-0001", 5, "s", "CORP_BOND", "WATCH"),
        ("ADJ-2026-0002", 1, "n", "5", "105"),
        ("ADJ-2026-0002", 5, "n", "20", "120"),
    ]


def test_a_later_rule_overwrites_and_audits_what_an_earlier_rule_wrote(spark):
    df = frame(spark)
    first = rule("R-1", [c("n", ">=", 10)], [{"field": "d", "operation": "set", "value": 1}])
    second = rule("R-2", [c("n", "=", 10)], [{"field": "d", "operation": "multiply", "value": 3}])
    out, audit = apply_rules(df, [second, first])
    rows = rows_by_id(out)
    assert {i: rows[i]["d"] for i in ALL} == {
        1: D("1234.5678"), 2: D("3"), 3: D("1"), 4: None, 5: D("1"), 6: D("100"),
    }  # fmt: skip
    entries = sorted(
        (a["rule_id"], a[LID], a["old_value"], a["new_value"]) for a in audit_rows(audit)
    )
    assert entries == [
        ("R-1", 2, "0.123457", "1.000000"),
        ("R-1", 3, "12345678901234567890.123456", "1.000000"),
        ("R-1", 5, "-2.500000", "1.000000"),
        ("R-2", 2, "1.000000", "3.000000"),  # R-2 sees R-1's value, and audits from it
    ]


def test_a_rules_conditions_are_evaluated_once_before_its_adjustments(spark):
    df = frame(spark)
    # n > 10 matches rows 3 (11) and 5 (20). The first adjustment takes both out of the
    # condition; the others must still apply to exactly those rows, and to no other.
    r = rule(
        "SELF",
        [c("n", ">", 10)],
        [
            {"field": "n", "operation": "add", "value": -15},
            {"field": "n", "operation": "multiply", "value": 2},
            {"field": "tag", "operation": "set", "value": "HIT"},
        ],
    )
    out, audit = apply_rules(df, [r])
    rows = rows_by_id(out)
    assert {i: rows[i]["n"] for i in ALL} == {1: 5, 2: 10, 3: -8, 4: None, 5: 10, 6: 0}
    assert {i for i, row in rows.items() if row["tag"] == "HIT"} == {3, 5}
    entries = audit_rows(audit)
    assert {a[LID] for a in entries} == {3, 5}
    assert {(a[LID], a["field"]) for a in entries} == {(3, "n"), (5, "n"), (3, "tag"), (5, "tag")}
    for rid, start, end in ((3, "11", "-8"), (5, "20", "10")):
        n_entries = [a for a in entries if a[LID] == rid and a["field"] == "n"]
        assert start in {a["old_value"] for a in n_entries}  # the value before the rule
        assert end in {a["new_value"] for a in n_entries}  # the value after it
        (tag,) = [a for a in entries if a[LID] == rid and a["field"] == "tag"]
        assert (tag["old_value"], tag["new_value"]) == ("-", "HIT")


# --------------------------------------------------------------------------- audit
def test_audit_has_one_row_per_matched_row_and_field(spark):
    df = frame(spark)
    r = rule(
        "AUD",
        [c("s", "in", ["CORP_BOND", "EQUITY"])],  # rows 1, 5, 6
        [
            {"field": "d", "operation": "add", "value": 1},
            {"field": "s", "operation": "set", "value": "X"},
            {"field": "flag", "operation": "set", "value": True},  # 6: null -> true
        ],
    )
    out, audit = apply_rules(df, [r])
    assert tuple(audit.columns) == AUDIT_COLUMNS
    entries = audit_rows(audit)
    assert len(entries) == 3 * 3  # rows matched x fields adjusted
    assert len({a[LID] for a in entries}) == 3  # == rows matched
    got = {(a[LID], a["field"]): (a["old_value"], a["new_value"]) for a in entries}
    assert got == {
        (1, "d"): ("1234.567800", "1235.567800"),
        (1, "s"): ("CORP_BOND", "X"),
        (1, "flag"): ("true", "true"),  # matched, so audited, even where nothing changes
        (5, "d"): ("-2.500000", "-1.500000"),
        (5, "s"): ("CORP_BOND", "X"),
        (5, "flag"): ("false", "true"),
        (6, "d"): ("100.000000", "101.000000"),
        (6, "s"): ("EQUITY", "X"),
        (6, "flag"): (None, "true"),
    }
    rows = rows_by_id(out)
    assert sorted(rows) == sorted(ALL)  # lineage ids untouched
    for i in (2, 3, 4):  # unmatched rows: untouched
        assert {k: rows[i][k] for k in (LID, *COLUMNS)} == row_of(i)


def test_no_rules_and_no_matches_give_an_empty_audit(spark):
    df = frame(spark)
    out, audit = apply_rules(df, [])
    assert tuple(audit.columns) == AUDIT_COLUMNS and audit.count() == 0
    assert rows_by_id(out) == rows_by_id(df)
    out, audit = apply_rules(
        df,
        [rule("NONE", [c("s", "=", "nothing")], [{"field": "n", "operation": "add", "value": 1}])],
    )
    assert audit.count() == 0
    assert rows_by_id(out) == rows_by_id(df)


# --------------------------------------------------------------------------- SQL text
def test_values_with_quotes_and_backslashes_are_matched_and_set_literally(spark):
    """Rules compile to Spark SQL text: values must be quoted, never interpreted."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    tricky = ["O'Brien", "back\\slash", "two\nlines", "a\\'b", "`tick`", "%_*"]
    schema = StructType([StructField(LID, LongType(), False), StructField("s", StringType())])
    df = spark.createDataFrame([(i, v) for i, v in enumerate(tricky)], schema)
    rules = [
        rule(f"Q{i}", [c("s", "=", v)], [{"field": "s", "operation": "set", "value": v + "'\\"}])
        for i, v in enumerate(tricky)
    ]
    out, audit = apply_rules(df, rules)
    assert {r[LID]: r["s"] for r in out.collect()} == {i: v + "'\\" for i, v in enumerate(tricky)}
    got = {(a[LID], a["old_value"], a["new_value"]) for a in audit_rows(audit)}
    assert got == {(i, v, v + "'\\") for i, v in enumerate(tricky)}


@pytest.mark.slow
def test_many_rules_on_one_field_apply_in_order_and_each_is_audited(spark):
    """64 rules (more than one 62-rule match word) adding to the same field, one after the
    other: each sees the result of the one before, and each is audited from it."""
    df = frame(spark)
    rules = [
        rule(
            f"R{k:03d}", [c("day", "is not null")], [{"field": "n", "operation": "add", "value": 1}]
        )
        for k in range(64)
    ]
    rules.append(rule("R999", [c("n", ">=", 74)], [{"field": "x", "operation": "set", "value": 9}]))
    out, audit = apply_rules(df, rules)
    rows = rows_by_id(out)
    assert {i: rows[i]["n"] for i in ALL} == {1: 69, 2: 74, 3: 75, 4: None, 5: 84, 6: 64}
    # R999's condition reads n after the 64 additions: rows 2, 3 and 5
    assert {i for i in ALL if rows[i]["x"] == 9.0} == {2, 3, 5}
    entries = audit_rows(audit)
    assert len(entries) == 64 * 5 + 3
    for i in ALL - {4}:
        start = row_of(i)["n"]
        mine = sorted(
            (a["rule_id"], a["old_value"], a["new_value"])
            for a in entries
            if a[LID] == i and a["field"] == "n"
        )
        assert mine == [(f"R{k:03d}", str(start + k), str(start + k + 1)) for k in range(64)]


def test_chained_multiplies_and_adds_round_at_every_step_like_separate_rules(spark):
    """Writes to one field nest in one projection; each step is exact (the column has the
    decimals for it: decimal(38,12)), and unmatched rows stay exactly as they were."""
    from pyspark.sql import functions as F

    df = frame(spark).withColumn("d", F.col("d").cast("decimal(38,12)"))
    steps = [
        ("M1", [], "multiply", D("1.05")),
        ("M2", [c("n", ">=", 10)], "multiply", D("0.95")),  # below 1: widened for the 1
        ("M3", [c("s", "=", "CORP_BOND")], "multiply", 3),
        ("M4", [c("n", "<", 11)], "add", D("0.0000005")),
        ("M5", [], "multiply", 0.5),
        ("M6", [c("flag", "=", True)], "add", -1),
    ]
    rules = [
        rule(rid, conds, [{"field": f, "operation": op, "value": v} for f in ("d", "x")])
        for rid, conds, op, v in steps
    ]
    out, audit = apply_rules(df, rules)
    rows = rows_by_id(out)
    matches = {
        "M1": ALL,
        "M2": {2, 3, 5},
        "M3": {1, 5},
        "M4": {1, 2, 6},
        "M5": ALL,
        "M6": {1, 3},
    }
    expected_audit = set()
    for i in ALL:
        d, x = row_of(i)["d"], row_of(i)["x"]
        for rid, _, op, v in steps:
            if i not in matches[rid]:
                continue
            with localcontext(prec=60):  # 20 integer digits and 12 decimals, exactly
                new_d = (
                    None if d is None else (d * D(str(v)) if op == "multiply" else d + D(str(v)))
                )
                old_d = None if d is None else str(d.quantize(SCALE12))
            new_x = None if x is None else (x * float(v) if op == "multiply" else x + float(v))
            expected_audit.add((rid, i, "d", old_d))
            d, x = new_d, new_x
        assert rows[i]["d"] == d, i
        assert rows[i]["x"] == x, i
    got = {
        (a["rule_id"], a[LID], a["field"], a["old_value"])
        for a in audit_rows(audit)
        if a["field"] == "d"
    }
    assert got == expected_audit


# ------------------------------------------------------------------ how the writes are grouped
def _types(spark):
    return {f.name: f.dataType for f in frame(spark).schema.fields}


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([c("s", "=", "CASH")], [c("s", "=", "GOV_BOND")], True),
        ([c("s", "in", ["CASH", "EQUITY"])], [c("s", "in", ["GOV_BOND"])], True),
        ([c("s", "in", ["CASH", "EQUITY"])], [c("s", "=", "EQUITY")], False),
        ([c("n", "=", 5)], [c("n", "in", [6, 7])], True),
        ([c("s", "is null")], [c("s", "!=", "CASH")], True),  # null passes only 'is null'
        ([c("s", "is null")], [c("s", "is null")], False),
        ([c("s", "=", "CASH")], [c("n", "=", 5)], False),  # different fields: unsure
        ([c("day", "=", "2026-01-01")], [c("day", "=", "2026-01-02")], False),  # dates: unsure
        ([c("d", "=", 1)], [c("d", "=", 2)], False),  # decimals: unsure (1 and 1.0 are one)
        ([c("s", "=", "CASH"), c("n", ">", 1)], [c("n", "<", 0), c("s", "=", "EQUITY")], True),
    ],
)
def test_rules_are_exclusive_only_when_their_conditions_say_so(spark, a, b, expected):
    from regflow.runtime.adjust_ops import exclusive

    add = [{"field": "n", "operation": "add", "value": 1}]
    ra, rb = rule("A", a, add), rule("B", b, add)
    assert exclusive(ra, rb, _types(spark)) is expected
    assert exclusive(rb, ra, _types(spark)) is expected
    assert exclusive(ra, ra, _types(spark)) is False


def test_exclusive_multiplies_share_one_case_and_give_the_sequential_result(spark):
    """Rules on different values of ``s`` multiply ``d`` in one flat CASE; a rule that is
    not exclusive with them (M3: every row) starts the next group, reading their result."""
    from pyspark.sql import functions as F

    from regflow.runtime.adjust_ops import _groups, _ordered, tag_writes

    df = frame(spark).withColumn("d", F.col("d").cast("decimal(38,12)"))  # room for 1.5, 0.1
    mul = lambda v: [{"field": "d", "operation": "multiply", "value": v}]  # noqa: E731
    rules = [
        rule("M1", [c("s", "=", "CORP_BOND")], mul(D("1.5"))),
        rule("M2", [c("s", "in", ["GOV_BOND", "CASH"])], mul(2)),
        rule("M3", [], mul(D("0.1"))),
    ]
    groups = _groups(tag_writes(rules), dict(_ordered(rules)), _types(spark))
    assert [[w.rule_id for w in g] for g in groups] == [["M1", "M2"], ["M3"]]
    out, audit = apply_rules(df, rules)
    rows = rows_by_id(out)
    factor = {1: D("1.5"), 2: D(2), 3: D(2), 5: D("1.5"), 6: D(1)}
    for i, f in factor.items():
        assert rows[i]["d"] == row_of(i)["d"] * f * D("0.1"), i
    assert rows[4]["d"] is None
    m3 = {
        a[LID]: (a["old_value"], a["new_value"]) for a in audit_rows(audit) if a["rule_id"] == "M3"
    }
    assert m3[1] == (str((D("1234.5678") * D("1.5")).quantize(SCALE12)), str(rows[1]["d"]))


def test_the_rules_first_projection_splits_the_generated_code(spark):
    """The rules compile as methods of their own (see ``_split_reads``): the generated code
    of a tagged frame hands the rows to the rules through a ``doConsume`` method."""
    from regflow.runtime.adjust_ops import tag_changes

    df = frame(spark).selectExpr("*", f"{LID} * 2 AS twice")  # an operator to split after
    rules = [rule("R1", [c("s", "=", "CASH")], [{"field": "n", "operation": "add", "value": 1}])]
    tagged = tag_changes(df, rules, "_tag")
    debug = spark._jvm.org.apache.spark.sql.execution.debug.package
    code = debug.codegenString(tagged._jdf.queryExecution().executedPlan())
    assert "doConsume" in code
    assert rows_by_id(tagged.drop("_tag"))[3]["n"] == 12
