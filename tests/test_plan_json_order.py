"""A plan read back from its JSON (the plan cache, a DAG's task, a SparkApplication's driver)
keeps the order of every mapping in it: an aggregate's measures and a calc's columns are
the output's column order, so a stage run from the cached plan writes the columns in the
same order as one run from the freshly compiled plan.

Found by tests/test_spark_standalone.py: ``entity_buckets`` written by the stage entrypoint
(cached plan) had its measures in alphabetical order, in-process (compiled plan) in spec
order; ``Plan.__eq__`` did not see it (dict equality ignores order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from regflow.plan.compiler import compile_file
from regflow.plan.model import Plan

ROOT = Path(__file__).resolve().parent.parent


def _orders(value: Any, path: str = "") -> dict[str, list[str]]:
    """Every mapping's key order, by its path in the value."""
    out: dict[str, list[str]] = {}
    if isinstance(value, dict):
        out[path] = list(value)
        for k, v in value.items():
            out.update(_orders(v, f"{path}/{k}"))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            out.update(_orders(v, f"{path}/{i}"))
    return out


def test_round_trip_keeps_the_spec_order_of_params() -> None:
    plan = compile_file(ROOT / "pipelines" / "lcr.yaml")
    again = Plan.from_json(plan.to_json())
    measures = list(plan.node("entity_buckets").params["measures"])
    assert measures == ["l1", "l2a", "l2b", "outflows", "inflows"]  # pipelines/lcr.yaml
    assert list(again.node("entity_buckets").params["measures"]) == measures
    for before, after in zip(plan.nodes, again.nodes, strict=True):
        assert _orders(after.params) == _orders(before.params), before.id
    assert _orders(again.params) == _orders(plan.params)
