"""One description of the star's tables, from which every dialect's DDL and load SQL is made.

Built from the plan alone (no Spark, no database), so ``regflow sql`` can write the Redshift
DDL and the PowerBI model for review without running anything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from regflow.core.types import Schema
from regflow.errors import PlanError
from regflow.ops.star import Dimension, Fact, StarParams
from regflow.plan.model import Plan, PlanNode

UNKNOWN_KEY = -1
DEFAULT_DECIMAL = "decimal(38,10)"  # a decimal whose precision the compiler could not infer
DATE_KEY = "date_key"


@dataclass(frozen=True)
class WColumn:
    name: str
    type: str  # a regflow type: string, boolean, date, timestamp, int, bigint, double, decimal(p,s)
    nullable: bool = True
    role: str = ""  # key | natural_key | attribute | scd | hash | fk | kept | measure | audit
    label: str = ""
    hidden: bool = False  # hidden in the PowerBI model (keys, hashes, audit columns)
    length: int | None = None  # strings: the Redshift VARCHAR length (bytes)


@dataclass(frozen=True)
class ForeignKey:
    column: str  # the fact's surrogate key column, e.g. entity_key
    dim_table: str  # dim_entity
    dim_key: str  # entity_key
    natural: tuple[str, ...]  # staged fact columns holding the natural key
    dim_natural: tuple[str, ...]  # the dimension's natural key columns
    scd2: bool


@dataclass(frozen=True)
class Table:
    name: str  # dim_entity | fact_lcr_deal
    kind: str  # dim | date | fact
    logical: str  # entity | lcr_deal
    label: str  # business name (PowerBI)
    columns: tuple[WColumn, ...]  # the target table
    staged: tuple[WColumn, ...]  # the staged batch (the Parquet written by Spark), in order
    key: str = ""  # surrogate key (dimensions)
    natural_key: tuple[str, ...] = ()
    grain: tuple[str, ...] = ()
    scd2: bool = False
    fks: tuple[ForeignKey, ...] = ()
    date_column: str = ""  # facts: the column the date key and SCD2 lookups are as of
    diststyle: str = "ALL"  # Redshift: ALL (small dimensions) | KEY (facts)
    distkey: str = ""
    sortkey: tuple[str, ...] = ()
    members: tuple[dict[str, Any], ...] = ()

    def column(self, name: str) -> WColumn:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def dedupe_keys(self) -> tuple[str, ...]:
        """What one row of the batch is unique on."""
        if self.kind == "fact":
            return self.grain
        return (self.key,)


@dataclass(frozen=True)
class View:
    name: str
    schema: str
    select: tuple[tuple[str, str, str], ...]  # (table alias, column, output name)
    base: str  # table the view reads
    joins: tuple[tuple[str, str, str, str], ...] = ()  # (alias, table, fact fk col, dim key col)
    where: str = ""
    order_by: tuple[str, ...] = ()
    label: str = ""


@dataclass(frozen=True)
class StarModel:
    pipeline: str
    node: str
    schema: str
    bi_schema: str
    tables: tuple[Table, ...]  # dimensions first (date first), then facts
    reports: tuple[View, ...]
    bi_views: tuple[View, ...]
    load: str = "auto"
    upsert_max_rows: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    allow_empty_replace: bool = False  # an empty fact batch may replace a cob holding rows

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name or t.logical == name:
                return t
        raise KeyError(name)

    @property
    def dimensions(self) -> tuple[Table, ...]:
        return tuple(t for t in self.tables if t.kind != "fact")

    @property
    def facts(self) -> tuple[Table, ...]:
        return tuple(t for t in self.tables if t.kind == "fact")


def star_table_name(node: str, table: str) -> str:
    """Where a staged table lives in the run's storage: ``<node>.<table>``."""
    return f"{node}.{table}"


def warehouse_type(t: str) -> str:
    if t == "decimal":
        return DEFAULT_DECIMAL
    if t in ("unknown", ""):
        return "string"
    return t


def _col(schema: Schema, name: str, role: str, label: str, **kw: Any) -> WColumn:
    t = schema.type_of(name) if schema.known and name in schema else "string"
    return WColumn(name, warehouse_type(t), role=role, label=label, **kw)


DATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("date", "date"),
    ("year", "int"),
    ("quarter", "int"),
    ("month", "int"),
    ("month_name", "string"),
    ("year_month", "string"),
    ("day", "int"),
    ("day_of_week", "int"),
    ("day_name", "string"),
    ("is_weekday", "boolean"),
    ("is_month_end", "boolean"),
    ("is_quarter_end", "boolean"),
    ("is_year_end", "boolean"),
)


