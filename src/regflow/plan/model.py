"""The plan: a frozen, serialisable description of what will run.

Nodes carry their inferred output schemas; stages are the units Airflow runs as tasks.
``regflow plan`` prints these very objects, and the runtime executes them.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any

from regflow.core.types import Column, Schema
from regflow.ops import registry
from regflow.ops.base import OpDef
from regflow.plan.splice import spliced_at


def task_id_of(stage_id: str, stage_ids: Collection[str] = ()) -> str:
    """A stage's Airflow task id: the stage id, without the ``__adjusted`` suffix a stage gets
    when adjustment rules are spliced at its end, so adding a rule never renames a task (and
    its history in the Airflow UI).

    The suffix stays when the node the rules follow is a stage of its own (in
    ``stage_ids``: an aggregation read by a star schema, or whose output fans out or is a
    sink): its task keeps its name, and the rules run in a new task ``X__adjusted``.
    """
    at = spliced_at(stage_id)
    if at is None or at[1] != "after":
        return stage_id
    return stage_id if at[0] in stage_ids else at[0]


def schema_to_json(s: Schema) -> dict[str, Any]:
    return {"known": s.known, "columns": [[c.name, c.type] for c in s.columns]}


def schema_from_json(d: dict[str, Any]) -> Schema:
    return Schema(tuple(Column(n, t) for n, t in d["columns"]), known=d["known"])


@dataclass(frozen=True)
class PlanSource:
    name: str
    format: str
    path: str  # template
    primary_key: tuple[str, ...]
    schema: Schema
    cob_column: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    data_hash: str = ""
    allow_empty: bool = False  # no rows for the cob is a valid input, not a failure


@dataclass(frozen=True)
class PlanNode:
    id: str
    op: str
    inputs: tuple[str, ...]
    params: dict[str, Any]
    schema: Schema
    lineage: str  # rowwise | aggregate | rollup | union
    stage: str
    persisted: bool
    checkpoint: bool = False
    description: str = ""
    data_hash: str = ""

    @property
    def lineage_checkpoint(self) -> str | None:
        """Name of the row-level lineage checkpoint this node writes, if any."""
        return f"{self.id}.lineage" if self.lineage in ("aggregate", "rollup") else None


@dataclass(frozen=True)
class Stage:
    """A maximal chain of nodes run in one Spark application (one Airflow task)."""

    id: str
    nodes: tuple[str, ...]
    sources: tuple[str, ...]  # sources read by this stage
    inputs: tuple[str, ...]  # persisted node outputs of upstream stages read by this stage
    outputs: tuple[str, ...]  # node outputs this stage persists
    checkpoints: tuple[str, ...]  # lineage checkpoints this stage writes
    upstream: tuple[str, ...]  # stage ids this stage waits for
    boundary: str  # why the stage ends: aggregate | checkpoint | fan-out | sink


@dataclass(frozen=True)
class Plan:
    pipeline: str
    file: str
    description: str
    owner: str
    tags: tuple[str, ...]
    schedule: str | None
    start_date: str
    params: dict[str, Any]
    sources: tuple[PlanSource, ...]
    nodes: tuple[PlanNode, ...]
    stages: tuple[Stage, ...]
    data_hash: str
    metadata_hash: str
    regflow_version: str
    warnings: tuple[str, ...] = ()
    adjustments_dir: str | None = None
    adjustment_set_hash: str = "none"
    # the cob of a run not given one (see regflow.plan.cob): the rule and its holidays
    cob_rule: str = "run_date"
    cob_holidays: tuple[str, ...] = ()

    def node(self, node_id: str) -> PlanNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def source(self, name: str) -> PlanSource:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)

    def stage(self, stage_id: str) -> Stage:
        for s in self.stages:
            if s.id == stage_id:
                return s
        raise KeyError(stage_id)

    def task_id(self, stage_id: str) -> str:
        """The Airflow task id of a stage: the one name ``regflow plan``, ``regflow run``
        and Airflow show for it (see :func:`task_id_of`)."""
        return task_id_of(stage_id, {s.id for s in self.stages})

    def task_ids(self) -> list[str]:
        """Every task that reports on a run: one per stage, then one per warehouse load."""
        return [s.id for s in self.stages] + [f"load_{n.id}" for n in self.star_nodes()]

    def op_of(self, node_id: str) -> OpDef:
        """The definition of a node's op: what it does is asked of its flags, not its name."""
        return registry.definition(self.node(node_id).op)

    def main_inputs(self, node_id: str) -> tuple[str, ...]:
        """The inputs whose rows flow to the node's output (a join's left, not its lookup)."""
        return self.op_of(node_id).main_of(self.node(node_id).inputs)

    def star_nodes(self) -> list[PlanNode]:
        """The sinks the warehouse loads (``star_schema``), in plan order."""
        return [n for n in self.nodes if registry.definition(n.op).lands_in_warehouse]

    def adjustment_nodes(self) -> list[PlanNode]:
        return [n for n in self.nodes if registry.definition(n.op).applies_rules]

    def is_source(self, name: str) -> bool:
        return any(s.name == name for s in self.sources)

    def schema_of(self, name: str) -> Schema:
        return self.source(name).schema if self.is_source(name) else self.node(name).schema

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> str:
        def enc(o: Any) -> Any:
            if isinstance(o, Schema):
                return schema_to_json(o)
            raise TypeError(type(o))

        d = asdict(self)
        for s in d["sources"]:
            s["schema"] = schema_to_json(
                Schema(
                    tuple(Column(**c) for c in s["schema"]["columns"]), known=s["schema"]["known"]
                )
            )
        for n in d["nodes"]:
            n["schema"] = schema_to_json(
                Schema(
                    tuple(Column(**c) for c in n["schema"]["columns"]), known=n["schema"]["known"]
                )
            )
        # not sort_keys: a mapping's order is meaning (an aggregate's measures and a calc's
        # columns are the output's column order), and from_json must give it back
        return json.dumps(d, default=enc)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        d = json.loads(text)
        sources = tuple(
            PlanSource(
                **{
                    **s,
                    "primary_key": tuple(s["primary_key"]),
                    "schema": schema_from_json(s["schema"]),
                }
            )
            for s in d.pop("sources")
        )
        nodes = tuple(
            PlanNode(**{**n, "inputs": tuple(n["inputs"]), "schema": schema_from_json(n["schema"])})
            for n in d.pop("nodes")
        )
        stages = tuple(
            Stage(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()})  # type: ignore[arg-type]
            for s in d.pop("stages")
        )
        return cls(
            **{
                **d,
                "tags": tuple(d["tags"]),
                "warnings": tuple(d["warnings"]),
                "cob_holidays": tuple(d.get("cob_holidays", ())),
            },
            sources=sources,
            nodes=nodes,
            stages=stages,
        )
