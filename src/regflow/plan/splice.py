"""Splice adjustment nodes into a spec by rewiring dataset names (as Kedro inserts nodes).

For rules *after* node X, a node ``X__adjusted`` reads X and every consumer of X reads
``X__adjusted`` instead. For rules *before* X, ``X__adjusted_before`` reads X's main input
and X reads it. An adjustment is a node of the ``adjust`` op. Four places treat it apart,
each through a flag of the op definition (:class:`regflow.ops.base.OpDef`), not its name:
the stage runner keeps the audit tags of applied rules on the rows of ``carries_audits``
ops (calc, filter, join, classify, adjust) and writes them out before any other op; the
star flags the rows an ``applies_rules`` node upstream changed; the trace collects the
audits of ``applies_rules`` nodes and follows only a node's ``main_inputs``; the plan lists
them (``Plan.adjustment_nodes``). :func:`spliced_at` is the one place that reads an
adjustment node's id back.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from regflow.adjust.models import AdjustmentRule
from regflow.core.names import ADJUSTED_AFTER, ADJUSTED_BEFORE, adjusted_id
from regflow.ops.adjust import ADJUST, AdjustParams
from regflow.spec.loader import LoadedSpec
from regflow.spec.models import NodeSpec


def spliced_at(name: str) -> tuple[str, str] | None:
    """The (node, position) of the rules an adjustment node's id names (see
    :func:`regflow.core.names.adjusted_id`): ``X__adjusted`` is ``(X, "after")``,
    ``X__adjusted_before`` is ``(X, "before")``; any other name is ``None``."""
    for suffix, position in ((ADJUSTED_BEFORE, "before"), (ADJUSTED_AFTER, "after")):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name.removesuffix(suffix), position
    return None


def splice(loaded: LoadedSpec, rules: list[AdjustmentRule]) -> LoadedSpec:
    if not rules:
        return loaded
    spec = loaded.spec
    groups: dict[tuple[str, str], list[AdjustmentRule]] = defaultdict(list)
    for r in rules:
        groups[(r.stage, r.position)].append(r)
    nodes = list(spec.nodes)

    def rewire(old: str, new: str, skip: str) -> None:
        for i, n in enumerate(nodes):
            if n.id != skip and old in n.inputs:
                nodes[i] = n.model_copy(
                    update={"inputs": tuple(new if x == old else x for x in n.inputs)}
                )

    for (stage, position), group in sorted(groups.items()):
        group = sorted(group, key=lambda r: r.rule_id)
        adj = adjusted_id(stage, position)
        desc = "Adjustment rules " + ", ".join(r.rule_id for r in group)
        params = AdjustParams.model_validate(
            {"at": stage, "position": position, "rules": tuple(group)}
        )
        if position == "after":
            node = NodeSpec(id=adj, op=ADJUST.name, inputs=(stage,), description=desc)
            rewire(stage, adj, skip=adj)
            ids = [n.id for n in nodes]
            at = ids.index(stage) + 1 if stage in ids else 0
        else:
            ids = [n.id for n in nodes]
            k = ids.index(stage)
            target = nodes[k]
            node = NodeSpec(id=adj, op=ADJUST.name, inputs=(target.inputs[0],), description=desc)
            nodes[k] = target.model_copy(update={"inputs": (adj, *target.inputs[1:])})
            at = k
        nodes.insert(at, node.model_copy(update={"params": params}))
    new_spec = spec.model_copy(update={"nodes": tuple(nodes)})
    return replace(loaded, spec=new_spec)
