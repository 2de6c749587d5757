"""Storage's commit point for a run: ``_RUN_SUCCESS``, then ``_LATEST`` moved by
compare-and-swap; and its compensation when the warehouse cannot follow.

Locally ``_LATEST`` is replaced atomically (``os.replace``) after checking that it still names
the run it named when the publish began; the cob's claim (``storage/claim.py``) keeps any
other run of the cob from moving it in between. On S3 the same step is a conditional put
(``If-Match`` on the ETag read at the start).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from regflow.errors import StorageError
from regflow.storage import LATEST_FILE, RUN_SUCCESS_FILE, RunRef, write_json_atomic


@dataclass(frozen=True)
class LatestState:
    """What ``_LATEST`` held before a publish: its run id (None: no file) and content."""

    run_id: str | None
    content: dict[str, Any] | None


def read_latest(run: RunRef) -> LatestState:
    path = run.cob_dir / LATEST_FILE
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        return LatestState(None, None)
    return LatestState(str(content.get("run_id")), content)


def mark_success(run: RunRef, summary: dict[str, Any]) -> None:
    write_json_atomic(run.run_dir / RUN_SUCCESS_FILE, summary)


def move_latest(run: RunRef, summary: dict[str, Any], expected: LatestState) -> None:
    """Point the cob's ``_LATEST`` at ``run``, if it still names ``expected.run_id``."""
    now = read_latest(run)
    if now.run_id != expected.run_id:
        raise StorageError(
            f"the latest run of {run.pipeline} cob {run.cob} moved from {expected.run_id} to "
            f"{now.run_id} while run {run.run_id} was publishing; run {run.run_id} is not "
            "published (was the cob's claim removed by hand?)"
        )
    write_json_atomic(run.cob_dir / LATEST_FILE, {"run_id": run.run_id, **summary})


def undo_publish(run: RunRef, previous: LatestState) -> None:
    """Put ``_LATEST`` back to ``previous`` (if it still names ``run``), then unmark ``run``:
    in this order, so that a kill in between leaves ``_LATEST`` on a successful run."""
    if read_latest(run).run_id == run.run_id:
        path = run.cob_dir / LATEST_FILE
        if previous.content is None:
            path.unlink(missing_ok=True)
        else:
            write_json_atomic(path, previous.content)
    (run.run_dir / RUN_SUCCESS_FILE).unlink(missing_ok=True)
