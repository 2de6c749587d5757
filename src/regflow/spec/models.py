"""Typed, immutable models of a pipeline spec (``pipelines/*.yaml``).

Op-specific settings of a node are validated by the op's own params model (see
:mod:`regflow.ops`), so a misspelled key fails for built-in and custom ops alike.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from regflow.core.names import LINEAGE_COLUMN as LINEAGE_COLUMN  # (the spec's name for it)
from regflow.core.names import Scalar, check_column, check_identifier
from regflow.core.types import SpecValueError, normalize_type

BUILTIN_TEMPLATE_VARS = ("cob", "spec_dir", "project_dir")


class StrictModel(BaseModel):
    """Base for every spec model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


ColumnName = Annotated[str, AfterValidator(check_column)]
ColumnType = Annotated[str, AfterValidator(normalize_type)]


class SourceSpec(StrictModel):
    """A dataset read from storage at the start of a run."""

    format: Literal["parquet", "csv"] = "parquet"
    path: str = Field(description="Path template; may use {param}, {cob}, {spec_dir}.")
    primary_key: tuple[ColumnName, ...] = Field(min_length=1)
    schema_: dict[ColumnName, ColumnType] | None = Field(
        default=None, alias="schema", description="Declared columns and types."
    )
    cob_column: str | None = Field(
        default=None, description="Keep only rows whose column equals the run's cob."
    )
    description: str = ""
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    allow_empty: bool = Field(
        default=False,
        description="No rows for the cob is valid input (default: such a run fails before "
        "any compute). Needs a declared schema.",
    )

    @field_validator("primary_key")
    @classmethod
    def _keys(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise SpecValueError("primary_key lists a column twice", hint="list each column once")
        return v

    @field_validator("allow_empty")
    @classmethod
    def _empty_needs_schema(cls, v: bool, info: ValidationInfo) -> bool:
        if v and not info.data.get("schema_"):
            raise SpecValueError(
                "allow_empty needs the source's columns: an empty source has no files to "
                "read them from",
                hint="declare them under 'schema:', or drop allow_empty",
            )
        return v


class NodeSpec(StrictModel):
    """One node: an op applied to named inputs. ``params`` is the op's own model."""

    id: str
    op: str
    inputs: tuple[str, ...] = Field(min_length=1)
    checkpoint: bool = False
    description: str = ""
    params: Any = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_identifier(v, "node id")


NODE_COMMON_KEYS = ("id", "op", "inputs", "checkpoint", "description")


class CobRule(StrictModel):
    """The cob a run computes when it is not given one (a scheduled run). An explicit cob
    (--cob, or the cob param) always wins."""

    rule: Literal["run_date", "previous_business_day"] = Field(
        default="run_date",
        description="run_date: the date the run is stamped with (default); "
        "previous_business_day: the last business day (Monday to Friday, not a holiday) "
        "before it.",
    )
    holidays: tuple[dt.date, ...] = Field(
        default=(), description="Dates that are not business days (previous_business_day)."
    )

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, v: tuple[dt.date, ...], info: ValidationInfo) -> tuple[dt.date, ...]:
        if v and info.data.get("rule") != "previous_business_day":
            raise SpecValueError(
                "holidays only apply to 'rule: previous_business_day'",
                hint="set 'rule: previous_business_day', or drop the holidays",
            )
        return tuple(sorted(set(v)))


class PipelineHeader(StrictModel):
    """The top-level settings of a pipeline, without its sources and nodes."""

    pipeline: str
    description: str = ""
    owner: str = "regflow"
    tags: tuple[str, ...] = ()
    schedule: str | None = None
    cob: CobRule = Field(
        default_factory=CobRule, description="Which cob a run computes when not given one."
    )
    start_date: dt.date = dt.date(2024, 1, 1)
    params: dict[str, Scalar] = Field(default_factory=dict)

    @field_validator("pipeline")
    @classmethod
    def _pipeline(cls, v: str) -> str:
        return check_identifier(v, "pipeline id")

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Scalar]) -> dict[str, Scalar]:
        for name in v:
            check_identifier(name, "param name")
            if name in BUILTIN_TEMPLATE_VARS:
                raise SpecValueError(
                    f"param name '{name}' is reserved (built-in template variable)",
                    hint=f"rename it, e.g. '{name}_value'",
                )
        return v


class PipelineSpec(PipelineHeader):
    """A whole pipeline: params, sources and nodes, plus scheduling metadata."""

    sources: dict[str, SourceSpec] = Field(min_length=1)
    nodes: tuple[NodeSpec, ...] = Field(min_length=1)

    def node(self, node_id: str) -> NodeSpec:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)
