"""The star_schema op at compile time, and the warehouse layer's pure pieces (no database)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import textwrap
from pathlib import Path

import pytest

from regflow.errors import ConfigError, SpecError
from regflow.plan.compiler import compile_file
from tests.conftest import ROOT

BASE = """\
pipeline: starry
sources:
  trades:
    path: x
    primary_key: [trade_id]
    schema: {trade_id: string, cob_date: date, desk: string, notional: "decimal(20,2)"}
  desks:
    path: y
    primary_key: [desk]
    schema: {desk: string, desk_name: string}
nodes:
  - id: star
    op: star_schema
    inputs: [trades, desks]
    dimensions:
      date: {generated: calendar}
      desk: {from: desks, key: [desk], attributes: [desk_name]}
    facts:
      trade:
        from: trades
        grain: [cob_date, trade_id]
        date: cob_date
        dimensions: {desk: desk}
        measures: [notional]
    reports:
      rpt_trade: {fact: trade, columns: [cob_date, trade_id, desk.desk_name, notional]}
"""


def _compile(tmp_path: Path, text: str):
    f = tmp_path / "starry.yaml"
    f.write_text(textwrap.dedent(text))
    return compile_file(f)


def _errors(tmp_path: Path, text: str) -> str:
    with pytest.raises(SpecError) as e:
        _compile(tmp_path, text)
    return str(e.value)


def test_a_valid_star_compiles_to_a_sink_stage(tmp_path):
    from regflow.warehouse.model import star_model

    plan = _compile(tmp_path, BASE)
    assert [s.id for s in plan.stages] == ["star"]
    assert plan.stage("star").boundary == "sink"
    m = star_model(plan, "star")
    assert [t.name for t in m.tables] == ["dim_date", "dim_desk", "fact_trade"]
    fact = m.table("fact_trade")
    assert [c.name for c in fact.columns][:2] == ["date_key", "desk_key"]
    assert fact.column("notional").type == "decimal(20,2)"
    assert fact.distkey == "desk_key" and fact.sortkey == ("date_key",)
    assert m.table("dim_desk").diststyle == "ALL"
    assert m.reports[0].name == "rpt_trade"
    assert [v.name for v in m.bi_views] == ["Date", "Desk", "Trade"]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("measures: [notional]", "measures: [notionall]", "unknown column 'notionall'"),
        ("from: desks, key", "from: deskz, key", "'deskz' is not an input of this node"),
        ("inputs: [trades, desks]", "inputs: [trades, desks, trades2]", "neither a source"),
        ("date: cob_date", "date: desk", "date column 'desk' is string, not date"),
        ("attributes: [desk_name]", "attributes: [valid_from]", "reserved by the star schema"),
        ("columns: [cob_date, trade_id,", "columns: [cob_datum, trade_id,",
         "report column 'cob_datum' is not a column of fact 'trade'"),
        ("rpt_trade:", "trade_report:", "must be named rpt_*"),
        ("dimensions: {desk: desk}", "dimensions: {desk: [desk, desk]}", "1-column key"),
        ("date: {generated: calendar}", "day: {from: desks, key: [desk]}",
         "exactly one date dimension"),
    ],
)  # fmt: skip
def test_star_spec_errors_name_the_place(tmp_path, old, new, message):
    assert old in BASE
    text = _errors(tmp_path, BASE.replace(old, new))
    assert message in text, text
    assert "starry.yaml:" in text


def test_unused_inputs_and_readers_of_a_sink_are_errors(tmp_path):
    text = BASE.replace("inputs: [trades, desks]", "inputs: [trades, desks, extra]")
    text = text.replace("nodes:\n", "nodes:\n  - {id: extra, op: calc, inputs: [trades], "
                                    "columns: {x: \"1\"}}\n")  # fmt: skip
    assert "input(s) extra are not used" in _errors(tmp_path, text)
    text = BASE + '  - {id: after, op: calc, inputs: [star], columns: {x: "1"}}\n'
    assert "is a sink: no node can read it" in _errors(tmp_path, text)


def test_an_adjustment_cannot_be_spliced_at_a_star(tmp_path):
    from regflow.adjust.loader import load_rules
    from regflow.plan.rule_checks import check_rule

    plan = compile_file(ROOT / "pipelines" / "lcr.yaml")
    rules_dir = tmp_path / "lcr"
    rules_dir.mkdir()
    (rules_dir / "ADJ-2026-0999.yaml").write_text(
        textwrap.dedent("""\
        rule_id: ADJ-2026-0999
        pipeline: lcr
        stage: lcr_star
        conditions: [{field: deal_id, operator: "=", value: D1}]
        adjustments: [{field: factor, operation: set, value: 1}]
        effective_date: 2026-01-01
        approval: {requested_by: a, approved_by: b, timestamp: 2026-01-02T09:00:00Z, ticket: T-1}
        reason: test
        """)
    )
    loaded, problems = load_rules([rules_dir])
    assert not problems
    out = "\n".join(str(p) for p in check_rule(plan, loaded[0]))
    assert "lands data in the warehouse" in out and "weigh" in out


# ----------------------------------------------------------------------------- pure pieces
def test_business_names():
    from regflow.ops.star import friendly

    assert friendly("weighted_amount") == "Weighted Amount"
    assert friendly("l2a") == "L2A"
    assert friendly("cob_date") == "COB Date"
    assert friendly("amount_usd") == "Amount USD"


def test_calendar_covers_the_whole_year_with_period_flags():
    from regflow.runtime.star import date_rows

    rows = date_rows(dt.date(2024, 3, 31))  # a leap year
    assert len(rows) == 366
    by_day = {r[1]: r for r in rows}
    q1_end = by_day[dt.date(2024, 3, 31)]
    assert q1_end[0] == 20240331
    assert q1_end[2:5] == (2024, 1, 3)
    assert q1_end[11:14] == (True, True, False)  # month end, quarter end, not year end
    assert by_day[dt.date(2024, 12, 31)][13] is True
    assert by_day[dt.date(2024, 2, 29)][11] is True
    assert by_day[dt.date(2024, 3, 30)][10] is False  # a Saturday


def test_literals_and_identifiers_are_quoted_per_dialect():
    from regflow.warehouse.dialects import get_dialect

    pg, rs = get_dialect("postgresql"), get_dialect("redshift")
    assert pg.literal("O'Neil \\ co") == "'O''Neil \\ co'"
    assert rs.literal("O'Neil \\ co") == "'O''Neil \\\\ co'"
    assert pg.literal(dt.date(2026, 3, 31)) == "DATE '2026-03-31'"
    assert pg.q("LCR Entity") == '"LCR Entity"'
    for bad in ['x"; DROP TABLE t; --', "a\nb", ""]:
        with pytest.raises(ConfigError):
            pg.q(bad)


def test_urls_are_masked_and_unknown_warehouses_explained():
    from regflow.warehouse.targets import redact, resolve_target

    assert redact("postgresql://u:s3cret@h/db") == "postgresql://u:***@h/db"
    assert "s3cret" not in redact("redshift://u@h/db?password=s3cret&x=1")
    with pytest.raises(ConfigError) as e:
        resolve_target("mysql://u:pw@h/db")
    assert "pw" not in str(e.value) and "postgresql://" in str(e.value)


def test_auto_picks_upsert_for_small_batches():
    from regflow.warehouse.loader import DEFAULT_UPSERT_MAX_ROWS, choose_method
    from regflow.warehouse.model import star_model

    m = star_model(compile_file(ROOT / "pipelines" / "lcr.yaml"), "lcr_star")
    limit = DEFAULT_UPSERT_MAX_ROWS["redshift"]
    assert choose_method(m, {"a": 10, "b": limit}, None, "redshift") == "upsert"
    assert choose_method(m, {"a": 10, "b": limit + 1}, None, "redshift") == "copy"
    # on PostgreSQL COPY measured faster at every size: auto always copies
    assert DEFAULT_UPSERT_MAX_ROWS["postgresql"] == 0
    assert choose_method(m, {"a": 10}, None, "postgresql") == "copy"
    assert choose_method(m, {"a": 10}, "upsert", "postgresql") == "upsert"
    # the star's own threshold wins
    m2 = dataclasses.replace(m, upsert_max_rows=100)
    assert choose_method(m2, {"a": 100}, None, "postgresql") == "upsert"
    assert choose_method(m, {"a": 10}, "copy") == "copy"
    with pytest.raises(ConfigError):
        choose_method(m, {"a": 1}, "bulk")


@pytest.mark.slow
def test_an_airflow_connection_selects_redshift_with_its_extras(monkeypatch):
    from regflow.warehouse.targets import resolve_target

    monkeypatch.setenv(
        "AIRFLOW_CONN_RS_LCR",
        '{"conn_type": "redshift", "host": "c.eu-west-1.redshift.amazonaws.com", '
        '"login": "loader", "password": "not-logged", "schema": "risk", "port": 5439, '
        '"extra": {"iam_role": "arn:aws:iam::1:role/copy", "regflow_staging": "s3://b/p"}}',
    )
    t = resolve_target("airflow://rs_lcr")
    assert t.dialect.name == "redshift"
    assert (t.staging, t.iam_role) == ("s3://b/p", "arn:aws:iam::1:role/copy")
    assert "not-logged" not in t.display
