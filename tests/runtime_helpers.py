"""Helpers shared by the runtime tests: an op context, an adjustment rule, and running every
stage of a plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from regflow.adjust.models import AdjustmentRule
from regflow.runtime.context import OpContext
from regflow.runtime.executor import StageReport, run_stage
from regflow.runtime.policy import ExecutionPolicy

COB = "2026-03-31"


def rule(rule_id: str, conditions: list[dict], adjustments: list[dict]) -> AdjustmentRule:
    """An approved rule in force on ``COB`` (pipeline ``t``, splice point ``n``)."""
    return AdjustmentRule.model_validate(
        {
            "rule_id": rule_id,
            "pipeline": "t",
            "stage": "n",
            "conditions": conditions,
            "adjustments": adjustments,
            "effective_date": "2026-01-01",
            "approval": {
                "requested_by": "maker",
                "approved_by": "checker",
                "timestamp": "2026-01-02T09:00:00Z",
            },
            "reason": "test",
        }
    )


def ctx(
    node: str = "n",
    inputs: tuple[str, ...] = ("a", "b"),
    input_rows: tuple[int | None, ...] = (),
    policy: ExecutionPolicy | None = None,
) -> OpContext:
    """The context a built-in op gets, for calling it directly (``input_rows``: what the
    runtime knows of each input's size without a Spark job; ``policy``: the engine's)."""
    return OpContext(
        pipeline="p", node=node, cob=COB, run_id="r", inputs=inputs, input_rows=input_rows,
        policy=policy or ExecutionPolicy(),
    )  # fmt: skip


def run_all_stages(
    plan: Any,
    root: Path,
    run_id: str,
    spark: Any,
    params: dict[str, str] | None = None,
    *,
    cob: str = COB,
    policy: Any = None,
    on_written: Any = (),
) -> list[StageReport]:
    """Every stage of ``plan`` in order, as the Airflow tasks would run them, quietly, with
    the execution ``policy`` given (the ``engine`` fixture's)."""
    return [
        run_stage(
            plan,
            s.id,
            cob=cob,
            run_id=run_id,
            root=root,
            params=params,
            spark=spark,
            log=lambda _msg: None,
            policy=policy,
            on_written=on_written,
        )
        for s in plan.stages
    ]
