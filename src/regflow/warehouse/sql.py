"""The SQL of a star: DDL, staging tables, the merge, the load record, the views.

Pure functions of a :class:`~regflow.warehouse.model.StarModel` and a dialect: the loader runs
these very statements, ``regflow sql`` writes them to ``sql/``, and the tests assert them and
parse each one with sqlglot's Redshift dialect.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from regflow.warehouse.dialects import Dialect
from regflow.warehouse.model import DATE_KEY, UNKNOWN_KEY, StarModel, Table, View, WColumn

LOADS_TABLE = "regflow_loads"
END_OF_TIME = dt.date(9999, 12, 31)
BEGIN_OF_TIME = dt.date(1900, 1, 1)


@dataclass(frozen=True)
class Step:
    """One statement of a load; ``name`` labels it in progress output and fault injection."""

    name: str
    sql: str
    only_if: str = ""  # run only when this query returns a non-zero count


def staging_name(t: Table) -> str:
    return f"stg_{t.name}"


def versions_name(t: Table) -> str:
    return f"ver_{t.name}"


# ------------------------------------------------------------------------------- DDL
def create_table(d: Dialect, m: StarModel, t: Table) -> str:
    cols = ",\n  ".join(d.column_def(c, sort=c.name in t.sortkey[:1]) for c in t.columns)
    pk = t.key if t.kind != "fact" else ""
    pk_sql = f",\n  PRIMARY KEY ({d.q(pk)})" if pk else ""
    opts = d.table_options(t.diststyle, t.distkey, t.sortkey)
    return f"CREATE TABLE IF NOT EXISTS {d.qn(m.schema, t.name)} (\n  {cols}{pk_sql}\n){opts}"


def loads_table(d: Dialect, m: StarModel) -> str:
    cols = [
        ("pipeline", "string", False),
        ("node", "string", False),
        ("cob", "date", False),
        ("run_id", "string", False),
        ("spec_hash", "string", False),
        ("adjustment_set_hash", "string", False),
        ("method", "string", False),
        ("table_rows", "string", False),
        ("rows_loaded", "bigint", False),
        ("loaded_at", "timestamp", False),
    ]
    body = ",\n  ".join(d.column_def(WColumn(n, t, nullable=nl)) for n, t, nl in cols)
    opts = d.table_options("EVEN", "", ("loaded_at",)) if d.name == "redshift" else ""
    return f"CREATE TABLE IF NOT EXISTS {d.qn(m.schema, LOADS_TABLE)} (\n  {body}\n){opts}"


def unknown_member(d: Dialect, m: StarModel, t: Table) -> str:
    values = []
    for c in t.columns:
        if c.name == t.key:
            v: object = UNKNOWN_KEY
        elif c.name == "valid_from":
            v = BEGIN_OF_TIME
        elif c.name == "valid_to":
            v = END_OF_TIME
        elif c.name == "is_current":
            v = True
        elif c.name == "row_hash":
            v = 0
        elif c.type == "string" and c.role in ("natural_key", "attribute") and c.name != "run_id":
            v = "Unknown"
        else:
            v = None
        values.append(d.literal(v))
    target = d.qn(m.schema, t.name)
    cols = ", ".join(d.q(c.name) for c in t.columns)
    return (
        f"INSERT INTO {target} ({cols}) SELECT {', '.join(values)} "
        f"WHERE NOT EXISTS (SELECT 1 FROM {target} WHERE {d.q(t.key)} = {UNKNOWN_KEY})"
    )


def view_select(d: Dialect, m: StarModel, v: View) -> str:
    cols = ", ".join(f"{a}.{d.q(c)} AS {d.q(out)}" for a, c, out in v.select)
    sql = f"SELECT {cols} FROM {d.qn(m.schema, v.base)} AS f"
    for alias, table, fk, key in v.joins:
        sql += f" LEFT JOIN {d.qn(m.schema, table)} AS {alias} ON {alias}.{d.q(key)} = f.{d.q(fk)}"
    if v.where:
        col, op, val = v.where.split(" ", 2)
        sql += f" WHERE f.{d.q(col)} {op} {int(val)}"
    if v.order_by:
        sql += " ORDER BY " + ", ".join(f"f.{d.q(c)}" for c in v.order_by)
    return sql


def ddl(d: Dialect, m: StarModel, *, views: bool = True) -> list[Step]:
    """Everything a load needs to exist, idempotently (safe to run before every load)."""
    return create_steps(d, m) + fill_steps(d, m, views=views)


def create_steps(d: Dialect, m: StarModel) -> list[Step]:
    """The schema and tables (``IF NOT EXISTS``): what exists is left as it is."""
    steps = [Step("schema", f"CREATE SCHEMA IF NOT EXISTS {d.q(m.schema)}")]
    steps += [Step(f"table {t.name}", create_table(d, m, t)) for t in m.tables]
    steps += [
        Step(f"table {snapshots_name(t)}", create_snapshots(d, m, t))
        for t in m.dimensions
        if t.scd2
    ]
    steps.append(Step(f"table {LOADS_TABLE}", loads_table(d, m)))
    return steps


def fill_steps(d: Dialect, m: StarModel, *, views: bool = True) -> list[Step]:
    """What needs the tables as the spec makes them: unknown members and views (a load runs
    these only after checking the columns)."""
    steps = [Step(f"unknown {t.name}", unknown_member(d, m, t)) for t in m.dimensions]
    if views:
        steps += view_steps(d, m)
    return steps


def view_steps(d: Dialect, m: StarModel) -> list[Step]:
    steps = []
    for v in m.reports:
        for sql in d.create_view(d.qn(m.schema, v.name), view_select(d, m, v)):
            steps.append(Step(f"view {v.name}", sql))
    steps.append(Step("schema bi", f"CREATE SCHEMA IF NOT EXISTS {d.q(m.bi_schema)}"))
    for v in m.bi_views:
        for sql in d.create_view(d.qn(m.bi_schema, v.name), view_select(d, m, v)):
            steps.append(Step(f"bi view {v.name}", sql))
    return steps


# ------------------------------------------------------------------------------- staging
def create_staging(d: Dialect, t: Table) -> list[str]:
    cols = ", ".join(d.column_def(c) for c in t.staged)
    return d.create_temp(staging_name(t), cols)


def copy_columns(d: Dialect, t: Table) -> str:
    return ", ".join(d.q(c.name) for c in t.staged)


def insert_staging(d: Dialect, t: Table, rows: int, *, numbered: bool = False) -> str:
    """A multi-row INSERT into the staging table with ``rows`` rows of placeholders: ``%s``
    (DB-API format style), or ``$1, $2, ...`` when ``numbered`` (PostgreSQL's own, sent as
    is by psycopg's ``RawCursor``)."""
    n = len(t.staged)
    if numbered:
        values = ", ".join(
            "(" + ", ".join(f"${r * n + i}" for i in range(1, n + 1)) + ")" for r in range(rows)
        )
    else:
        values = ", ".join(["(" + ", ".join(["%s"] * n) + ")"] * rows)
    return f"INSERT INTO {d.q(staging_name(t))} ({copy_columns(d, t)}) VALUES {values}"


def _deduped(d: Dialect, t: Table) -> str:
    """The batch, one row per key: a retried or doubled staging never duplicates rows."""
    keys = ", ".join(d.q(k) for k in t.dedupe_keys)
    cols = ", ".join(f"s.{d.q(c.name)}" for c in t.staged)
    return (
        f"(SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {keys}) AS rn "
        f"FROM {d.q(staging_name(t))} AS s)"
    )


# ------------------------------------------------------------------------------- merge
def _nk_match(
    d: Dialect, left: str, right: str, cols: tuple[str, ...], rcols: tuple[str, ...] = ()
) -> str:
    pairs = zip(cols, rcols or cols, strict=True)
    return " AND ".join(f"{left}.{d.q(a)} = {right}.{d.q(b)}" for a, b in pairs)


def merge_dimension(d: Dialect, m: StarModel, t: Table) -> list[Step]:
    target = d.qn(m.schema, t.name)
    key = d.q(t.key)
    staged = [c.name for c in t.staged]
    if t.kind == "date":
        cols = ", ".join(d.q(c) for c in staged)
        return [
            Step(
                f"merge {t.name}",
                f"INSERT INTO {target} ({cols}) SELECT {', '.join(f'b.{d.q(c)}' for c in staged)} "
                f"FROM {_deduped(d, t)} AS b WHERE b.rn = 1 AND NOT EXISTS "
                f"(SELECT 1 FROM {target} AS t WHERE t.{key} = b.{key})",
            )
        ]
    if not t.scd2:
        attrs = [c for c in staged if c not in (t.key, *t.natural_key)]
        me = d.q(t.name)  # the UPDATE target, referenced by its bare name (PG and Redshift)
        sets = ", ".join(f"{d.q(c)} = b.{d.q(c)}" for c in attrs)
        cols = ", ".join(d.q(c) for c in staged)
        return [
            Step(
                f"update {t.name}",
                f"UPDATE {target} SET {sets} FROM {_deduped(d, t)} AS b "
                f"WHERE b.rn = 1 AND {me}.{key} = b.{key} "
                f"AND {me}.{d.q('row_hash')} <> b.{d.q('row_hash')}",
            ),
            Step(
                f"insert {t.name}",
                f"INSERT INTO {target} ({cols}) SELECT {', '.join(f'b.{d.q(c)}' for c in staged)} "
                f"FROM {_deduped(d, t)} AS b WHERE b.rn = 1 AND NOT EXISTS "
                f"(SELECT 1 FROM {target} AS t WHERE t.{key} = b.{key})",
            ),
            _key_check(d, m, t),
        ]
    return _merge_scd2(d, m, t)


def _key_check(d: Dialect, m: StarModel, t: Table) -> Step:
    """Fails the load (the transaction rolls back) if two members share a surrogate key."""
    target = d.qn(m.schema, t.name)
    return Step(
        f"check {t.name} keys",
        f"SELECT {d.q(t.key)} FROM {target} GROUP BY {d.q(t.key)} HAVING COUNT(*) > 1",
    )


def snapshots_name(t: Table) -> str:
    return f"{t.name}_snapshots"


def old_versions_name(t: Table) -> str:
    return f"old_{t.name}"


def snapshot_columns(t: Table) -> list[WColumn]:
    """An SCD2 dimension's observations: one row per member and cob loaded, with the
    attributes that load gave it and the key of a version starting that cob."""
    out = []
    for c in t.columns:
        if c.name in ("valid_to", "is_current"):
            continue
        if c.name == "valid_from":
            out.append(WColumn("cob", "date", nullable=False, role="scd"))
        else:
            out.append(c)
    return out


def create_snapshots(d: Dialect, m: StarModel, t: Table) -> str:
    nk = t.natural_key
    cols = ",\n  ".join(d.column_def(c, sort=c.name == nk[0]) for c in snapshot_columns(t))
    pk = ", ".join(d.q(c) for c in (*nk, "cob"))
    opts = d.table_options("EVEN", "", (*nk, "cob"))
    return (
        f"CREATE TABLE IF NOT EXISTS {d.qn(m.schema, snapshots_name(t))} (\n  {cols},\n  "
        f"PRIMARY KEY ({pk})\n){opts}"
    )


def _merge_scd2(d: Dialect, m: StarModel, t: Table) -> list[Step]:
    """SCD2 as a function of the observations (docs/warehouse.md, "SCD2"): record what this
    load says of each member at its cob, rebuild the versions of the members it names from
    all their observations, change only the rows that differ, re-point the facts."""
    target = d.qn(m.schema, t.name)
    snap = d.qn(m.schema, snapshots_name(t))
    stg = d.q(staging_name(t))
    ver = d.q(versions_name(t))
    old = d.q(old_versions_name(t))
    me, snap_me = d.q(t.name), d.q(snapshots_name(t))
    key, rh, vf, vt = (d.q(x) for x in (t.key, "row_hash", "valid_from", "valid_to"))
    nk = t.natural_key
    part = ", ".join(f"x.{d.q(c)}" for c in nk)
    snap_cols = [c.name for c in snapshot_columns(t)]  # key, nk, attrs, cob, row_hash, run_id
    body = [c for c in snap_cols if c != "cob"]  # what a version copies from its first cob
    in_batch = f"EXISTS (SELECT 1 FROM {stg} AS y WHERE {_nk_match(d, 'y', '{a}', nk)})"
    old_cols = [WColumn(t.key, "bigint"), *(t.column(c) for c in nk)]
    old_cols += [WColumn(c, "date") for c in ("valid_from", "valid_to")]
    old_cols.append(WColumn("row_hash", "bigint"))
    next_cob = f"LEAD(x.{d.q('cob')}) OVER (PARTITION BY {part} ORDER BY x.{d.q('cob')})"
    version_cols = ", ".join(d.q(c) for c in [*body[:-2], "valid_from", "valid_to",
                                               "is_current", *body[-2:]])  # fmt: skip
    first_obs = (
        f"SELECT {', '.join(f's.{d.q(c)}' for c in snap_cols)}, LAG(s.{rh}) OVER "
        f"(PARTITION BY {', '.join(f's.{d.q(c)}' for c in nk)} ORDER BY s.{d.q('cob')}) "
        f"AS prev_hash FROM {snap} AS s WHERE {in_batch.format(a='s')}"
    )
    steps = [
        Step(  # a star loaded before observations were kept: each version observed once
            f"seed {snapshots_name(t)}",
            f"INSERT INTO {snap} ({', '.join(d.q(c) for c in snap_cols)}) SELECT "
            + ", ".join(f"t.{d.q(c if c != 'cob' else 'valid_from')}" for c in snap_cols)
            + f" FROM {target} AS t WHERE t.{key} <> {UNKNOWN_KEY} "
            f"AND NOT EXISTS (SELECT 1 FROM {snap})",
        ),
        Step(  # a reload of a cob replaces what the earlier load said of the same members
            f"observe {t.name}",
            f"DELETE FROM {snap} WHERE {snap_me}.{d.q('cob')} IN "
            f"(SELECT b.{vf} FROM {stg} AS b) AND {in_batch.format(a=snap_me)}",
        ),
        Step(
            f"observe {t.name}",
            f"INSERT INTO {snap} ({', '.join(d.q(c) for c in snap_cols)}) SELECT "
            + ", ".join(f"b.{d.q(c if c != 'cob' else 'valid_from')}" for c in snap_cols)
            + f" FROM {_deduped(d, t)} AS b WHERE b.rn = 1",
        ),
        *[Step(f"versions {t.name}", s) for s in d.create_temp(versions_name(t), _ver_cols(d, t))],
        Step(  # a version starts at each observation whose attributes differ from the last
            f"versions {t.name}",
            f"INSERT INTO {ver} ({version_cols}) SELECT "
            + ", ".join(f"x.{d.q(c)}" for c in body[:-2])
            + f", x.{d.q('cob')}, COALESCE({next_cob}, {d.literal(END_OF_TIME)}), "
            f"CASE WHEN {next_cob} IS NULL THEN TRUE ELSE FALSE END, "
            + ", ".join(f"x.{d.q(c)}" for c in body[-2:])
            + f" FROM ({first_obs}) AS x WHERE x.prev_hash IS NULL OR x.prev_hash <> x.{rh}",
        ),
        *[
            Step(f"versions {t.name}", s)
            for s in d.create_temp(
                old_versions_name(t), ", ".join(d.column_def(c) for c in old_cols)
            )
        ],
        Step(
            f"versions {t.name}",
            f"INSERT INTO {old} ({', '.join(d.q(c.name) for c in old_cols)}) SELECT "
            + ", ".join(f"t.{d.q(c.name)}" for c in old_cols)
            + f" FROM {target} AS t WHERE t.{key} <> {UNKNOWN_KEY} AND {in_batch.format(a='t')}",
        ),
        Step(  # versions that changed (range or attributes) or are gone
            f"retire {t.name}",
            f"DELETE FROM {target} WHERE {me}.{key} IN (SELECT o.{key} FROM {old} AS o "
            f"WHERE NOT EXISTS (SELECT 1 FROM {ver} AS v WHERE v.{key} = o.{key} "
            f"AND v.{vf} = o.{vf} AND v.{vt} = o.{vt} AND v.{rh} = o.{rh}))",
        ),
        Step(
            f"insert {t.name}",
            f"INSERT INTO {target} ({version_cols}) SELECT "
            + ", ".join(f"v.{c}" for c in version_cols.split(", "))
            + f" FROM {ver} AS v WHERE NOT EXISTS (SELECT 1 FROM {target} AS t "
            f"WHERE t.{key} = v.{key})",
        ),
    ]
    changed = (
        f"SELECT COUNT(*) FROM {old} AS o WHERE NOT EXISTS (SELECT 1 FROM {target} AS t "
        f"WHERE t.{key} = o.{key} AND t.{vf} = o.{vf} AND t.{vt} = o.{vt})"
    )
    # Facts whose version changed now belong to the version valid on their date.
    for f in m.facts:
        for fk in f.fks:
            if fk.dim_table != t.name:
                continue
            ft = d.qn(m.schema, f.name)
            fme = d.q(f.name)
            fd = f"{fme}.{d.q(f.date_column)}"
            steps.append(
                Step(
                    f"repoint {f.name}.{fk.column}",
                    f"UPDATE {ft} SET {d.q(fk.column)} = nd.{key} FROM {old} AS o, "
                    f"{target} AS nd WHERE {fme}.{d.q(fk.column)} = o.{key} "
                    f"AND {_nk_match(d, 'nd', 'o', nk)} AND nd.{vf} <= {fd} AND {fd} < nd.{vt} "
                    f"AND nd.{key} <> o.{key}",
                    only_if=changed,
                )
            )
    steps.append(_key_check(d, m, t))
    return steps


def _ver_cols(d: Dialect, t: Table) -> str:
    return ", ".join(d.column_def(c) for c in t.columns)


def merge_fact(
    d: Dialect,
    m: StarModel,
    t: Table,
    cob: dt.date,
    loaded_at: dt.datetime,
    *,
    unique: bool = False,
) -> list[Step]:
    """Replace the cob's facts. ``unique``: the loader already verified that the batch has one
    row per grain (PostgreSQL, where every row passes through it), so no sort to de-duplicate."""
    target = d.qn(m.schema, t.name)
    batch = d.q(staging_name(t)) if unique else _deduped(d, t)
    date_key = int(cob.strftime("%Y%m%d"))
    joins = []
    fk_exprs = {}
    date_col = d.q(t.date_column)
    for i, fk in enumerate(t.fks, start=1):
        a = f"d{i}"
        dim = d.qn(m.schema, fk.dim_table)
        on = _nk_match(d, a, "b", fk.dim_natural, fk.natural)
        if fk.scd2:
            on += (
                f" AND {a}.{d.q('valid_from')} <= b.{date_col} "
                f"AND b.{date_col} < {a}.{d.q('valid_to')}"
            )
        joins.append(f"LEFT JOIN {dim} AS {a} ON {on} AND {a}.{d.q(fk.dim_key)} <> {UNKNOWN_KEY}")
        fk_exprs[fk.column] = f"COALESCE({a}.{d.q(fk.dim_key)}, {UNKNOWN_KEY})"
    select = []
    for c in t.columns:
        if c.name in fk_exprs:
            select.append(fk_exprs[c.name])
        elif c.name == "loaded_at":
            select.append(d.literal(loaded_at))
        else:
            select.append(f"b.{d.q(c.name)}")
    cols = ", ".join(d.q(c.name) for c in t.columns)
    return [
        Step(
            f"delete {t.name}",
            f"DELETE FROM {target} WHERE {d.q(DATE_KEY)} = {date_key}",
        ),
        Step(
            f"insert {t.name}",
            f"INSERT INTO {target} ({cols}) SELECT {', '.join(select)} FROM {batch} AS b "
            + " ".join(joins)
            + ("" if unique else " WHERE b.rn = 1"),
        ),
    ]


def merge(
    d: Dialect,
    m: StarModel,
    cob: dt.date,
    loaded_at: dt.datetime,
    unique: frozenset[str] = frozenset(),
) -> list[Step]:
    """The whole merge, in one transaction: lock, dimensions, facts."""
    tables = sorted(
        [d.qn(m.schema, t.name) for t in m.tables]
        + [d.qn(m.schema, snapshots_name(t)) for t in m.dimensions if t.scd2]
        + [d.qn(m.schema, LOADS_TABLE)]
    )  # one order everywhere: two loaders never deadlock
    steps = [Step("lock", d.lock(tables))]
    for t in m.dimensions:
        steps += merge_dimension(d, m, t)
    for t in m.facts:
        steps += merge_fact(d, m, t, cob, loaded_at, unique=t.name in unique)
    return steps


def load_record(
    d: Dialect,
    m: StarModel,
    *,
    cob: dt.date,
    run_id: str,
    spec_hash: str,
    adjustment_set_hash: str,
    method: str,
    table_rows: str,
    rows: int,
    loaded_at: dt.datetime,
) -> Step:
    values = ", ".join(
        d.literal(v)
        for v in (
            m.pipeline,
            m.node,
            cob,
            run_id,
            spec_hash,
            adjustment_set_hash,
            method,
            table_rows,
            rows,
            loaded_at,
        )
    )
    return Step(
        "record load",
        f"INSERT INTO {d.qn(m.schema, LOADS_TABLE)} (pipeline, node, cob, run_id, spec_hash, "
        f"adjustment_set_hash, method, table_rows, rows_loaded, loaded_at) VALUES ({values})",
    )


def script(d: Dialect, m: StarModel) -> str:
    """The DDL and views as one reviewable file (``sql/<dialect>/<pipeline>.sql``)."""
    head = (
        f"-- Generated by `regflow sql` from pipeline '{m.pipeline}', node '{m.node}'.\n"
        f"-- Dialect: {d.name}. Do not edit: change the spec and regenerate.\n"
    )
    return head + "\n" + "".join(f"-- {s.name}\n{s.sql};\n\n" for s in ddl(d, m))
