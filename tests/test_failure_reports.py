"""Every failure says why (issue 18, item 6): through the real CLI, a failure's cause, the
task and node it hit and what to do reach the terminal and the stage report, and no command
ends in a raw traceback (the traceback goes to a log file it names)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COB

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = "postgresql://u@127.0.0.1:1/db"


def regflow(base: Path, *args: str, env: dict[str, str] | None = None):
    """The real `regflow` command, in an isolated project under ``base``."""
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REGFLOW_", "AIRFLOW_")) or k == "REGFLOW_SHUFFLE_PARTITIONS"
    }
    full.update(
        {
            "REGFLOW_PROJECT": str(base / "project"),
            "AIRFLOW_HOME": str(base / "airflow"),
            "REGFLOW_WAREHOUSE_DIR": str(base / "warehouse"),
            **(env or {}),
        }
    )
    exe = Path(sys.executable).parent / "regflow"
    return subprocess.run(
        [str(exe), *args],
        cwd=base / "project",
        env=full,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from regflow.demo.data import generate_demo_data

    base = tmp_path_factory.mktemp("failures")
    for name in ("pipelines", "operators"):
        shutil.copytree(ROOT / name, base / "project" / name)
    generate_demo_data(base / "data", cob=COB, deals=300, entities=2, seed=7)
    return base


def _traceback_log(stderr: str) -> str:
    m = re.search(r"traceback: (\S+)", stderr)
    assert m, stderr
    return Path(m.group(1)).read_text()


@pytest.mark.parametrize(
    "args",
    [["warehouse", "query", "SELECT 1"], ["warehouse", "info"]],
    ids=["query", "info"],
)
def test_an_unreachable_warehouse_says_so_without_a_traceback(base, args):
    proc = regflow(base, *args, "--warehouse", UNREACHABLE)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "cannot connect to the warehouse postgresql://u@127.0.0.1:1/db" in proc.stderr
    assert "Connection refused" in proc.stderr  # the cause, in the driver's words
    assert "REGFLOW_WAREHOUSE" in proc.stderr  # what to do


def test_an_unexpected_error_names_its_cause_and_keeps_the_traceback_in_a_log(base, tmp_path):
    """A failure regflow did not foresee (here a `_LATEST` file cut short) still ends in one
    line with its cause and where the traceback went, never in a raw traceback."""
    cob_dir = tmp_path / "storage" / "lcr" / f"cob={COB}"
    cob_dir.mkdir(parents=True)
    (cob_dir / "_LATEST").write_text('{"run_id": ')
    args = (
        "export",
        "lcr",
        "entity_lcr",
        "--cob",
        str(COB),
        "--storage",
        str(tmp_path / "storage"),
    )
    proc = regflow(base, *args)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "regflow: export failed" in proc.stderr and "JSONDecodeError" in proc.stderr
    # the whole story is kept where it says
    assert "Traceback" in _traceback_log(proc.stderr)
    # --debug (or REGFLOW_DEBUG=1) shows it on the terminal, for a developer
    debug = regflow(base, *args, env={"REGFLOW_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_lineage_of_an_unpublished_run_is_refused_clearly(base, tmp_path):
    run_dir = tmp_path / "storage" / "lcr" / f"cob={COB}" / "run=killed_1"
    (run_dir / "weigh").mkdir(parents=True)  # a run killed after its first stage began
    proc = regflow(
        base,
        *("lineage", "trace", "lcr", "entity_lcr", "--cob", str(COB)),
        *("--run", "killed_1", "--storage", str(tmp_path / "storage")),
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "run killed_1 of lcr for cob 2026-03-31 was never published" in proc.stderr
    assert "leave out --run" in proc.stderr


@pytest.mark.slow
def test_a_storage_folder_that_cannot_be_written_names_task_cause_and_fix(base, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = regflow(
        base,
        *("run", "lcr", "--cob", str(COB), "--param", f"data_root={base / 'data'}"),
        *("--storage", str(blocker / "storage")),
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "ended in state" not in proc.stderr
    assert "task weigh:" in proc.stderr  # the task (node) that hit it
    assert f"cannot write {blocker}/storage/" in proc.stderr  # the cause
    assert "one of its parent folders is a file" in proc.stderr
    assert "to fix: point --storage / REGFLOW_STORAGE at a folder" in proc.stderr


@pytest.mark.slow
def test_an_unreachable_warehouse_during_a_run_reaches_the_cli_and_the_stage_report(base, tmp_path):
    storage = tmp_path / "storage"
    proc = regflow(
        base,
        *("run", "lcr", "--cob", str(COB), "--param", f"data_root={base / 'data'}"),
        *("--storage", str(storage), "--warehouse", UNREACHABLE),
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "task load_lcr_star, node lcr_star:" in proc.stderr
    assert "cannot connect to the warehouse postgresql://u@127.0.0.1:1/db" in proc.stderr
    assert "Connection refused" in proc.stderr  # the cause, in the driver's words
    assert "check that the server runs" in proc.stderr  # what to do
    # the stage report keeps it next to the run, for operators of a deployed Airflow
    (report,) = storage.glob(f"lcr/cob={COB}/run=*/_stages/load_lcr_star.error.json")
    record = json.loads(report.read_text())
    assert record["stage"] == "load_lcr_star" and record["node"] == "lcr_star"
    assert "Connection refused" in record["message"]
    assert "check that the server runs" in record["message"]
    assert record["error"] == "ConfigError"
