"""The ``star_schema`` op as the compiler sees it: dimensions, facts and reports in YAML.

A ``star_schema`` node is a sink. Its Spark half (:mod:`regflow.runtime.star`) stages one
Parquet table per dimension and fact under the run; the warehouse layer
(:mod:`regflow.warehouse`) lands them in PostgreSQL or Redshift in one transaction.

Example (the LCR star)::

    - id: lcr_star
      op: star_schema
      inputs: [weigh, entity_lcr, entities, lcr_categories]
      dimensions:
        date: {generated: calendar}
        entity:
          from: entities
          key: [legal_entity]
          attributes: [entity_name, country, parent_entity]
          scd2: true
          members: [{legal_entity: GROUP, entity_name: Consolidated group}]
      facts:
        lcr_entity:
          from: entity_lcr
          grain: [cob_date, legal_entity]
          date: cob_date
          dimensions: {entity: legal_entity}
          measures: [l1, l2a, l2b, hqla, lcr]
      reports:
        rpt_lcr_entity: {fact: lcr_entity, columns: [cob_date, legal_entity, lcr]}
"""

from __future__ import annotations

import difflib
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from regflow.core.names import (
    LINEAGE_COLUMN,
    Scalar,
    adjusted_id,
    check_column,
    check_identifier,
)
from regflow.core.types import Schema
from regflow.ops.base import Check, OpDef, OpParams

# Columns the star adds; YAML may not reuse them.
ROW_HASH = "row_hash"
RESERVED_COLUMNS = frozenset(
    {
        "valid_from",
        "valid_to",
        "is_current",
        ROW_HASH,
        "lineage_id",
        "is_adjusted",
        "adjustment_rules",
        "run_id",
        "spec_hash",
        "adjustment_set_hash",
        "loaded_at",
        "date_key",
    }
)
ACRONYMS = frozenset(
    {"lcr", "usd", "hqla", "id", "fx", "sme", "nfc", "l1", "l2a", "l2b", "bcbs", "cob", "scd"}
)


def friendly(name: str) -> str:
    """A business name: ``weighted_amount`` -> ``Weighted Amount``, ``l2a`` -> ``L2A``."""
    words = []
    for w in name.strip("_").split("_"):
        if not w:
            continue
        if w in ACRONYMS or (len(w) <= 3 and any(ch.isdigit() for ch in w) and w[0].isalpha()):
            words.append(w.upper())
        else:
            words.append(w[:1].upper() + w[1:])
    return " ".join(words)


# Business names (labels) become quoted SQL identifiers of the PowerBI views and TMDL names:
# letters, digits, spaces and a few punctuation marks; never quotes or control characters.
LABEL_PATTERN = r"^[A-Za-z0-9_ ()\-./&%#+]{1,127}$"
_LABEL = re.compile(LABEL_PATTERN)


def check_label(v: str | None) -> str | None:
    if v is not None and not _LABEL.match(v):
        raise ValueError(
            f"label {v!r} may hold only letters, digits, spaces and _ ( ) - . / & % # + "
            "(at most 127 characters)"
        )
    return v


def _ident(v: str) -> str:
    return check_identifier(v, "table name")


def _cols(v: list[str]) -> list[str]:
    for c in v:
        check_column(c)
        if c.lower() in RESERVED_COLUMNS:
            raise ValueError(f"column '{c}' is reserved by the star schema; rename it upstream")
    return v


