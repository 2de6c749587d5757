"""One active run per (pipeline, cob): an exclusive claim file, ``cob=<cob>/_ACTIVE``.

The run's first task creates the claim by a put that never overwrites one
(:func:`regflow.storage.fs.put_if_absent`: ``If-None-Match: *`` on S3); a stale claim is
taken over by compare-and-swap (:func:`~regflow.storage.fs.put_if_match`: ``If-Match``);
every later task checks that the claim is still its
run's and refreshes it; ``publish`` and a failing task release it. A second run of the same
cob is refused with a :class:`~regflow.errors.ConcurrentRunError` naming the active run.
Different cobs have different claims and run concurrently.

A claim whose holder died (SIGKILL, a lost worker) is *stale* and is taken over with a
warning when

- it was taken on this host and its process is gone (``pid``: the ``regflow run`` process
  under ``dag.test``, or the task's process while a deployed task runs; a claim between two
  deployed tasks carries no pid), or
- its heartbeat is older than ``REGFLOW_CLAIM_TTL`` seconds (default 900); a running task
  refreshes the heartbeat every ``TTL / 10`` seconds, so only a dead run goes quiet.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from regflow.errors import ConcurrentRunError
from regflow.settings import current
from regflow.storage import RunRef, fs
from regflow.storage.fs import Location

ACTIVE_FILE = "_ACTIVE"
TTL_ENV = "REGFLOW_CLAIM_TTL"
DEFAULT_TTL = 900.0
# Set by `regflow run` for the tasks it runs in-process (dag.test): the process whose death
# frees the claim at once, also between two tasks
DRIVER_PID_ENV = "REGFLOW_RUN_PID"

Log = Callable[[str], None]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ttl() -> float:
    return current().claim_ttl


def claim_path(run: RunRef) -> Location:
    return run.cob_dir / ACTIVE_FILE


def read_claim(run: RunRef) -> dict[str, Any] | None:
    """The cob's current claim, or None (a claim being written reads as absent)."""
    got = _read(run)
    return got[0] if got is not None else None


def _read(run: RunRef) -> tuple[dict[str, Any], str] | None:
    """The claim and its tag (for a compare-and-swap), or None."""
    got = fs.read_with_tag(claim_path(run))
    if got is None:
        return None
    try:
        return dict(json.loads(got[0])), got[1]
    except ValueError:
        return None


def _bytes(record: dict[str, Any]) -> bytes:
    return json.dumps(record, indent=2, sort_keys=True).encode()


def _holder_pid(in_task: bool) -> int | None:
    driver = current().run_pid
    if driver is not None:
        return driver
    return os.getpid() if in_task else None


