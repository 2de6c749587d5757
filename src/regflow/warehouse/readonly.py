"""``regflow warehouse query``: one query, read only, in three independent layers.

1. The text is parsed (sqlglot) and refused unless it is exactly one query: a SELECT, a set
   operation or VALUES, with no data-modifying CTE, no ``SELECT ... INTO``, no row lock and
   no call of a function that reaches the server's files, processes or settings.
2. On PostgreSQL it runs in a transaction made ``READ ONLY`` before the query, and
3. it is sent on the extended protocol (a prepared statement), which carries one statement:
   a ``COMMIT;`` smuggled into the text can no longer end the read-only transaction and run
   what follows it (the simple protocol, used for a query without parameters, would).

The transaction is rolled back afterwards, whatever the query did.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from regflow.errors import ConfigError

QUERY_HINT = "write one SELECT (or WITH ... SELECT, VALUES, UNION ...); no ';' between statements"

# Functions that read or write the server's files, signal its processes, change its settings
# or open connections elsewhere: not "reading the warehouse", whatever the transaction mode.
REFUSED_FUNCTIONS = frozenset(
    {
        "set_config",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_file_write",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_promote",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_logical_emit_message",
        "pg_advisory_lock",
        "pg_advisory_xact_lock",
        "pg_sleep",
        "lo_import",
        "lo_export",
        "lo_unlink",
        "lo_create",
        "lo_put",
        "lo_from_bytea",
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "query_to_xml",
        "nextval",
        "setval",
    }
)


class QueryRefused(ConfigError):
    """A ``warehouse query`` text that is not exactly one read-only query."""


def check_query(sql: str, dialect: str = "postgres") -> None:
    """Refuse ``sql`` unless it is exactly one query (see the module docstring)."""
    import sqlglot
    from sqlglot import exp

    logging.getLogger("sqlglot").setLevel(logging.ERROR)  # no "falling back to Command" chatter
    read = "redshift" if dialect == "redshift" else "postgres"
    try:
        statements = [s for s in sqlglot.parse(sql, read=read) if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise QueryRefused(f"cannot parse the query: {first}\n  hint: {QUERY_HINT}") from None
    if len(statements) != 1:
        kinds = ", ".join(_kind(s) for s in statements) or "nothing"
        raise QueryRefused(
            f"warehouse query runs exactly one read-only statement; got {len(statements)}: "
            f"{kinds}\n  hint: {QUERY_HINT}"
        )
    (stmt,) = statements
    if not isinstance(stmt, exp.Query | exp.Values):
        raise QueryRefused(
            f"warehouse query is read-only: {_kind(stmt)} is not a query\n  hint: {QUERY_HINT}"
        )
    for node in stmt.walk():
        if isinstance(node, exp.DML | exp.DDL | exp.Command | exp.Transaction | exp.Commit):
            raise QueryRefused(
                f"warehouse query is read-only: the query contains a {_kind(node)}\n"
                f"  hint: {QUERY_HINT}"
            )
        if isinstance(node, exp.Into):
            raise QueryRefused(
                "warehouse query is read-only: SELECT ... INTO creates a table\n"
                "  hint: drop the INTO clause"
            )
        if isinstance(node, exp.Lock):
            raise QueryRefused(
                "warehouse query is read-only: FOR UPDATE/SHARE locks rows\n"
                "  hint: drop the locking clause"
            )
        if isinstance(node, exp.Func):
            name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            if name in REFUSED_FUNCTIONS or name.startswith(("lo_", "dblink", "pg_ls_")):
                raise QueryRefused(
                    f"warehouse query reads tables and views; function {name}() reaches the "
                    "server's files, processes or settings\n  hint: query the star's tables"
                )


def _kind(node: Any) -> str:
    from sqlglot import exp

    if isinstance(node, exp.Command):
        return str(node.this).upper()
    return node.key.upper()


def run_read_only(target: Any, sql: str, params: Any = None) -> tuple[list[str], list[Any]]:
    """The columns and rows of ``sql`` on ``target``, run read-only (layers 2 and 3 of the
    module docstring; the caller checks the text with :func:`check_query`)."""
    conn = target.connect()
    try:
        cur = conn.cursor()
        if target.dialect.name == "postgresql":
            cur.execute("SET TRANSACTION READ ONLY")  # before the query: it cannot be undone
            cur.execute(sql, params, prepare=True)  # extended protocol: one statement
        elif params is not None:
            cur.execute(sql, params)  # redshift_connector: extended protocol throughout
        else:
            cur.execute(sql)
        columns = [d[0] for d in cur.description or []]
        rows = cur.fetchall() if cur.description else []
    finally:
        with contextlib.suppress(Exception):  # a broken connection: the error above counts
            conn.rollback()
        conn.close()
    return columns, rows
