"""Column types and schemas, as written in specs (``decimal(20,2)``, ``date``, ...).

Spark-free: the plan layer infers schemas with these, and the runtime maps them to Spark.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ALIASES = {
    "str": "string",
    "varchar": "string",
    "text": "string",
    "bool": "boolean",
    "integer": "int",
    "long": "bigint",
    "float64": "double",
    "float": "double",
    "datetime": "timestamp",
}
_SIMPLE = {"string", "boolean", "date", "timestamp", "int", "bigint", "double", "unknown"}
_DECIMAL = re.compile(r"^decimal\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
NUMERIC_SIMPLE = {"int", "bigint", "double"}


TYPE_HINT = "use one of string, boolean, date, timestamp, int, bigint, double, decimal(p,s)"


class SpecValueError(ValueError):
    """A bad value in a spec; ``hint`` suggests the fix (the loader shows it)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class TypeParseError(SpecValueError):
    """A type that regflow does not know."""

    def __init__(self, message: str, hint: str = TYPE_HINT):
        super().__init__(message, hint)


def normalize_type(text: str) -> str:
    """Canonical spelling of a type, or :class:`TypeParseError`."""
    t = str(text).strip().lower()
    t = _ALIASES.get(t, t)
    if t in _SIMPLE:
        return t
    if t == "decimal":
        raise TypeParseError(
            "decimal needs a precision and scale", hint="write decimal(p,s), e.g. decimal(38,10)"
        )
    m = _DECIMAL.match(t)
    if m:
        p, s = int(m.group(1)), int(m.group(2))
        if not 1 <= p <= 38 or s > p:
            raise TypeParseError(
                f"decimal({p},{s}) needs 1 <= precision <= 38 and scale <= precision",
                hint=f"e.g. decimal(38,{min(s, 38)})",
            )
        return f"decimal({p},{s})"
    if "(" in t and ")" not in t:
        # `{amount: decimal(20,2)}`: in a YAML flow mapping the comma ends the value
        raise TypeParseError(
            f"unknown type '{text}'",
            hint='quote the type, e.g. "decimal(20,2)": inside { } a comma ends the value',
        )
    raise TypeParseError(f"unknown type '{text}'")


def is_numeric(t: str) -> bool:
    """``decimal`` alone is an inferred decimal whose precision the compiler cannot know."""
    return t in NUMERIC_SIMPLE or t.startswith("decimal")


def decimal_ps(t: str) -> tuple[int, int] | None:
    m = _DECIMAL.match(t)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "unknown"


@dataclass(frozen=True)
class Schema:
    """An ordered set of columns. ``known=False`` means the columns cannot be inferred."""

    columns: tuple[Column, ...] = ()
    known: bool = True

    @classmethod
    def of(cls, pairs: dict[str, str] | list[tuple[str, str]]) -> Schema:
        items = pairs.items() if isinstance(pairs, dict) else pairs
        return cls(tuple(Column(n, normalize_type(t)) for n, t in items))

    @classmethod
    def unknown(cls) -> Schema:
        return cls((), known=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def __contains__(self, name: object) -> bool:
        return any(c.name == name for c in self.columns)

    def type_of(self, name: str) -> str:
        for c in self.columns:
            if c.name == name:
                return c.type
        raise KeyError(name)

    def with_columns(self, new: list[Column]) -> Schema:
        """Add or replace columns (replacing keeps the original position)."""
        cols = list(self.columns)
        index = {c.name: i for i, c in enumerate(cols)}
        for c in new:
            if c.name in index:
                cols[index[c.name]] = c
            else:
                index[c.name] = len(cols)
                cols.append(c)
        return Schema(tuple(cols), known=self.known)

    def select(self, names: list[str]) -> Schema:
        return Schema(tuple(c for c in self.columns if c.name in set(names)), known=self.known)

    def to_dict(self) -> dict[str, str]:
        return {c.name: c.type for c in self.columns}