def _date_table(name: str, d: Dimension, p: StarParams) -> Table:
    cols = (
        WColumn(DATE_KEY, "int", nullable=False, role="key", label="Date Key", hidden=True),
        *(WColumn(n, t, role="attribute", label=p.label(n)) for n, t in DATE_COLUMNS),
    )
    return Table(
        name=f"dim_{name}",
        kind="date",
        logical=name,
        label=d.label or p.label(name),
        columns=cols,
        staged=cols,
        key=DATE_KEY,
        natural_key=("date",),
        diststyle="ALL",
        sortkey=(DATE_KEY,),
    )


def _dim_table(name: str, d: Dimension, p: StarParams, schema: Schema) -> Table:
    key = f"{name}_key"
    nk = tuple(_col(schema, c, "natural_key", p.label(c)) for c in d.key)
    attrs = tuple(_col(schema, c, "attribute", p.label(c)) for c in d.attributes)
    scd = (
        (
            WColumn("valid_from", "date", nullable=False, role="scd", label="Valid From"),
            WColumn("valid_to", "date", nullable=False, role="scd", label="Valid To"),
            WColumn("is_current", "boolean", nullable=False, role="scd", label="Is Current"),
        )
        if d.scd2
        else ()
    )
    skey = WColumn(key, "bigint", nullable=False, role="key", label=p.label(key), hidden=True)
    row_hash = WColumn("row_hash", "bigint", nullable=False, role="hash", hidden=True)
    run_id = WColumn("run_id", "string", role="audit", hidden=True)
    staged_scd = scd[:1]  # valid_from: the cob the snapshot is as of
    return Table(
        name=f"dim_{name}",
        kind="dim",
        logical=name,
        label=d.label or p.label(name),
        columns=(skey, *nk, *attrs, *scd, row_hash, run_id),
        staged=(skey, *nk, *attrs, *staged_scd, row_hash, run_id),
        key=key,
        natural_key=tuple(d.key),
        scd2=d.scd2,
        diststyle="ALL",
        sortkey=tuple(d.key),
        members=tuple(d.members),
    )


def _fact_table(name: str, f: Fact, p: StarParams, schema: Schema, dims: dict[str, Table]) -> Table:
    kept = f.kept_columns()
    fks = []
    for dim in f.dimensions:
        t = dims[dim]
        fks.append(
            ForeignKey(
                column=t.key,
                dim_table=t.name,
                dim_key=t.key,
                natural=tuple(f.fk_columns(dim)),
                dim_natural=t.natural_key,
                scd2=t.scd2,
            )
        )
    fk_natural = [c for fk in fks for c in fk.natural if c not in kept]
    key_cols = (
        WColumn(DATE_KEY, "int", nullable=False, role="fk", label=p.label(DATE_KEY), hidden=True),
        *(
            WColumn(
                fk.column,
                "bigint",
                nullable=False,
                role="fk",
                label=p.label(fk.column),
                hidden=True,
            )
            for fk in fks
        ),
    )
    kept_cols = tuple(_col(schema, c, "kept", p.label(c), nullable=c not in f.grain) for c in kept)
    measures = tuple(_col(schema, c, "measure", p.label(c)) for c in f.measures)
    lineage = (WColumn("lineage_id", "bigint", role="audit", label="Lineage ID", hidden=True),)
    flags: tuple[WColumn, ...] = ()
    if f.adjusted_flags:
        flags = (
            WColumn("is_adjusted", "boolean", nullable=False, role="audit", label="Is Adjusted"),
            # comma-separated rule ids: room for many rules on one row
            WColumn("adjustment_rules", "string", role="audit", label="Adjustment Rules",
                    length=4096),
        )  # fmt: skip
    ident = (
        WColumn("run_id", "string", nullable=False, role="audit", hidden=True),
        WColumn("spec_hash", "string", nullable=False, role="audit", hidden=True),
        WColumn("adjustment_set_hash", "string", nullable=False, role="audit", hidden=True),
    )
    loaded = WColumn("loaded_at", "timestamp", nullable=False, role="audit", hidden=True)
    staged_fk_natural = tuple(_col(schema, c, "natural_key", "") for c in fk_natural)
    distdim = f.distkey or (next(iter(f.dimensions)) if f.dimensions else None)
    return Table(
        name=f"fact_{name}",
        kind="fact",
        logical=name,
        label=f.label or p.label(name),
        columns=(*key_cols, *kept_cols, *measures, *lineage, *flags, *ident, loaded),
        staged=(
            key_cols[0],
            *kept_cols,
            *staged_fk_natural,
            *measures,
            *lineage,
            *flags,
            *ident,
        ),
        grain=tuple(f.grain),
        fks=tuple(fks),
        date_column=f.date,
        diststyle="KEY" if distdim else "EVEN",
        distkey=dims[distdim].key if distdim else "",
        sortkey=(DATE_KEY,),
    )


