"""Spark SQL identifiers. A module of its own so that ``sources`` and ``lineage``, which
both quote names, need not import each other."""

from __future__ import annotations


def quote_name(name: str) -> str:
    """A column name as a Spark SQL identifier (backquoted)."""
    return "`" + name.replace("`", "``") + "`"
