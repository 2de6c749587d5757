"""Say why an unexpected failure happened and what to do about it.

A :class:`~regflow.errors.RegflowError` already names its cause, node and fix. Anything else
(an ``OSError`` from a full disk or a read-only folder, a database driver's error when the
warehouse is unreachable or refuses rows, a crash inside Spark) reaches a user through
:func:`explain`: a one-line cause and a fix, for the stage report, the Airflow log and the CLI.
Pure Python: no driver is imported (errors are recognised by their class and errno).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass

_CONNECTION_WORDS = (
    "connection refused",
    "could not connect",
    "connection failed",
    "server closed the connection",
    "terminating connection",
    "connection is closed",
    "connection already closed",
    "connection timed out",
    "no route to host",
    "name or service not known",
    "could not translate host name",
    "the connection is lost",
    "consuming input failed",
)


@dataclass(frozen=True)
class Explanation:
    cause: str  # one line: what went wrong, in the user's terms
    fix: str  # what to do about it
    kind: str  # disk-full | not-writable | warehouse-unreachable | warehouse-refused | unexpected


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [""])[0].strip() or type(exc).__name__


def _is_db_error(exc: BaseException) -> bool:
    mod = type(exc).__module__ or ""
    return mod.split(".")[0] in ("psycopg", "psycopg2", "redshift_connector", "sqlalchemy")


def explain(exc: BaseException, *, node: str | None = None) -> Explanation:
    """The cause and fix of ``exc`` (its whole ``__cause__`` chain is searched)."""
    where = f" (node {node})" if node else ""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno is not None:
            path = e.filename or ""
            at = f" {path}" if path else ""
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                return Explanation(
                    f"the disk is full: no space left writing{at}{where}",
                    "free space on that volume (`regflow gc` removes leftovers of failed "
                    "runs), then rerun; previous published outputs are untouched",
                    "disk-full",
                )
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return Explanation(
                    f"cannot write{at}: {e.strerror or 'permission denied'}{where}",
                    "make the folder writable by this user, or point --storage / "
                    "REGFLOW_STORAGE (or REGFLOW_WAREHOUSE_DIR) at a writable folder, then rerun",
                    "not-writable",
                )
            if e.errno == errno.ENOTDIR and path:
                return Explanation(
                    f"cannot write {path}: one of its parent folders is a file{where}",
                    "point --storage / REGFLOW_STORAGE at a folder (not under a file), then rerun",
                    "not-writable",
                )
    for e in _chain(exc):
        msg = str(e).lower()
        connection = isinstance(e, ConnectionError) or (
            (_is_db_error(e) or "py4j" in msg or type(e).__name__ == "OperationalError")
            and any(w in msg for w in _CONNECTION_WORDS)
        )
        if connection:
            return Explanation(
                f"the warehouse is unreachable or the connection broke{where}: {_first_line(e)}",
                "check that the database runs and that --warehouse / REGFLOW_WAREHOUSE "
                "points at it (`regflow warehouse info`), then rerun",
                "warehouse-unreachable",
            )
    for e in _chain(exc):
        if _is_db_error(e):
            return Explanation(
                f"the warehouse refused the statement{where}: {_first_line(e)}",
                "read the database's message above (a key or constraint violation means the "
                "star's rows or the tables in the warehouse disagree with the spec: "
                "`regflow warehouse migrate` / `regflow warehouse reconcile`), fix, then rerun",
                "warehouse-refused",
            )
    return Explanation(
        f"{type(exc).__name__}: {_first_line(exc)}{where}",
        "not a known failure: its full traceback is in the log named here (`regflow --debug`"
        " or REGFLOW_DEBUG=1 prints it on the terminal); check the input it names, then rerun",
        "unexpected",
    )
