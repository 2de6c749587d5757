"""A run's single commit point: the warehouse load and the storage publish, in one task.

Two stores cannot commit atomically without two-phase commit, which Redshift lacks. So
storage's ``_LATEST`` is the commit point and the warehouse follows it:

1. every star of the run is staged and merged in one open warehouse transaction (the load
   record names the run);
2. storage commits: ``_RUN_SUCCESS``, then ``_LATEST`` moved by compare-and-swap;
3. the warehouse commits. If that fails, storage is put back (``_LATEST`` to the previous
   run, ``_RUN_SUCCESS`` removed), unless the warehouse did commit (checked again).

A failure before 2 leaves both stores on the cob's previous successful run. A process killed
between 2 and 3 leaves storage one run ahead with the warehouse still on the previous
successful run: ``regflow warehouse info`` flags it, and ``regflow warehouse reconcile``, or
the next run of that cob (when it takes over the dead run's claim), reloads ``_LATEST``'s
run. The warehouse never holds a run that did not succeed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from regflow.plan.model import Plan
from regflow.render.faults import fault_point
from regflow.storage import RunRef
from regflow.storage.commit import mark_success, move_latest, read_latest, undo_publish

Log = Callable[[str], None]


def _target(plan: Plan) -> Any:
    from regflow.spec.loader import project_dir_of
    from regflow.warehouse.targets import resolve_target

    return resolve_target(project_dir=project_dir_of(Path(plan.file)))


def _loaders(plan: Plan, run: RunRef, target: Any, log: Log) -> list[Any]:
    from regflow.warehouse.loader import Loader
    from regflow.warehouse.model import star_model
    from regflow.warehouse.reconcile import star_nodes

    return [
        Loader(
            star_model(plan, node),
            target,
            run,
            spec_hash=plan.data_hash,
            adjustment_set_hash=plan.adjustment_set_hash,
            log=log,
        )
        for node in star_nodes(plan)
    ]


def prepare_star(plan: Plan, run: RunRef, node: str, log: Log) -> dict[str, Any]:
    """The ``load_<star>`` task: the DDL and column checks, and the staged tables' sizes. The
    rows land at ``publish``, in the run's commit."""
    from regflow.warehouse.loader import LoadReport
    from regflow.warehouse.model import star_table_name

    target = _target(plan)
    loader = next(x for x in _loaders(plan, run, target, log) if x.model.node == node)
    rows = {
        t.name: int(run.metadata(star_table_name(node, t.name))["rows"])
        for t in loader.model.tables
    }  # (and every staged table is complete)
    conn = target.connect()
    try:
        loader.prepare(conn)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    report = LoadReport(plan.pipeline, node, run.cob, run.run_id, target.display, "", rows)
    log(f"prepared {node} in {target.display}; its rows land when the run publishes")
    return {**report.to_dict(), "prepared": True}


def commit_run(plan: Plan, run: RunRef, summary: dict[str, Any], log: Log) -> list[Any]:
    """Land the run's stars and publish it as one commit point (see the module doc).
    Returns the load reports."""
    previous = read_latest(run)
    target = _target(plan) if plan.star_nodes() else None
    conn = None
    marked = moved = False
    begun: list[tuple[Any, Any, Any]] = []
    try:
        if target is not None:
            loaders = _loaders(plan, run, target, log)
            conn = target.connect()
            for loader in loaders:  # each DDL commits on its own, before the data transaction
                loader.prepare(conn)
            for loader in loaders:
                report, staged = loader.begin(conn)
                begun.append((loader, report, staged))
        fault_point("publish:loaded")
        mark_success(run, summary)
        marked = True
        move_latest(run, summary, previous)
        moved = True
        fault_point("publish:published")
        if conn is not None:
            fault_point("publish:commit")
            try:
                conn.commit()
            except BaseException:
                if _warehouse_holds(plan, run, target):
                    log(f"  the warehouse commit reported an error but holds run {run.run_id}")
                else:
                    raise
    except BaseException:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.rollback()
        if marked or moved:
            undo_publish(run, previous)
            log(
                f"  run {run.run_id} not published: storage's latest run for cob {run.cob} "
                f"is back to {previous.run_id or 'none'}"
            )
        raise
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
    for loader, _, staged in begun:
        loader.cleanup(staged)
    return [report for _, report, _ in begun]


def _warehouse_holds(plan: Plan, run: RunRef, target: Any) -> bool:
    """Whether every star's facts for the cob carry ``run``'s id (a commit that raised may
    have gone through: a lost connection during COMMIT)."""
    from regflow.warehouse.model import star_model
    from regflow.warehouse.reconcile import star_nodes, warehouse_runs

    try:
        conn = target.connect()
        try:
            return all(
                warehouse_runs(conn, target, star_model(plan, n), run.cob).get(run.cob)
                == run.run_id
                for n in star_nodes(plan)
            )
        finally:
            conn.close()
    except Exception:
        return False


def reconcile_after_takeover(plan: Plan, run: RunRef, dead_run: str, log: Log) -> None:
    """A run that took over a dead run's claim first brings the warehouse back to storage's
    latest run for the cob (the dead run may have died between the two commits). Best
    effort: this run's own publish replaces the cob anyway."""
    from regflow.warehouse.reconcile import reconcile_cob, status

    if not plan.star_nodes():
        return
    try:
        target = _target(plan)
        for state in status(plan, run.root, target, cob=run.cob):
            if not state.agree:
                log(f"run {dead_run} died mid-publish: {state.describe()}")
                reconcile_cob(plan, run.root, target, state, log=log)
    except Exception as exc:
        log(f"warning: could not reconcile the warehouse for cob {run.cob}: {exc}")
