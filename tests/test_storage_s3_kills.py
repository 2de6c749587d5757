"""A SIGKILL at every storage point of the LCR run on S3 (the moto server of ``s3_server``)
leaves nothing a reader takes as committed, and the rerun gives identical figures.

1. **The stages** (:func:`test_a_kill_at_every_storage_point_of_the_stages_on_s3`). The points
   are found from a clean run, not from the code: every node folder the clean run stored
   (outputs, lineage checkpoints, the star's staged tables; this project has no rules, so no
   audits) gives ``commit:<name>`` (data and metadata written, no marker), in the order its
   stage report lists the writes; the first write of each stage also gives ``data:<name>``
   (its data written, no ``_regflow.json``); every stage of the plan gives
   ``stage:<task id>`` (the task started, the claim taken, nothing written): 18 points.
   ONE run id, a chain of attempts: each a process of its own (its own Spark), killed at the
   next point, running the stage tasks the run has not completed yet (``run_stage_task``, the
   function the Airflow task and the Kubernetes entrypoint call), as Airflow retries only the
   failed task. So each retry meets the outputs its stage committed before the kill (first
   commit wins, its own attempt discarded). After every kill: every committed output reads
   and equals the clean run's rows and metadata, and its marker never changes once written;
   the killed output is not complete and ``read_node`` refuses it; the bucket holds no
   temporary object, no leftover of Spark's magic committer, no marker naming a missing
   attempt or data, and no unmarked attempt but one per killed write; nothing is published.
   The last attempt, with no fault, gives the clean run's outputs, and the LCR per entity
   equals tests/lcr_reference.py's.
2. **The run** (:func:`test_a_kill_at_each_run_level_point_on_s3_the_next_run_takes_over`):
   real ``regflow run --storage s3://...`` processes (Airflow ``dag.test``, Spark, the
   embedded PostgreSQL) killed at a stage's start (the cob's first run) and at
   ``publish:published`` (storage published, the warehouse not committed); after each, the
   next ``regflow run`` of the cob takes over the dead run's claim and succeeds, and
   ``_LATEST``, ``regflow export`` and the warehouse's ``rpt_lcr_entity`` name the same run
   with the reference's figures.

Not covered by default (the budget: a ``regflow run`` costs ~30 s): ``load:lcr_star``,
``publish:loaded`` and ``publish:commit`` through ``regflow run`` on S3. Each passes when
swept (``REGFLOW_TEST_RUN_KILLS``, below); ``publish:loaded`` is also killed on local
storage in tests/test_run_consistency.py, and nothing runs between ``publish:published`` and
``publish:commit``. ``data:`` at a stage's later writes (it leaves what that write's
``commit:`` leaves, less the metadata). A kill in the middle of a Spark write: no named
point is inside Spark's job (with the magic committer nothing is complete under the attempt
before the job commits, and an attempt without a marker is invisible anyway);
tests/test_spark_s3a.py covers a failing task. Audits (no rules here: their writes go
through the same ``commit_attempt``).

Does not prove: AWS S3 itself (moto stands in: its conditional puts, listing and multipart
uploads, in one process on loopback, without S3's network failures, throttling or
replication); a kill of one executor or of a pod on a cluster (local Spark: the driver
process dies with its executors); a claim taken over from another host (by heartbeat age,
``REGFLOW_CLAIM_TTL``: here the dead process is on this host); a kill inside boto3's put of
a marker (S3's puts are atomic: the marker is there or not, which the points before and
after it cover).
"""

from __future__ import annotations

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
from runtime_helpers import run_all_stages

from regflow.errors import StorageError
from regflow.plan.compiler import compile_file
from regflow.runtime import s3a
from regflow.storage import RunRef, read_node
from regflow.storage.fs import S3Path

pytestmark = pytest.mark.slow
psycopg = pytest.importorskip("psycopg")

EXE = Path(sys.executable).parent / "regflow"
TESTS = Path(__file__).resolve().parent


def _rows(run: RunRef, name: str) -> list:
    return sorted(read_node(run, name).to_pylist(), key=repr)


def _reference(data: Path) -> dict[str, float | None]:
    ref = compute_lcr_reference(data, COB)
    return {r["legal_entity"]: r["lcr"] for _, r in ref.iterrows()}


def _assert_figures(figures: dict[str, float | None], reference: dict[str, float | None]):
    assert figures.keys() == reference.keys() and "GROUP" in figures
    for entity, lcr in reference.items():
        if lcr is None:
            assert figures[entity] is None, entity
        else:
            assert figures[entity] == pytest.approx(lcr, rel=1e-9), entity