def _sized(t: Table, lengths: dict[str, int]) -> Table:
    """Apply ``string_lengths:`` (Redshift VARCHAR sizes, by column name) to a table."""
    if not lengths:
        return t

    def size(c: WColumn) -> WColumn:
        if c.type == "string" and c.name in lengths:
            return dataclasses.replace(c, length=lengths[c.name])
        return c

    return dataclasses.replace(
        t, columns=tuple(size(c) for c in t.columns), staged=tuple(size(c) for c in t.staged)
    )


def star_model(plan: Plan, node: PlanNode | str) -> StarModel:
    pn = plan.node(node) if isinstance(node, str) else node
    if not plan.op_of(pn.id).lands_in_warehouse:
        raise PlanError(f"node '{pn.id}' of pipeline '{plan.pipeline}' is not a star_schema")
    p = StarParams.model_validate(pn.params)
    schema = p.warehouse_schema(plan.pipeline)
    dims: dict[str, Table] = {}
    for name, d in p.dimensions.items():
        if d.generated:
            dims[name] = _date_table(name, d, p)
        else:
            assert d.from_ is not None
            dims[name] = _dim_table(name, d, p, plan.schema_of(d.from_))
    facts = [_fact_table(name, f, p, plan.schema_of(f.from_), dims) for name, f in p.facts.items()]
    date_name = p.date_dimension
    ordered = [dims[date_name], *(t for n, t in dims.items() if n != date_name)]
    tables = tuple(_sized(t, p.string_lengths) for t in (*ordered, *facts))
    names = [t.name for t in tables]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise PlanError(f"star '{pn.id}': table name(s) {', '.join(sorted(dup))} repeat")
    reports = tuple(_report(name, r, p, schema, dims, facts) for name, r in p.reports.items())
    bi = p.bi_schema(plan.pipeline)
    return StarModel(
        pipeline=plan.pipeline,
        node=pn.id,
        schema=schema,
        bi_schema=bi,
        tables=tables,
        reports=reports,
        bi_views=tuple(_bi_view(t, bi, schema) for t in tables),
        load=p.load,
        upsert_max_rows=p.upsert_max_rows,
        labels=dict(p.labels),
        allow_empty_replace=p.allow_empty_replace,
    )


def _report(
    name: str, r: Any, p: StarParams, schema: str, dims: dict[str, Table], facts: list[Table]
) -> View:
    fact = next(t for t in facts if t.logical == r.fact)
    select: list[tuple[str, str, str]] = []
    joins: list[tuple[str, str, str, str]] = []
    for c in r.columns:
        if "." in c:
            dim, attr = c.split(".", 1)
            t = dims[dim]
            alias = f"d_{dim}"
            if not any(j[0] == alias for j in joins):
                joins.append((alias, t.name, t.key, t.key))
            select.append((alias, attr, attr))
        else:
            select.append(("f", c, c))
    return View(
        name=name,
        schema=schema,
        select=tuple(select),
        base=fact.name,
        joins=tuple(joins),
        order_by=tuple(r.order_by),
    )


BI_EXCLUDED = frozenset({"row_hash", "run_id", "spec_hash", "adjustment_set_hash", "loaded_at"})


def bi_columns(t: Table) -> list[WColumn]:
    """The columns a PowerBI view shows (keys stay, for relationships; hashes and run
    bookkeeping go)."""
    return [c for c in t.columns if c.name not in BI_EXCLUDED]


def _bi_view(t: Table, bi_schema: str, schema: str) -> View:
    cols = bi_columns(t)
    labels = [c.label or c.name for c in cols]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise PlanError(
            f"table {t.name}: columns share the business name(s) {', '.join(sorted(dup))}; "
            "give them distinct names under the star's 'labels:'"
        )
    select = tuple(("f", c.name, c.label or c.name) for c in cols)
    return View(
        name=t.label,
        schema=bi_schema,
        select=select,
        base=t.name,
        where=f"{DATE_KEY} <> {UNKNOWN_KEY}" if t.kind == "date" else "",
        label=t.label,
    )
