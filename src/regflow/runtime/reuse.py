"""Incremental recomputation: a stage whose result cannot have changed since an earlier run
of the same cob takes that run's outputs instead of recomputing them.

A stage is reused from the *base* run (the cob's latest successful run) only when all of
these hold, else it runs (and says why):

* it is not a sink (a warehouse star stamps its rows with the run's identity);
* every upstream stage of this run was reused from the same base run (an upstream stage
  that ran may have produced other rows, even with an unchanged spec);
* the base run has the stage's report and every output the stage writes now, each written
  by a node whose data hash equals this plan's (the hash covers the node's op, params,
  inputs' hashes, operator code and its adjustment rules; owners and docs are metadata and
  do not count) and by the same regflow version;
* the run's params are the base run's, and every source the stage reads resolves to the
  same path with the same files (names, sizes, modification times): a late correction of
  a source makes every stage reading it, and everything downstream, recompute.

A reused output refers to the base run's committed data instead of copying or linking it
(S3 has no links): its attempt holds only its metadata, naming this run and
``reused_from``, and its marker names the base run's data prefix (``regflow gc`` keeps data
a kept run refers to). The audits' rows carry the run's identity in their columns, so they
are rewritten with this run's into the attempt (they hold the changed rows only: small).
Every output of a run then describes that run, whether it was computed or reused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from regflow.plan.model import Plan, Stage
from regflow.runtime.parquet import parquet_dataset, parquet_files, write_parquet_table
from regflow.runtime.report import run_identity
from regflow.runtime.sources import fingerprint, resolve_source_path
from regflow.storage import RunRef, commit_attempt, discard, new_attempt, write_json_atomic
from regflow.storage.fs import Location
from regflow.storage.reuse import why_not_reusable, why_outputs_differ


def why_not_reuse(
    plan: Plan,
    stage: Stage,
    run: RunRef,
    base: RunRef,
    variables: Mapping[str, Any],
    params: Mapping[str, Any],
) -> str | None:
    """Why ``stage`` cannot take ``base``'s outputs for ``run``; None when it can (the rule:
    :func:`regflow.storage.reuse.why_not_reusable`, shared with the adjustment preview)."""
    reused = {
        up for up in stage.upstream if (_report(run, up) or {}).get("reused_from") == base.run_id
    }

    def source_state(name: str) -> tuple[str, str]:
        path, files = resolve_source_path(plan.source(name), dict(variables))
        return str(path), fingerprint(files)

    return why_not_reusable(
        plan, stage, base, params=params, reused=reused, source_state=source_state
    )


def completed_report(plan: Plan, stage: Stage, run: RunRef) -> dict[str, Any] | None:
    """The report of ``stage`` when an earlier attempt of this same ``run`` completed it (its
    report written, every output it lists committed by this plan's nodes), else None.

    A retried stage task (the worker died after the stage finished, before Airflow heard of
    it) then returns at once instead of recomputing outputs the commit protocol would
    discard anyway: a committed output is never replaced, and a retry only ever keeps the
    first commit. A stage left half done (no report) is recomputed."""
    done = _report(run, stage.id)
    if done is None or done.get("run_id") != run.run_id:
        return None
    return done if why_outputs_differ(plan, stage, run, done) is None else None


def reuse_stage(
    plan: Plan,
    stage: Stage,
    run: RunRef,
    base: RunRef,
    run_meta: Mapping[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Take ``base``'s outputs of ``stage`` into ``run``; returns the stage's report (the
    base run's, naming this run and ``reused_from``), also written with the run."""
    t0 = time.perf_counter()
    done = _report(base, stage.id)
    assert done is not None  # (checked by why_not_reuse)
    identity = run_identity(plan, run, run_meta)
    outputs = []
    for out in done.get("outputs", []):
        name = out["name"]
        meta = base.metadata(name)
        tmp = new_attempt(run, name)
        data: Location | None = base.node_dir(name)  # (by reference: nothing copied)
        try:
            if meta.get("kind") == "audit":
                _restamp_audit(base.node_dir(name), tmp, identity)
                data = None  # (the rewritten rows, in the attempt)
            meta = {
                **meta,
                **identity,
                "metadata_hash": plan.metadata_hash,
                "reused_from": base.run_id,
                "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            final = commit_attempt(run, name, tmp, meta, data)
        except BaseException:
            discard(tmp)
            raise
        outputs.append({**out, "path": str(final), "seconds": 0.0})
        log(f"  reused {name}: {out['rows']:,} rows (run {base.run_id})")
    report = {
        **done,
        "run_id": run.run_id,
        "outputs": outputs,
        "reused_from": base.run_id,
        "seconds": round(time.perf_counter() - t0, 3),  # (what taking them cost)
    }
    write_json_atomic(run.stage_report(stage.id), report)
    return report


def _report(run: RunRef, stage: str) -> dict[str, Any] | None:
    path = run.stage_report(stage)
    return json.loads(path.read_text()) if path.exists() else None


def _restamp_audit(src: Location, dst: Location, identity: Mapping[str, str]) -> None:
    """Write an audit's Parquet files in ``src`` into the attempt ``dst``, with ``identity``
    (:func:`run_identity`) in its run columns."""
    import pyarrow as pa

    for f in parquet_files(src):
        table = parquet_dataset([f]).read()
        for name in identity:
            i = table.schema.get_field_index(name)
            if i >= 0:
                field = table.schema.field(i)
                value = pa.array([identity[name]] * table.num_rows, pa.string())
                table = table.set_column(i, field, value.cast(field.type))
        write_parquet_table(table, dst, name=f.name)
