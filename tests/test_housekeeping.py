"""Housekeeping (issue 18, item 10): `regflow gc` by its retention policy, a refused export
of an unpublished run, one log file per run, and killed local runs marked failed."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import COB
from test_failure_reports import base, regflow  # noqa: F401 (the module's project fixture)

HOUR = 3600.0
OLD = time.time() - 3 * 24 * HOUR  # older than the default grace (24h)


def _age(path: Path, when: float) -> None:
    """Give ``path`` and everything in it the modification time ``when``."""
    for dirpath, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.utime(Path(dirpath) / name, (when, when))
    os.utime(path, (when, when))


def _commit(node: Path, attempt: str, data: Path | None = None) -> Path:
    """``node``'s marker naming ``attempt`` (and ``data``, else the attempt's own data), as
    the commit protocol writes it (docs/storage.md); returns the attempt folder."""
    root = node.parent.parent.parent.parent
    (node / attempt).mkdir(parents=True, exist_ok=True)
    (node / attempt / "_regflow.json").write_text("{}")
    where = (data or node / attempt).relative_to(root).as_posix()
    (node / "_SUCCESS").write_text(json.dumps({"attempt": attempt, "data": where}))
    return node / attempt


def _run(cob_dir: Path, run_id: str, *, published: bool, size: int, when: float) -> Path:
    """A run folder as a run leaves it: node outputs (an attempt's Parquet and metadata, the
    node's _SUCCESS marker), stage reports, and ``_RUN_SUCCESS`` once published."""
    run = cob_dir / f"run={run_id}"
    node = run / "entity_lcr"
    attempt = _commit(node, "attempt=a1")
    (attempt / "part-00000.parquet").write_bytes(os.urandom(size))
    (run / "_stages").mkdir()
    (run / "_stages" / "entity_lcr.json").write_text("{}")
    if published:
        (run / "_RUN_SUCCESS").write_text(json.dumps({"run_id": run_id}))
    _age(run, when)
    return run


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.fixture()
def layout(tmp_path) -> dict[str, Path]:
    """Two cobs of one pipeline, by hand, as runs and kills leave them."""
    root = tmp_path / "storage"
    old_cob = root / "lcr" / "cob=2026-03-30"
    new_cob = root / "lcr" / "cob=2026-03-31"
    p = {
        # cob 03-30: latest, two superseded published runs, a failed run long ago
        "latest_30": _run(old_cob, "r30_latest", published=True, size=1000, when=OLD + 300),
        "sup_30_new": _run(old_cob, "r30_b", published=True, size=2000, when=OLD + 200),
        "sup_30_old": _run(old_cob, "r30_a", published=True, size=3000, when=OLD + 100),
        "failed_30": _run(old_cob, "r30_failed", published=False, size=4000, when=OLD),
        # cob 03-31: latest, a superseded run, a killed run of an hour ago, a dead run still
        # holding the claim, a killed write's temporary folder inside the latest run
        "latest_31": _run(new_cob, "r31_latest", published=True, size=5000, when=OLD + 400),
        "sup_31": _run(new_cob, "r31_a", published=True, size=6000, when=OLD + 350),
        "young_31": _run(new_cob, "r31_young", published=False, size=700, when=time.time() - HOUR),
        "active_31": _run(new_cob, "r31_active", published=False, size=800, when=OLD),
    }
    for cob_dir, run_id in ((old_cob, "r30_latest"), (new_cob, "r31_latest")):
        (cob_dir / "_LATEST").write_text(json.dumps({"run_id": run_id}))
    (new_cob / "_ACTIVE").write_text(json.dumps({"run_id": "r31_active", "pid": 1}))
    # a killed write in the latest run: an attempt no marker names
    tmp = p["latest_31"] / "weigh" / "attempt=killed"
    tmp.mkdir(parents=True)
    (tmp / "part-00000.parquet").write_bytes(os.urandom(900))
    _age(tmp, OLD)
    p["tmp_31"] = tmp
    # the latest run of 03-31 reused an output of the superseded r31_a: by reference
    p["shared"] = p["sup_31"] / "entity_lcr" / "attempt=a1"
    _commit(p["latest_31"] / "reused_lcr", "attempt=m", data=p["shared"])
    _age(p["latest_31"], OLD + 400)
    p["root"] = root
    return p


def _gc(where: Path, root: Path, *args: str):
    proc = regflow(where, "gc", "--storage", str(root), *args)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_gc_dry_run_lists_by_policy_and_removes_nothing(base, layout):  # noqa: F811
    before = sorted(str(p) for p in layout["root"].rglob("*"))
    out = _gc(base, layout["root"], "--dry-run").stdout
    listed = set(re.findall(r"^would remove (\S+)", out, flags=re.M))
    # default policy: keep 1 superseded run per cob, grace 24h
    assert listed == {
        str(layout["sup_30_old"]),
        str(layout["failed_30"]),
        str(layout["tmp_31"]),
    }
    assert sorted(str(p) for p in layout["root"].rglob("*")) == before
    # the bytes: every file of what goes (none of them shared by hard link)
    expected = sum(_bytes(layout[k]) for k in ("sup_30_old", "failed_30", "tmp_31"))
    assert f"would free {expected / 1024:.1f} KB" in out


def test_gc_keeps_latest_active_young_and_referenced_data(base, layout):  # noqa: F811
    from regflow.storage import RunRef

    shared = layout["shared"] / "part-00000.parquet"
    data = shared.read_bytes()
    out = _gc(base, layout["root"], "--keep-runs", "0").stdout
    gone = {"sup_30_old", "sup_30_new", "failed_30", "tmp_31"}
    for key in gone:
        assert not layout[key].exists(), key
    for key in ("latest_30", "latest_31", "young_31", "active_31"):
        assert layout[key].exists(), key
    # r31_a is no run any more (its marker, reports and run marker went) ...
    assert not (layout["sup_31"] / "_RUN_SUCCESS").exists()
    assert not (layout["sup_31"] / "entity_lcr" / "_SUCCESS").exists()
    assert not (layout["sup_31"] / "_stages").exists()
    assert "r31_a/_RUN_SUCCESS  (superseded published run" in out
    # ... but the data the latest run refers to stays, never listed, and still reads
    assert shared.read_bytes() == data and str(layout["shared"]) not in out
    latest = RunRef(layout["root"], "lcr", "2026-03-31", "r31_latest")
    assert latest.node_dir("reused_lcr") == layout["shared"]
    # a second gc (the rest of r31_a now an old unpublished folder) keeps it too
    _gc(base, layout["root"], "--keep-runs", "0")
    assert shared.read_bytes() == data
    assert latest.node_dir("reused_lcr") == layout["shared"]


def test_gc_keep_cobs_and_grace(base, layout):  # noqa: F811
    # only the newest cob keeps a superseded run; a 30-minute grace takes the young run too
    _gc(base, layout["root"], "--keep-cobs", "1", "--grace", "30m")
    assert not layout["sup_30_new"].exists() and not layout["sup_30_old"].exists()
    assert layout["sup_31"].exists() and layout["latest_30"].exists()
    assert not layout["young_31"].exists()
    assert layout["active_31"].exists()


def _node_run(root: Path, run_id: str, published: bool) -> None:
    node = root / "lcr" / f"cob={COB}" / f"run={run_id}" / "entity_lcr"
    attempt = _commit(node, "attempt=a1")
    table = pa.table({"legal_entity": ["LE001"], "lcr": [1.25]})
    pq.write_table(table, attempt / "part-0.parquet")
    if published:
        (node.parent / "_RUN_SUCCESS").write_text("{}")


@pytest.mark.slow
def test_export_of_an_unpublished_run_is_refused_unless_allowed(base, tmp_path):  # noqa: F811
    root = tmp_path / "storage"
    _node_run(root, "failed_1", published=False)
    args = ("export", "lcr", "entity_lcr", "--cob", str(COB), "--run", "failed_1")
    refused = regflow(base, *args, "--storage", str(root))
    assert refused.returncode == 1 and refused.stdout == ""
    assert "run failed_1 of lcr for cob 2026-03-31 was never published" in refused.stderr
    assert "--allow-unpublished" in refused.stderr
    allowed = regflow(base, *args, "--storage", str(root), "--allow-unpublished")
    assert allowed.returncode == 0, allowed.stderr
    assert "warning: run failed_1 was never published" in allowed.stderr
    assert list(csv.DictReader(io.StringIO(allowed.stdout))) == [
        {"legal_entity": "LE001", "lcr": "1.25"}
    ]
    _node_run(root, "good_1", published=True)  # a published run: as before, no warning
    good = regflow(
        base,
        "export",
        "lcr",
        "entity_lcr",
        "--cob",
        str(COB),
        "--run",
        "good_1",
        "--storage",
        str(root),
    )
    assert good.returncode == 0 and good.stderr == ""


def test_runs_started_in_the_same_second_get_their_own_log_files(tmp_path):
    from regflow.cli.airflow_setup import new_log_file

    paths = {new_log_file(tmp_path) for _ in range(5)}
    assert len(paths) == 5 and all(p.exists() for p in paths)


@pytest.mark.slow
def test_a_killed_local_run_is_marked_failed_by_the_next_run(base, tmp_path):  # noqa: F811
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REGFLOW_", "AIRFLOW_")) or k == "REGFLOW_SHUFFLE_PARTITIONS"
    }
    home = tmp_path / "airflow"
    env.update(
        REGFLOW_PROJECT=str(base / "project"),
        AIRFLOW_HOME=str(home),
        REGFLOW_WAREHOUSE_DIR=str(base / "warehouse"),
    )
    exe = Path(sys.executable).parent / "regflow"
    args = ["run", "lcr", "--cob", str(COB), "--param", f"data_root={base / 'data'}"]
    victim = subprocess.Popen(
        [str(exe), *args, "--storage", str(tmp_path / "storage")],
        cwd=base / "project",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert victim.stdout is not None
    for line in victim.stdout:  # kill it in the middle of its first stage
        if line.startswith("stage weigh: nodes"):
            break
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    db = home / "airflow.db"

    def states() -> list[tuple[str, str]]:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT run_id, state FROM dag_run WHERE dag_id='lcr'").fetchall()

    ((killed_id, state),) = states()
    assert state == "running"  # what the kill leaves
    # the next run (failing fast: its storage is under a file) cleans up after the dead one
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    nxt = subprocess.run(
        [str(exe), *args, "--storage", str(blocker / "s")],
        cwd=base / "project",
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert f"marked run {killed_id} of lcr failed" in nxt.stdout
    assert dict(states())[killed_id] == "failed"
    with sqlite3.connect(db) as conn:
        unfinished = conn.execute(
            "SELECT task_id, state FROM task_instance WHERE run_id=? AND "
            "(state IS NULL OR state IN ('running', 'queued', 'scheduled'))",
            (killed_id,),
        ).fetchall()
    assert unfinished == []
