"""Storage's commit point for a run: ``_RUN_SUCCESS`` (a conditional put: never overwritten),
then ``_LATEST`` moved by compare-and-swap; and its compensation when the warehouse cannot
follow.

``_LATEST`` is read with a tag (S3: its ETag; locally: its content's hash) when the publish
begins, and replaced only if it still has that tag (S3: ``If-Match``; locally: checked and
replaced under a file lock), or created only if there is none (``If-None-Match: *``). The
cob's claim (``storage/claim.py``) keeps any other run of the cob from moving it in between;
the compare-and-swap makes a claim removed by hand fail loudly instead of losing a publish.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from regflow.errors import StorageError
from regflow.storage import LATEST_FILE, RUN_SUCCESS_FILE, RunRef, fs, put_json_if_absent


@dataclass(frozen=True)
class LatestState:
    """What ``_LATEST`` held before a publish: its run id (None: no file), content and tag
    (for the compare-and-swap)."""

    run_id: str | None
    content: dict[str, Any] | None
    tag: str | None = None


def read_latest(run: RunRef) -> LatestState:
    got = fs.read_with_tag(run.cob_dir / LATEST_FILE)
    if got is None:
        return LatestState(None, None)
    content = json.loads(got[0])
    return LatestState(str(content.get("run_id")), content, got[1])


def mark_success(run: RunRef, summary: dict[str, Any]) -> None:
    """``_RUN_SUCCESS``, put only if absent (a retried publish finds its own and keeps it)."""
    put_json_if_absent(run.run_dir / RUN_SUCCESS_FILE, summary)


def _swap(run: RunRef, expected: LatestState, content: dict[str, Any] | None) -> bool:
    """Replace ``_LATEST`` (``content`` None: remove it) if it is still ``expected``."""
    path = run.cob_dir / LATEST_FILE
    if content is None:
        return expected.tag is None or fs.delete_if_match(path, expected.tag)
    data = json.dumps(content, indent=2, sort_keys=True, default=str).encode()
    if expected.tag is None:
        return fs.put_if_absent(path, data)
    return fs.put_if_match(path, data, expected.tag)


def move_latest(run: RunRef, summary: dict[str, Any], expected: LatestState) -> None:
    """Point the cob's ``_LATEST`` at ``run``, if it still is ``expected`` (compare-and-swap)."""
    if expected.run_id == run.run_id:  # (a retried publish: already there)
        return
    if not _swap(run, expected, {"run_id": run.run_id, **summary}):
        now = read_latest(run)
        raise StorageError(
            f"the latest run of {run.pipeline} cob {run.cob} moved from {expected.run_id} to "
            f"{now.run_id} while run {run.run_id} was publishing; run {run.run_id} is not "
            "published (was the cob's claim removed by hand?)"
        )


def undo_publish(run: RunRef, previous: LatestState) -> None:
    """Put ``_LATEST`` back to ``previous`` (if it still names ``run``), then unmark ``run``:
    in this order, so that a kill in between leaves ``_LATEST`` on a successful run."""
    now = read_latest(run)
    if now.run_id == run.run_id:
        _swap(run, now, previous.content)
    (run.run_dir / RUN_SUCCESS_FILE).unlink(missing_ok=True)
