"""What a load refuses, and schema changes, against the real embedded PostgreSQL.

- an empty fact batch never replaces a cob that holds rows unless told to (issue 16.1);
- a spec that added a column stops the load before anything changes, with the command that
  fixes it; ``regflow warehouse migrate`` adds it in place (PostgreSQL; the Redshift DDL is
  asserted as text and parsed with sqlglot); other differences say exactly what to do; a
  database error reaches the run's error record, which ``regflow run`` prints (issue 16.9).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
import sqlglot

from regflow.errors import ConfigError, DataError, RegflowError
from regflow.plan.build import build_plan
from regflow.warehouse.dialects import get_dialect
from regflow.warehouse.model import star_model
from tests.warehouse_helpers import (
    MINI,
    NODE,
    database,
    embedded_server,
    load,
    mini_plan,
    query,
    stage,
)

pytest.importorskip("psycopg")

COB = dt.date(2026, 3, 31)
MEMBERS = {"LE001": ("One", "FR"), "LE002": ("Two", "DE")}
DEALS = [("D1", "LE001", Decimal("10.00")), ("D2", "LE002", Decimal("20.00")),
         ("D3", "LE001", Decimal("30.00"))]  # fmt: skip


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    yield from embedded_server(tmp_path_factory)


@pytest.fixture()
def pg_db(pg_server):
    yield from database(pg_server)


def _variant(tmp_path: Path, name: str, edits: list[tuple[str, str]]):
    """The mini spec with text edits, compiled (what a changed spec in git would be)."""
    text = MINI.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(text)
    rules = tmp_path / "no-rules"
    rules.mkdir(exist_ok=True)
    return spec, build_plan(spec, rules)


WITH_EUR = [
    (
        "      amount: decimal(20,2)\n",
        "      amount: decimal(20,2)\n      amount_eur: decimal(20,2)\n",
    ),
    ("measures: [amount]", "measures: [amount, amount_eur]"),
    ("entity.entity_name, amount]", "entity.entity_name, amount, amount_eur]"),
]


# ----------------------------------------------------------------------------- 16.1
def test_an_empty_batch_never_replaces_a_cob_that_holds_rows(pg_db, tmp_path, monkeypatch):
    uri, target = pg_db
    plan = mini_plan(tmp_path)
    root = tmp_path / "storage"
    load(plan, stage(plan, root, COB, MEMBERS, DEALS), target)
    before = query(uri, "SELECT deal_id, amount, run_id FROM mini.fact_position ORDER BY 1")
    loads = query(uri, "SELECT COUNT(*) FROM mini.regflow_loads")
    empty = stage(plan, root, COB, MEMBERS, [], run_id="empty-rerun")
    for method in ("copy", "upsert"):
        with pytest.raises(DataError) as err:
            load(plan, empty, target, method=method)
        msg = str(err.value)
        assert "mini.fact_position holds 3 rows for cob 2026-03-31" in msg
        assert "run empty-rerun" in msg and "allow_empty_replace: true" in msg
        assert "--allow-empty-replace" in msg
    # nothing changed: facts, and no load recorded
    assert query(uri, "SELECT deal_id, amount, run_id FROM mini.fact_position ORDER BY 1") == before
    assert query(uri, "SELECT COUNT(*) FROM mini.regflow_loads") == loads
    # told to (this load; the environment, as `regflow run --allow-empty-replace` sets it)
    monkeypatch.setenv("REGFLOW_ALLOW_EMPTY_REPLACE", "1")
    load(plan, empty, target)
    assert query(uri, "SELECT COUNT(*) FROM mini.fact_position") == [(0,)]


def test_allow_empty_replace_on_the_star_and_per_load(pg_db, tmp_path):
    uri, target = pg_db
    _, allowing = _variant(tmp_path, "allow", [("    dimensions:\n      date:",
                                               "    allow_empty_replace: true\n    dimensions:\n"
                                               "      date:")])  # fmt: skip
    assert star_model(allowing, NODE).allow_empty_replace is True
    plan = mini_plan(tmp_path)
    assert star_model(plan, NODE).allow_empty_replace is False
    root = tmp_path / "storage"
    load(plan, stage(plan, root, COB, MEMBERS, DEALS), target)
    load(allowing, stage(allowing, root, COB, MEMBERS, []), target)  # the star allows it
    assert query(uri, "SELECT COUNT(*) FROM mini.fact_position") == [(0,)]
    # an empty cob may always be loaded empty; a non-empty one per load when asked
    load(plan, stage(plan, root, COB, MEMBERS, []), target)
    load(plan, stage(plan, root, COB, MEMBERS, DEALS), target)
    load(plan, stage(plan, root, COB, MEMBERS, []), target, allow_empty_replace=True)
    assert query(uri, "SELECT COUNT(*) FROM mini.fact_position") == [(0,)]


# ----------------------------------------------------------------------------- 16.9
def test_an_added_measure_stops_the_load_first_and_migrate_adds_it(pg_db, tmp_path, capsys):
    from regflow.cli.main import main

    uri, target = pg_db
    plan = mini_plan(tmp_path)
    root = tmp_path / "storage"
    load(plan, stage(plan, root, COB, MEMBERS, DEALS), target)
    spec2, plan2 = _variant(tmp_path, "eur", WITH_EUR)
    run2 = stage(plan2, root, COB, MEMBERS, DEALS)
    with pytest.raises(ConfigError) as err:  # not a raw UndefinedColumn from CREATE VIEW
        load(plan2, run2, target)
    assert "fact_position.amount_eur" in str(err.value)
    assert f"regflow warehouse migrate {plan.pipeline}" in str(err.value)
    cols = "SELECT column_name FROM information_schema.columns WHERE table_schema = 'mini' AND "
    assert query(uri, cols + "table_name = 'rpt_position'") == [
        ("cob_date",),
        ("deal_id",),
        ("entity_name",),
        ("amount",),
    ]  # the view untouched too
    # the dry run prints the exact DDL and changes nothing
    assert main(["warehouse", "migrate", str(spec2), "--dry-run", "--warehouse", uri]) == 0
    out = capsys.readouterr().out
    assert 'ALTER TABLE "mini"."fact_position" ADD COLUMN "amount_eur" NUMERIC(20,2);' in out
    assert 'CREATE VIEW "mini"."rpt_position" AS SELECT' in out
    assert query(uri, cols + "table_name = 'fact_position' AND column_name = 'amount_eur'") == []
    # migrate, then the load goes through and the report shows the new measure
    assert main(["warehouse", "migrate", str(spec2), "--warehouse", uri]) == 0
    assert "migrated schema mini" in capsys.readouterr().out
    load(plan2, run2, target)
    assert query(uri, "SELECT COUNT(*), COUNT(amount) FROM mini.rpt_position WHERE amount_eur "
                      "IS NULL") == [(3, 3)]  # fmt: skip
    # migrating again: nothing to do
    assert main(["warehouse", "migrate", str(spec2), "--warehouse", uri]) == 0
    assert "nothing to migrate" in capsys.readouterr().out


def test_a_renamed_attribute_says_exactly_what_to_do(pg_db, tmp_path, capsys):
    from regflow.cli.main import main

    uri, target = pg_db
    plan = mini_plan(tmp_path)
    load(plan, stage(plan, tmp_path / "storage", COB, MEMBERS, DEALS), target)
    spec2, plan2 = _variant(tmp_path, "region", [("      country: string", "      region: string"),
                                                 ("[entity_name, country]",
                                                  "[entity_name, region]")])  # fmt: skip
    with pytest.raises(ConfigError) as err:
        load(plan2, stage(plan2, tmp_path / "storage", COB, {}, []), target)
    msg = str(err.value)
    assert "mini.dim_entity has a column 'country' the spec no longer makes" in msg
    assert 'ALTER TABLE "mini"."dim_entity" RENAME COLUMN "country" TO <new name>' in msg
    assert "never changes by itself" in msg
    assert main(["warehouse", "migrate", str(spec2), "--warehouse", uri]) == 1
    assert "cannot migrate 'mini'" in capsys.readouterr().err
    assert query(uri, "SELECT COUNT(*) FROM mini.fact_position") == [(3,)]


def test_redshift_migration_ddl_is_exact_and_parses():
    from regflow.warehouse.migrate import plan_migration, wanted_columns

    tmp = Path(__import__("tempfile").mkdtemp())
    plan = mini_plan(tmp)
    _, plan2 = _variant(tmp, "eur", WITH_EUR)
    existing = {t: [c.name for c in cols] for t, cols in wanted_columns(star_model(plan, NODE))
                .items()}  # fmt: skip
    mig = plan_migration(get_dialect("redshift"), star_model(plan2, NODE), existing)
    assert mig.additive and mig.needed
    assert mig.steps[0].sql == (
        'ALTER TABLE "mini"."fact_position" ADD COLUMN "amount_eur" NUMERIC(20,2) ENCODE AZ64'
    )
    assert [s.name for s in mig.steps if s.name.startswith("add ")] == [
        "add fact_position.amount_eur"
    ]
    views = [s.sql for s in mig.steps if "VIEW" in s.sql]
    assert any(v.startswith('CREATE OR REPLACE VIEW "mini"."rpt_position"') for v in views)
    assert all(v.endswith("WITH NO SCHEMA BINDING") for v in views)
    for step in mig.steps:
        parsed = sqlglot.parse_one(step.sql, read="redshift")
        assert not isinstance(parsed, sqlglot.exp.Command), step.sql
    alter = sqlglot.parse_one(mig.steps[0].sql, read="redshift")
    assert isinstance(alter, sqlglot.exp.Alter)
    assert alter.find(sqlglot.exp.ColumnDef).name == "amount_eur"
    # a new NOT NULL column (here a grain column) cannot migrate in place: what to do instead
    _, plan3 = _variant(tmp, "grain", [("grain: [cob_date, deal_id]",
                                        "grain: [cob_date, deal_id, legal_entity]")])  # fmt: skip
    mig3 = plan_migration(get_dialect("redshift"), star_model(plan3, NODE), existing)
    assert not mig3.additive and mig3.steps == []
    assert mig3.problems == [
        "mini.fact_position needs a new column 'legal_entity', a key or grain column (NOT NULL) "
        "that the rows loaded before cannot have: export what you need, drop the table "
        '(DROP TABLE "mini"."fact_position") and rerun the cobs to reload it'
    ]


def test_a_database_error_reaches_the_runs_error_record(pg_db, tmp_path, monkeypatch):
    """The database's own reason lands in ``_stages/publish.error.json`` (the rows land at
    publish, the run's commit point), which ``regflow run`` prints when the DAG run fails
    (not only the Airflow log)."""
    from regflow.render.tasks import load_task, publish_task

    uri, target = pg_db
    plan = mini_plan(tmp_path)
    root = tmp_path / "storage"
    load(plan, stage(plan, root, COB, MEMBERS, DEALS), target)
    query_uri = uri
    import psycopg

    with psycopg.connect(query_uri) as c:  # a rule the new batch breaks
        c.execute("ALTER TABLE mini.fact_position ADD CONSTRAINT amount_positive "
                  "CHECK (amount > 0)")  # fmt: skip
    bad = stage(plan, root, COB, MEMBERS, [("D9", "LE001", Decimal("-1.00"))], run_id="bad")
    monkeypatch.setenv("REGFLOW_STORAGE", str(root))
    monkeypatch.setenv("REGFLOW_WAREHOUSE", uri)
    context = {"params": {"cob": str(COB)}, "run_id": "bad"}
    load_task(str(MINI), NODE, context, str(tmp_path / "no-rules"))  # prepares only
    with pytest.raises(RegflowError) as err:
        publish_task(str(MINI), context, str(tmp_path / "no-rules"))
    assert "amount_positive" in str(err.value) and "rolled back" in str(err.value)
    record = json.loads((bad.run_dir / "_stages" / "publish.error.json").read_text())
    assert record["error"] == "WarehouseError"
    assert "amount_positive" in record["message"] and "insert fact_position" in record["message"]
    assert query(uri, "SELECT COUNT(*) FROM mini.fact_position") == [(3,)]
