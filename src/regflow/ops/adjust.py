"""The ``adjust`` op: the node the compiler splices in for adjustment rules.

Authors never write it; ``regflow.plan.splice`` inserts one per (node, position) that has
rules, by rewiring dataset names (the consumers of ``classify`` read ``classify__adjusted``).
"""

from __future__ import annotations

from typing import Literal

from regflow.adjust.models import AdjustmentRule
from regflow.core.types import Schema
from regflow.ops.base import OpDef, OpParams


class AdjustParams(OpParams):
    at: str
    position: Literal["after", "before"] = "after"
    rules: tuple[AdjustmentRule, ...] = ()


def _schema(inputs: list[Schema], p: AdjustParams) -> Schema:
    return inputs[0]


ADJUST = OpDef(
    "adjust",
    AdjustParams,
    "rowwise",
    output_schema=_schema,
    doc="Applies approved adjustment rules (spliced in by the compiler) and audits each change.",
    carries_audits=True,
    applies_rules=True,
)
