"""What the Airflow tasks run. Imported only when a task executes, never at parse time."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from regflow.errors import PlanChangedError
from regflow.plan.cache import load_pinned, plan_pin
from regflow.plan.cob import cob_of_run, parse_cob
from regflow.plan.model import Plan
from regflow.project import project_root, spec_identity
from regflow.project import run_params as checked_params
from regflow.settings import Settings, current
from regflow.storage import RunRef, resolve_root, safe_run_id, write_json_atomic
from regflow.storage.fs import Location, put_if_absent


@dataclass(frozen=True)
class RunContext:
    """What one task of one run works on, built once per task by :func:`_run_context`."""

    plan: Plan
    cob: dt.date
    run: RunRef
    params: dict[str, Any]  # checked, without the control params
    settings: Settings


# The file in a run's folder that names the plan its first task ran: every later task of
# the run (a retry too) runs that plan, never one the files give after a change
PLAN_PIN_FILE = "_PLAN"


def _pin_run(run: RunRef, pin: str) -> str:
    """The plan key the run is pinned to: the one its first task recorded, else ``pin``."""
    path = run.run_dir / PLAN_PIN_FILE
    if not path.exists():
        put_if_absent(path, pin.encode())  # never replaces another task's record
    return path.read_text().strip() or pin


Record = Callable[[Plan, RunRef, BaseException], None]


def _run_context(
    context: dict[str, Any],
    spec_file: str,
    adjustments_dir: str | None,
    plan_key: str | None,
    record: Record,
) -> RunContext:
    """The plan (exactly the one the DAG was built from, ``plan_key``), the cob, the run and
    its checked params. A failure once the run is known is recorded with ``record``."""
    try:
        plan = load_pinned(spec_file, adjustments=adjustments_dir, pin=plan_key)
    except PlanChangedError as exc:
        if isinstance(exc.current, Plan):  # say it where `regflow run` and operators look
            record(exc.current, _run_ref(context, exc.current, _cob(context, exc.current)), exc)
        raise
    cob = _cob(context, plan)
    run = _run_ref(context, plan, cob)
    try:
        own = plan_key or plan_pin(plan)  # (load_pinned gave exactly plan_key's plan)
        pinned = _pin_run(run, own)
        if pinned != own:  # an earlier task of this run ran another plan
            plan = load_pinned(spec_file, adjustments=adjustments_dir, pin=pinned)
        params = _run_params(context, plan)  # a bad trigger is refused before any claim
    except Exception as exc:
        record(plan, run, exc)
        raise
    return RunContext(plan, cob, run, params, current())


def _run_ref(context: dict[str, Any], plan: Plan, cob: dt.date) -> RunRef:
    """The one place a task builds its run reference: where the cob becomes a path."""
    run_id = safe_run_id(str(context["run_id"]))
    return RunRef(_storage_root(plan), plan.pipeline, cob.isoformat(), run_id)


def _cob(context: dict[str, Any], plan: Plan | None = None) -> dt.date:
    """The run's cob: its ``cob`` param, else the spec's cob rule (see
    :mod:`regflow.plan.cob`) applied to the date the run is stamped with."""
    params = context.get("params") or {}
    cob = params.get("cob")
    if cob:
        return parse_cob(cob, "the run's cob param")
    for key in ("logical_date", "data_interval_end"):
        value = context.get(key)
        if value is not None:
            return _cob_of_run(value.date(), plan)
    dag_run = context.get("dag_run")
    run_after = getattr(dag_run, "run_after", None)
    return _cob_of_run((run_after or dt.datetime.now(dt.UTC)).date(), plan)


def _cob_of_run(run_date: dt.date, plan: Plan | None) -> dt.date:
    if plan is None:
        return run_date
    return cob_of_run(run_date, plan.cob_rule, plan.cob_holidays)


# The DAG params that steer a run rather than feed the calculation
CONTROL_PARAMS = ("cob", "recompute")


def _run_params(context: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The run's params as the calculation sees them (without the control params): an
    unknown name (a misspelt key in a trigger's conf) is refused, and a relative path param
    means relative to the project root, as in `regflow run`."""
    params = dict(context.get("params") or {})
    for name in CONTROL_PARAMS:
        params.pop(name, None)
    return checked_params(
        params,
        declared=plan.params,
        source_paths=[s.path for s in plan.sources],
        root=project_root(plan.file),
        pipeline=plan.pipeline,
    )


def _storage_root(plan: Plan) -> Location:
    """``$REGFLOW_STORAGE``, else the plan's project's ``.regflow/storage`` (never the
    worker's current folder)."""
    return resolve_root(project=project_root(plan.file))


def _reuse_from(context: dict[str, Any], run: RunRef) -> RunRef | None:
    """The earlier run whose unchanged stages this run may take (``recompute: changed``,
    the default): the cob's latest successful run; None for ``recompute: all``."""
    from regflow.errors import StorageError
    from regflow.storage import latest_run

    if (context.get("params") or {}).get("recompute", "changed") == "all":
        return None
    try:
        base = latest_run(run.root, run.pipeline, run.cob)
    except StorageError:
        return None
    return None if base.run_id == run.run_id else base


# What the tasks of this process recorded (``regflow run`` runs them in-process through
# dag.test): read by the CLI when a record could not be written (a full or read-only disk).
RECORDED: list[dict[str, Any]] = []


