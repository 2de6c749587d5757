"""Schema changes: compare the warehouse's tables with what the spec now makes.

A load checks this before it touches anything (``check_columns``). Added columns that may be
empty for the rows already loaded (measures, attributes, audit columns) migrate in place with
``regflow warehouse migrate``: ``ALTER TABLE ... ADD COLUMN`` per column, then the views are
made again. Anything else (a column gone or renamed, a new key or grain column, which rows
loaded before cannot have) is never done by regflow: the message says what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from regflow.core.types import decimal_ps
from regflow.errors import ConfigError
from regflow.warehouse import sql as S
from regflow.warehouse.dialects import Dialect
from regflow.warehouse.model import StarModel, WColumn, warehouse_type


@dataclass
class Migration:
    """What it takes to bring a star's existing tables to the spec."""

    pipeline: str
    schema: str
    steps: list[S.Step] = field(default_factory=list)  # ADD COLUMN..., then the views
    problems: list[str] = field(default_factory=list)  # what regflow will not do by itself

    @property
    def additive(self) -> bool:
        return not self.problems

    @property
    def needed(self) -> bool:
        return bool(self.problems) or any(s.name.startswith("add ") for s in self.steps)


def wanted_columns(m: StarModel) -> dict[str, list[WColumn]]:
    """Every table a load writes (except the load record), and its columns per the spec."""
    out = {t.name: list(t.columns) for t in m.tables}
    for t in m.dimensions:
        if t.scd2:
            out[S.snapshots_name(t)] = S.snapshot_columns(t)
    return out


def existing_columns_sql(d: Dialect, m: StarModel) -> str:
    names = ", ".join(d.literal(n) for n in wanted_columns(m))
    return (
        "SELECT table_name, column_name, numeric_scale FROM information_schema.columns "
        f"WHERE table_schema = {d.literal(m.schema)} AND table_name IN ({names}) "
        "ORDER BY table_name, ordinal_position"
    )


Scales = dict[tuple[str, str], int]


def existing_schema(cur: Any, d: Dialect, m: StarModel) -> tuple[dict[str, list[str]], Scales]:
    """The columns of the star's tables that exist in the warehouse (absent tables left out),
    and the scale of each NUMERIC one."""
    cur.execute(existing_columns_sql(d, m))
    out: dict[str, list[str]] = {}
    scales: Scales = {}
    for table, column, scale in cur.fetchall() or []:
        out.setdefault(str(table), []).append(str(column))
        if scale is not None:
            scales[(str(table), str(column))] = int(scale)
    return out, scales


def existing_columns(cur: Any, d: Dialect, m: StarModel) -> dict[str, list[str]]:
    """The columns of the star's tables that exist in the warehouse (absent tables left out)."""
    return existing_schema(cur, d, m)[0]


def scale_problems(d: Dialect, m: StarModel, scales: Scales) -> list[str]:
    """NUMERIC columns created with fewer decimals than the spec's type (an older regflow, or
    a hand-made table): loading would round every value inserted."""
    out = []
    for table, want in wanted_columns(m).items():
        for c in want:
            ps = decimal_ps(warehouse_type(c.type))
            have = scales.get((table, c.name))
            if ps is not None and have is not None and have < ps[1]:
                out.append(
                    f"{m.schema}.{table}.{c.name} keeps {have} decimals but the spec makes "
                    f"{warehouse_type(c.type)}: loading would round every value. Widen it "
                    f"(PostgreSQL: ALTER TABLE {d.qn(m.schema, table)} ALTER COLUMN "
                    f"{d.q(c.name)} TYPE NUMERIC({ps[0]},{ps[1]}); Redshift cannot alter a "
                    "NUMERIC column: add a new one, copy, drop and rename) or drop the table "
                    "to let regflow recreate it"
                )
    return out


