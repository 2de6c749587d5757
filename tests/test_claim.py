"""One active run per (pipeline, cob): the claim file, on real files and real processes."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from regflow.errors import ConcurrentRunError
from regflow.storage import RunRef, claim


def ref(root: Path, run_id: str, cob: str = "2026-03-31") -> RunRef:
    return RunRef(root, "lcr", cob, run_id)


def test_a_second_run_of_the_cob_is_refused_naming_the_active_one(tmp_path, monkeypatch):
    monkeypatch.delenv(claim.DRIVER_PID_ENV, raising=False)
    a, b = ref(tmp_path, "run_a"), ref(tmp_path, "run_b")
    claim.acquire(a, log=lambda m: None)
    with pytest.raises(ConcurrentRunError) as err:
        claim.acquire(b, log=lambda m: None)
    msg = str(err.value)
    assert "run run_a of this cob is active" in msg and "run run_b was refused" in msg
    assert "cob=2026-03-31" in msg and str(claim.claim_path(a)) in msg
    assert not claim.release(b)  # another run's claim is left alone
    assert claim.holds(a)
    # another cob is another claim
    claim.acquire(ref(tmp_path, "run_c", cob="2026-04-01"), log=lambda m: None)
    assert claim.release(a)
    assert claim.acquire(b, log=lambda m: None)["run_id"] == "run_b"


def test_a_claim_whose_process_is_gone_is_taken_over(tmp_path, monkeypatch):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    monkeypatch.setenv(claim.DRIVER_PID_ENV, dead.stdout.strip())
    claim.acquire(ref(tmp_path, "killed"), log=lambda m: None)
    monkeypatch.delenv(claim.DRIVER_PID_ENV)
    said: list[str] = []
    got = claim.acquire(ref(tmp_path, "next"), log=said.append)
    assert got["run_id"] == "next" and got["taken_over_from"] == "killed"
    assert said and "taking over the claim of run killed" in said[0] and "is gone" in said[0]


def test_a_claim_without_a_recent_heartbeat_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.delenv(claim.DRIVER_PID_ENV, raising=False)
    a = ref(tmp_path, "quiet")
    claim.acquire(a, in_task=False, log=lambda m: None)  # between two tasks: no pid
    record = json.loads(claim.claim_path(a).read_text())
    old = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=claim.DEFAULT_TTL + 60)
    record["heartbeat"] = old.isoformat(timespec="seconds")
    claim.claim_path(a).write_text(json.dumps(record))
    with pytest.raises(ConcurrentRunError):  # a longer limit: still alive
        monkeypatch.setenv(claim.TTL_ENV, str(claim.DEFAULT_TTL * 2))
        claim.acquire(ref(tmp_path, "eager"), log=lambda m: None)
    monkeypatch.delenv(claim.TTL_ENV)
    said: list[str] = []
    assert claim.acquire(ref(tmp_path, "next"), log=said.append)["taken_over_from"] == "quiet"
    assert "last heartbeat" in said[0]


def _race(root: str, run_id: str, out) -> None:
    try:
        claim.acquire(ref(Path(root), run_id), log=lambda m: None)
        out.put(run_id)
    except ConcurrentRunError:
        out.put(None)


def test_of_runs_racing_for_one_cob_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), f"r{i}", out)) for i in range(6)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=120)
    winners = [r for r in results if r]
    assert len(winners) == 1
    assert json.loads(claim.claim_path(ref(tmp_path, "x")).read_text())["run_id"] == winners[0]


def test_a_failing_task_releases_the_claim_a_passing_one_keeps_it(tmp_path, monkeypatch):
    monkeypatch.delenv(claim.DRIVER_PID_ENV, raising=False)
    a = ref(tmp_path, "run_a")
    with claim.held(a, log=lambda m: None):
        assert claim.holds(a) and claim.read_claim(a)["pid"] is not None
    assert claim.holds(a) and claim.read_claim(a)["pid"] is None  # between tasks
    with pytest.raises(RuntimeError), claim.held(a, log=lambda m: None):
        raise RuntimeError("stage failed")
    assert claim.read_claim(a) is None
