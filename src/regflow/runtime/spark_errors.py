"""Spark's run-time errors in a user's terms: what failed, where, and regflow's fix.

Spark reports a failed expression with its error class (``[CAST_INVALID_INPUT]``), the
value, and the SQL fragment that failed (``== SQL (line 1, position 1) ==``), then advises
turning ANSI mode off: advice that would hide wrong figures. :func:`describe` keeps the
class, the value and the fragment, drops that advice, and adds what to do instead. The
executor uses the fragment to name the node whose expression failed (the job runs at the
stage's write, whichever node's expression it is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CLASS = re.compile(r"\[([A-Z][A-Z_]*(?:\.[A-Z_]+)*)\]\s*([^\n]*)")
_FRAGMENT = re.compile(r"== SQL[^\n]*==\n(.*?)\n[ \t]*\^", re.DOTALL)
_FILE = re.compile(r"reading file (\S+?)\.?(?:\s|$)")
# sentences of Spark's messages that advise what regflow must not do (turn ANSI off) or
# that speak of Spark's own knobs
_ADVICE = re.compile(
    r"[^.]*(?:spark\.sql\.ansi\.enabled|`try_cast`|`try_divide`|try_\w+\(|SQLSTATE)[^.]*\.?",
    re.IGNORECASE,
)

_FIXES = {
    "CAST_INVALID_INPUT": (
        "A value cannot be converted to the type the expression needs: declare the column's "
        "type in the source schema (the read then names the bad value and its row), or clean "
        "the data"
    ),
    "NUMERIC_VALUE_OUT_OF_RANGE": (
        "A value does not fit its decimal type: check the input for outliers, or give the "
        "result more digits, e.g. CAST(operand AS decimal(38,2))"
    ),
    "ARITHMETIC_OVERFLOW": (
        "A value does not fit its type: check the input for outliers, or compute with a "
        "wider type, e.g. CAST(operand AS decimal(38,2))"
    ),
    "CAST_OVERFLOW": (
        "A value does not fit the type it is cast to: check the input for outliers, or cast "
        "to a wider type"
    ),
    "DIVIDE_BY_ZERO": "Guard the divisor, e.g. x / nullif(y, 0) gives null for a zero divisor",
    "DATETIME_OVERFLOW": "A date computation leaves the calendar: check the input dates",
}


@dataclass(frozen=True)
class SparkFailure:
    """One Spark error: its class, its message without Spark's advice, regflow's fix, and
    the SQL fragment (an expression of the spec) or the file that failed."""

    error_class: str
    message: str
    fix: str = ""
    fragment: str | None = None
    file: str | None = None

    @property
    def is_data(self) -> bool:
        return self.error_class.split(".")[0] in _FIXES or self.file is not None


def strip_advice(text: str) -> str:
    """``text`` without Spark's advice to turn ANSI mode off (or to use ``try_*``)."""
    return re.sub(r"\s{2,}", " ", _ADVICE.sub("", text)).strip()


def describe(text: str) -> SparkFailure | None:
    """The Spark error in an exception's text; None when it is none of Spark's."""
    m = _CLASS.search(text)
    if m is None:
        return None
    klass, rest = m.group(1), m.group(2)
    base = klass.split(".")[0]
    if base == "FAILED_READ_FILE":
        f = _FILE.search(text)
        path = f.group(1).removeprefix("file:") if f else None
        if path is not None:
            return SparkFailure(
                klass,
                f"file {path} is not a readable Parquet file ([{klass}]). Replace it with a "
                "good copy (or remove it) and rerun",
                file=path,
            )
    frag = _FRAGMENT.search(text)
    fragment = " ".join(frag.group(1).split()) if frag else None
    return SparkFailure(
        klass, f"[{klass}] {strip_advice(rest)}", fix=_FIXES.get(base, ""), fragment=fragment
    )
