"""SQL dialects: PostgreSQL (local default, tests) and Amazon Redshift (production).

Every identifier goes through :meth:`Dialect.q` (validated, then double-quoted) and every
value through :meth:`Dialect.literal`; nothing from YAML is pasted into SQL unquoted.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from regflow.core.types import decimal_ps
from regflow.errors import ConfigError
from regflow.ops.star import LABEL_PATTERN
from regflow.warehouse.model import WColumn

_SAFE_IDENT = re.compile(LABEL_PATTERN)


class Dialect:
    name = "base"
    string_type = "TEXT"
    max_statement_rows = 1000

    # ---------------------------------------------------------------- quoting
    def q(self, ident: str) -> str:
        """A quoted identifier. Business names (PowerBI views) may hold spaces; nothing may
        hold quotes, NULs or control characters."""
        if not _SAFE_IDENT.match(ident):
            raise ConfigError(
                f"identifier {ident!r} is not allowed in SQL: use letters, digits, spaces and "
                "_ ( ) - . / & % # + (at most 127 characters)"
            )
        return '"' + ident + '"'

    def qn(self, schema: str, name: str) -> str:
        return f"{self.q(schema)}.{self.q(name)}"

    def literal(self, value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float | Decimal):
            return repr(float(value)) if isinstance(value, float) else str(value)
        if isinstance(value, dt.datetime):
            return f"TIMESTAMP '{value.strftime('%Y-%m-%d %H:%M:%S')}'"
        if isinstance(value, dt.date):
            return f"DATE '{value.isoformat()}'"
        text = str(value)
        if "\x00" in text:
            raise ConfigError("a text value holds a NUL character")
        return "'" + self._escape(text) + "'"

    def _escape(self, text: str) -> str:
        return text.replace("'", "''")

    # ---------------------------------------------------------------- types
    def type(self, t: str) -> str:
        ps = decimal_ps(t)
        if ps:
            return f"NUMERIC({ps[0]},{ps[1]})"
        return {
            "string": self.string_type,
            "boolean": "BOOLEAN",
            "date": "DATE",
            "timestamp": "TIMESTAMP",
            "int": "INTEGER",
            "bigint": "BIGINT",
            "double": "DOUBLE PRECISION",
        }[t]

    def column_type(self, c: WColumn) -> str:
        return self.type(c.type)

    def column_def(self, c: WColumn, *, sort: bool = False) -> str:
        null = " NOT NULL" if not c.nullable else ""
        return f"{self.q(c.name)} {self.column_type(c)}{null}"

    def table_options(self, diststyle: str, distkey: str, sortkey: tuple[str, ...]) -> str:
        return ""

    def lock(self, tables: list[str]) -> str:
        raise NotImplementedError

    def advisory_lock(self, key: str) -> str | None:
        return None

    def create_view(self, qname: str, select_sql: str) -> list[str]:
        raise NotImplementedError

    def create_temp(self, name: str, columns: str) -> list[str]:
        raise NotImplementedError


class Postgres(Dialect):
    name = "postgresql"
    string_type = "TEXT"

    def lock(self, tables: list[str]) -> str:
        # SHARE ROW EXCLUSIVE: one loader at a time per table; readers are never blocked
        return f"LOCK TABLE {', '.join(tables)} IN SHARE ROW EXCLUSIVE MODE"

    def advisory_lock(self, key: str) -> str:
        return f"SELECT pg_advisory_xact_lock(hashtext({self.literal(key)}))"

    def create_view(self, qname: str, select_sql: str) -> list[str]:
        # DROP first: CREATE OR REPLACE cannot rename or retype columns; one transaction
        return [f"DROP VIEW IF EXISTS {qname}", f"CREATE VIEW {qname} AS {select_sql}"]

    def create_temp(self, name: str, columns: str) -> list[str]:
        return [f"CREATE TEMP TABLE {self.q(name)} ({columns}) ON COMMIT DROP"]


class Redshift(Dialect):
    name = "redshift"
    string_type = "VARCHAR(256)"
    max_statement_rows = 500  # multi-row INSERTs stay far below the 16 MB statement limit

    def _escape(self, text: str) -> str:
        # Redshift treats a backslash in a literal as an escape
        return text.replace("\\", "\\\\").replace("'", "''")

    def type(self, t: str) -> str:
        return {"double": "DOUBLE PRECISION", "timestamp": "TIMESTAMP"}.get(t) or super().type(t)

    def column_type(self, c: WColumn) -> str:
        if c.type == "string" and c.length:
            return f"VARCHAR({c.length})"
        return self.type(c.type)

    def encoding(self, c: WColumn, sort: bool) -> str:
        if sort:
            return "RAW"  # sort key columns compress badly and slow range-restricted scans
        if c.type in ("string", "boolean"):
            return "ZSTD"
        return "AZ64"  # numbers, decimals, dates, timestamps

    def column_def(self, c: WColumn, *, sort: bool = False) -> str:
        return f"{super().column_def(c)} ENCODE {self.encoding(c, sort)}"

    def table_options(self, diststyle: str, distkey: str, sortkey: tuple[str, ...]) -> str:
        out = [f"DISTSTYLE {diststyle}"]
        if diststyle == "KEY":
            out.append(f"DISTKEY ({self.q(distkey)})")
        if sortkey:
            out.append(f"COMPOUND SORTKEY ({', '.join(self.q(c) for c in sortkey)})")
        return " " + " ".join(out)

    def lock(self, tables: list[str]) -> str:
        return f"LOCK {', '.join(tables)}"

    def create_view(self, qname: str, select_sql: str) -> list[str]:
        # late binding: the view survives its tables being rebuilt (and PowerBI keeps working)
        return [f"CREATE OR REPLACE VIEW {qname} AS {select_sql} WITH NO SCHEMA BINDING"]

    def create_temp(self, name: str, columns: str) -> list[str]:
        # no DROP first: each load has its own session, and an unqualified DROP could hit a
        # permanent table of the same name on the search path
        return [f"CREATE TEMP TABLE {self.q(name)} ({columns})"]


DIALECTS: dict[str, Dialect] = {"postgresql": Postgres(), "redshift": Redshift()}


def get_dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown warehouse dialect '{name}'; use one of {', '.join(DIALECTS)}"
        ) from None
