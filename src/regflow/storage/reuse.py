"""The stage-reuse rule: may a stage take a stored run's outputs instead of being recomputed?

One rule for both callers: a run's incremental recomputation (``runtime/reuse.py``, from the
cob's latest successful run) and the adjustment preview (``cli/adjust_preview.py``, from the
run a rule change is compared with). A stage is reused from the *base* run only when all of
these hold, else it is recomputed (and the rule says why):

* it is not a sink (a warehouse star stamps its rows with the run's identity);
* every upstream stage was itself taken from the same base run (an upstream stage that ran
  may have produced other rows, even with an unchanged spec);
* the base run is published, and has the stage's report and every output the stage writes
  now, each written by a node whose data hash equals this plan's (the hash covers the node's
  op, params, inputs' hashes, operator code and its adjustment rules; owners and docs are
  metadata and do not count) and by the same regflow version;
* the run's params are the base run's, and every source the stage reads is read from the
  same place with the same data: a late correction of a source makes every stage reading
  it, and everything downstream, recompute.

A source's identity is the same in every checkout of the project, so that a pull request
checked out in another folder (CI's case) reuses the stages its change cannot touch: its
place is its path relative to the project root for a file kept with the project (such as
the LCR's ``pipelines/reference/lcr_categories.csv``), its absolute path (or ``s3://`` URL)
outside it (:func:`source_location`); its data is a hash of the files' bytes up to 64 MiB in
all, above that of their names, sizes and modification times, and on S3 of the objects'
names, sizes and ETags (``runtime/sources/identity.py``). A stage report written before
places were recorded is compared by its absolute path.

Pure Python (no pyspark): it reads the base run's reports and metadata; the caller says which
upstream stages it took from the base run and where each source is now.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from regflow import __version__
from regflow.errors import RegflowError, StorageError
from regflow.plan.model import Plan, Stage
from regflow.project import project_root
from regflow.storage import RUN_SUCCESS_FILE, RunRef

SourceState = Callable[[str], tuple[str, str]]
"""A source's data now, by source name: (resolved path, fingerprint of its files), as the
stage reports record them; raises a :class:`RegflowError` when the source cannot be found."""


def why_outputs_differ(
    plan: Plan,
    stage: Stage,
    run: RunRef,
    report: Mapping[str, Any],
    *,
    same_version: bool = False,
) -> str | None:
    """Why the outputs ``report`` (``stage``'s report in ``run``) lists are not what ``plan``
    writes now; None when they are: every output and checkpoint of the stage is listed (a
    star's as its ``<node>.<table>`` outputs), each committed by one of the stage's nodes
    with this plan's data hash, and with ``same_version`` by this regflow version."""
    outputs = {o["name"] for o in report.get("outputs", [])}
    for name in [*stage.outputs, *stage.checkpoints]:
        if name not in outputs and not any(n.startswith(f"{name}.") for n in outputs):
            return f"run {run.run_id} did not store '{name}'"
    for name in sorted(outputs):
        try:
            meta = run.metadata(name)
        except StorageError:
            return f"'{name}' of run {run.run_id} is incomplete"
        node = meta.get("node", "")
        if node not in stage.nodes or meta.get("node_hash") != plan.node(node).data_hash:
            return f"node '{node}' changed since run {run.run_id}"
        if same_version and meta.get("code_version") != f"regflow {__version__}":
            return f"run {run.run_id} was computed by {meta.get('code_version')}"
    return None


def source_location(path: str | Path, project_dir: str | Path | None) -> str:
    """Where a source is read from, the same in every checkout of the project: ``path``
    relative to the project root when it is inside it (``pipelines/reference/x.csv``), else
    ``path`` itself (absolute, or ``s3://bucket/prefix``)."""
    if project_dir and not str(path).startswith("s3://"):
        try:
            return Path(path).resolve().relative_to(Path(project_dir).resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def why_not_reusable(
    plan: Plan,
    stage: Stage,
    base: RunRef,
    *,
    params: Mapping[str, Any],
    reused: Collection[str],
    source_state: SourceState,
) -> str | None:
    """Why ``stage`` of ``plan`` cannot take ``base``'s outputs; None when it can.

    ``params``: the run's params; ``reused``: the stages of this run already taken from
    ``base``; ``source_state``: where each source's data is now (see :data:`SourceState`).
    """
    if plan.node(stage.id).lineage == "sink":
        return "it lands data for the warehouse, stamped with the run's identity"
    for up in stage.upstream:
        if up not in reused:
            return f"upstream stage '{up}' was recomputed"
    report = base.stage_report(stage.id)
    if not report.exists():
        return f"run {base.run_id} has no report of it"
    done = json.loads(report.read_text())
    published = base.run_dir / RUN_SUCCESS_FILE
    if not published.exists():
        return f"run {base.run_id} is not a successful run"
    summary = json.loads(published.read_text())
    if dict(summary.get("params") or {}) != dict(params):
        return f"the run's params differ from run {base.run_id}'s"
    why = why_outputs_differ(plan, stage, base, done, same_version=True)
    if why is not None:
        return why
    root = project_root(plan.file) if stage.sources else None
    for name in stage.sources:
        was = done.get("sources", {}).get(name) or {}
        try:
            path, fingerprint = source_state(name)
        except RegflowError:
            return f"source '{name}' cannot be found"
        if "location" in was:
            was_at, now_at = was["location"], source_location(path, root)
        else:  # a report from before places were recorded: its absolute path
            was_at, now_at = was.get("path"), path
        if was_at != now_at:
            return (
                f"source '{name}' changed since run {base.run_id}: read from {now_at}, not {was_at}"
            )
        if was.get("fingerprint") != fingerprint:
            return f"source '{name}' changed since run {base.run_id}: its files differ"
    return None


def reusable_stages(
    plan: Plan, base: RunRef, *, params: Mapping[str, Any], source_state: SourceState
) -> dict[str, str | None]:
    """Every stage of ``plan``, in order, with why it cannot take ``base``'s outputs (None:
    it can), each reusable stage counting as taken for the stages downstream of it."""
    out: dict[str, str | None] = {}
    for stage in plan.stages:
        reused = {s for s, why in out.items() if why is None}
        out[stage.id] = why_not_reusable(
            plan, stage, base, params=params, reused=reused, source_state=source_state
        )
    return out
