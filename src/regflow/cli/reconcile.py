"""`regflow warehouse info`'s comparison of warehouse and storage, and
`regflow warehouse reconcile`: per cob, the run the warehouse holds against `_LATEST`."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

from regflow.errors import ConfigError, RegflowError
from regflow.storage.fs import Location


def _plans(project: Path, pipeline: str | None) -> list[Any]:
    from regflow.cli.common import resolve_spec
    from regflow.plan.cache import load_plan

    if pipeline:
        specs = [resolve_spec(pipeline)]
    else:
        folder = project / "pipelines"
        specs = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []
    plans = []
    for spec in specs:
        try:
            plan = load_plan(spec)
        except RegflowError as exc:
            if pipeline:
                raise
            print(f"  (skipped {spec.name}: it does not compile: {str(exc).splitlines()[0]})")
            continue
        if plan.star_nodes():
            plans.append(plan)
    return plans


def print_agreement(project: Path, root: Location, target: Any) -> int:
    """Per star and cob, the warehouse's run against storage's; returns the disagreements."""
    from regflow.warehouse.reconcile import status

    bad = 0
    for plan in _plans(project, None):
        try:
            states = status(plan, root, target)
        except Exception as exc:  # tables unlike the spec (not migrated yet), a lost server
            from regflow.redaction import scrub

            reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            print(
                f"  runs of {plan.pipeline}: cannot compare with storage "
                f"({type(exc).__name__}: {reason}); `regflow warehouse migrate "
                f"{plan.pipeline} --dry-run` shows what differs from the spec"
            )
            bad += 1
            continue
        if not states:
            continue
        print(f"  runs of {plan.pipeline} (storage {root}):")
        for s in states:
            bad += not s.agree
            print(f"    {s.describe().split(': ', 1)[0]}: " + _short(s))
    if bad:
        print(
            f"  {bad} cob(s) disagree: `regflow warehouse reconcile` brings the warehouse to "
            "the run storage serves"
        )
    return bad


def _short(s: Any) -> str:
    if s.agree:
        return f"ok, run {s.storage_run or '(none)'}"
    return (
        f"DISAGREE: storage serves {s.storage_run or 'no successful run'}, "
        f"the warehouse holds {s.warehouse_run or 'no facts'}"
    )


def reconcile(
    project: Path, root: Location, target: Any, pipeline: str | None, cob: str | None
) -> int:
    """Bring every disagreeing cob to storage's run, under the cob's claim."""
    from regflow.storage import RunRef, claim
    from regflow.warehouse.reconcile import reconcile_cob, status

    plans = _plans(project, pipeline)
    if pipeline and not plans:
        raise ConfigError(f"pipeline '{pipeline}' has no star_schema node: nothing to reconcile")
    fixed = 0
    for plan in plans:
        for state in status(plan, root, target, cob=cob):
            if state.agree:
                print(f"{state.describe()}: ok")
                continue
            ref = RunRef(root, plan.pipeline, state.cob, f"reconcile-{uuid.uuid4().hex[:8]}")
            claim.acquire(ref, log=lambda m: print(m, file=sys.stderr))  # refuses if a run is on
            try:
                # again under the claim: a run may have published in between
                again = [
                    s
                    for s in status(plan, root, target, cob=state.cob)
                    if s.node == state.node and not s.agree
                ]
                for s in again:
                    reconcile_cob(plan, root, target, s, log=print)
                    fixed += 1
            finally:
                claim.release(ref)
    print(f"{fixed} cob(s) reconciled")
    return 0