def plan_migration(d: Dialect, m: StarModel, existing: dict[str, list[str]]) -> Migration:
    """The DDL that adds what the spec added (pure: ``existing`` as read from the warehouse)."""
    mig = Migration(m.pipeline, m.schema)
    adds: list[S.Step] = []
    for table, want in wanted_columns(m).items():
        have = existing.get(table)
        if not have:
            continue  # created by the next load
        qname = f"{m.schema}.{table}"
        names = {c.name for c in want}
        for gone in [c for c in have if c not in names]:
            mig.problems.append(
                f"{qname} has a column '{gone}' the spec no longer makes. If it was renamed, "
                f"rename it in the warehouse: ALTER TABLE {d.qn(m.schema, table)} RENAME COLUMN "
                f"{d.q(gone)} TO <new name>; if it was removed, export what you need and drop "
                f"it: ALTER TABLE {d.qn(m.schema, table)} DROP COLUMN {d.q(gone)}"
                + (" CASCADE" if d.name == "postgresql" else "")
                + " (the views are made again by the next load)"
            )
        for c in want:
            if c.name in have:
                continue
            if not c.nullable:
                mig.problems.append(
                    f"{qname} needs a new column '{c.name}', a key or grain column (NOT NULL) "
                    "that the rows loaded before cannot have: export what you need, drop the "
                    f"table (DROP TABLE {d.qn(m.schema, table)}"
                    + (" CASCADE" if d.name == "postgresql" else "")
                    + ") and rerun the cobs to reload it"
                )
                continue
            adds.append(
                S.Step(
                    f"add {table}.{c.name}",
                    f"ALTER TABLE {d.qn(m.schema, table)} ADD COLUMN {d.column_def(c)}",
                )
            )
    if adds and not mig.problems:
        mig.steps = [*adds, *S.view_steps(d, m)]
    return mig


def check_columns(
    d: Dialect, m: StarModel, existing: dict[str, list[str]], scales: Scales | None = None
) -> None:
    """Stop a load, before it changes anything, if a table differs from the spec."""
    narrow = scale_problems(d, m, scales or {})
    if narrow:
        raise ConfigError(
            f"the warehouse tables of '{m.pipeline}' (schema {m.schema}) keep fewer decimals "
            "than the spec makes (regflow never changes them by itself):\n  - "
            + "\n  - ".join(narrow)
        )
    mig = plan_migration(d, m, existing)
    if not mig.needed:
        return
    if mig.additive:
        added = ", ".join(s.name[len("add ") :] for s in mig.steps if s.name.startswith("add "))
        raise ConfigError(
            f"the warehouse tables of '{m.pipeline}' (schema {m.schema}) lack columns the spec "
            f"now makes: {added}. Add them in place, then rerun: "
            f"regflow warehouse migrate {m.pipeline} (--dry-run shows the DDL first)"
        )
    raise ConfigError(
        f"the warehouse tables of '{m.pipeline}' (schema {m.schema}) differ from the spec in "
        "ways regflow never changes by itself:\n  - " + "\n  - ".join(mig.problems)
    )


def migrate(
    d: Dialect,
    conn: Any,
    m: StarModel,
    *,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
) -> Migration:
    """Read the star's tables, and add the missing columns and remake the views in one
    transaction (unless ``dry_run``). Raises a ConfigError for non-additive differences."""
    cur = conn.cursor()
    try:
        mig = plan_migration(d, m, existing_columns(cur, d, m))
        if mig.problems:
            raise ConfigError(
                f"cannot migrate '{m.pipeline}' (schema {m.schema}) in place:\n  - "
                + "\n  - ".join(mig.problems)
            )
        if not mig.steps:
            log(f"{m.pipeline}: schema {m.schema} matches the spec; nothing to migrate")
            conn.rollback()
            return mig
        log(f"-- {'would run' if dry_run else 'running'} on schema {m.schema}:")
        for step in mig.steps:
            log(f"{step.sql};")
        if dry_run:
            conn.rollback()
            return mig
        for step in mig.steps:
            cur.execute(step.sql)
        conn.commit()
        log(f"{m.pipeline}: migrated schema {m.schema}")
        return mig
    except BaseException:
        conn.rollback()
        raise