class Dimension(OpParams):
    """A dimension: from an input (``from``), or ``generated: calendar`` for the date dimension.

    ``key`` is the natural key; ``attributes`` are the described columns; ``scd2: true``
    keeps history (valid_from / valid_to / is_current, one version per change, as of the
    cob). ``members`` are fixed rows added to the input's (e.g. a GROUP member). Every
    dimension also gets the -1 "Unknown" member, which unmatched facts point to.
    """

    from_: str | None = Field(default=None, alias="from")
    generated: Literal["calendar"] | None = None
    key: list[str] = Field(default_factory=list)
    attributes: list[str] = Field(default_factory=list)
    scd2: bool = False
    members: list[dict[str, Scalar]] = Field(default_factory=list)
    label: str | None = None

    _c = field_validator("key", "attributes")(classmethod(lambda cls, v: _cols(v)))
    _l = field_validator("label")(classmethod(lambda cls, v: check_label(v)))

    @model_validator(mode="after")
    def _shape(self) -> Dimension:
        if self.generated:
            if self.from_ or self.key or self.attributes or self.scd2 or self.members:
                raise ValueError(
                    "a generated (calendar) dimension takes no from/key/attributes/scd2/members"
                )
            return self
        if not self.from_:
            raise ValueError("a dimension needs 'from: <input>' or 'generated: calendar'")
        if not self.key:
            raise ValueError("a dimension needs its natural 'key' column(s)")
        both = set(self.key) & set(self.attributes)
        if both:
            raise ValueError(f"column(s) {', '.join(sorted(both))} are both key and attribute")
        allowed = {*self.key, *self.attributes}
        for m in self.members:
            extra = [k for k in m if k not in allowed]
            if extra or any(k not in m for k in self.key):
                raise ValueError(
                    f"member {m} must give the key ({', '.join(self.key)}) and only key or "
                    "attribute columns"
                )
        return self


class Fact(OpParams):
    """A fact table from an input: its ``grain`` (unique per row), the ``date`` column (a
    foreign key to the date dimension), foreign keys to other dimensions (``dimensions:
    {dim: column}``), ``measures`` and extra descriptive columns (``attributes``).

    Deal-level facts also get ``lineage_id`` (drill-through) and ``is_adjusted`` /
    ``adjustment_rules`` from the run's adjustment audit. ``distkey`` names the dimension
    Redshift distributes on (default: the first one).
    """

    from_: str = Field(alias="from")
    grain: list[str] = Field(min_length=1)
    date: str
    dimensions: dict[str, str | list[str]] = Field(default_factory=dict)
    measures: list[str] = Field(min_length=1)
    attributes: list[str] = Field(default_factory=list)
    adjusted_flags: bool = True
    distkey: str | None = None
    label: str | None = None

    _c = field_validator("grain", "measures", "attributes")(classmethod(lambda cls, v: _cols(v)))
    _l = field_validator("label")(classmethod(lambda cls, v: check_label(v)))

    @field_validator("date")
    @classmethod
    def _date(cls, v: str) -> str:
        return check_column(v)

    def fk_columns(self, dim: str) -> list[str]:
        v = self.dimensions[dim]
        return [v] if isinstance(v, str) else list(v)

    def kept_columns(self) -> list[str]:
        """Columns stored as-is in the fact: grain, date, attributes (no duplicates)."""
        out: list[str] = []
        for c in [*self.grain, self.date, *self.attributes]:
            if c not in out:
                out.append(c)
        return out


class Report(OpParams):
    """A reporting view ``rpt_*`` over one fact: ``columns`` from the fact, or ``dim.attr``."""

    fact: str
    columns: list[str] = Field(min_length=1)
    order_by: list[str] = Field(default_factory=list)