# ------------------------------------------------------------------ 1. the stages
# One attempt of run r1: the stage tasks the run has not completed (a stage with a report
# is done), in the plan's order, each through the task function Airflow's task calls.
_ATTEMPT = """
import sys
from regflow.plan.compiler import compile_file
from regflow.render.tasks import run_stage_task
from regflow.storage import RunRef, resolve_root

spec, cob, data = sys.argv[1:4]
plan = compile_file(spec)
run = RunRef(resolve_root(), plan.pipeline, cob, "r1")
context = {"params": {"data_root": data, "cob": cob, "recompute": "all"}, "run_id": "r1"}
for stage in plan.stages:
    if not run.stage_report(stage.id).exists():
        run_stage_task(spec, stage.id, context)
"""


def _points(plan, clean: RunRef) -> list[str]:
    """Every storage point of the stages, from the clean run's stored folders and reports."""
    stored = {p.name for p in clean.run_dir.iterdir() if p.name[0] != "_"}
    points, written = [], []
    for stage in plan.stages:
        points.append(f"stage:{plan.task_id(stage.id)}")
        report = json.loads(clean.stage_report(stage.id).read_text())
        for i, out in enumerate(report["outputs"]):
            # data: the stage's first write only (the budget: each point is a Spark process;
            # a kill at a later write's data: leaves what its commit: leaves, less metadata)
            points += [f"data:{out['name']}"] * (i == 0) + [f"commit:{out['name']}"]
            written.append(out["name"])
    assert sorted(written) == sorted(stored)  # every stored folder is a write of a stage
    return points


def _bucket_view(s3_server, bucket: str, run: RunRef) -> dict[str, list[str]]:
    """Check what the bucket holds for ``run`` holds nothing a reader would take; returns each
    node's attempts that no marker names."""
    keys = s3_server.keys(bucket)
    assert not [k for k in keys if ".tmp-" in k or "__magic" in k or "_temporary" in k]
    assert not [k for k in keys if k.endswith(("_RUN_SUCCESS", "_LATEST"))]  # (unpublished)
    prefix = f"{run.root.key}/{run.relative(run.run_dir)}/"
    attempts: dict[str, set[str]] = {}
    for k in keys:
        m = re.match(re.escape(prefix) + r"([^/_][^/]*)/(attempt=[^/]+)/", k)
        if m:
            attempts.setdefault(m.group(1), set()).add(m.group(2))
    unmarked = {}
    for node, found in attempts.items():
        marker = run.marker(node)
        if marker is not None:  # it names an attempt with metadata, and data with Parquet
            assert marker["attempt"] in found, node
            assert f"{prefix}{node}/{marker['attempt']}/_regflow.json" in keys, node
            data = f"{run.root.key}/{marker['data']}/"
            assert [k for k in keys if k.startswith(data) and k.endswith(".parquet")], node
            found = found - {marker["attempt"]}
        unmarked[node] = sorted(found)
    return unmarked


