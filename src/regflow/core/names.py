"""Names every layer agrees on: ids, column names and the lineage column."""

from __future__ import annotations

import datetime as dt
import re

from regflow.core.types import SpecValueError

ID_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,126}$"
_ID = re.compile(ID_PATTERN)
_COLUMN = re.compile(COLUMN_PATTERN)
LINEAGE_COLUMN = "_lineage_id"
RESERVED_PREFIX = "_lineage"
Scalar = str | int | float | bool | dt.date | None


def _snake(value: str) -> str:
    out = re.sub(r"[^a-z0-9_]+", "_", str(value).lower()).strip("_")
    return out if out[:1].isalpha() else f"x_{out}"


def check_identifier(value: str, what: str = "id") -> str:
    if not _ID.match(value):
        raise SpecValueError(
            f"{what} '{value}' must be lower_snake_case: a letter, then letters, digits or '_' "
            "(at most 63 characters)",
            hint=f"e.g. '{_snake(value)[:63]}'",
        )
    return value


def check_column(value: str) -> str:
    if not _COLUMN.match(value):
        raise SpecValueError(
            f"column name '{value}' must start with a letter or '_' and contain only letters, "
            "digits and '_'",
            hint="rename the column, e.g. '" + re.sub(r"\W+", "_", str(value)).strip("_") + "'",
        )
    if value.startswith(RESERVED_PREFIX):
        raise SpecValueError(
            f"column name '{value}' uses the reserved prefix '{RESERVED_PREFIX}'",
            hint="regflow adds the lineage column itself; rename this one",
        )
    return value
