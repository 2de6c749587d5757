"""The built-in ops as the compiler sees them: settings, static checks and output schemas.

Each op is documented here; its Spark half is in :mod:`regflow.runtime.builtin_ops`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from regflow.core.names import LINEAGE_COLUMN, Scalar, check_column
from regflow.core.types import Column, Schema, decimal_ps, normalize_type
from regflow.ops.base import Check, OpDef, OpParams
from regflow.ops.decimal_checks import decimal_checks
from regflow.ops.decimals import sum_type
from regflow.ops.exprs import check_expression, infer_type


def _expr_checks(text: str, schema: Schema, path: tuple[str | int, ...]) -> list[Check]:
    return [Check(msg, path, hint) for msg, hint in check_expression(text, schema)]


def _missing(name: str, schema: Schema, path: tuple[str | int, ...], what: str) -> list[Check]:
    import difflib

    if not schema.known or name in schema:
        return []
    close = difflib.get_close_matches(name, schema.names, n=1)
    hint = (
        f"did you mean '{close[0]}'?"
        if close
        else "available columns: " + ", ".join(n for n in schema.names if n != LINEAGE_COLUMN)
    )
    return [Check(f"unknown column '{name}' in {what}", path, hint)]


# --------------------------------------------------------------------------- calc
class CalcColumn(OpParams):
    expr: str
    type: str | None = None

    @field_validator("type")
    @classmethod
    def _type(cls, v: str | None) -> str | None:
        if v is None:
            return v
        return normalize_type(v)  # a TypeParseError carries its hint to the loader


class CalcParams(OpParams):
    """``columns``: new or replaced columns, each a Spark SQL expression (optionally typed)."""

    columns: dict[str, str | CalcColumn] = Field(min_length=1)

    @field_validator("columns")
    @classmethod
    def _names(cls, v: dict[str, str | CalcColumn]) -> dict[str, str | CalcColumn]:
        for name in v:
            check_column(name)
        return v

    def items(self) -> list[tuple[str, str, str | None]]:
        out: list[tuple[str, str, str | None]] = []
        for name, spec in self.columns.items():
            if isinstance(spec, str):
                out.append((name, spec, None))
            else:
                out.append((name, spec.expr, spec.type))
        return out


def _calc_check(inputs: list[Schema], p: CalcParams) -> list[Check]:
    out: list[Check] = []
    for name, expr, typ in p.items():
        # Columns are computed one after another, so later ones may use earlier ones.
        schema = _calc_schema_upto(inputs[0], p, name)
        found = _expr_checks(expr, schema, ("columns", name))
        out += found
        if not found and schema.known:
            at: tuple[str | int, ...] = ("columns", name)
            if typ is not None:
                at = ("columns", name, "expr")
            out += decimal_checks(expr, schema, typ, at, ("columns", name, "type"))
    return out


def _calc_schema_upto(base: Schema, p: CalcParams, stop: str | None) -> Schema:
    schema = base
    for name, expr, typ in p.items():
        if name == stop:
            break
        schema = schema.with_columns([Column(name, typ or infer_type(expr, schema))])
    return schema


def _calc_schema(inputs: list[Schema], p: CalcParams) -> Schema:
    return _calc_schema_upto(inputs[0], p, None)


CALC = OpDef(
    "calc",
    CalcParams,
    "rowwise",
    output_schema=_calc_schema,
    check=_calc_check,
    doc="Add or replace columns computed from Spark SQL expressions, in order.",
    carries_audits=True,
)


# --------------------------------------------------------------------------- filter
class FilterParams(OpParams):
    """``where``: keep the rows for which this Spark SQL condition is true."""

    where: str


FILTER = OpDef(
    "filter",
    FilterParams,
    "rowwise",
    output_schema=lambda inputs, p: inputs[0],
    check=lambda inputs, p: _expr_checks(p.where, inputs[0], ("where",)),
    doc="Keep the rows matching a condition.",
    carries_audits=True,
)


# --------------------------------------------------------------------------- join
class JoinParams(OpParams):
    """Left or inner join of the first input with a lookup (the second input).

    The left input's lineage id is kept: a join is a row-wise enrichment, and the framework
    fails the run if the lookup's keys are not unique (a row would be duplicated).

    A join loses no row silently. By default every left row must match (``require_match``):
    one that does not fails the run, naming its key. A join that is partial by design says
    ``require_match: false``; its unmatched rows are then kept with null lookup columns
    (``how: left``) or dropped (``how: inner``), and counted in the stage report and the
    run summary.
    """

    on: list[str] | dict[str, str] = Field(min_length=1)
    how: Literal["left", "inner"] = "left"
    columns: list[str] | None = None
    require_match: bool = Field(
        default=True,
        description="Fail the run on a left row without a lookup row (default). false: the "
        "join is partial by design; unmatched rows are kept (how: left) or dropped (how: "
        "inner), and counted in the stage report and run summary.",
    )

    def pairs(self) -> list[tuple[str, str]]:
        if isinstance(self.on, dict):
            return list(self.on.items())
        return [(c, c) for c in self.on]


def _join_check(inputs: list[Schema], p: JoinParams) -> list[Check]:
    out: list[Check] = []
    for i, (left, right) in enumerate(p.pairs()):
        key: tuple[str | int, ...] = ("on", left) if isinstance(p.on, dict) else ("on", i)
        out += _missing(left, inputs[0], key, "the join key (left input)")
        out += _missing(right, inputs[1], key, "the join key (right input)")
    for i, c in enumerate(p.columns or []):
        out += _missing(c, inputs[1], ("columns", i), "columns (right input)")
    return out


def _join_schema(inputs: list[Schema], p: JoinParams) -> Schema:
    left, right = inputs
    right_keys = {r for _, r in p.pairs()}
    take = (
        p.columns
        if p.columns is not None
        else [
            n for n in right.names if n not in right_keys and n != LINEAGE_COLUMN and n not in left
        ]
    )
    return left.with_columns([Column(n, right.type_of(n)) for n in take if n in right])


JOIN = OpDef(
    "join",
    JoinParams,
    "rowwise",
    min_inputs=2,
    max_inputs=2,
    output_schema=_join_schema,
    check=_join_check,
    doc="Enrich rows with columns of a lookup; a row without a match fails the run unless "
    "require_match: false (then it is counted).",
    carries_audits=True,
    main_inputs=1,
)


# --------------------------------------------------------------------------- classify
class ClassifyRule(OpParams):
    id: str | None = None
    when: str
    value: Scalar


class ClassifyParams(OpParams):
    """An ordered decision table: the first rule whose ``when`` holds sets ``output``.

    ``rule_column`` (optional) records which rule matched, which makes every classification
    explainable row by row. Rows no rule matches get ``default``; with ``on_no_match: error``
    they fail the run instead.
    """

    output: str
    rules: list[ClassifyRule] = Field(min_length=1)
    default: Scalar = None
    type: str = "string"
    rule_column: str | None = None
    on_no_match: Literal["default", "error"] = "default"

    @field_validator("output", "rule_column")
    @classmethod
    def _col(cls, v: str | None) -> str | None:
        return check_column(v) if v else v

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        return normalize_type(v)  # a TypeParseError carries its hint to the loader

    @model_validator(mode="after")
    def _ids(self) -> ClassifyParams:
        ids = [r.id for r in self.rules if r.id]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"rule ids must be unique; repeated: {', '.join(sorted(dup))}")
        return self


def _classify_check(inputs: list[Schema], p: ClassifyParams) -> list[Check]:
    out: list[Check] = []
    for i, rule in enumerate(p.rules):
        out += _expr_checks(rule.when, inputs[0], ("rules", i, "when"))
    return out


def _classify_schema(inputs: list[Schema], p: ClassifyParams) -> Schema:
    cols = [Column(p.output, p.type)]
    if p.rule_column:
        cols.append(Column(p.rule_column, "string"))
    return inputs[0].with_columns(cols)


CLASSIFY = OpDef(
    "classify",
    ClassifyParams,
    "rowwise",
    output_schema=_classify_schema,
    check=_classify_check,
    doc="Ordered decision table in YAML; the first matching rule wins.",
    carries_audits=True,
)


# --------------------------------------------------------------------------- aggregate
AGG_FUNCS = ("sum", "count", "min", "max")


class Measure(OpParams):
    """One measure: exactly one of ``sum``/``count``/``min``/``max`` (an expression),
    optionally restricted by ``where``. A ``sum`` over no rows is 0, never null."""

    sum: str | None = None
    count: str | None = None
    min: str | None = None
    max: str | None = None
    where: str | None = None
    type: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Measure:
        given = [f for f in AGG_FUNCS if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("a measure needs exactly one of sum, count, min, max")
        if self.type is not None:
            object.__setattr__(self, "type", normalize_type(self.type))
        return self

    @property
    def func(self) -> str:
        return next(f for f in AGG_FUNCS if getattr(self, f) is not None)

    @property
    def expr(self) -> str:
        return str(getattr(self, self.func))


class AggregateParams(OpParams):
    """Group by columns and compute measures.

    Before aggregating, the framework writes a narrow checkpoint of
    (group key, member lineage id, each row's contribution to each measure), sorted by
    group key, so every aggregated figure can be traced to its rows.
    """

    group_by: list[str] = Field(min_length=1)
    measures: dict[str, Measure] = Field(min_length=1)

    @field_validator("measures")
    @classmethod
    def _names(cls, v: dict[str, Measure]) -> dict[str, Measure]:
        for name in v:
            check_column(name)
        return v


def _aggregate_check(inputs: list[Schema], p: AggregateParams) -> list[Check]:
    out: list[Check] = []
    for i, col in enumerate(p.group_by):
        out += _missing(col, inputs[0], ("group_by", i), "group_by")
    for name, m in p.measures.items():
        found = _expr_checks(m.expr, inputs[0], ("measures", name, m.func))
        out += found
        if m.where:
            out += _expr_checks(m.where, inputs[0], ("measures", name, "where"))
        if not found and inputs[0].known and m.func != "count":
            out += decimal_checks(
                m.expr,
                inputs[0],
                m.type,
                ("measures", name, m.func),
                ("measures", name, "type"),
            )
    return out


def measure_type(m: Measure, schema: Schema) -> str:
    if m.type:
        return m.type
    if m.func == "count":
        return "bigint"
    t = infer_type(m.expr, schema)
    if m.func == "sum" and (decimal_ps(t) is not None or t in ("int", "bigint")):
        return sum_type(t)  # Spark: sum(decimal(p,s)) is decimal(min(38, p + 10), s)
    return t


def _aggregate_schema(inputs: list[Schema], p: AggregateParams) -> Schema:
    base = inputs[0]
    cols = [Column(c, base.type_of(c) if c in base else "unknown") for c in p.group_by]
    cols.append(Column(LINEAGE_COLUMN, "bigint"))
    cols += [Column(n, measure_type(m, base)) for n, m in p.measures.items()]
    return Schema(tuple(cols))


AGGREGATE = OpDef(
    "aggregate",
    AggregateParams,
    "aggregate",
    output_schema=_aggregate_schema,
    check=_aggregate_check,
    doc="Group by and measures, with a row-level lineage checkpoint of its input.",
)


# --------------------------------------------------------------------------- union
class UnionParams(OpParams):
    """Stack the inputs by column name. Missing columns are an error unless allowed."""

    allow_missing_columns: bool = False


def _union_check(inputs: list[Schema], p: UnionParams) -> list[Check]:
    if p.allow_missing_columns or not all(s.known for s in inputs):
        return []
    first = set(inputs[0].names)
    out = []
    for i, s in enumerate(inputs[1:], start=1):
        if set(s.names) != first:
            diff = sorted(first.symmetric_difference(s.names))
            out.append(
                Check(
                    f"input {i} has different columns than input 0: {', '.join(diff)}",
                    ("inputs", i),
                    "add calc nodes to align the columns, or set allow_missing_columns: true",
                )
            )
    return out


def _union_schema(inputs: list[Schema], p: UnionParams) -> Schema:
    schema = inputs[0]
    for s in inputs[1:]:
        schema = schema.with_columns([c for c in s.columns if c.name not in schema])
    return schema


UNION = OpDef(
    "union",
    UnionParams,
    "union",
    min_inputs=2,
    max_inputs=None,
    output_schema=_union_schema,
    check=_union_check,
    doc="Stack inputs by column name; lineage ids stay unique because sources differ.",
)

BUILTIN_OPS: tuple[OpDef, ...] = (CALC, FILTER, JOIN, CLASSIFY, AGGREGATE, UNION)