def test_a_kill_at_every_storage_point_of_the_stages_on_s3(
    s3_server, spark, project, lcr_data, tmp_path
):
    s3a.require_jars()  # never skip: fail with the command that fetches them
    spec = project / "pipelines" / "lcr.yaml"
    plan = compile_file(spec)
    cob = COB.isoformat()
    # (the same run id: the star's tables carry it)
    clean = RunRef(tmp_path / "clean", "lcr", cob, "r1")
    run_all_stages(plan, clean.root, "r1", spark, {"data_root": str(lcr_data)})
    points = _points(plan, clean)
    names = [p.removeprefix("commit:") for p in points if p.startswith("commit:")]
    assert len(names) == 10 and len(points) == 18  # (4 stages; lcr_star stages 5 tables)

    bucket = s3_server.new_bucket("kills")
    run = RunRef(S3Path(bucket, "regflow"), "lcr", cob, "r1")
    env = {**os.environ, "REGFLOW_STORAGE": f"s3://{bucket}/regflow"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    args = [sys.executable, "-c", _ATTEMPT, str(spec), cob, str(lcr_data)]

    def attempt(fault: str | None) -> subprocess.CompletedProcess:
        e = {**env, "REGFLOW_FAULT": f"{fault}@kill"} if fault else env
        return subprocess.run(args, env=e, capture_output=True, text=True, timeout=900)

    markers: dict[str, dict] = {}  # each committed output's marker, as first seen
    kills: dict[str, int] = {}  # the kills at each output's writes so far
    for point in points:
        proc = attempt(point)
        assert proc.returncode == -9, f"{point}: {proc.stderr[-3000:]}"  # (the point was hit)
        kind, _, name = point.partition(":")
        for n in names:
            if not run.is_complete(n):
                continue
            if n in markers:  # a committed output is never replaced
                assert run.marker(n) == markers[n], (point, n)
                continue
            markers[n] = run.marker(n)
            assert _rows(run, n) == _rows(clean, n), (point, n)
            for key in ("rows", "node_hash", "input_hashes"):
                assert run.metadata(n)[key] == clean.metadata(n)[key], (point, n, key)
        if kind == "stage":  # nothing of the started stage is committed
            stage = plan.stage(name)
            outs = json.loads(clean.stage_report(stage.id).read_text())["outputs"]
            assert not [o["name"] for o in outs if run.is_complete(o["name"])], point
            assert not run.stage_report(stage.id).exists()
        else:
            assert not run.is_complete(name), point
            with pytest.raises(StorageError, match=f"no complete output '{re.escape(name)}'"):
                read_node(run, name)
            kills[name] = kills.get(name, 0) + 1
        unmarked = _bucket_view(s3_server, bucket, run)
        # exactly one unmarked attempt per killed write: a retry discards its own losing
        # attempts; the killed one is what the kill left, with what the point says
        assert {n: len(a) for n, a in unmarked.items() if a} == kills, point
        if kind != "stage":
            left = run.node_root(name) / unmarked[name][-1]
            assert [f for f in left.iterdir() if f.name.endswith(".parquet")], point
            assert (left / "_regflow.json").exists() == (kind == "commit"), point

    proc = attempt(None)  # the last retry of the run finishes it
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(markers) == len(names) - 1  # (the last kill was at the last write)
    for n in names:
        if n in markers:
            assert run.marker(n) == markers[n], n
        assert _rows(run, n) == _rows(clean, n), n
        for key in ("rows", "schema", "node_hash", "input_hashes"):
            assert run.metadata(n)[key] == clean.metadata(n)[key], (n, key)
    assert all(run.stage_report(s.id).exists() for s in plan.stages)
    _bucket_view(s3_server, bucket, run)
    entity_lcr = {r["legal_entity"]: r["lcr"] for r in read_node(run, "entity_lcr").to_pylist()}
    _assert_figures(entity_lcr, _reference(lcr_data))


# ------------------------------------------------------------------ 2. the run
@pytest.fixture(scope="module")
def s3run(s3_server, tmp_path_factory):
    """A project, its Airflow home, an embedded warehouse and a bucket for `regflow run`."""
    from regflow.warehouse.embedded import get_server

    s3a.require_jars()
    base = tmp_path_factory.mktemp("s3kills")
    project = base / "project"
    for name in ("pipelines", "operators", "dags"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    # outside pytest's temporary root: see tests/test_run_consistency.py
    warehouse = Path(tempfile.mkdtemp(prefix="regflow-s3kills-wh-"))
    bucket = s3_server.new_bucket("runs")
    yield {
        "project": project,
        "home": base / "airflow",
        "warehouse": warehouse,
        "bucket": bucket,
        "root": S3Path(bucket, "regflow"),
    }
    get_server(warehouse).release()
    shutil.rmtree(warehouse, ignore_errors=True)


def _cli(env, *args: str, fault: str = "") -> subprocess.CompletedProcess:
    e = {**os.environ, "AIRFLOW_HOME": str(env["home"]), "REGFLOW_PROJECT": str(env["project"])}
    e.update(REGFLOW_WAREHOUSE_DIR=str(env["warehouse"]))
    for name in ("REGFLOW_STORAGE", "REGFLOW_WAREHOUSE", "REGFLOW_FAULT"):
        e.pop(name, None)
    if fault:
        e["REGFLOW_FAULT"] = fault
    cmd = [str(EXE), *args]
    if args[0] in ("run", "export"):
        cmd += ["--storage", f"s3://{env['bucket']}/regflow"]
    return subprocess.run(
        cmd, cwd=env["project"], env=e, capture_output=True, text=True, timeout=900
    )


def _run(env, data: Path, fault: str = "") -> subprocess.CompletedProcess:
    return _cli(env, "run", "lcr", "--cob", str(COB), "--param", f"data_root={data}", fault=fault)


def _latest(env) -> str | None:
    path = env["root"] / "lcr" / f"cob={COB}" / "_LATEST"
    return json.loads(path.read_bytes())["run_id"] if path.exists() else None


def _exported(env, tmp_path) -> tuple[str, dict[str, float | None]]:
    out = tmp_path / f"export-{time.monotonic_ns()}.csv"
    proc = _cli(env, "export", "lcr", "entity_lcr", "--cob", str(COB), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = re.search(r"run (\S+)\) to", proc.stderr).group(1)  # type: ignore[union-attr]
    return run_id, {r["legal_entity"]: r["lcr"] for r in pacsv.read_csv(out).to_pylist()}


def _warehouse(env) -> tuple[set[str], dict[str, float | None]]:
    from regflow.warehouse.embedded import get_server

    with psycopg.connect(get_server(env["warehouse"]).get_uri()) as c:
        if c.execute("SELECT to_regclass('lcr.rpt_lcr_entity')").fetchone()[0] is None:
            return set(), {}  # (nothing loaded yet)
        runs = {
            r[0]
            for t in ("fact_lcr_deal", "fact_lcr_entity")
            for r in c.execute(f"SELECT DISTINCT run_id FROM lcr.{t} WHERE cob_date = %s", (COB,))
        }
        lcr = c.execute(
            "SELECT legal_entity, lcr FROM lcr.rpt_lcr_entity WHERE cob_date = %s", (COB,)
        ).fetchall()
    return runs, {k: (None if v is None else float(v)) for k, v in lcr}


def _assert_agree(env, tmp_path, reference) -> str:
    """`_LATEST`, `regflow export` and the warehouse name one published run, with the
    reference's figures; returns it."""
    run_id, figures = _exported(env, tmp_path)
    runs, wh_figures = _warehouse(env)
    assert _latest(env) == run_id and runs == {run_id}
    assert (env["root"] / "lcr" / f"cob={COB}" / f"run={run_id}" / "_RUN_SUCCESS").exists()
    _assert_figures(figures, reference)
    _assert_figures(wh_figures, reference)
    return run_id


def _run_id(proc) -> str:
    return re.search(r"^run (\S+): success", proc.stdout, re.M).group(1)  # type: ignore[union-attr]


# By default a stage's start on the cob's first run (nothing to fall back on), then storage
# published and the warehouse not committed on a cob that has a good run: ~30 s a run, so
# the other points (each passes) are kept out of `make test`'s budget; sweep them all with
# REGFLOW_TEST_RUN_KILLS=stage:entity_lcr,load:lcr_star,publish:loaded,publish:published,
# publish:commit (one line, comma-separated)
RUN_POINTS = tuple(
    os.environ.get("REGFLOW_TEST_RUN_KILLS", "stage:entity_lcr,publish:published").split(",")
)
AHEAD = ("publish:published", "publish:commit")  # storage published, the warehouse not


def test_a_kill_at_each_run_level_point_on_s3_the_next_run_takes_over(s3run, lcr_data, tmp_path):
    reference = _reference(lcr_data)
    cob_dir = s3run["root"] / "lcr" / f"cob={COB}"

    good = None
    for point in RUN_POINTS:
        before = {d.name for d in cob_dir.glob("run=*")}
        killed = _run(s3run, lcr_data, fault=f"{point}@kill")
        assert killed.returncode == -9, f"{point}: {killed.stderr[-3000:]}"
        (dead,) = {d.name for d in cob_dir.glob("run=*")} - before
        dead = dead.removeprefix("run=")
        claim = json.loads((cob_dir / "_ACTIVE").read_bytes())
        assert claim["run_id"] == dead  # the dead run's claim is left on S3, and its plan pin
        assert (cob_dir / f"run={dead}" / "_PLAN").exists()
        if point in AHEAD:  # storage one run ahead, the warehouse not
            assert _latest(s3run) == dead and _exported(s3run, tmp_path)[0] == dead
            assert _warehouse(s3run)[0] == {good}
        elif good is None:  # the first run of the cob: nothing published, nothing loaded
            assert _latest(s3run) is None and not _warehouse(s3run)[0]
            assert not (cob_dir / f"run={dead}" / "_RUN_SUCCESS").exists()
            refused = _cli(s3run, "export", "lcr", "entity_lcr", "--cob", str(COB))
            assert refused.returncode and "no successful run" in refused.stderr
        else:  # both stores still on the last good run; the dead run unpublished
            assert _assert_agree(s3run, tmp_path, reference) == good
            assert not (cob_dir / f"run={dead}" / "_RUN_SUCCESS").exists()

        after = _run(s3run, lcr_data)
        assert after.returncode == 0, f"{point}: {after.stdout[-3000:]}\n{after.stderr[-3000:]}"
        took = re.search(f"taking over the claim of run {re.escape(dead)}.*", after.stdout)
        assert took and "is gone" in took.group(0), point  # (its process died on this host)
        if point in AHEAD:  # (it first brought the warehouse to storage's latest)
            assert f"reloaded run {dead}" in after.stdout, point
        good = _assert_agree(s3run, tmp_path, reference)
        assert good == _run_id(after) != dead, point
        assert not (cob_dir / "_ACTIVE").exists(), point  # (released by the publish)
