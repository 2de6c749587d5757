"""Operator definitions as the compiler sees them: params model, schema rule, lineage kind.

No pyspark here. The runtime half of a built-in op lives in :mod:`regflow.runtime.builtin_ops`;
a custom op's function imports pyspark inside its body, so registering it stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from regflow.core.types import Schema

LineageKind = Literal["rowwise", "aggregate", "rollup", "union", "sink"]


class OpParams(BaseModel):
    """Base class of every op's settings. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ColumnRef:
    """A column an op's settings refer to, for static checks against the input schema."""

    name: str
    path: tuple[str | int, ...]  # key path inside the node (relative), for error locations
    input_index: int = 0


@dataclass(frozen=True)
class Check:
    """A problem an op found in its own settings, given the input schemas."""

    message: str
    path: tuple[str | int, ...] = ()
    hint: str = ""


SchemaRule = Callable[[list[Schema], Any], Schema]
CheckRule = Callable[[list[Schema], Any], list[Check]]


@dataclass(frozen=True)
class OpDef:
    """Everything the compiler and the runtime need to know about one op."""

    name: str
    params: type[OpParams]
    lineage: LineageKind = "rowwise"
    min_inputs: int = 1
    max_inputs: int | None = 1
    output_schema: SchemaRule | None = None
    check: CheckRule | None = None
    func: Callable[..., Any] | None = None  # runtime function (custom ops)
    doc: str = ""
    origin: str = "builtin"  # builtin | file path | entry point
    fingerprint: str = ""  # hash of the op's code: the same code loaded twice is one op
    extra: dict[str, Any] = field(default_factory=dict)
    # What the other layers ask of an op, so that none of them switches on op names:
    # rows pass through it carrying the adjustment audit tags of upstream rules
    carries_audits: bool = False
    # how many leading inputs' rows flow to the output (join: 1, the lookup only adds
    # columns); None: every input's
    main_inputs: int | None = None
    # a sink the warehouse loads (a ``load_<node>`` task, a target of ``publish``)
    lands_in_warehouse: bool = False
    # applies adjustment rules (the node the compiler splices in for them)
    applies_rules: bool = False

    def infer(self, inputs: list[Schema], params: Any) -> Schema:
        if self.output_schema is None:
            return Schema.unknown()
        if any(not s.known for s in inputs) and self.lineage not in ("aggregate", "sink"):
            # Row-wise ops can't know their output when the input is unknown.
            return Schema.unknown()
        return self.output_schema(inputs, params)

    def main_of(self, inputs: tuple[str, ...]) -> tuple[str, ...]:
        """The inputs whose rows flow to the output (see ``main_inputs``)."""
        return inputs if self.main_inputs is None else inputs[: self.main_inputs]