def _record_error(
    run: RunRef, task_id: str, exc: BaseException, node: str | None, task: str | None = None
) -> None:
    """Keep the user-facing message next to the run, for `regflow run` and for operators:
    a ``RegflowError``'s own message; for anything else (a full disk, an unreachable
    warehouse, a crash) its cause, the node and the fix (:mod:`regflow.failures`). Filed
    under ``task_id`` (the stage id); ``task`` is the Airflow task id users see."""
    import sys

    from regflow.errors import RegflowError
    from regflow.failures import explain

    node = getattr(exc, "node", None) or node
    if isinstance(exc, RegflowError):
        message, fix = str(exc), ""
    else:
        why = explain(exc, node=node if node != (task or task_id) else None)
        message, fix = f"{why.cause}; to fix: {why.fix}", why.fix
    record = {
        "stage": task or task_id,
        "error": type(exc).__name__,
        "message": message,
        "node": node,
        "fix": fix,
    }
    RECORDED.append(record)
    try:
        write_json_atomic(run.run_dir / "_stages" / f"{task_id}.error.json", record)
    except OSError as err:  # the storage itself failed: the log and RECORDED keep it
        print(f"regflow: could not record the failure in {run.run_dir}: {err}", file=sys.stderr)
    print(f"regflow: task {task or task_id} failed: {message}", file=sys.stderr)  # task log


def run_stage_task(
    spec_file: str,
    stage_id: str,
    context: dict[str, Any],
    adjustments_dir: str | None = None,
    plan_key: str | None = None,
) -> dict[str, Any]:
    from regflow.render.faults import fault_point
    from regflow.render.publish import reconcile_after_takeover
    from regflow.runtime import progress
    from regflow.runtime.executor import run_stage
    from regflow.runtime.policy import ExecutionPolicy
    from regflow.storage import claim

    def record(plan: Plan, run: RunRef, exc: BaseException) -> None:
        task = plan.task_id(stage_id) if stage_id in {s.id for s in plan.stages} else stage_id
        _record_error(run, stage_id, exc, task, task=task)

    ctx = _run_context(context, spec_file, adjustments_dir, plan_key, record)
    plan, run = ctx.plan, ctx.run
    try:
        with claim.held(run, log=progress.log) as held:
            if held.get("taken_over_from"):
                reconcile_after_takeover(plan, run, held["taken_over_from"], progress.log)
            fault_point(f"stage:{stage_id}")
            report = run_stage(
                plan,
                stage_id,
                cob=run.cob,
                run_id=run.run_id,
                root=run.root,
                params=ctx.params,
                reuse_from=_reuse_from(context, run),
                policy=ExecutionPolicy.for_mode(ctx.settings.engine),  # the deployment's
            )
    except Exception as exc:  # any failure is the run's: say it (RegflowError or not)
        record(plan, run, exc)
        raise
    return report.to_dict()


def publish_task(
    spec_file: str,
    context: dict[str, Any],
    adjustments_dir: str | None = None,
    plan_key: str | None = None,
) -> dict[str, Any]:
    from regflow.render.publish import commit_run
    from regflow.runtime import progress
    from regflow.storage import claim

    def record(plan: Plan, run: RunRef, exc: BaseException) -> None:
        _record_error(run, "publish", exc, None)

    ctx = _run_context(context, spec_file, adjustments_dir, plan_key, record)
    plan, run, cob = ctx.plan, ctx.run, ctx.run.cob
    stages = {}
    for task_id in plan.task_ids():
        path = run.stage_report(task_id)
        stages[task_id] = json.loads(path.read_text()) if path.exists() else None
    summary = {
        "pipeline": plan.pipeline,
        "cob": cob,
        "spec_hash": plan.data_hash,
        "adjustment_set_hash": plan.adjustment_set_hash,
        "adjustments_dir": plan.adjustments_dir,
        "params": ctx.params,
        **spec_identity(plan.file),  # which spec file (in which project) published this
        "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "stages": stages,
        "adjustments": [a for s in stages.values() if s for a in s.get("adjustments", [])],
        # partial joins (require_match: false) and the rows they did not match
        "joins": {k: j for s in stages.values() if s for k, j in s.get("joins", {}).items()},
        # the exact rules this run used, so a preview can add a change on top of them
        "rules": [r for n in plan.adjustment_nodes() for r in n.params.get("rules", [])],
    }
    try:
        with claim.held(run, log=progress.log):
            # the warehouse load and the publish: one commit point (render/publish.py)
            loads = commit_run(plan, run, summary, progress.log)
    except Exception as exc:  # any failure here is the run's: say it (RegflowError or not)
        _record_error(run, "publish", exc, None)
        raise
    claim.release(run)
    for report in loads:
        write_json_atomic(run.stage_report(f"load_{report.node}"), report.to_dict())
    print(f"published run {run.run_id} of {plan.pipeline} for cob {cob}")
    return {"run_id": run.run_id, "cob": cob}


def load_task(
    spec_file: str,
    node_id: str,
    context: dict[str, Any],
    adjustments_dir: str | None = None,
    plan_key: str | None = None,
) -> dict[str, Any]:
    """Prepare the warehouse (REGFLOW_WAREHOUSE) for the star staged by ``node_id``: DDL,
    column checks, staged tables complete. Its rows land at ``publish``, in the run's single
    commit point with storage (render/publish.py)."""
    from regflow.render.faults import fault_point
    from regflow.render.publish import prepare_star
    from regflow.runtime import progress
    from regflow.storage import claim

    stage_id = f"load_{node_id}"

    def record(plan: Plan, run: RunRef, exc: BaseException) -> None:
        _record_error(run, stage_id, exc, node_id)

    ctx = _run_context(context, spec_file, adjustments_dir, plan_key, record)
    plan, run = ctx.plan, ctx.run
    try:
        with claim.held(run, log=progress.log):
            fault_point(f"load:{node_id}")
            out = prepare_star(plan, run, node_id, progress.log)
    except Exception as exc:  # any failure is the run's: say it (RegflowError or not)
        _record_error(run, stage_id, exc, node_id)
        raise
    write_json_atomic(run.stage_report(stage_id), out)
    return out