class StarParams(OpParams):
    """Dimensions, facts and reporting views of a star, and how it is loaded.

    ``schema``: the warehouse schema (default: the pipeline id). ``load``: ``copy`` (bulk
    COPY through staged Parquet), ``upsert`` (multi-row inserts; small batches) or ``auto``
    (upsert up to ``upsert_max_rows`` rows per table, COPY above). ``allow_empty_replace``:
    an empty fact batch may replace a cob that holds rows (default: refused).
    """

    schema_: str | None = Field(default=None, alias="schema")
    dimensions: dict[str, Dimension] = Field(min_length=1)
    facts: dict[str, Fact] = Field(min_length=1)
    reports: dict[str, Report] = Field(default_factory=dict)
    load: Literal["auto", "copy", "upsert"] = "auto"
    upsert_max_rows: int | None = Field(default=None, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)
    powerbi_schema: str | None = None
    string_lengths: dict[str, int] = Field(default_factory=dict)
    allow_empty_replace: bool = False

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for label in v.values():
            check_label(label)
        return v

    @field_validator("string_lengths")
    @classmethod
    def _lengths(cls, v: dict[str, int]) -> dict[str, int]:
        for col, n in v.items():
            if not 1 <= n <= 65535:
                raise ValueError(f"string_lengths.{col}: {n} is not a VARCHAR length (1..65535)")
        return v

    @field_validator("schema_", "powerbi_schema")
    @classmethod
    def _schema(cls, v: str | None) -> str | None:
        return check_identifier(v, "warehouse schema") if v else v

    @field_validator("dimensions", "facts")
    @classmethod
    def _names(cls, v: dict[str, object]) -> dict[str, object]:
        for k in v:
            _ident(k)
        return v

    @field_validator("reports")
    @classmethod
    def _rpt(cls, v: dict[str, Report]) -> dict[str, Report]:
        for k in v:
            _ident(k)
            if not k.startswith("rpt_"):
                raise ValueError(f"report '{k}' must be named rpt_*")
        return v

    @model_validator(mode="after")
    def _refs(self) -> StarParams:
        dates = [n for n, d in self.dimensions.items() if d.generated]
        if len(dates) != 1:
            raise ValueError(
                "a star needs exactly one date dimension ({name}: {generated: calendar}); "
                f"found {len(dates)}"
            )
        for fname, f in self.facts.items():
            for dim in f.dimensions:
                if dim not in self.dimensions or self.dimensions[dim].generated:
                    raise ValueError(
                        f"fact '{fname}' refers to dimension '{dim}', which is not a declared "
                        "non-date dimension"
                    )
                if len(f.fk_columns(dim)) != len(self.dimensions[dim].key):
                    raise ValueError(
                        f"fact '{fname}': dimension '{dim}' has a {len(self.dimensions[dim].key)}"
                        f"-column key, but {len(f.fk_columns(dim))} column(s) map to it"
                    )
            if f.distkey and f.distkey not in f.dimensions:
                raise ValueError(f"fact '{fname}': distkey '{f.distkey}' is not one of its dims")
        for rname, r in self.reports.items():
            if r.fact not in self.facts:
                raise ValueError(f"report '{rname}' refers to unknown fact '{r.fact}'")
            for c in r.columns:
                if "." in c:
                    dim, attr = c.split(".", 1)
                    if dim not in self.facts[r.fact].dimensions:
                        raise ValueError(
                            f"report '{rname}': '{c}' names a dimension the fact has no key to"
                        )
                    check_column(attr)
                else:
                    check_column(c)
        return self

    @property
    def date_dimension(self) -> str:
        return next(n for n, d in self.dimensions.items() if d.generated)

    def warehouse_schema(self, pipeline: str) -> str:
        return self.schema_ or pipeline

    def bi_schema(self, pipeline: str) -> str:
        return self.powerbi_schema or f"{self.warehouse_schema(pipeline)}_bi"

    def label(self, column: str) -> str:
        return self.labels.get(column) or friendly(column)


def resolve_input(name: str, names: tuple[str, ...] | list[str]) -> str | None:
    """The node input a ``from:`` names: the node itself, or its adjusted version when
    adjustment rules are spliced after it (``X__adjusted``)."""
    if adjusted_id(name) in names:
        return adjusted_id(name)
    return name if name in names else None


def _input_schema(
    name: str, names: tuple[str, ...], inputs: list[Schema]
) -> tuple[Schema | None, list[Check]]:
    real = resolve_input(name, names)
    if real is not None:
        return inputs[names.index(real)], []
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"add '{name}' to the node's inputs"
    return None, [Check(f"'{name}' is not an input of this node", (), hint)]


