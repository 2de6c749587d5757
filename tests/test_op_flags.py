"""Op behaviour as flags on the op definition, and the one reader of adjustment node ids.

The other layers ask an op's flags (``carries_audits``, ``main_inputs``,
``lands_in_warehouse``, ``applies_rules``), through ``Plan.op_of`` and its helpers, never
its name; ``plan.splice.spliced_at`` is the one place that reads ``X__adjusted`` back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from regflow.core.names import adjusted_id
from regflow.ops import registry
from regflow.plan.build import build_plan
from regflow.plan.model import task_id_of
from regflow.plan.splice import spliced_at

ROOT = Path(__file__).resolve().parent.parent

FLAGS = ("carries_audits", "main_inputs", "lands_in_warehouse", "applies_rules")
# op: (carries_audits, main_inputs, lands_in_warehouse, applies_rules), as issue 19 fixes them
EXPECTED = {
    "calc": (True, None, False, False),
    "filter": (True, None, False, False),
    "join": (True, 1, False, False),
    "classify": (True, None, False, False),
    "adjust": (True, None, False, True),
    "aggregate": (False, None, False, False),
    "union": (False, None, False, False),
    "star_schema": (False, None, True, False),
}


@pytest.mark.parametrize("op", sorted(EXPECTED))
def test_builtin_op_flags(op):
    d = registry.get(op)
    assert tuple(getattr(d, f) for f in FLAGS) == EXPECTED[op]
    assert not hasattr(d, "keeps_keys")  # declared once, never read: gone


def test_an_op_not_registered_here_has_the_default_flags():
    # a custom op of a plan read from the cache, before its operator file is imported
    d = registry.definition("an_op_of_an_unimported_operator_file")
    assert tuple(getattr(d, f) for f in FLAGS) == (False, None, False, False)
    assert d.main_of(("a", "b")) == ("a", "b")


def test_the_plan_asks_flags_not_names():
    plan = build_plan(ROOT / "pipelines" / "lcr.yaml")  # with adjustments/lcr/'s three rules
    assert [n.id for n in plan.star_nodes()] == ["lcr_star"]
    assert plan.task_ids()[-1] == "load_lcr_star"
    assert [n.id for n in plan.adjustment_nodes()] == [
        "classify__adjusted",
        "weigh__adjusted",
        "entity_buckets__adjusted",
    ]
    # a join's rows are its left input's; the lookup only adds columns
    assert plan.node("weigh_factors").inputs == ("classify__adjusted", "lcr_categories")
    assert plan.main_inputs("weigh_factors") == ("classify__adjusted",)
    # a star reads every input
    assert len(plan.main_inputs("lcr_star")) == 4


def test_adjusted_ids_are_read_back_in_one_place():
    assert adjusted_id("weigh") == "weigh__adjusted"
    assert adjusted_id("weigh", "before") == "weigh__adjusted_before"
    assert spliced_at("weigh__adjusted") == ("weigh", "after")
    assert spliced_at("weigh__adjusted_before") == ("weigh", "before")
    assert spliced_at("weigh") is None
    assert spliced_at("__adjusted") is None  # no node before the suffix
    # the task id drops the suffix unless the node the rules follow is a stage of its own
    assert task_id_of("weigh__adjusted", {"weigh__adjusted"}) == "weigh"
    assert task_id_of("total__adjusted", {"total", "total__adjusted"}) == "total__adjusted"
    assert task_id_of("weigh__adjusted_before", {"weigh__adjusted_before"}) == (
        "weigh__adjusted_before"
    )