def _record(run: RunRef, started: str | None, in_task: bool) -> dict[str, Any]:
    now = _now().isoformat(timespec="seconds")
    return {
        "run_id": run.run_id,
        "pipeline": run.pipeline,
        "cob": run.cob,
        "host": socket.gethostname(),
        "pid": _holder_pid(in_task),
        "started_at": started or now,
        "heartbeat": now,
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_reason(claim: dict[str, Any]) -> str | None:
    """Why ``claim``'s holder is presumed dead, or None while it may be alive."""
    pid = claim.get("pid")
    if pid and claim.get("host") == socket.gethostname() and not _pid_alive(int(pid)):
        return f"its process {pid} on {claim['host']} is gone"
    try:
        beat = dt.datetime.fromisoformat(str(claim.get("heartbeat")))
    except ValueError:
        return "its heartbeat is unreadable"
    age = (_now() - beat).total_seconds()
    if age > ttl():
        return f"its last heartbeat was {age:.0f}s ago (more than {TTL_ENV}={ttl():.0f}s)"
    return None


def _create(run: RunRef, record: dict[str, Any]) -> bool:
    """Create the claim file if there is none; False if one exists (never overwritten, and
    no reader ever sees a half-written claim)."""
    return fs.put_if_absent(claim_path(run), _bytes(record))


def _refused(run: RunRef, claim: dict[str, Any]) -> ConcurrentRunError:
    pid = f", pid {claim['pid']}" if claim.get("pid") else ""
    return ConcurrentRunError(
        f"run {claim.get('run_id')} of this cob is active (started {claim.get('started_at')} "
        f"on {claim.get('host')}{pid}; last heartbeat {claim.get('heartbeat')}), so run "
        f"{run.run_id} was refused: one run per (pipeline, cob) at a time. Wait for it to "
        f"finish and run again. If that run is dead, its claim {claim_path(run)} is taken "
        f"over automatically once its process is gone (same host) or its heartbeat is older "
        f"than {TTL_ENV}={ttl():.0f}s; delete the file to take it over now.",
        pipeline=run.pipeline,
        cob=run.cob,
    )


def acquire(run: RunRef, *, in_task: bool = True, log: Log | None = None) -> dict[str, Any]:
    """Take the cob's claim for ``run``, or refresh it if ``run`` already holds it.

    Raises :class:`ConcurrentRunError` when another live run holds it; takes over a stale
    claim (logging why)."""
    say = log or (lambda m: print(m, flush=True))
    for _ in range(5):  # each turn either returns, raises, or saw the claim change under it
        got = _read(run)
        if got is None:
            if _create(run, _record(run, None, in_task)):
                # (not stored) whose stale claim this run took over, if any
                return {**(read_claim(run) or {}), "taken_over_from": None}
            continue
        claim, tag = got
        if claim.get("run_id") == run.run_id:
            rec = _record(run, claim.get("started_at"), in_task)
            if fs.put_if_match(claim_path(run), _bytes(rec), tag):
                return rec
            continue
        reason = stale_reason(claim)
        if reason is None:
            raise _refused(run, claim)
        # Compare-and-swap on the stale claim as read: of two runs taking it over at once,
        # or a holder refreshing it meanwhile, only one write succeeds; the others see the
        # new (live) claim next turn.
        record = _record(run, None, in_task)
        if not fs.put_if_match(claim_path(run), _bytes(record), tag):
            continue
        say(
            f"warning: taking over the claim of run {claim.get('run_id')} on "
            f"{run.pipeline} cob {run.cob}: {reason}"
        )
        return {**record, "taken_over_from": claim.get("run_id")}
    raise _refused(run, read_claim(run) or {"run_id": "?"})


def holds(run: RunRef) -> bool:
    claim = read_claim(run)
    return claim is not None and claim.get("run_id") == run.run_id


def touch(run: RunRef, *, in_task: bool) -> None:
    """Refresh ``run``'s claim (heartbeat; the pid only while a task runs), if it holds it."""
    got = _read(run)
    if got is not None and got[0].get("run_id") == run.run_id:
        rec = _record(run, got[0].get("started_at"), in_task)
        fs.put_if_match(claim_path(run), _bytes(rec), got[1])


def release(run: RunRef) -> bool:
    """Give up ``run``'s claim; another run's claim is left alone. True if released."""
    got = _read(run)
    if got is None or got[0].get("run_id") != run.run_id:
        return False
    return fs.delete_if_match(claim_path(run), got[1])


@contextlib.contextmanager
def held(
    run: RunRef, *, log: Log | None = None, release_on_error: bool = True
) -> Iterator[dict[str, Any]]:
    """Hold the cob's claim for one task: take or check it, keep its heartbeat fresh while
    the task runs, and release it if the task fails (the run is over then). Yields the claim
    (with ``taken_over_from``: the dead run whose claim this one took, or None)."""
    record = acquire(run, log=log)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(max(1.0, ttl() / 10)):
            with contextlib.suppress(OSError):
                touch(run, in_task=True)

    thread = threading.Thread(target=beat, name="regflow-claim-heartbeat", daemon=True)
    thread.start()
    try:
        yield record
    except BaseException:
        stop.set()
        thread.join()
        if release_on_error:
            release(run)
        raise
    stop.set()
    thread.join()
    with contextlib.suppress(OSError):
        touch(run, in_task=False)