def _need(schema: Schema | None, cols: list[str], path: tuple[str | int, ...]) -> list[Check]:
    if schema is None or not schema.known:
        return []
    out = []
    for c in cols:
        if c not in schema:
            close = difflib.get_close_matches(c, schema.names, n=1)
            hint = (
                f"did you mean '{close[0]}'?"
                if close
                else "available: " + ", ".join(n for n in schema.names if n != LINEAGE_COLUMN)
            )
            out.append(Check(f"unknown column '{c}'", path, hint))
    return out


def star_check(inputs: list[Schema], p: StarParams, names: tuple[str, ...] = ()) -> list[Check]:
    out: list[Check] = []
    used: set[str] = set()
    for dname, d in p.dimensions.items():
        if d.generated:
            continue
        assert d.from_ is not None
        used.add(d.from_)
        used.add(resolve_input(d.from_, names) or d.from_)
        s, chk = _input_schema(d.from_, names, inputs)
        out += [Check(c.message, ("dimensions", dname, "from"), c.hint) for c in chk]
        out += _need(s, [*d.key, *d.attributes], ("dimensions", dname))
    for fname, f in p.facts.items():
        used.add(f.from_)
        used.add(resolve_input(f.from_, names) or f.from_)
        s, chk = _input_schema(f.from_, names, inputs)
        out += [Check(c.message, ("facts", fname, "from"), c.hint) for c in chk]
        fk = [c for dim in f.dimensions for c in f.fk_columns(dim)]
        out += _need(s, [*f.kept_columns(), *fk, *f.measures], ("facts", fname))
        for i, m in enumerate(f.measures):
            if s is not None and s.known and m in s and s.type_of(m) == "decimal":
                out.append(
                    Check(
                        f"measure '{m}' is a decimal whose precision regflow cannot infer; its "
                        "warehouse column would be NUMERIC(38,10) and could round it",
                        ("facts", fname, "measures", i),
                        f"declare its type where it is computed (e.g. {m}: {{expr: ..., type: "
                        '"decimal(38,12)"}), so that the column keeps every digit',
                    )
                )
        if s is not None and s.known and f.date in s and s.type_of(f.date) != "date":
            out.append(
                Check(
                    f"date column '{f.date}' is {s.type_of(f.date)}, not date",
                    ("facts", fname, "date"),
                    "cast it with a calc node",
                )
            )
    for rname, r in p.reports.items():
        f = p.facts[r.fact]
        have = {*f.kept_columns(), *f.measures}
        for i, c in enumerate(r.columns):
            if "." not in c and c not in have:
                out.append(
                    Check(
                        f"report column '{c}' is not a column of fact '{r.fact}'",
                        ("reports", rname, "columns", i),
                        "use a grain, date, attribute or measure column, or dim.attribute",
                    )
                )
            elif "." in c:
                dim, attr = c.split(".", 1)
                dd = p.dimensions[dim]
                if attr not in {*dd.key, *dd.attributes}:
                    out.append(
                        Check(
                            f"'{attr}' is not a key or attribute of dimension '{dim}'",
                            ("reports", rname, "columns", i),
                        )
                    )
    unused = [n for n in names if n not in used]
    if unused:
        out.append(
            Check(
                f"input(s) {', '.join(unused)} are not used by any dimension or fact",
                ("inputs",),
                "remove them from inputs, or use them",
            )
        )
    return out


def star_schema(inputs: list[Schema], p: StarParams) -> Schema:
    return Schema(())  # a sink: nothing downstream reads it


STAR_SCHEMA = OpDef(
    "star_schema",
    StarParams,
    "sink",
    min_inputs=1,
    max_inputs=None,
    output_schema=star_schema,
    check=star_check,
    doc="Dimensions and facts landed in the warehouse (PostgreSQL or Redshift).",
    extra={"named_inputs": True},
    lands_in_warehouse=True,
)
